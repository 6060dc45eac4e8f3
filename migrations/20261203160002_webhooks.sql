-- Webhook subscriptions, each with its place in the event feed and its
-- deliveries (one row per event it was sent, with its attempts).
CREATE TABLE webhooks (
    webhook_id uuid PRIMARY KEY,
    url text NOT NULL,
    events text[] NOT NULL,
    description text,
    -- The HMAC key deliveries are signed with (a receiver must know it too).
    secret text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    -- An Idempotency-Key of the creating request: the same key and request
    -- answer the same subscription.
    idempotency_scope text,
    idempotency_key text,
    request_hash bytea,
    UNIQUE (idempotency_scope, idempotency_key)
);

CREATE TABLE webhook_cursors (
    webhook_id uuid PRIMARY KEY REFERENCES webhooks,
    transaction_id bigint NOT NULL,
    position bigint NOT NULL
);

CREATE TABLE webhook_deliveries (
    webhook_id uuid NOT NULL REFERENCES webhooks,
    event_id text NOT NULL,
    position bigint NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    type text NOT NULL,
    body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    last_status integer,
    first_attempt_at timestamptz,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    dead_lettered_at timestamptz,
    PRIMARY KEY (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, seq);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, seq)
    WHERE delivered_at IS NULL AND dead_lettered_at IS NULL;
