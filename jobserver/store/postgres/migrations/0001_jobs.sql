CREATE TABLE jobs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task TEXT NOT NULL CHECK (length(task) BETWEEN 1 AND 200),
    queue TEXT NOT NULL CHECK (length(queue) BETWEEN 1 AND 100),
    args JSONB NOT NULL,
    kwargs JSONB NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL CHECK (max_retries >= 0),
    timeout_s DOUBLE PRECISION CHECK (timeout_s IS NULL OR timeout_s > 0),
    backoff JSONB,
    created_at DOUBLE PRECISION NOT NULL,
    run_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    completed_at DOUBLE PRECISION,
    result JSONB,
    error JSONB,
    progress DOUBLE PRECISION CHECK (progress IS NULL OR (progress >= 0 AND progress <= 1)),
    progress_message TEXT,
    lease_token TEXT,
    lease_expires_at DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key TEXT,
    idempotency_expires_at DOUBLE PRECISION,
    payload_hash TEXT,
    deadline DOUBLE PRECISION,
    unique_key TEXT,
    depends_on JSONB,
    blocked_by INTEGER NOT NULL DEFAULT 0 CHECK (blocked_by >= 0),
    pass_result BOOLEAN NOT NULL DEFAULT FALSE,
    on_dependency_failure TEXT NOT NULL DEFAULT 'fail'
        CHECK (on_dependency_failure IN ('fail', 'cancel')),
    callback_url TEXT,
    workflow_id BIGINT,
    -- set when another job depends on this one: completing it then has follow-ups
    has_dependants BOOLEAN NOT NULL DEFAULT FALSE,
    CHECK (attempts >= 0 AND attempts <= max_retries + 1),
    CHECK (status <> 'running' OR blocked_by = 0),
    CHECK ((status = 'running') = (lease_token IS NOT NULL)),
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK (status <> 'running' OR (started_at IS NOT NULL AND attempts >= 1)),
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CHECK (status <> 'succeeded' OR attempts >= 1)
);
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0;
CREATE INDEX jobs_next_due ON jobs (run_at) WHERE status = 'pending' AND blocked_by = 0;
CREATE INDEX jobs_workflow ON jobs (workflow_id) WHERE workflow_id IS NOT NULL;

CREATE TABLE job_dependencies (
    job_id BIGINT NOT NULL,
    depends_on BIGINT NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);
CREATE INDEX job_dependencies_reverse ON job_dependencies (depends_on);

CREATE TABLE workflows (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX jobs_deadline ON jobs (deadline)
    WHERE status = 'pending' AND deadline IS NOT NULL;
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_finished ON jobs (completed_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'running');

CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    rate_limit DOUBLE PRECISION CHECK (rate_limit IS NULL OR rate_limit > 0),
    rate_burst DOUBLE PRECISION CHECK (rate_burst IS NULL OR rate_burst >= 1),
    max_depth INTEGER CHECK (max_depth IS NULL OR max_depth > 0),
    tokens DOUBLE PRECISION,
    tokens_at DOUBLE PRECISION
);

CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    args JSONB NOT NULL,
    kwargs JSONB NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    missed TEXT NOT NULL CHECK (missed IN ('skip', 'catch_up')),
    paused BOOLEAN NOT NULL DEFAULT FALSE,
    next_tick_at DOUBLE PRECISION NOT NULL,
    last_tick_at DOUBLE PRECISION,
    source TEXT NOT NULL CHECK (source IN ('api', 'task'))
);
CREATE INDEX schedules_due ON schedules (next_tick_at) WHERE NOT paused;

CREATE TABLE dead_letters (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id BIGINT NOT NULL,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    args JSONB NOT NULL,
    kwargs JSONB NOT NULL,
    error JSONB,
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    failed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX dead_letters_job ON dead_letters (job_id);
CREATE INDEX dead_letters_failed_at ON dead_letters (failed_at);
