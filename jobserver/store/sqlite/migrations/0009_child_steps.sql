-- Child jobs as durable steps (ctx.run_child): a step's kind may be 'child', and its status
-- 'failed' (a child that ended without success; the next run of the job starts a new one).
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt.
CREATE TABLE job_steps_new (
    job_id INTEGER NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'sleep', 'wait', 'child')),
    status TEXT NOT NULL CHECK (status IN ('done', 'waiting', 'failed')),
    result BLOB,
    attempt INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    PRIMARY KEY (job_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO job_steps_new SELECT * FROM job_steps;
DROP TABLE job_steps;
ALTER TABLE job_steps_new RENAME TO job_steps;

-- A job that kept a step once says so, so that a run of one that never did skips the read of
-- its kept steps (most runs: a job's first).
ALTER TABLE jobs ADD COLUMN has_steps INTEGER NOT NULL DEFAULT 0 CHECK (has_steps IN (0, 1));
UPDATE jobs SET has_steps = 1 WHERE id IN (SELECT job_id FROM job_steps);
