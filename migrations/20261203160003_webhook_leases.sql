-- A subscription's worker holds a lease on its cursor instead of a session
-- of its own: any process may take a lease that ran out, and many
-- subscriptions need no more connections than the pool has.
ALTER TABLE webhook_cursors
    ADD COLUMN leased_by uuid,
    ADD COLUMN lease_until timestamptz NOT NULL DEFAULT '-infinity';
