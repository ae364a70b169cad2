-- Replicas: fencing epochs on leases, the newest edit of each status message claimed and
-- delivered (edits are monotonic across replicas), roles for periodic work, and the owners
-- whose liveness is a session advisory lock (gone with their connection).

ALTER TABLE executions ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;

CREATE TABLE published (
    exec_id   INTEGER NOT NULL,
    message   INTEGER NOT NULL,
    claimed   INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    -- 1 when the last claim_edit was allowed to send (RETURNING sees only the new row).
    last_ok   INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (exec_id, message)
);

-- Command quotas shared by the replicas: the GCRA's theoretical arrival time (µs since the
-- epoch) of each identity's and channel's next command.
CREATE TABLE quotas (
    quota_key TEXT   PRIMARY KEY,
    tat       INTEGER NOT NULL,
    ok        INTEGER NOT NULL DEFAULT 1
);

-- Chat pacing shared by the replicas: each channel's next free write slot (µs since the epoch).
CREATE TABLE pacing (
    pace_key TEXT   PRIMARY KEY,
    next_at  INTEGER NOT NULL
);

CREATE TABLE roles (
    role  TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);

-- Owners with a liveness lock (PostgreSQL only; unused on SQLite, kept for one schema).
CREATE TABLE live_owners (
    owner TEXT PRIMARY KEY
);
