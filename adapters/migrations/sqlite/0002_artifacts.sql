-- Artifacts kept with an execution (e.g. the failed version's pod logs a rollback keeps).
CREATE TABLE artifacts (
    exec_id INTEGER NOT NULL,
    name    TEXT    NOT NULL,
    content TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (exec_id, name)
);
