-- A job's W3C trace context (`traceparent`), given at enqueue: its attempts, the http task's
-- calls and its webhook carry it on (see tracing.py).
ALTER TABLE jobs ADD COLUMN traceparent TEXT;
