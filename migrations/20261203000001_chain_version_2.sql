-- Chain version 2: every new event's hash also covers its `recorded_at`,
-- which the application sets (to the microsecond) and hashes, so an as-of
-- answer cannot be changed without verification noticing. Each event keeps
-- the rule its hash was made by; events stored before this migration are
-- version 1 and verify by the old rule.
ALTER TABLE events
    ADD COLUMN chain_version smallint NOT NULL DEFAULT 1
        CHECK (chain_version IN (1, 2));
