-- Alerts: a project's own rules (the default rules are in the code), its notification
-- channels and silences, the alerts (one row per episode: pending, firing, resolved) and
-- the deliveries of their transitions to channels. `spec` and `data` columns hold JSON
-- the application owns; channel secrets are not here but in `secrets`, sealed, under the
-- owner `channel/<id>`. Times are unix ms.
CREATE TABLE alert_rules (
    project_id TEXT   NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    spec       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, name)
);

CREATE TABLE alert_channels (
    id         TEXT   PRIMARY KEY,
    project_id TEXT   NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    kind       TEXT   NOT NULL,
    spec       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (project_id, name)
);

-- A silence with `starts_at` in the future is a maintenance window. NULL cluster or rule:
-- any.
CREATE TABLE alert_silences (
    id         TEXT   PRIMARY KEY,
    project_id TEXT   NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    cluster    TEXT,
    rule       TEXT,
    starts_at  BIGINT NOT NULL,
    ends_at    BIGINT NOT NULL,
    comment    TEXT   NOT NULL,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- `akey` is what an alert is of (rule and subject): at most one open (pending or firing)
-- alert per project and key, so two evaluators never open the same alert twice.
CREATE TABLE alerts (
    id            TEXT   PRIMARY KEY,
    project_id    TEXT   NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    akey          TEXT   NOT NULL,
    rule          TEXT   NOT NULL,
    cluster       TEXT,
    state         TEXT   NOT NULL,
    data          TEXT   NOT NULL,
    pending_since BIGINT NOT NULL,
    started_at    BIGINT,
    resolved_at   BIGINT
);
CREATE UNIQUE INDEX alerts_open ON alerts (project_id, akey) WHERE state <> 'resolved';
CREATE INDEX alerts_state ON alerts (state);

-- One notification: an alert's transition (`status` firing or resolved) to one channel,
-- with the body as it is sent every time (so a retry sends the same bytes).
CREATE TABLE alert_deliveries (
    id           TEXT    PRIMARY KEY,
    project_id   TEXT    NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    alert_id     TEXT    NOT NULL,
    channel_id   TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    attempts     BIGINT  NOT NULL,
    next_at      BIGINT  NOT NULL,
    last_result  TEXT,
    delivered_at BIGINT,
    gave_up      BOOLEAN NOT NULL,
    created_at   BIGINT  NOT NULL
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE delivered_at IS NULL AND NOT gave_up;
CREATE INDEX alert_deliveries_project ON alert_deliveries (project_id, id);
