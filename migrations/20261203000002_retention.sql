-- Idempotency keys are kept for a window (7 days by default) and purged
-- by age in the background: the purge reads them oldest first.
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
