-- Patient messages: one row per intended message, written before it is
-- sent, unique per reservation, kind, start and channel, so a retry or a
-- second process never sends one twice. The address is the patient's
-- sealed field as the Patient stream stores it (opened when sent or
-- shown; unreadable once the patient's key is erased).
CREATE TABLE messages (
    message_id uuid PRIMARY KEY,
    reservation_id uuid NOT NULL,
    kind text NOT NULL,
    start timestamptz NOT NULL,
    channel text NOT NULL,
    patient_id uuid NOT NULL,
    clinic_id uuid NOT NULL,
    treatment_id uuid NOT NULL,
    to_sealed text NOT NULL,
    language text NOT NULL,
    -- What the templates need beyond the reservation (free starts of a
    -- displacement, an offer's expiry): no personal data.
    details jsonb NOT NULL DEFAULT '{}',
    -- The event that made it, and when that event was recorded.
    position bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'queued',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    last_error text,
    sent_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (reservation_id, kind, start, channel)
);
CREATE INDEX messages_pending ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_patient ON messages (patient_id);

-- The messages planner's place in the event feed (one row), with the
-- lease that makes one planner work at a time across processes.
CREATE TABLE message_cursor (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    transaction_id bigint NOT NULL,
    position bigint NOT NULL,
    leased_by uuid,
    lease_until timestamptz NOT NULL DEFAULT '-infinity'
);
