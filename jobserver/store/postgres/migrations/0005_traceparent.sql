-- A job's W3C trace context (`traceparent`), given at enqueue: its attempts, the http task's
-- calls and its webhook carry it on (see tracing.py). Numbered 5 here and 6 on SQLite.
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
