-- What /readyz writes to prove the database takes a write (a read-only transaction,
-- a standby after a failover, or a full disk accept SELECT 1). Numbered 2 here and 3 on
-- SQLite: each store counts its own migrations.
CREATE TABLE ready_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probes BIGINT NOT NULL
);
