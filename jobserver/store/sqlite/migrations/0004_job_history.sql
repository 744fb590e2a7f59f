-- A job's history: each attempt that ended without ending the job well (failed,
-- cancelled, lost), written with that end; the running or succeeded attempt is read
-- from the job row (claimed_by: the node that took it), so the hot path writes no row.
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
CREATE TABLE job_attempts (
    job_id INTEGER NOT NULL,
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    started_at REAL,
    ended_at REAL NOT NULL,
    node TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('failed', 'cancelled', 'lease_expired')),
    error BLOB,
    PRIMARY KEY (job_id, attempt)
) WITHOUT ROWID;
