-- The inbox keyed by its key alone: a WITHOUT ROWID table is the one B-tree of its primary key,
-- where a rowid table kept a second one (the key's automatic index) written on every insert.
-- Each received command is inserted on the acknowledgement's hot path. (PostgreSQL has no
-- rowid; its 0009 changes nothing.)
CREATE TABLE inbox_new (
    inbox_key   TEXT    PRIMARY KEY,
    platform    TEXT    NOT NULL,
    received_at TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    lease_until TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO inbox_new (inbox_key, platform, received_at, owner, lease_until, payload, done)
    SELECT inbox_key, platform, received_at, owner, lease_until, payload, done FROM inbox;
DROP TABLE inbox;
ALTER TABLE inbox_new RENAME TO inbox;
CREATE INDEX inbox_pending ON inbox (lease_until) WHERE done = 0;
CREATE INDEX inbox_done_by_age ON inbox (received_at) WHERE done = 1;
