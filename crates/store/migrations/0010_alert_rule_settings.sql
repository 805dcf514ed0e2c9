-- A project's settings of a default rule (its threshold, `for`, channels, whether it is
-- enabled) where they differ from the code's; no row: the rule as the code defines it.
-- `spec` is JSON the application owns. Times are unix ms.
CREATE TABLE alert_rule_settings (
    project_id TEXT   NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    rule       TEXT   NOT NULL,
    spec       TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, rule)
);
