-- Durable steps (durable.py; mirrors the SQLite migration 0008).
CREATE TABLE job_steps (
    job_id BIGINT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'sleep', 'wait')),
    status TEXT NOT NULL CHECK (status IN ('done', 'waiting')),
    result JSONB,
    attempt INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    PRIMARY KEY (job_id, seq)
);

CREATE TABLE signals (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    payload JSONB NOT NULL,
    sent_at DOUBLE PRECISION NOT NULL,
    taken_by BIGINT,
    taken_at DOUBLE PRECISION
);
CREATE INDEX signals_untaken ON signals (key, id) WHERE taken_by IS NULL;
CREATE INDEX signals_taken_at ON signals (taken_at) WHERE taken_by IS NOT NULL;

ALTER TABLE jobs ADD COLUMN waiting_for TEXT;
CREATE INDEX jobs_waiting_for ON jobs (waiting_for)
    WHERE status = 'pending' AND waiting_for IS NOT NULL;
