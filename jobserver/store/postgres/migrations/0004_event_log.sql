-- The event log (as SQLite's migration 5): one row a commit that moved jobs. Ids are drawn
-- before commit, so they may commit out of order: readers wait at a hole (events.py).
CREATE TABLE event_log (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    entries BYTEA NOT NULL
);
