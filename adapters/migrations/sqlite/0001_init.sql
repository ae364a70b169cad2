-- runbot state store, SQLite flavour. Times are UTC RFC 3339 text with microseconds
-- (fixed width, so text order is time order); flags are 0/1 integers.

CREATE TABLE executions (
    id            INTEGER PRIMARY KEY,
    version       INTEGER NOT NULL,
    state         TEXT    NOT NULL,
    runbook       TEXT    NOT NULL,
    target_name   TEXT    NOT NULL,
    terminal      INTEGER NOT NULL,
    final_pending INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    doc           TEXT    NOT NULL,
    lease_owner   TEXT,
    lease_until   TEXT
);
CREATE INDEX executions_by_target ON executions (target_name, id);
CREATE INDEX executions_by_terminal ON executions (terminal, id);

-- One-row counter for execution numbers; never reused.
CREATE TABLE id_seq (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO id_seq (id, n) VALUES (1, 0);

CREATE TABLE locks (
    lock_key TEXT    PRIMARY KEY,
    exec_id  INTEGER NOT NULL
);
CREATE INDEX locks_by_exec ON locks (exec_id);

CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT,
    execution TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- The chain head; seq 0 (with the genesis hash) means "no records yet".
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE deliveries (
    delivery_key TEXT PRIMARY KEY,
    at           TEXT NOT NULL
);

CREATE TABLE step_output (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    exec_id INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    chunk   TEXT    NOT NULL
);
CREATE INDEX step_output_by_step ON step_output (exec_id, step, id);
