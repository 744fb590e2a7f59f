-- The statements whose SQL differs on PostgreSQL (the rest are in ../shared.sql; see
-- jobserver/lifecycle.py for what each is for).
-- Parameters are $1, $2...; a list parameter is an array of ids.
-- {job_columns} stands for the columns the driver reads a Job from.
-- Several nodes write at once: rows a statement will change are locked as it finds them, and
-- the rescuer's and expirer's scans skip rows another node holds (FOR UPDATE SKIP LOCKED).

-- name: cancel_leased_if_requested
UPDATE jobs SET status = 'cancelled', completed_at = $3, error = $4,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested
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

-- name: release_leased_if_cancel_requested
UPDATE jobs SET status = 'cancelled', completed_at = coalesce($3, started_at),
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2 AND cancel_requested
RETURNING task, queue, attempts, started_at, completed_at;

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
      AND NOT (queue = ANY($3::text[]))
    FOR UPDATE SKIP LOCKED)
RETURNING id, task, queue, attempts, started_at;

-- name: rescue_requeue
UPDATE jobs SET status = 'pending', run_at = $2, error = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE id IN (
    SELECT id FROM jobs
    WHERE status = 'running' AND lease_expires_at <= $1 AND attempts <= max_retries
      AND NOT (queue = ANY($4::text[]))
    FOR UPDATE SKIP LOCKED)
RETURNING {job_columns};

-- name: rescue_spent
WITH failed AS (
    UPDATE jobs SET status = 'failed', error = $3, completed_at = $2,
        lease_token = NULL, lease_expires_at = NULL
    WHERE id IN (
        SELECT id FROM jobs
        WHERE status = 'running' AND lease_expires_at <= $1 AND attempts > max_retries
          AND NOT (queue = ANY($4::text[]))
        FOR UPDATE SKIP LOCKED)
    RETURNING id, task, queue, args, kwargs, attempts, started_at),
letters AS (
    INSERT INTO dead_letters (job_id, task, queue, args, kwargs, error, attempts, failed_at)
    SELECT id, task, queue, args, kwargs, $3, attempts, $2 FROM failed)
SELECT id, task, queue, attempts, started_at FROM failed;

-- name: pending_dependants
SELECT j.id FROM jobs j JOIN job_dependencies d ON d.job_id = j.id
WHERE d.depends_on = $1 AND j.status = 'pending'
FOR UPDATE OF j;

-- name: queue_webhooks
INSERT INTO jobs (task, queue, args, kwargs, priority, status, max_retries, created_at, run_at,
    traceparent)
SELECT $3, $4, jsonb_build_array(callback_url, id), '{}'::jsonb, 0, 'pending', $5, $2, $2,
    traceparent
FROM jobs WHERE id = ANY($1::bigint[]) AND callback_url IS NOT NULL
RETURNING id, task, queue;

-- name: register_queue
INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING;

-- name: statuses_of
SELECT id, status FROM jobs WHERE id = ANY($1::bigint[]) FOR SHARE;

-- name: mark_has_dependants
UPDATE jobs SET has_dependants = TRUE WHERE id = ANY($1::bigint[]);

-- name: forget_dependencies
DELETE FROM job_dependencies WHERE job_id = ANY($1::bigint[]) OR depends_on = ANY($1::bigint[]);

-- name: forget_attempts
DELETE FROM job_attempts WHERE job_id = ANY($1::bigint[]);

-- name: job_for_update
SELECT {job_columns} FROM jobs WHERE id = $1 FOR UPDATE;

-- name: flag_cancel
UPDATE jobs SET cancel_requested = TRUE WHERE id = $1;

-- name: job_status_for_update
SELECT status FROM jobs WHERE id = $1 FOR UPDATE;

-- name: results_of
SELECT id, result FROM jobs WHERE id = ANY($1::bigint[]);

-- name: job_names
SELECT id, task, queue FROM jobs WHERE id = ANY($1::bigint[]);

-- name: schedule_ticks
SELECT cron, timezone, next_tick_at, last_tick_at FROM schedules WHERE name = $1 FOR UPDATE;

-- name: schedules_due
SELECT name, task, args, kwargs, queue, priority, cron, timezone, missed, paused, next_tick_at,
    last_tick_at, source
FROM schedules WHERE NOT paused AND next_tick_at <= $1;

-- name: next_schedule_at
SELECT min(next_tick_at) FROM schedules WHERE NOT paused;

-- Claiming and queues (lifecycle.claim, next_wake_at, queue_infos, configure_queue).

-- name: lock_queue_rows
-- claims on limited queues take turns across nodes, so their limits hold exactly; the
-- bucket is read again under the lock (one lock order: by name)
SELECT name, paused, concurrency_limit, rate_limit, rate_burst, max_depth, tokens, tokens_at,
    key_concurrency_limit, key_rate_limit, key_rate_burst, keyed
FROM queues WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE;

-- name: top_priority
SELECT max(priority) FROM jobs WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1;

-- name: top_priority_below
SELECT max(priority) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority < $2;

-- name: due_ids_at_priority
-- (not run here: due_ids takes every level in one round trip; see lifecycle.Dialect)
SELECT id FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority = $2
  AND run_at <= $3 AND (deadline IS NULL OR deadline >= $3)
ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED;

-- name: due_ids
SELECT id FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1
  AND run_at <= $2 AND (deadline IS NULL OR deadline >= $2)
ORDER BY priority DESC, run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED;

-- name: next_due_at_priority
-- (not run here: next_run_at reads all queues at once)
SELECT min(run_at) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL AND queue = $1 AND priority = $2 AND run_at > $3;

-- name: claim_jobs
UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = $1,
    lease_token = $2, lease_expires_at = $3, cancel_requested = FALSE, claimed_by = $5
WHERE id = ANY($4::bigint[])
RETURNING {job_columns};

-- name: queue_max_depth
SELECT max_depth FROM queues WHERE name = $1 AND max_depth IS NOT NULL FOR UPDATE;

-- name: pending_depth
SELECT count(*) FROM jobs WHERE status = 'pending' AND queue = $1;

-- name: idempotency_holder
SELECT id, payload_hash, idempotency_expires_at FROM jobs WHERE idempotency_key = $1 FOR UPDATE;

-- name: insert_job
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, idempotency_key, idempotency_expires_at, payload_hash, deadline,
    unique_key, pass_result, on_dependency_failure, callback_url, workflow_id, traceparent,
    fairness_key, fair_tag, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21, $22, 'pending')
ON CONFLICT DO NOTHING
RETURNING id;

-- name: insert_plain
-- one array a column, one round trip for every job; JSON travels as text (a JSON array value
-- in an array parameter would read as another dimension). Ids follow ORDER BY n.
INSERT INTO jobs (task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
    created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url, workflow_id,
    traceparent, fairness_key, fair_tag, status)
SELECT task, queue, args::jsonb, kwargs::jsonb, priority, max_retries, timeout_s, backoff::jsonb,
    created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url, workflow_id,
    traceparent, fairness_key, fair_tag, 'pending'
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[], $6::integer[],
    $7::double precision[], $8::text[], $9::double precision[], $10::double precision[],
    $11::double precision[], $12::boolean[], $13::text[], $14::text[], $15::bigint[],
    $16::text[], $17::text[], $18::double precision[])
    WITH ORDINALITY AS v(task, queue, args, kwargs, priority, max_retries, timeout_s, backoff,
        created_at, run_at, deadline, pass_result, on_dependency_failure, callback_url,
        workflow_id, traceparent, fairness_key, fair_tag, n)
ORDER BY n
RETURNING id;

-- name: pending_in_queue
SELECT id FROM jobs WHERE status = 'pending' AND queue = $1 ORDER BY id LIMIT $2
-- rows a claim holds are skipped: they are starting, no longer pending
FOR UPDATE SKIP LOCKED;

-- Keys within a queue (see ../shared.sql for the rest).

-- name: key_ends
SELECT key, last_end, weight FROM queue_keys WHERE queue = $1 AND key = ANY($2::text[]);

-- name: set_key_end
-- (nodes may tag a key's jobs at once: its end only moves forward)
INSERT INTO queue_keys (queue, key, last_end) VALUES ($1, $2, $3)
ON CONFLICT (queue, key) DO UPDATE SET last_end = greatest(queue_keys.last_end, excluded.last_end);

-- name: key_overrides
SELECT key, weight, concurrency_limit, rate_limit, rate_burst FROM queue_keys
WHERE queue = $1 AND (weight IS NOT NULL OR concurrency_limit IS NOT NULL
    OR rate_limit IS NOT NULL OR rate_burst IS NOT NULL);

-- name: untagged_due
-- (locked: two nodes must not tag the same job, moving its key's end twice)
SELECT id, fairness_key FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL AND fair_tag IS NULL
  AND queue = $1 AND run_at <= $2
ORDER BY run_at, id LIMIT $3 FOR UPDATE SKIP LOCKED;

-- name: keyed_due
SELECT id, fairness_key, fair_tag FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL AND queue = $1
  AND (deadline IS NULL OR deadline >= $2)
  AND fairness_key <> ALL($3::text[])
ORDER BY priority DESC, fair_tag, id LIMIT $4 FOR UPDATE SKIP LOCKED;

-- name: next_untagged_at
SELECT min(run_at) FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL AND fair_tag IS NULL
  AND queue = $1;

-- name: has_tagged
SELECT 1 FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL AND queue = $1 LIMIT 1;

-- Durable steps and signals (see ../shared.sql for the rest).

-- name: forget_steps
DELETE FROM job_steps WHERE job_id = ANY($1::bigint[]);

-- name: lock_signal_key
-- a signal and a suspension waiting on its key take turns, so that neither misses the other
-- (a suspension that saw no signal, and a signal that saw no suspended job, both committed)
SELECT pg_advisory_xact_lock(hashtext('jobserver-signal:' || $1));

-- name: take_signal
-- (two nodes' jobs waiting on one key take different signals)
UPDATE signals SET taken_by = $2, taken_at = $3
WHERE id = (SELECT id FROM signals WHERE key = $1 AND taken_by IS NULL ORDER BY id LIMIT 1
            FOR UPDATE SKIP LOCKED)
RETURNING payload;
