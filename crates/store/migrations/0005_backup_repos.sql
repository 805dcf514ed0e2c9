-- Backup repositories: where a project's clusters archive WAL and keep backups.
--
-- kind is `posix` (a directory on host_id) or `s3` (a bucket; host_id is NULL). spec is
-- JSON: path, and for s3 endpoint, bucket, region, uri_style and ca_pem. The repository's
-- secrets (its cipher passphrase, S3 keys) are in `secrets` under the owner
-- `repo/<id>`, never here. At most one repository per (project, location) is the default:
-- the partial unique index enforces it; `repo_create` clears the old default first.

CREATE TABLE backup_repos (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id),
    name        TEXT NOT NULL,
    location_id TEXT NOT NULL REFERENCES locations (id),
    host_id     TEXT REFERENCES hosts (id),
    kind        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    encrypted   BOOLEAN NOT NULL,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX backup_repos_location ON backup_repos (location_id);
CREATE INDEX backup_repos_host ON backup_repos (host_id);
CREATE UNIQUE INDEX backup_repos_one_default ON backup_repos (project_id, location_id) WHERE is_default;
