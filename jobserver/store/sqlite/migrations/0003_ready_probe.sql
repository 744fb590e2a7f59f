-- What /readyz writes to prove the database takes a write (a commit that changes
-- nothing, or rewrites a row with the same bytes, writes nothing, even to a full disk).
CREATE TABLE ready_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    probes INTEGER NOT NULL
);
