-- runbot state store, PostgreSQL flavour. Only types that cross sqlx's Any driver are used:
-- times are UTC RFC 3339 text with microseconds (fixed width, so text order is time order),
-- flags are 0/1 BIGINTs.

CREATE TABLE executions (
    id            BIGINT PRIMARY KEY,
    version       BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    runbook       TEXT   NOT NULL,
    target_name   TEXT   NOT NULL,
    terminal      BIGINT NOT NULL,
    final_pending BIGINT NOT NULL,
    created_at    TEXT   NOT NULL,
    doc           TEXT   NOT NULL,
    lease_owner   TEXT,
    lease_until   TEXT
);
CREATE INDEX executions_by_target ON executions (target_name, id);
CREATE INDEX executions_by_terminal ON executions (terminal, id);

-- One-row counter for execution numbers; never reused (the row lock serialises increments).
CREATE TABLE id_seq (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    n  BIGINT NOT NULL
);
INSERT INTO id_seq (id, n) VALUES (1, 0);

CREATE TABLE locks (
    lock_key TEXT   PRIMARY KEY,
    exec_id  BIGINT NOT NULL
);
CREATE INDEX locks_by_exec ON locks (exec_id);

CREATE TABLE audit (
    seq       BIGINT PRIMARY KEY,
    at        TEXT NOT NULL,
    kind      TEXT NOT NULL,
    actor     TEXT,
    execution TEXT,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- The chain head, locked FOR UPDATE by appenders; seq 0 (genesis hash) means "no records yet".
CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE deliveries (
    delivery_key TEXT PRIMARY KEY,
    at           TEXT NOT NULL
);

CREATE TABLE step_output (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exec_id BIGINT NOT NULL,
    step    BIGINT NOT NULL,
    chunk   TEXT   NOT NULL
);
CREATE INDEX step_output_by_step ON step_output (exec_id, step, id);
