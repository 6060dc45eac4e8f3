-- The event store: the source of truth of clinicbook.
--
-- `events` keeps the column set of postgres-es (so its PostgresEventRepository
-- can read any stream) and adds a global position, the writing transaction's
-- id (for safe tailing), the recording time and a per-stream hash chain.
-- Payloads are `json`, not `jsonb`: the stored text is exactly what was
-- hashed, and reading `json` back is about twice as fast.

CREATE TABLE events (
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL CHECK (sequence >= 1),
    event_type     text   NOT NULL,
    event_version  text   NOT NULL,
    payload        json   NOT NULL,
    metadata       json   NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8   NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    hash           bytea  NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position_idx ON events (position);
-- Tailing and replay read in (transaction_id, position) order.
CREATE INDEX events_transaction_position_idx ON events (transaction_id, position);
CREATE INDEX events_recorded_at_idx ON events (recorded_at);

-- Append-only: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION events_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Sequences stay contiguous: an event other than a stream's first must
-- follow an existing one. Rows inserted earlier by the same statement are
-- visible here, so a multi-row insert of several events of one stream works.
CREATE FUNCTION events_check_contiguous() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.sequence > 1 AND NOT EXISTS (
        SELECT 1 FROM events
         WHERE aggregate_type = NEW.aggregate_type
           AND aggregate_id = NEW.aggregate_id
           AND sequence = NEW.sequence - 1
    ) THEN
        RAISE EXCEPTION 'event % of stream %/% does not follow its predecessor',
            NEW.sequence, NEW.aggregate_type, NEW.aggregate_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER events_contiguous
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_check_contiguous();

-- Snapshots of long streams, one row per stream, with the postgres-es
-- columns plus the hash of the last event they include (to continue the chain).
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL CHECK (last_sequence >= 0),
    current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
    payload          json   NOT NULL,
    last_hash        bytea  NOT NULL CHECK (octet_length(last_hash) = 32),
    taken_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Idempotency keys: the first answer to a command, stored in the same
-- transaction as its events.
CREATE TABLE idempotency_keys (
    scope         text   NOT NULL,
    key           text   NOT NULL,
    request_hash  bytea  NOT NULL,
    response      json   NOT NULL,
    position      bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Stream locks for read guards: writers take an exclusive transaction-level
-- advisory lock per stream they append to, a command that depends on a
-- stream it does not write takes a shared one; keys are taken in ascending
-- order so two commands never wait on each other in a cycle.
CREATE FUNCTION clinicbook_lock_streams(keys bigint[], exclusive boolean[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    k bigint;
    x boolean;
BEGIN
    FOR k, x IN SELECT t.k, t.x FROM unnest(keys, exclusive) AS t(k, x) ORDER BY t.k LOOP
        IF x THEN
            PERFORM pg_advisory_xact_lock(k);
        ELSE
            PERFORM pg_advisory_xact_lock_shared(k);
        END IF;
    END LOOP;
END;
$$;
