CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reuse an id a client may hold
    task TEXT NOT NULL CHECK (length(task) BETWEEN 1 AND 200),
    queue TEXT NOT NULL CHECK (length(queue) BETWEEN 1 AND 100),
    args BLOB NOT NULL,
    kwargs BLOB NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL CHECK (max_retries >= 0),
    timeout_s REAL CHECK (timeout_s IS NULL OR timeout_s > 0),
    backoff BLOB,
    created_at REAL NOT NULL,
    run_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    result BLOB,
    error BLOB,
    progress REAL CHECK (progress IS NULL OR (progress >= 0 AND progress <= 1)),
    progress_message TEXT,
    lease_token TEXT,
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0 CHECK (cancel_requested IN (0, 1)),
    idempotency_key TEXT,
    idempotency_expires_at REAL,
    payload_hash TEXT,
    deadline REAL,
    unique_key TEXT,
    depends_on BLOB,
    blocked_by INTEGER NOT NULL DEFAULT 0 CHECK (blocked_by >= 0),
    pass_result INTEGER NOT NULL DEFAULT 0 CHECK (pass_result IN (0, 1)),
    on_dependency_failure TEXT NOT NULL DEFAULT 'fail'
        CHECK (on_dependency_failure IN ('fail', 'cancel')),
    callback_url TEXT,
    workflow_id INTEGER,
    -- set when another job depends on this one: completing it then has follow-ups
    has_dependants INTEGER NOT NULL DEFAULT 0 CHECK (has_dependants IN (0, 1)),
    CHECK (attempts >= 0 AND attempts <= max_retries + 1),
    CHECK (status <> 'running' OR blocked_by = 0),
    -- a running job, and only a running job, holds a lease
    CHECK ((status = 'running') = (lease_token IS NOT NULL)),
    CHECK ((status = 'running') = (lease_expires_at IS NOT NULL)),
    CHECK (status <> 'running' OR (started_at IS NOT NULL AND attempts >= 1)),
    -- terminal states, and only those, carry a completion time
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (completed_at IS NOT NULL)),
    CHECK (status <> 'succeeded' OR attempts >= 1)
) STRICT;
-- claiming: a queue's due pending jobs by priority then run_at, from a partial index
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0;
CREATE INDEX jobs_next_due ON jobs (run_at) WHERE status = 'pending' AND blocked_by = 0;
CREATE INDEX jobs_workflow ON jobs (workflow_id) WHERE workflow_id IS NOT NULL;

-- job_id waits for depends_on to succeed
CREATE TABLE job_dependencies (
    job_id INTEGER NOT NULL,
    depends_on INTEGER NOT NULL,
    PRIMARY KEY (job_id, depends_on)
) STRICT, WITHOUT ROWID;
CREATE INDEX job_dependencies_reverse ON job_dependencies (depends_on);

CREATE TABLE workflows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL
) STRICT;
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
    paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    rate_limit REAL CHECK (rate_limit IS NULL OR rate_limit > 0),
    rate_burst REAL CHECK (rate_burst IS NULL OR rate_burst >= 1),
    max_depth INTEGER CHECK (max_depth IS NULL OR max_depth > 0),
    tokens REAL,
    tokens_at REAL
) STRICT;

CREATE TABLE schedules (
    name TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    args BLOB NOT NULL,
    kwargs BLOB NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    missed TEXT NOT NULL CHECK (missed IN ('skip', 'catch_up')),
    paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    next_tick_at REAL NOT NULL,
    last_tick_at REAL,
    source TEXT NOT NULL CHECK (source IN ('api', 'task'))
) STRICT;
CREATE INDEX schedules_due ON schedules (next_tick_at) WHERE paused = 0;

CREATE TABLE dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    task TEXT NOT NULL,
    queue TEXT NOT NULL,
    args BLOB NOT NULL,
    kwargs BLOB NOT NULL,
    error BLOB,
    attempts INTEGER NOT NULL CHECK (attempts >= 0),
    failed_at REAL NOT NULL
) STRICT;
CREATE INDEX dead_letters_job ON dead_letters (job_id);
CREATE INDEX dead_letters_failed_at ON dead_letters (failed_at);
