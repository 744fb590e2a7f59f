-- Durable steps (durable.py): each step a task completed, kept with its job and pruned with
-- it; signals sent to a key, kept until a job waiting for that key takes one; and the key a
-- suspended job waits for, so that a signal wakes it.
CREATE TABLE job_steps (
    job_id INTEGER NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'sleep', 'wait')),
    status TEXT NOT NULL CHECK (status IN ('done', 'waiting')),
    result BLOB,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    payload BLOB NOT NULL,
    sent_at REAL NOT NULL,
    taken_by INTEGER,
    taken_at REAL
) STRICT;
CREATE INDEX signals_untaken ON signals (key, id) WHERE taken_by IS NULL;
CREATE INDEX signals_taken_at ON signals (taken_at) WHERE taken_by IS NOT NULL;

ALTER TABLE jobs ADD COLUMN waiting_for TEXT;
CREATE INDEX jobs_waiting_for ON jobs (waiting_for)
    WHERE status = 'pending' AND waiting_for IS NOT NULL;
