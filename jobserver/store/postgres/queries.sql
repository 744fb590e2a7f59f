-- The lifecycle's statements for PostgreSQL (see jobserver/lifecycle.py for what each is for).
-- Parameters are $1, $2...; a list parameter is an array of ids.
-- {job_columns} stands for the columns the driver reads a Job from.
-- Several nodes write at once: rows a statement will change are locked as it finds them, and
-- the rescuer's and expirer's scans skip rows another node holds (FOR UPDATE SKIP LOCKED).

-- name: cancel_leased_if_requested
UPDATE jobs SET status = 'cancelled', completed_at = $3, error = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested
RETURNING task, queue, attempts, started_at;

-- name: retry_leased
UPDATE jobs SET status = 'pending', run_at = $3, error = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: fail_leased
WITH failed AS (
    UPDATE jobs SET status = 'failed', error = $3, completed_at = $4,
        lease_token = NULL, lease_expires_at = NULL
    WHERE id = $1 AND status = 'running' AND lease_token = $2
    RETURNING id, task, queue, args, kwargs, attempts, started_at),
letters AS (
    INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
    SELECT id, task, queue, args, kwargs, $3, attempts, $4 FROM failed)
SELECT task, queue, attempts, started_at FROM failed;

-- name: cancel_leased
UPDATE jobs SET status = 'cancelled', completed_at = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: release_leased_if_cancel_requested
UPDATE jobs SET status = 'cancelled', completed_at = coalesce($3, started_at),
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested
RETURNING task, queue, attempts, started_at, completed_at;

-- name: release_leased
UPDATE jobs SET status = 'pending', attempts = attempts - 1,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: record_attempts
INSERT INTO job_attempts (job_id, attempt, started_at, ended_at, node, outcome, error)
SELECT id, attempts, started_at, $2, claimed_by, $3, $4 FROM jobs
WHERE id = ANY($1::bigint[]) AND attempts >= 1
ON CONFLICT (job_id, attempt) DO UPDATE SET started_at = excluded.started_at,
    ended_at = excluded.ended_at, node = excluded.node,
    outcome = excluded.outcome, error = excluded.error;

-- name: expire_overdue
WITH failed AS (
    UPDATE jobs SET status = 'failed', error = $2, completed_at = $1
    WHERE id IN (
        SELECT id FROM jobs WHERE status = 'pending' AND deadline < $1
        FOR UPDATE SKIP LOCKED)
    RETURNING id, task, queue, args, kwargs, attempts),
letters AS (
    INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
    SELECT id, task, queue, args, kwargs, $2, attempts, $1 FROM failed)
SELECT id, task, queue, attempts FROM failed;

-- name: rescue_cancel_requested
UPDATE jobs SET status = 'cancelled', completed_at = $2,
    lease_token = NULL, lease_expires_at = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'running' AND lease_expires_at <= $1 AND cancel_requested
    FOR UPDATE SKIP LOCKED)
RETURNING id, task, queue, attempts, started_at;

-- name: rescue_requeue
UPDATE jobs SET status = 'pending', run_at = $2, error = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'running' AND lease_expires_at <= $1 AND attempts <= max_retries
    FOR UPDATE SKIP LOCKED)
RETURNING {job_columns};

-- name: rescue_spent
WITH failed AS (
    UPDATE jobs SET status = 'failed', error = $3, completed_at = $2,
        lease_token = NULL, lease_expires_at = NULL
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'running' AND lease_expires_at <= $1 AND attempts > max_retries
        FOR UPDATE SKIP LOCKED)
    RETURNING id, task, queue, args, kwargs, attempts, started_at),
letters AS (
    INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
    SELECT id, task, queue, args, kwargs, $3, attempts, $2 FROM failed)
SELECT id, task, queue, attempts, started_at FROM failed;

-- name: unblock_dependants
UPDATE jobs SET blocked_by = blocked_by - 1
WHERE status = 'pending' AND blocked_by > 0
  AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = $1)
RETURNING blocked_by;

-- name: job_status
SELECT status FROM jobs WHERE id = $1;

-- name: pending_dependants
SELECT j.id FROM jobs j JOIN job_dependencies d ON d.job_id = j.id
WHERE d.depends_on = $1 AND j.status = 'pending'
FOR UPDATE OF j;

-- name: dependency_policy
SELECT on_dependency_failure FROM jobs WHERE id = $1;

-- name: cancel_pending
UPDATE jobs SET status = 'cancelled', completed_at = $2 WHERE id = $1 AND status = 'pending'
RETURNING task, queue, attempts;

-- name: fail_pending
UPDATE jobs SET status = 'failed', completed_at = $2, error = $3
WHERE id = $1 AND status = 'pending'
RETURNING task, queue, attempts;

-- name: queue_webhooks
INSERT INTO jobs (task, queue, args, kwargs, priority, status, max_retries, created_at, run_at)
SELECT $3, $4, jsonb_build_array(callback_url, id), '{}'::jsonb, 0, 'pending', $5, $2, $2
FROM jobs WHERE id = ANY($1::bigint[]) AND callback_url IS NOT NULL
RETURNING id, task, queue;

-- name: register_queue
INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: statuses_of
SELECT id, status FROM jobs WHERE id = ANY($1::bigint[]) FOR SHARE;

-- name: insert_dependency
INSERT INTO job_dependencies (job_id, depends_on) VALUES ($1, $2);

-- name: mark_has_dependants
UPDATE jobs SET has_dependants = TRUE WHERE id = ANY($1::bigint[]);

-- name: set_dependencies
UPDATE jobs SET depends_on = $2, blocked_by = $3 WHERE id = $1;

-- name: forget_dependencies
DELETE FROM job_dependencies WHERE job_id = ANY($1::bigint[]) OR depends_on = ANY($1::bigint[]);

-- name: forget_attempts
DELETE FROM job_attempts WHERE job_id = ANY($1::bigint[]);

-- name: job_for_update
SELECT {job_columns} FROM jobs WHERE id = $1 FOR UPDATE;

-- name: job_by_id
SELECT {job_columns} FROM jobs WHERE id = $1;

-- name: flag_cancel
UPDATE jobs SET cancel_requested = TRUE WHERE id = $1;

-- name: take_dead_letter
DELETE FROM dead_letters WHERE id = $1 RETURNING job_id, task, queue, args, kwargs;

-- name: job_options
SELECT priority, max_retries, timeout_s, backoff FROM jobs WHERE id = $1;

-- name: insert_requeued
INSERT INTO jobs (task, queue, args, kwargs, priority, status, max_retries, timeout_s, backoff,
    created_at, run_at)
VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $9)
RETURNING {job_columns};

-- name: job_status_for_update
SELECT status FROM jobs WHERE id = $1 FOR UPDATE;

-- name: delete_job
DELETE FROM jobs WHERE id = $1;

-- Reads and small writes the stores share (store/jobstore.py).

-- name: renew_lease
UPDATE jobs SET lease_expires_at = $1
WHERE id = $2 AND status = 'running' AND lease_token = $3
RETURNING cancel_requested;

-- name: update_progress
UPDATE jobs SET progress = $3, progress_message = $4
WHERE id = $1 AND status = 'running' AND lease_token = $2;

-- name: delete_dead_letter
DELETE FROM dead_letters WHERE id = $1;

-- name: ready_probe
INSERT INTO ready_probe (id, probes) VALUES (1, 1)
ON CONFLICT (id) DO UPDATE SET probes = ready_probe.probes + 1;

-- name: job_history_head
SELECT status, attempts, started_at, completed_at, claimed_by FROM jobs WHERE id = $1;

-- name: job_attempts
SELECT attempt, started_at, ended_at, node, outcome, error FROM job_attempts
WHERE job_id = $1 ORDER BY attempt;

-- name: count_dead_letters
SELECT count(*) FROM dead_letters;

-- name: dead_letter_by_id
SELECT id, job_id, task, queue, args, kwargs, error, attempts, failed_at
FROM dead_letters WHERE id = $1;

-- name: dead_letters_newest
SELECT id, job_id, task, queue, args, kwargs, error, attempts, failed_at
FROM dead_letters ORDER BY id DESC LIMIT $1;

-- name: dead_letters_before
SELECT id, job_id, task, queue, args, kwargs, error, attempts, failed_at
FROM dead_letters WHERE id < $1 ORDER BY id DESC LIMIT $2;

-- name: workflow_exists
SELECT 1 FROM workflows WHERE id = $1;

-- name: workflow_jobs
SELECT {job_columns} FROM jobs WHERE workflow_id = $1 ORDER BY id;

-- name: save_schedule
INSERT INTO schedules (name, task, args, kwargs, queue, priority, cron, timezone, missed, paused,
    next_tick_at, last_tick_at, source)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (name) DO UPDATE SET task = excluded.task, args = excluded.args,
    kwargs = excluded.kwargs, queue = excluded.queue, priority = excluded.priority,
    cron = excluded.cron, timezone = excluded.timezone, missed = excluded.missed,
    paused = excluded.paused, next_tick_at = excluded.next_tick_at,
    last_tick_at = excluded.last_tick_at, source = excluded.source
RETURNING name, task, args, kwargs, queue, priority, cron, timezone, missed, paused,
    next_tick_at, last_tick_at, source;

-- name: schedules_all
SELECT name, task, args, kwargs, queue, priority, cron, timezone, missed, paused, next_tick_at,
    last_tick_at, source
FROM schedules ORDER BY name;

-- name: schedule_by_name
SELECT name, task, args, kwargs, queue, priority, cron, timezone, missed, paused, next_tick_at,
    last_tick_at, source
FROM schedules WHERE name = $1;

-- name: delete_schedule
DELETE FROM schedules WHERE name = $1;

-- name: results_of
SELECT id, result FROM jobs WHERE id = ANY($1::bigint[]);

-- name: schedule_ticks
SELECT cron, timezone, next_tick_at, last_tick_at FROM schedules WHERE name = $1 FOR UPDATE;

-- name: schedules_due
SELECT name, task, args, kwargs, queue, priority, cron, timezone, missed, paused, next_tick_at,
    last_tick_at, source
FROM schedules WHERE NOT paused AND next_tick_at <= $1;

-- name: next_schedule_at
SELECT min(next_tick_at) FROM schedules WHERE NOT paused;

-- Claiming and queues (lifecycle.claim, next_wake_at, queue_infos, configure_queue).

-- name: queue_rows
SELECT name, paused, concurrency_limit, rate_limit, rate_burst, max_depth, tokens, tokens_at
FROM queues;

-- name: lock_queue_rows
-- claims on limited queues take turns across nodes, so their limits hold exactly; the
-- bucket is read again under the lock (one lock order: by name)
SELECT name, paused, concurrency_limit, rate_limit, rate_burst, max_depth, tokens, tokens_at
FROM queues WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE;

-- name: running_by_queue
SELECT queue, count(*) FROM jobs WHERE status = 'running' GROUP BY queue;

-- name: top_priority
SELECT max(priority) FROM jobs WHERE status = 'pending' AND blocked_by = 0 AND queue = $1;

-- name: top_priority_below
SELECT max(priority) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1 AND priority < $2;

-- name: due_ids_at_priority
-- (not run here: due_ids takes every level in one round trip; see lifecycle.Dialect)
SELECT id FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1 AND priority = $2
  AND run_at <= $3 AND (deadline IS NULL OR deadline >= $3)
ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED;

-- name: due_ids
SELECT id FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1
  AND run_at <= $2 AND (deadline IS NULL OR deadline >= $2)
ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED;

-- name: next_due_at_priority
-- (not run here: next_run_at reads all queues at once)
SELECT min(run_at) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1 AND priority = $2 AND run_at > $3;

-- name: next_run_at
SELECT min(run_at) FROM jobs WHERE status = 'pending' AND blocked_by = 0 AND run_at > $1;

-- name: has_due
SELECT 1 FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1
  AND run_at <= $2 AND (deadline IS NULL OR deadline >= $2)
LIMIT 1;

-- name: claim_jobs
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = $1,
    lease_token = $2, lease_expires_at = $3, cancel_requested = FALSE, claimed_by = $5
WHERE id = ANY($4::bigint[])
RETURNING {job_columns};

-- name: set_tokens
UPDATE queues SET tokens = $1, tokens_at = $2 WHERE name = $3;

-- name: job_counts_by_queue
SELECT queue, status, count(*) FROM jobs GROUP BY queue, status;

-- name: oldest_due
SELECT min(run_at) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1 AND run_at <= $2;

-- name: set_queue_paused
UPDATE queues SET paused = $2 WHERE name = $1;

-- name: set_queue_concurrency_limit
UPDATE queues SET concurrency_limit = $2 WHERE name = $1;

-- name: set_queue_rate_limit
UPDATE queues SET rate_limit = $2 WHERE name = $1;

-- name: set_queue_rate_burst
UPDATE queues SET rate_burst = $2 WHERE name = $1;

-- name: set_queue_max_depth
UPDATE queues SET max_depth = $2 WHERE name = $1;

-- Enqueueing (lifecycle.admit, insert_one, insert_plain, create_workflow, fire_schedule).

-- name: queue_max_depth
SELECT max_depth FROM queues WHERE name = $1 AND max_depth IS NOT NULL FOR UPDATE;

-- name: pending_depth
SELECT count(*) FROM jobs WHERE status = 'pending' AND queue = $1;

-- name: idempotency_holder
SELECT id, payload_hash, idempotency_expires_at FROM jobs WHERE idempotency_key = $1 FOR UPDATE;

-- name: free_idempotency_key
UPDATE jobs SET idempotency_key = NULL WHERE id = $1;

-- name: live_job_by_unique_key
SELECT {job_columns} FROM jobs WHERE unique_key = $1 AND status IN ('pending', 'running');

-- name: insert_job
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, idempotency_key, idempotency_expires_at, payload_hash, deadline,
    unique_key, pass_result, on_dependency_failure, callback_url, workflow_id, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    'pending')
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_workflow
INSERT INTO workflows (created_at) VALUES ($1) RETURNING id;

-- name: move_schedule
UPDATE schedules SET next_tick_at = $1, last_tick_at = $2 WHERE name = $3 AND next_tick_at = $2;

-- name: insert_plain
-- one array a column, one round trip for every job; JSON travels as text (a JSON array value
-- in an array parameter would read as another dimension). Ids follow ORDER BY n.
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url, workflow_id,
    status)
SELECT task, queue, args::jsonb, kwargs::jsonb, priority, max_retries, timeout_s, backoff::jsonb,
    created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url, workflow_id,
    'pending'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::integer[],
    $7::double precision[], $8::text[], $9::double precision[], $10::double precision[],
    $11::double precision[], $12::boolean[], $13::text[], $14::text[], $15::bigint[])
    WITH ORDINALITY AS v(task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
        created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url,
        workflow_id, n)
ORDER BY n
RETURNING id;
