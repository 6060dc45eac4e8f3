-- Look-ups of the streams whose events carry a given value (which clinic
-- owns a resource) scan only the events of one type.
CREATE INDEX events_type_event_idx ON events (aggregate_type, event_type);
