-- Hosts: the machines of a location, each with sovdb's agent under base_dir.
-- ssh_key_sealed is the SSH private key encrypted with the installation's master key
-- (never stored in clear); facts is the agent's last report, JSON.

CREATE TABLE hosts (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    location_id    TEXT NOT NULL REFERENCES locations (id),
    address        TEXT NOT NULL,
    agent_port     BIGINT NOT NULL,
    base_dir       TEXT NOT NULL,
    zone           TEXT,
    labels         TEXT NOT NULL,
    status         TEXT NOT NULL,
    status_message TEXT,
    ssh_user       TEXT,
    ssh_port       BIGINT,
    ssh_key_sealed TEXT,
    ssh_host_key   TEXT,
    ssh_host_key_fp TEXT,
    facts          TEXT,
    last_seen_at   BIGINT,
    created_at     BIGINT NOT NULL,
    UNIQUE (address, agent_port)
);
CREATE INDEX hosts_location ON hosts (location_id);
