-- The relay is woken by a core-NATS nudge each process sends after a commit
-- (and polls as a fallback), no longer by NOTIFY: a transaction that has
-- notified takes a database-wide lock at commit (to queue its notification
-- in commit order), so every committing writer waited for every other one.
-- Sampled during a booking run, about a third of the active backends were
-- waiting on it (`Lock: object` at COMMIT). See docs/performance.md.
DROP TRIGGER events_notify_relay ON events;
DROP FUNCTION events_notify();
