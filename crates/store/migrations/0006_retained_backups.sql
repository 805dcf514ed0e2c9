-- Backups kept after their cluster was deleted (`cluster delete` keeps them unless asked
-- not to): what `cluster restore NAME` needs to restore a cluster that no longer exists.
--
-- cluster_id is the deleted cluster's ID, which is also its pgBackRest stanza in repo_id.
-- spec is the cluster's spec (JSON) when it was deleted, so the restore can start from
-- the same settings. A project may have deleted several clusters of one name over time:
-- the newest is the one restored by name.

CREATE TABLE retained_backups (
    cluster_id  TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id),
    name        TEXT NOT NULL,
    repo_id     TEXT NOT NULL REFERENCES backup_repos (id),
    location_id TEXT NOT NULL REFERENCES locations (id),
    engine      TEXT NOT NULL,
    version     TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT NOT NULL
);
CREATE INDEX retained_backups_name ON retained_backups (project_id, name);
CREATE INDEX retained_backups_repo ON retained_backups (repo_id);
