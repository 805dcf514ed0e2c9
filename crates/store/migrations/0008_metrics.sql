-- Metrics: samples as agents took them (raw, every 10 s) and their 1-minute rollups.
-- One row per target and moment, not per value: `data` holds all of a sample's values,
-- encoded by the application (`<metric number>[:<dim>]=<value>` joined by ';'), so 100
-- members with ~30 series each make 10 rows a second, not 300. Times are unix ms.
-- `target` is `host/<host id>` or `member/<cluster id>/<member name>`.
CREATE TABLE metric_samples (
    target TEXT   NOT NULL,
    at     BIGINT NOT NULL,
    data   TEXT   NOT NULL,
    PRIMARY KEY (target, at)
);
CREATE INDEX metric_samples_at ON metric_samples (at);

-- `minute` is the start of the minute; gauges are the mean of its samples, counters
-- their last value.
CREATE TABLE metric_rollups (
    target TEXT   NOT NULL,
    minute BIGINT NOT NULL,
    data   TEXT   NOT NULL,
    PRIMARY KEY (target, minute)
);
CREATE INDEX metric_rollups_minute ON metric_rollups (minute);

-- Where the control plane is in each agent's buffer: the agent's epoch (one run of it)
-- and the last sequence number stored.
CREATE TABLE metric_cursors (
    host_id TEXT   PRIMARY KEY REFERENCES hosts (id) ON DELETE CASCADE,
    epoch   TEXT   NOT NULL,
    seq     BIGINT NOT NULL
);
