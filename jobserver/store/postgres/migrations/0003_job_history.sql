-- A job's history (as SQLite's migration 4): each attempt that ended without ending
-- the job well; the running or succeeded one is read from the job row.
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
CREATE TABLE job_attempts (
    job_id BIGINT NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    started_at DOUBLE PRECISION,
    ended_at DOUBLE PRECISION NOT NULL,
    node TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('failed', 'cancelled', 'lease_expired')),
    error JSONB,
    PRIMARY KEY (job_id, attempt)
);
