-- The statements both stores run with the same SQL (see jobserver/lifecycle.py and
-- store/jobstore.py for what each is for). A dialect's own queries.sql holds only those whose
-- SQL must differ, each saying why; a name is in one file or the other, never both.
-- Parameters are $1, $2...; {job_columns} stands for the columns a Job is read from.

-- name: retry_leased
-- (a keyed job gets a new tag when the retry is due: see fairness.py)
UPDATE jobs SET status = 'pending', run_at = $3, error = $4, fair_tag = NULL,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: cancel_leased
UPDATE jobs SET status = 'cancelled', completed_at = $3,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: release_leased
UPDATE jobs SET status = 'pending', attempts = attempts - 1,
    lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: unblock_dependants
UPDATE jobs SET blocked_by = blocked_by - 1
WHERE status = 'pending' AND blocked_by > 0
  AND id IN (SELECT job_id FROM job_dependencies WHERE depends_on = $1)
RETURNING blocked_by;

-- name: job_status
SELECT status FROM jobs WHERE id = $1;

-- name: job_end
-- (a job that ended: its status, and whether others wait for it, a parent included)
SELECT status, has_dependants FROM jobs WHERE id = $1;

-- name: dependency_policy
SELECT on_dependency_failure FROM jobs WHERE id = $1;

-- name: cancel_pending
UPDATE jobs SET status = 'cancelled', completed_at = $2 WHERE id = $1 AND status = 'pending'
RETURNING task, queue, attempts;

-- name: fail_pending
UPDATE jobs SET status = 'failed', completed_at = $2, error = $3
WHERE id = $1 AND status = 'pending'
RETURNING task, queue, attempts;

-- name: insert_dependency
INSERT INTO job_dependencies (job_id, depends_on) VALUES ($1, $2);

-- name: set_dependencies
UPDATE jobs SET depends_on = $2, blocked_by = $3 WHERE id = $1;

-- name: job_by_id
SELECT {job_columns} FROM jobs WHERE id = $1;

-- name: take_dead_letter
DELETE FROM dead_letters WHERE id = $1 RETURNING job_id, task, queue, args, kwargs;

-- name: job_options
SELECT priority, max_retries, timeout_s, backoff, fairness_key FROM jobs WHERE id = $1;

-- name: insert_requeued
INSERT INTO jobs (task, queue, args, kwargs, priority, status, max_retries, timeout_s, backoff,
    created_at, run_at, fairness_key)
VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $9, $10)
RETURNING {job_columns};

-- name: delete_job
DELETE FROM jobs WHERE id = $1;

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

-- name: dead_letters_page
-- Newest first, below the id $1; each filter that is NULL matches every row.
SELECT id, job_id, task, queue, args, kwargs, error, attempts, failed_at
FROM dead_letters
WHERE id < $1 AND task = coalesce($2, task) AND queue = coalesce($3, queue)
  AND failed_at >= coalesce($4, failed_at) AND failed_at < coalesce($5, failed_at + 1)
ORDER BY id DESC LIMIT $6;

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

-- name: queue_rows
SELECT name, paused, concurrency_limit, rate_limit, rate_burst, max_depth, tokens, tokens_at,
    key_concurrency_limit, key_rate_limit, key_rate_burst, keyed
FROM queues;

-- name: running_by_queue
SELECT queue, count(*) FROM jobs WHERE status = 'running' GROUP BY queue;

-- name: next_run_at
SELECT min(run_at) FROM jobs WHERE status = 'pending' AND blocked_by = 0 AND run_at > $1;

-- name: has_due
SELECT 1 FROM jobs
WHERE status = 'pending' AND blocked_by = 0 AND queue = $1
  AND run_at <= $2 AND (deadline IS NULL OR deadline >= $2)
LIMIT 1;

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

-- name: free_idempotency_key
UPDATE jobs SET idempotency_key = NULL WHERE id = $1;

-- name: live_job_by_unique_key
SELECT {job_columns} FROM jobs WHERE unique_key = $1 AND status IN ('pending', 'running');

-- name: insert_workflow
INSERT INTO workflows (created_at) VALUES ($1) RETURNING id;

-- name: move_schedule
UPDATE schedules SET next_tick_at = $1, last_tick_at = $2 WHERE name = $3 AND next_tick_at = $2;

-- The event log (jobserver/events.py): one row a commit, written last before COMMIT.

-- name: event_log_append
INSERT INTO event_log (at, entries) VALUES ($1, $2) RETURNING id;

-- name: event_log_rows
SELECT id, at, entries FROM event_log WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3;

-- name: event_log_span
SELECT coalesce(min(id), 0), coalesce(max(id), 0) FROM event_log;

-- Among the `$2` oldest rows only (ids grow with time): never a walk of the whole log.
-- name: prune_event_log
DELETE FROM event_log WHERE id IN (
    SELECT id FROM (SELECT id, at FROM event_log ORDER BY id LIMIT $2) AS oldest WHERE at < $1);

-- Keys within a queue (lifecycle: tag_due_rows, claim's keyed path; fairness.py).

-- name: queue_virtual_time
SELECT virtual_time, keyed FROM queues WHERE name = $1;

-- name: mark_queue_keyed
UPDATE queues SET keyed = TRUE WHERE name = $1;

-- name: set_tag
UPDATE jobs SET fair_tag = $1 WHERE id = $2;

-- name: advance_virtual_time
UPDATE queues SET virtual_time = $2 WHERE name = $1 AND virtual_time < $2;

-- name: running_by_key
SELECT fairness_key, count(*) FROM jobs
WHERE queue = $1 AND fairness_key IS NOT NULL AND status = 'running'
GROUP BY fairness_key;

-- name: drawn_buckets
SELECT key, tokens, tokens_at FROM queue_keys
WHERE queue = $1 AND tokens_at IS NOT NULL AND tokens_at >= $2;

-- name: set_key_tokens
INSERT INTO queue_keys (queue, key, tokens, tokens_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (queue, key) DO UPDATE SET tokens = excluded.tokens, tokens_at = excluded.tokens_at;

-- name: busiest_keys
SELECT fairness_key,
    sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END),
    sum(CASE WHEN status = 'running' THEN 1 ELSE 0 END)
FROM jobs
WHERE queue = $1 AND fairness_key IS NOT NULL AND status IN ('pending', 'running')
GROUP BY fairness_key ORDER BY count(*) DESC, fairness_key LIMIT $2;

-- name: key_row
SELECT weight, concurrency_limit, rate_limit, rate_burst, tokens, tokens_at FROM queue_keys
WHERE queue = $1 AND key = $2;

-- name: key_running
SELECT count(*) FROM jobs WHERE queue = $1 AND fairness_key = $2 AND status = 'running';

-- name: register_key
INSERT INTO queue_keys (queue, key) VALUES ($1, $2) ON CONFLICT (queue, key) DO NOTHING;

-- name: set_key_weight
UPDATE queue_keys SET weight = $3 WHERE queue = $1 AND key = $2;

-- name: set_key_concurrency_limit
UPDATE queue_keys SET concurrency_limit = $3 WHERE queue = $1 AND key = $2;

-- name: set_key_rate_limit
UPDATE queue_keys SET rate_limit = $3 WHERE queue = $1 AND key = $2;

-- name: set_key_rate_burst
UPDATE queue_keys SET rate_burst = $3 WHERE queue = $1 AND key = $2;

-- name: set_queue_key_concurrency_limit
UPDATE queues SET key_concurrency_limit = $2 WHERE name = $1;

-- name: set_queue_key_rate_limit
UPDATE queues SET key_rate_limit = $2 WHERE name = $1;

-- name: set_queue_key_rate_burst
UPDATE queues SET key_rate_burst = $2 WHERE name = $1;

-- name: prune_keys
-- a key with no settings of its own, no turn owed (its end is behind its queue's virtual
-- time) and a bucket untouched since $1 is the same as no row; $2 a batch
DELETE FROM queue_keys WHERE (queue, key) IN (
    SELECT k.queue, k.key FROM queue_keys k JOIN queues q ON q.name = k.queue
    WHERE k.weight IS NULL AND k.concurrency_limit IS NULL AND k.rate_limit IS NULL
      AND k.rate_burst IS NULL AND (k.tokens_at IS NULL OR k.tokens_at < $1)
      AND k.last_end <= q.virtual_time
    LIMIT $2);

-- Durable steps and signals (durable.py).

-- name: job_steps
SELECT seq, name, kind, status, result, attempt, started_at, ended_at FROM job_steps
WHERE job_id = $1 ORDER BY seq;

-- name: save_step
-- only the holder of the job's lease writes its steps: a worker that lost it changes nothing
INSERT INTO job_steps (job_id, seq, name, kind, status, result, attempt, started_at, ended_at)
SELECT id, $3, $4, $5, $6, $7, attempts, $8, $9 FROM jobs
WHERE id = $1 AND status = 'running' AND lease_token = $2
ON CONFLICT (job_id, seq) DO UPDATE SET status = excluded.status, result = excluded.result,
    attempt = excluded.attempt, ended_at = excluded.ended_at;

-- name: mark_has_steps
UPDATE jobs SET has_steps = TRUE WHERE id = $1 AND NOT has_steps;

-- name: suspend_leased
-- (a suspension is not an attempt: it is given back, as at a release)
UPDATE jobs SET status = 'pending', attempts = attempts - 1, run_at = $3, waiting_for = $4,
    fair_tag = NULL, lease_token = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'running' AND lease_token = $2
RETURNING task, queue, attempts, started_at;

-- name: job_leased
SELECT 1 FROM jobs WHERE id = $1 AND status = 'running' AND lease_token = $2;

-- name: has_signal
SELECT 1 FROM signals WHERE key = $1 AND taken_by IS NULL LIMIT 1;

-- name: insert_signal
INSERT INTO signals (key, payload, sent_at) VALUES ($1, $2, $3) RETURNING id;

-- name: wake_waiting
UPDATE jobs SET run_at = $2, fair_tag = NULL
WHERE status = 'pending' AND waiting_for = $1 AND run_at > $2
RETURNING id;

-- name: prune_signals
-- taken ones after $1, ones no job ever took after $2 (sent_at); $3 a batch
DELETE FROM signals WHERE id IN (
    SELECT id FROM signals
    WHERE (taken_by IS NOT NULL AND taken_at < $1) OR (taken_by IS NULL AND sent_at < $2)
    LIMIT $3);
