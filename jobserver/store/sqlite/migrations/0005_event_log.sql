-- The event log (jobserver/events.py): one row a commit that moved jobs, so that an event
-- stream resumes across restarts. AUTOINCREMENT: an id is never given twice, even after
-- retention has emptied the log (a client's Last-Event-ID must not come round again).
CREATE TABLE event_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    entries BLOB NOT NULL
);
