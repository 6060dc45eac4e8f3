-- The read side: the relay's checkpoint, a wake-up call for it, and the
-- schema `read` where projectors keep their tables and checkpoints.

-- Every committing transaction that wrote events wakes the relay. NOTIFY is
-- delivered at commit and folded to one per transaction and channel, so a
-- statement-level trigger costs one notification per command.
CREATE FUNCTION events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('clinicbook_events', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify_relay
    AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify();

-- Where the relay is: the (transaction_id, position) pair of the last event
-- it published to JetStream. One row.
CREATE TABLE relay_checkpoint (
    id             boolean PRIMARY KEY DEFAULT true CHECK (id),
    transaction_id bigint  NOT NULL,
    position       bigint  NOT NULL,
    published      bigint  NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
INSERT INTO relay_checkpoint (transaction_id, position) VALUES (0, 0);

CREATE SCHEMA read;

-- Each projector's checkpoint: the feed pair of the last event it applied,
-- moved in the same transaction as its tables.
CREATE TABLE read.checkpoints (
    projection     text   PRIMARY KEY,
    transaction_id bigint NOT NULL DEFAULT 0,
    position       bigint NOT NULL DEFAULT 0,
    applied        bigint NOT NULL DEFAULT 0,
    ddl_hash       text   NOT NULL DEFAULT '',
    updated_at     timestamptz NOT NULL DEFAULT now()
);
