-- The alerts runbot posted (`engine::alerts`), by the sender's fingerprint: every replica, and
-- a restarted process, finds the message a repeat or a `resolved` must edit. `message` is
-- empty while the replica that claimed the alert has not posted it yet; `doc` is the alert,
-- its proposal, diagnosis and execution as JSON; `firing` 1 or 0; times as in the other tables.
CREATE TABLE alerts (
    fingerprint TEXT PRIMARY KEY,
    message     TEXT NOT NULL,
    firing      BIGINT NOT NULL,
    doc         TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
