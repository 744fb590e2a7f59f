-- Child jobs as durable steps (ctx.run_child; mirrors the SQLite migration 0009): a step's
-- kind may be 'child', and its status 'failed'.
ALTER TABLE job_steps DROP CONSTRAINT job_steps_kind_check;
ALTER TABLE job_steps ADD CONSTRAINT job_steps_kind_check
    CHECK (kind IN ('run', 'sleep', 'wait', 'child'));
ALTER TABLE job_steps DROP CONSTRAINT job_steps_status_check;
ALTER TABLE job_steps ADD CONSTRAINT job_steps_status_check
    CHECK (status IN ('done', 'waiting', 'failed'));
