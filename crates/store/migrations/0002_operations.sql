-- Durable operations and their step logs (sovdb-operations).
-- lease_owner/lease_expires_at say which worker runs an operation and until when; fence
-- grows by one at every claim, and every write of a worker names the fence it claimed
-- with, so a worker whose lease was taken over can no longer record anything.

CREATE TABLE operations (
    id               TEXT PRIMARY KEY,
    project_id       TEXT REFERENCES projects (id),
    kind             TEXT NOT NULL,
    target           TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    error            TEXT,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT,
    next_run_at      BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    fence            BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX operations_runnable ON operations (state, next_run_at);
CREATE INDEX operations_target ON operations (target, state);

CREATE TABLE operation_steps (
    operation_id TEXT NOT NULL REFERENCES operations (id),
    idx          BIGINT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    output       TEXT,
    error        TEXT,
    started_at   BIGINT,
    finished_at  BIGINT,
    PRIMARY KEY (operation_id, idx)
);
