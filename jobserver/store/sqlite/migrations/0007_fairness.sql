-- Keys within a queue (a tenant, a customer) and their fair shares (see fairness.py).
-- A keyed job is claimed in tag order from jobs_claim_keyed once it has a tag (it is due);
-- until then it waits in jobs_untagged by run_at. Unkeyed jobs keep jobs_claim, now without
-- keyed ones, so a queue with no keys claims as before.
ALTER TABLE jobs ADD COLUMN fairness_key TEXT CHECK (length(fairness_key) BETWEEN 1 AND 200);
ALTER TABLE jobs ADD COLUMN fair_tag REAL;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL;
CREATE INDEX jobs_claim_keyed ON jobs (queue, priority DESC, fair_tag, id, fairness_key)
    WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL;
CREATE INDEX jobs_untagged ON jobs (queue, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL
      AND fair_tag IS NULL;
-- the busiest keys of a queue, and a key's running jobs (for its concurrency limit)
CREATE INDEX jobs_key ON jobs (queue, fairness_key, status)
    WHERE fairness_key IS NOT NULL AND status IN ('pending', 'running');

ALTER TABLE queues ADD COLUMN key_concurrency_limit INTEGER
    CHECK (key_concurrency_limit IS NULL OR key_concurrency_limit > 0);
ALTER TABLE queues ADD COLUMN key_rate_limit REAL
    CHECK (key_rate_limit IS NULL OR key_rate_limit > 0);
ALTER TABLE queues ADD COLUMN key_rate_burst REAL
    CHECK (key_rate_burst IS NULL OR key_rate_burst >= 1);
-- the latest tag claimed: where a key that was idle starts again
ALTER TABLE queues ADD COLUMN virtual_time REAL NOT NULL DEFAULT 0;
-- set once the queue has had a keyed job: claims of queues without keys skip the keyed path
ALTER TABLE queues ADD COLUMN keyed INTEGER NOT NULL DEFAULT 0 CHECK (keyed IN (0, 1));

-- A key's state (where its last job ends, its bucket) and its own settings, if any.
CREATE TABLE queue_keys (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    weight REAL CHECK (weight IS NULL OR weight > 0),
    concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    rate_limit REAL CHECK (rate_limit IS NULL OR rate_limit > 0),
    rate_burst REAL CHECK (rate_burst IS NULL OR rate_burst >= 1),
    last_end REAL NOT NULL DEFAULT 0,
    tokens REAL,
    tokens_at REAL,
    PRIMARY KEY (queue, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX queue_keys_overrides ON queue_keys (queue)
    WHERE weight IS NOT NULL OR concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL
      OR rate_burst IS NOT NULL;
CREATE INDEX queue_keys_drawn ON queue_keys (queue, tokens_at) WHERE tokens_at IS NOT NULL;
