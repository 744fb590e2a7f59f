-- The statements whose SQL differs on SQLite (the rest are in ../shared.sql; see
-- jobserver/lifecycle.py for what each is for).
-- Parameters are $1, $2...; a list parameter arrives as a JSON array (read with json_each).
-- A name may hold several statements, run in order; the last one's result is returned.
-- {job_columns} stands for the columns the driver reads a Job from.
-- SQLite has one writer at a time: no row locks (PostgreSQL's file takes them).

-- name: cancel_leased_if_requested
UPDATE jobs SET status = 'cancelled', completed_at = $3, error = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested = 1
RETURNING task, queue, attempts, started_at;

-- name: fail_leased
-- (no data-changing CTEs in SQLite: the dead letter is copied first, then the job fails)
INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
SELECT id, task, queue, args, kwargs, $3, attempts, $4 FROM jobs
WHERE id = $1 AND status = 'running' AND lease_token = $2;
UPDATE jobs SET status = 'failed', error = $3, completed_at = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: release_leased_if_cancel_requested
UPDATE jobs SET status = 'cancelled', completed_at = coalesce($3, started_at),
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested = 1
RETURNING task, queue, attempts, started_at, completed_at;

-- name: record_attempts
INSERT OR REPLACE INTO job_attempts (job_id, attempt, started_at, ended_at, node, outcome, error)
SELECT id, attempts, started_at, $2, claimed_by, $3, $4 FROM jobs
WHERE id IN (SELECT value FROM json_each($1)) AND attempts >= 1;

-- name: expire_overdue
-- INDEXED BY: left to itself SQLite may scan jobs_status, every pending job
INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
SELECT id, task, queue, args, kwargs, $2, attempts, $1 FROM jobs INDEXED BY jobs_deadline
WHERE status = 'pending' AND deadline IS NOT NULL AND deadline < $1;
UPDATE jobs SET status = 'failed', error = $2, completed_at = $1
WHERE id IN (
    SELECT id FROM jobs INDEXED BY jobs_deadline
    WHERE status = 'pending' AND deadline IS NOT NULL AND deadline < $1)
RETURNING id, task, queue, attempts;

-- name: rescue_cancel_requested
UPDATE jobs SET status = 'cancelled', completed_at = $2,
    lease_token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at <= $1 AND cancel_requested = 1
  AND queue NOT IN (SELECT value FROM json_each($3))
RETURNING id, task, queue, attempts, started_at;

-- name: rescue_requeue
UPDATE jobs SET status = 'pending', run_at = $2, error = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at <= $1 AND attempts <= max_retries
  AND queue NOT IN (SELECT value FROM json_each($4))
RETURNING {job_columns};

-- name: rescue_spent
INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
SELECT id, task, queue, args, kwargs, $3, attempts, $2 FROM jobs
WHERE status = 'running' AND lease_expires_at <= $1 AND attempts > max_retries
  AND queue NOT IN (SELECT value FROM json_each($4));
UPDATE jobs SET status = 'failed', error = $3, completed_at = $2,
    lease_token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at <= $1 AND attempts > max_retries
  AND queue NOT IN (SELECT value FROM json_each($4))
RETURNING id, task, queue, attempts, started_at;

-- name: pending_dependants
SELECT j.id FROM jobs j JOIN job_dependencies d ON d.job_id = j.id
WHERE d.depends_on = $1 AND j.status = 'pending';

-- name: queue_webhooks
INSERT INTO jobs (task, queue, args, kwargs, priority, status, max_retries, created_at, run_at,
    traceparent)
SELECT $3, $4, CAST(json_array(callback_url, id) AS BLOB), CAST('{}' AS BLOB), 0, 'pending', $5,
    $2, $2, traceparent
FROM jobs WHERE id IN (SELECT value FROM json_each($1)) AND callback_url IS NOT NULL
RETURNING id, task, queue;

-- name: register_queue
INSERT OR IGNORE INTO queues (name) VALUES ($1);

-- name: statuses_of
SELECT id, status FROM jobs WHERE id IN (SELECT value FROM json_each($1));

-- name: mark_has_dependants
UPDATE jobs SET has_dependants = 1 WHERE id IN (SELECT value FROM json_each($1));

-- name: forget_dependencies
DELETE FROM job_dependencies
WHERE job_id IN (SELECT value FROM json_each($1)) OR depends_on IN (SELECT value FROM json_each($1));

-- name: forget_attempts
DELETE FROM job_attempts WHERE job_id IN (SELECT value FROM json_each($1));

-- name: job_for_update
SELECT {job_columns} FROM jobs WHERE id = $1;

-- name: flag_cancel
UPDATE jobs SET cancel_requested = 1 WHERE id = $1;

-- name: job_status_for_update
SELECT status FROM jobs WHERE id = $1;

-- name: results_of
SELECT id, result FROM jobs WHERE id IN (SELECT value FROM json_each($1));

-- name: job_names
SELECT id, task, queue FROM jobs WHERE id IN (SELECT value FROM json_each($1));

-- name: schedule_ticks
SELECT cron, timezone, next_tick_at, last_tick_at FROM schedules WHERE name = $1;

-- name: schedules_due
SELECT name, task, args, kwargs, queue, priority, cron, timezone, missed, paused, next_tick_at,
    last_tick_at, source
FROM schedules WHERE paused = 0 AND next_tick_at <= $1;

-- name: next_schedule_at
SELECT min(next_tick_at) FROM schedules WHERE paused = 0;

-- Claiming and queues (lifecycle.claim, next_wake_at, queue_infos, configure_queue).
-- INDEXED BY jobs_claim: SQLite uses a partial index only for a query that states its
-- condition, and may otherwise scan; one priority level at a time (see lifecycle.Dialect).

-- name: lock_queue_rows
-- (one writer: nothing to lock; the rows are read again as PostgreSQL's are)
SELECT name, paused, concurrency_limit, rate_limit, rate_burst, max_depth, tokens, tokens_at,
    key_concurrency_limit, key_rate_limit, key_rate_burst, keyed
FROM queues WHERE name IN (SELECT value FROM json_each($1)) ORDER BY name;

-- name: top_priority
SELECT max(priority) FROM jobs INDEXED BY jobs_claim
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1;

-- name: top_priority_below
SELECT max(priority) FROM jobs INDEXED BY jobs_claim
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority < $2;

-- name: due_ids_at_priority
SELECT id FROM jobs INDEXED BY jobs_claim
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority = $2
  AND run_at <= $3 AND (deadline IS NULL OR deadline >= $3)
ORDER BY run_at, id LIMIT $4;

-- name: due_ids
-- (not run here: it walks every level's delayed jobs; see lifecycle.Dialect)
SELECT id FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1
  AND run_at <= $2 AND (deadline IS NULL OR deadline >= $2)
ORDER BY priority DESC, run_at, id LIMIT $3;

-- name: next_due_at_priority
SELECT min(run_at) FROM jobs INDEXED BY jobs_claim
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority = $2 AND run_at > $3;

-- name: claim_jobs
-- RETURNING only what the claim did not set itself (see CLAIMED_COLUMNS in statements.py)
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = $1,
    lease_token = $2, lease_expires_at = $3, cancel_requested = 0, claimed_by = $5
WHERE id IN (SELECT value FROM json_each($4))
RETURNING {claimed_columns};

-- name: queue_max_depth
SELECT max_depth FROM queues WHERE name = $1 AND max_depth IS NOT NULL;

-- name: pending_depth
SELECT count(*) FROM jobs WHERE status = 'pending' AND status <> 'running' AND queue = $1;

-- name: idempotency_holder
SELECT id, payload_hash, idempotency_expires_at FROM jobs WHERE idempotency_key = $1;

-- name: insert_job
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, idempotency_key, idempotency_expires_at, payload_hash, deadline,
    unique_key, pass_result, on_dependency_failure, callback_url, workflow_id, traceparent,
    fairness_key, fair_tag, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, 'pending')
RETURNING id;

-- name: insert_plain
-- the driver repeats the VALUES row once a job (one statement for up to PLAIN_CHUNK jobs)
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url, workflow_id,
    traceparent, fairness_key, fair_tag, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
    'pending');

-- name: pending_in_queue
SELECT id FROM jobs WHERE status = 'pending' AND queue = $1 ORDER BY id LIMIT $2;

-- Keys within a queue (see ../shared.sql for the rest).

-- name: key_ends
SELECT key, last_end, weight FROM queue_keys
WHERE queue = $1 AND key IN (SELECT value FROM json_each($2));

-- name: set_key_end
INSERT INTO queue_keys (queue, key, last_end) VALUES ($1, $2, $3)
ON CONFLICT (queue, key) DO UPDATE SET last_end = max(last_end, excluded.last_end);

-- name: key_overrides
-- INDEXED BY: left to itself SQLite walks the queue's every key by the primary key
SELECT key, weight, concurrency_limit, rate_limit, rate_burst
FROM queue_keys INDEXED BY queue_keys_overrides
WHERE queue = $1 AND (weight IS NOT NULL OR concurrency_limit IS NOT NULL
    OR rate_limit IS NOT NULL OR rate_burst IS NOT NULL);

-- name: untagged_due
SELECT id, fairness_key FROM jobs INDEXED BY jobs_untagged
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL AND fair_tag IS NULL
  AND queue = $1 AND run_at <= $2
ORDER BY run_at, id LIMIT $3;

-- name: keyed_due
-- the keys in $3 are full: their jobs are passed over in the index
SELECT id, fairness_key, fair_tag FROM jobs INDEXED BY jobs_claim_keyed
WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL AND queue = $1
  AND (deadline IS NULL OR deadline >= $2)
  AND fairness_key NOT IN (SELECT value FROM json_each($3))
ORDER BY priority DESC, fair_tag, id LIMIT $4;

-- name: next_untagged_at
SELECT min(run_at) FROM jobs INDEXED BY jobs_untagged
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL AND fair_tag IS NULL
  AND queue = $1;

-- name: has_tagged
SELECT 1 FROM jobs INDEXED BY jobs_claim_keyed
WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL AND queue = $1 LIMIT 1;

-- Durable steps and signals (see ../shared.sql for the rest).

-- name: forget_steps
DELETE FROM job_steps WHERE job_id IN (SELECT value FROM json_each($1));

-- name: lock_signal_key
-- (one writer: a signal and a suspension on its key cannot interleave)
SELECT 1;

-- name: take_signal
UPDATE signals SET taken_by = $2, taken_at = $3
WHERE id = (SELECT id FROM signals WHERE key = $1 AND taken_by IS NULL ORDER BY id LIMIT 1)
RETURNING payload;
