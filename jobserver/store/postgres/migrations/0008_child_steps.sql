-- Child jobs as durable steps (ctx.run_child; mirrors the SQLite migration 0009): a step's
-- kind may be 'child', and its status 'failed'.
ALTER TABLE job_steps DROP CONSTRAINT job_steps_kind_check;
ALTER TABLE job_steps ADD CONSTRAINT job_steps_kind_check
    CHECK (kind IN ('run', 'sleep', 'wait', 'child'));
ALTER TABLE job_steps DROP CONSTRAINT job_steps_status_check;
ALTER TABLE job_steps ADD CONSTRAINT job_steps_status_check
    CHECK (status IN ('done', 'waiting', 'failed'));

-- A job that kept a step once says so, so that a run of one that never did skips the read of
-- its kept steps (most runs: a job's first).
ALTER TABLE jobs ADD COLUMN has_steps BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE jobs SET has_steps = TRUE WHERE id IN (SELECT job_id FROM job_steps);
