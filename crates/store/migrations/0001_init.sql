-- sovdb schema, version 1. Portable SQL: the same text runs on SQLite and PostgreSQL.
-- Conventions: IDs are UUID text; times are BIGINT milliseconds since the Unix epoch (UTC);
-- structured values are JSON text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE users (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    disabled   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

-- scope is a project ID, or '' for an installation-wide role (NULL would defeat the key).
CREATE TABLE role_bindings (
    user_id TEXT NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL,
    scope   TEXT NOT NULL,
    PRIMARY KEY (user_id, role, scope)
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT,
    revoked       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE locations (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    provider   TEXT NOT NULL,
    region     TEXT NOT NULL,
    zone       TEXT,
    labels     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE clusters (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects (id),
    name        TEXT NOT NULL,
    engine      TEXT NOT NULL,
    version     TEXT NOT NULL,
    state       TEXT NOT NULL,
    location_id TEXT NOT NULL REFERENCES locations (id),
    spec        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX clusters_location ON clusters (location_id);

-- Append-only and hash-chained: see sovdb_types::audit.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    project    TEXT,
    source     TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    params     TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    request_id TEXT,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
