-- Plans that hold up as the table grows from empty. The look-up index
-- (aggregate_type, event_type) competed with the primary key for every
-- query on one stream: on an empty or never-analysed table the planner
-- prefers the smaller index, using only `aggregate_type = $1` and
-- filtering the rest. The contiguity trigger's check (one stream's
-- previous event) was planned that way in each new session, and the
-- plan stayed cached: every inserted event then scanned every event of
-- its aggregate type, so the write rate fell as the table grew (seeding:
-- 880 events/s in the first minute, 20/s after 300k events) until an
-- ANALYZE replaced the plan. With the look-up index led by event_type,
-- the primary key is the only index that starts with aggregate_type, and
-- the stream queries use it whatever the statistics say.
CREATE INDEX events_event_type_idx ON events (event_type, aggregate_type);
DROP INDEX events_type_event_idx;
