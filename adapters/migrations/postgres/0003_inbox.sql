-- The chat inbox: every command and click received from a chat platform, recorded (with its
-- audit record) before it is acknowledged, and marked done once acted on — an execution made
-- from one marks it in its own transaction. Unprocessed entries are taken over by a restarted
-- process (its own) or by another one once the lease ran out.
CREATE TABLE inbox (
    inbox_key   TEXT    PRIMARY KEY,
    platform    TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    lease_until TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    done        BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX inbox_pending ON inbox (done, lease_until);
