-- Keys within a queue (a tenant, a customer) and their fair shares (see fairness.py and
-- the SQLite migration 0007, which this one mirrors).
ALTER TABLE jobs ADD COLUMN fairness_key TEXT CHECK (length(fairness_key) BETWEEN 1 AND 200);
ALTER TABLE jobs ADD COLUMN fair_tag DOUBLE PRECISION;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NULL;
CREATE INDEX jobs_claim_keyed ON jobs (queue, priority DESC, fair_tag, id)
    WHERE status = 'pending' AND blocked_by = 0 AND fair_tag IS NOT NULL;
CREATE INDEX jobs_untagged ON jobs (queue, run_at, id)
    WHERE status = 'pending' AND blocked_by = 0 AND fairness_key IS NOT NULL
      AND fair_tag IS NULL;
CREATE INDEX jobs_key ON jobs (queue, fairness_key, status)
    WHERE fairness_key IS NOT NULL AND status IN ('pending', 'running');

ALTER TABLE queues ADD COLUMN key_concurrency_limit INTEGER
    CHECK (key_concurrency_limit IS NULL OR key_concurrency_limit > 0);
ALTER TABLE queues ADD COLUMN key_rate_limit DOUBLE PRECISION
    CHECK (key_rate_limit IS NULL OR key_rate_limit > 0);
ALTER TABLE queues ADD COLUMN key_rate_burst DOUBLE PRECISION
    CHECK (key_rate_burst IS NULL OR key_rate_burst >= 1);
ALTER TABLE queues ADD COLUMN virtual_time DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN keyed BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE queue_keys (
    queue TEXT NOT NULL,
    key TEXT NOT NULL,
    weight DOUBLE PRECISION CHECK (weight IS NULL OR weight > 0),
    concurrency_limit INTEGER CHECK (concurrency_limit IS NULL OR concurrency_limit > 0),
    rate_limit DOUBLE PRECISION CHECK (rate_limit IS NULL OR rate_limit > 0),
    rate_burst DOUBLE PRECISION CHECK (rate_burst IS NULL OR rate_burst >= 1),
    last_end DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens DOUBLE PRECISION,
    tokens_at DOUBLE PRECISION,
    PRIMARY KEY (queue, key)
);
CREATE INDEX queue_keys_overrides ON queue_keys (queue)
    WHERE weight IS NOT NULL OR concurrency_limit IS NOT NULL OR rate_limit IS NOT NULL
      OR rate_burst IS NOT NULL;
CREATE INDEX queue_keys_drawn ON queue_keys (queue, tokens_at) WHERE tokens_at IS NOT NULL;
