-- What a cluster is made of and what it holds on hosts.
--
-- cluster_members: one row per database member (its host and, in spec, its ports and
-- directories). port_allocations: every TCP port sovdb gave out on a host, with its owner
-- (`cluster/<id>/<member>/<purpose>` or `dcs/<location id>/<member>/<purpose>`), so two
-- clusters never get the same port. secrets: values sealed with the master key, never in
-- clear. dcs_members: the etcd members of a location's DCS. events: what happened, for
-- the timelines of clusters and of the installation.

CREATE TABLE cluster_members (
    cluster_id TEXT NOT NULL REFERENCES clusters (id),
    name       TEXT NOT NULL,
    host_id    TEXT NOT NULL REFERENCES hosts (id),
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (cluster_id, name)
);
CREATE INDEX cluster_members_host ON cluster_members (host_id);

CREATE TABLE port_allocations (
    host_id TEXT NOT NULL REFERENCES hosts (id),
    port    BIGINT NOT NULL,
    owner   TEXT NOT NULL,
    PRIMARY KEY (host_id, port)
);
CREATE INDEX port_allocations_owner ON port_allocations (owner);

CREATE TABLE secrets (
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    sealed     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (owner, name)
);

CREATE TABLE dcs_members (
    location_id TEXT NOT NULL REFERENCES locations (id),
    name        TEXT NOT NULL,
    host_id     TEXT NOT NULL REFERENCES hosts (id),
    client_port BIGINT NOT NULL,
    peer_port   BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (location_id, name)
);
CREATE INDEX dcs_members_host ON dcs_members (host_id);

CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    at         BIGINT NOT NULL,
    project_id TEXT REFERENCES projects (id),
    target     TEXT NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX events_target ON events (target, at);
