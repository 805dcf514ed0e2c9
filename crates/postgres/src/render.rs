//! The files and command lines of a member's processes and of a location's etcd.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{bin_dir, LOOP_WAIT, MAXIMUM_LAG_ON_FAILOVER, RETRY_TIMEOUT, TTL};

/// The ports one member holds on its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPorts {
    pub postgres: u16,
    /// Patroni's REST API (TLS).
    pub patroni: u16,
    /// HAProxy's route to the primary.
    pub read_write: u16,
    /// HAProxy's route to replicas (the primary when none is up).
    pub read_only: u16,
    /// PgBouncer, with `--pooler`.
    pub pooler: Option<u16>,
}

/// Where a member's files live, under one directory of its host that belongs to the
/// database user. Logs are beside the data directory, never in it (they'd be backed up).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLayout {
    pub dir: String,
}

impl MemberLayout {
    pub fn new(dir: impl Into<String>) -> Self {
        MemberLayout { dir: dir.into() }
    }
    fn path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.dir)
    }
    pub fn data(&self) -> String {
        self.path("data")
    }
    pub fn patroni_yml(&self) -> String {
        self.path("patroni.yml")
    }
    pub fn haproxy_cfg(&self) -> String {
        self.path("haproxy.cfg")
    }
    pub fn pgbouncer_ini(&self) -> String {
        self.path("pgbouncer.ini")
    }
    pub fn pgbouncer_hba(&self) -> String {
        self.path("pgbouncer-hba.conf")
    }
    pub fn pgbouncer_users(&self) -> String {
        self.path("pgbouncer-users.txt")
    }
    pub fn ca(&self) -> String {
        self.path("tls/ca.crt")
    }
    pub fn cert(&self) -> String {
        self.path("tls/server.crt")
    }
    pub fn key(&self) -> String {
        self.path("tls/server.key")
    }
    pub fn patroni_log_dir(&self) -> String {
        self.path("log/patroni")
    }
    pub fn postgres_log_dir(&self) -> String {
        self.path("log/postgresql")
    }
    /// PostgreSQL's and PgBouncer's Unix sockets.
    pub fn run_dir(&self) -> String {
        self.path("run")
    }
    pub fn pgpass(&self) -> String {
        self.path("pgpass")
    }
    /// Every directory to create (owned by the database user, 0700) before first start.
    pub fn dirs(&self) -> Vec<String> {
        vec![
            self.dir.clone(),
            self.path("tls"),
            self.path("log"),
            self.patroni_log_dir(),
            self.postgres_log_dir(),
            self.pgbackrest_log_dir(),
            self.run_dir(),
            self.pgbackrest_lock_dir(),
        ]
    }
}

/// The database roles sovdb creates, and their passwords.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Passwords {
    /// `postgres`.
    pub superuser: String,
    /// `replicator`.
    pub replication: String,
    /// Patroni's REST API (`patroni`), for unsafe methods (switchover, restart, …).
    pub rest: String,
    /// The application user.
    pub app: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords { .. }")
    }
}

pub const SUPERUSER: &str = "postgres";
pub const REPLICATION_USER: &str = "replicator";
pub const REST_USER: &str = "patroni";

/// A member as its peers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub address: String,
    pub ports: MemberPorts,
}

/// What Patroni's configuration of one member is made of.
#[derive(Debug, Clone)]
pub struct PatroniInput<'a> {
    /// Patroni's scope: the cluster's ID, so a re-created cluster never meets old keys.
    pub scope: &'a str,
    pub member: &'a Peer,
    pub layout: &'a MemberLayout,
    pub version: &'a str,
    /// etcd client endpoints, `address:port`.
    pub etcd_hosts: &'a [String],
    pub sync: bool,
    /// The user's parameters (validated), applied cluster-wide through the DCS.
    pub params: &'a BTreeMap<String, String>,
    pub passwords: &'a Passwords,
    /// WAL archiving into this stanza with the member's `pgbackrest.conf` (the cluster
    /// has a backup repository).
    pub backup_stanza: Option<&'a str>,
    /// A new cluster's first member is restored with this command (see
    /// [`crate::backup::restore_command_line`]) instead of initialised.
    pub restore_command: Option<&'a str>,
    /// Every member of the cluster (replication and routing sources).
    pub peers: &'a [Peer],
    /// The client networks allowed in (parsed CIDRs, see [`crate::allow`]).
    pub allow: &'a [String],
}

/// The DCS namespace of every sovdb cluster.
pub const NAMESPACE: &str = "/sovdb/";

/// The parameters every cluster starts with (before the user's); a parameter the user
/// resets goes back to its value here, or else to PostgreSQL's default.
pub fn base_parameters() -> BTreeMap<String, Value> {
    [
        ("wal_level", json!("replica")),
        ("hot_standby", json!("on")),
        ("wal_log_hints", json!("on")),
        ("max_wal_senders", json!(10)),
        ("max_replication_slots", json!(10)),
        ("wal_keep_size", json!("128MB")),
        ("password_encryption", json!("scram-sha-256")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Patroni's configuration (YAML).
pub fn patroni_yml(i: &PatroniInput<'_>) -> String {
    let l = i.layout;
    let m = i.member;
    let mut global = base_parameters();
    for (k, v) in i.params {
        global.insert(k.clone(), json!(v));
    }
    let ssl_conn = |user: &str, password: &str| json!({"username": user, "password": password, "sslmode": "verify-ca", "sslrootcert": l.ca()});
    let doc = json!({
        "scope": i.scope,
        "namespace": NAMESPACE,
        "name": m.name,
        "log": {"dir": l.patroni_log_dir(), "level": "INFO", "file_num": 4, "file_size": 10_485_760},
        "restapi": {
            "listen": format!("{}:{}", m.address, m.ports.patroni),
            "connect_address": format!("{}:{}", m.address, m.ports.patroni),
            "certfile": l.cert(),
            "keyfile": l.key(),
            // The installation CA (also the fallback of `ctl.cacert` below). Clients'
            // certificates are not asked for (`verify_client` is unset).
            "cafile": l.ca(),
            "authentication": {"username": REST_USER, "password": i.passwords.rest},
        },
        // How Patroni calls other members' REST APIs (a leader checks a switchover
        // candidate; replicas compare themselves before a promotion; the failsafe
        // check): TLS verified against the installation CA, the member's certificate as
        // the client's. Without it every such call fails (the system's CAs are used).
        "ctl": {"insecure": false, "cacert": l.ca(), "certfile": l.cert(), "keyfile": l.key()},
        "etcd3": {
            "hosts": i.etcd_hosts,
            "protocol": "https",
            "cacert": l.ca(),
            // The member's certificate is also its client certificate towards etcd.
            "cert": l.cert(),
            "key": l.key(),
        },
        "bootstrap": {
            "dcs": {
                "ttl": TTL,
                "loop_wait": LOOP_WAIT,
                "retry_timeout": RETRY_TIMEOUT,
                "maximum_lag_on_failover": MAXIMUM_LAG_ON_FAILOVER,
                "failsafe_mode": true,
                "synchronous_mode": i.sync,
                "synchronous_mode_strict": false,
                "postgresql": {"use_pg_rewind": true, "use_slots": true, "parameters": global},
            },
            "initdb": ["data-checksums", {"encoding": "UTF8"}, {"locale": "C.UTF-8"}],
        },
        "postgresql": {
            "listen": format!("{}:{}", m.address, m.ports.postgres),
            "connect_address": format!("{}:{}", m.address, m.ports.postgres),
            "use_unix_socket": true,
            "data_dir": l.data(),
            "bin_dir": bin_dir(i.version),
            "pgpass": l.pgpass(),
            "authentication": {
                "superuser": ssl_conn(SUPERUSER, &i.passwords.superuser),
                "replication": ssl_conn(REPLICATION_USER, &i.passwords.replication),
                "rewind": ssl_conn(SUPERUSER, &i.passwords.superuser),
            },
            "basebackup": [{"checkpoint": "fast"}],
            "parameters": {
                "unix_socket_directories": l.run_dir(),
                "ssl": "on",
                "ssl_cert_file": l.cert(),
                "ssl_key_file": l.key(),
                "ssl_ca_file": l.ca(),
                "logging_collector": "on",
                "log_directory": l.postgres_log_dir(),
                "log_filename": "postgresql-%a.log",
                "log_truncate_on_rotation": "on",
                "log_rotation_size": 0,
            },
            "pg_hba": pg_hba(i.allow, i.peers),
        },
        "watchdog": {"mode": "off"},
        "tags": {"nofailover": false, "noloadbalance": false, "clonefrom": false, "nosync": false},
    });
    let mut doc = doc;
    if let Some(stanza) = i.backup_stanza {
        // Per member (paths differ), so in the local configuration, not the DCS.
        let p = &mut doc["postgresql"]["parameters"];
        p["archive_mode"] = json!("on");
        p["archive_command"] = json!(crate::backup::archive_command(l, stanza));
        p["archive_timeout"] = json!(crate::backup::ARCHIVE_TIMEOUT);
        doc["postgresql"]["recovery_conf"] = json!({"restore_command": crate::backup::restore_command(l, stanza)});
        // A promoted replica archives the WAL its dead primary had not.
        doc["postgresql"]["callbacks"] =
            json!({"on_role_change": format!("/bin/bash {}", l.archive_leftovers_script())});
    }
    if let Some(command) = i.restore_command {
        // Patroni's custom bootstrap: the command alone (`no_params`); the recovery
        // settings pgBackRest writes are kept for the first start.
        doc["bootstrap"]["method"] = json!("pgbackrest");
        doc["bootstrap"]["pgbackrest"] =
            json!({"command": command, "keep_existing_recovery_conf": true, "no_params": true});
    }
    serde_yaml::to_string(&doc).expect("a JSON value serialises as YAML")
}

/// Who may connect how: the database user by peer on the socket, everyone else with a
/// SCRAM password, and only over TLS from other machines. Replication only from the
/// members; any role from loopback and from the members (HAProxy and PgBouncer connect
/// from their member's address and check the allow-list themselves); clients only from
/// the allow-list. A source that matches no line is refused by PostgreSQL ("no
/// pg_hba.conf entry"). Patroni writes these lines to `pg_hba.conf` and reloads
/// PostgreSQL when they change: no restart.
pub fn pg_hba(allow: &[String], members: &[Peer]) -> Vec<String> {
    let mut out: Vec<String> = [
        "local all postgres peer",
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
        "host all all ::1/128 scram-sha-256",
        "host replication replicator 127.0.0.1/32 scram-sha-256",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut sources: Vec<String> = Vec::new();
    for m in members {
        let s = crate::allow::host_source(&m.address);
        if !sources.contains(&s) {
            sources.push(s);
        }
    }
    for s in &sources {
        out.push(format!("hostssl replication replicator {s} scram-sha-256"));
    }
    for s in &sources {
        out.push(format!("hostssl all all {s} scram-sha-256"));
    }
    for c in allow {
        out.push(format!("hostssl all all {c} scram-sha-256"));
    }
    out
}

/// HAProxy's sources allowed in: loopback, the members (PgBouncer connects to the
/// read-write route from its member's address) and the allow-list.
fn haproxy_sources(members: &[Peer], allow: &[String]) -> Vec<String> {
    let mut out: Vec<String> = crate::allow::LOOPBACK.iter().map(|s| s.to_string()).collect();
    for s in members.iter().map(|m| crate::allow::host_source(&m.address)).chain(allow.iter().cloned()) {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// HAProxy on one member: a read-write port to the primary and a read-only port to the
/// replicas (the primary when no replica is up), chosen by Patroni's REST health checks
/// over TLS. Sessions to a server that stops being what the port wants are cut. A
/// connection from a source outside the allow-list (see [`haproxy_sources`]) is closed
/// as it is accepted.
pub fn haproxy_cfg(layout: &MemberLayout, me: &Peer, members: &[Peer], allow: &[String]) -> String {
    let ca = layout.ca();
    let acl =
        format!("    tcp-request connection reject unless {{ src {} }}\n", haproxy_sources(members, allow).join(" "));
    let mut out = format!(
        "# Written by sovdb; changes are overwritten.\n\
         global\n    maxconn 2000\n    stats socket {run}/haproxy.sock mode 600 level admin\n\n\
         defaults\n    mode tcp\n    retries 2\n    timeout connect 2s\n    timeout client 30m\n    timeout server 30m\n    timeout check 2s\n    \
         default-server inter 1s fastinter 500ms downinter 1s rise 1 fall 2 on-marked-down shutdown-sessions check-ssl verify required ca-file {ca}\n\n\
         frontend read_write\n    bind {addr}:{rw}\n{acl}    default_backend primary\n\n\
         frontend read_only\n    bind {addr}:{ro}\n{acl}    use_backend replicas if {{ nbsrv(replicas) gt 0 }}\n    default_backend primary\n",
        run = layout.run_dir(),
        addr = me.address,
        rw = me.ports.read_write,
        ro = me.ports.read_only,
    );
    for (backend, check) in [("primary", "/primary"), ("replicas", "/replica")] {
        out.push_str(&format!(
            "\nbackend {backend}\n    option httpchk GET {check}\n    http-check expect status 200\n"
        ));
        if backend == "replicas" {
            out.push_str("    balance roundrobin\n");
        }
        for m in members {
            out.push_str(&format!(
                "    server {} {}:{} check port {}\n",
                m.name, m.address, m.ports.postgres, m.ports.patroni
            ));
        }
    }
    out
}

pub fn haproxy_argv(layout: &MemberLayout) -> Vec<String> {
    // Master-worker mode: SIGUSR2 to the master reloads the configuration without
    // dropping a connection (a scaled cluster's members learn their new peers so).
    vec!["/usr/sbin/haproxy".into(), "-W".into(), "-db".into(), "-f".into(), layout.haproxy_cfg()]
}

/// Patroni's command line: Patroni 3.0.2 (Debian 12's) started through
/// [`PATRONI_LAUNCHER`], which mends its leader-key update before it runs.
pub fn patroni_argv(layout: &MemberLayout) -> Vec<String> {
    vec!["/usr/bin/python3".into(), "-c".into(), PATRONI_LAUNCHER.into(), layout.patroni_yml()]
}

/// Runs Patroni (`patroni.__main__.main`, what `/usr/bin/patroni` runs) after replacing,
/// in Patroni 3.0.2 only, `Etcd3._update_leader` with one that updates the leader key
/// only if it still holds this member's name, or creates it only if it does not exist.
///
/// Why: 3.0.2 writes the leader key unconditionally whenever its lease changed. A
/// primary cut off from the DCS whose lease expired meanwhile (the majority promoted
/// another member) still believes, from its cached view, that it holds the key; when the
/// network heals while its demotion is still under way (PostgreSQL's shutdown waits for
/// its unreachable standbys), it takes a new lease and overwrites the new primary's key,
/// promotes itself again and demotes the new primary: writes acknowledged by the new
/// primary are lost. `crates/sovdb/tests/partition.rs` met it. Upstream fixed it the same
/// way in 3.0.3 (patroni/patroni#2689, #2693); other versions run unchanged.
pub const PATRONI_LAUNCHER: &str = r#"import sys
import patroni.version
if patroni.version.__version__ == '3.0.2':
    import time
    from patroni.dcs import Leader, catch_return_false_exception
    from patroni.dcs.etcd3 import Etcd3, Etcd3Error, base64_encode

    @catch_return_false_exception
    def _update_leader(self):
        retry = self._retry.copy()

        def _retry(*args, **kwargs):
            kwargs['retry'] = retry
            return retry(*args, **kwargs)

        self._run_and_handle_exceptions(self._do_refresh_lease, True, retry=_retry)
        if not self._lease:
            return False
        cluster = self.cluster
        if cluster and isinstance(cluster.leader, Leader) and cluster.leader.session == self._lease:
            return True
        retry.deadline = retry.stoptime - time.time()
        if retry.deadline < 1:
            raise Etcd3Error('update_leader timeout')
        key = base64_encode(self.leader_path)
        put = {'request_put': {'key': key, 'value': base64_encode(self._name), 'lease': self._lease}}
        mine = {'key': key, 'target': 'VALUE', 'value': base64_encode(self._name)}
        free = {'key': key, 'target': 'CREATE', 'create_revision': '0'}
        fields = {'compare': [mine], 'success': [put],
                  'failure': [{'request_txn': {'compare': [free], 'success': [put]}}]}
        ret = self._run_and_handle_exceptions(self._client.call_rpc, '/kv/txn', fields, retry=_retry)
        nested = (ret.get('responses') or [{}])[0].get('response_txn') or {}
        return bool(ret.get('succeeded') or nested.get('succeeded'))

    Etcd3._update_leader = _update_leader
sys.argv[0] = 'patroni'
from patroni.__main__ import main
sys.exit(main())
"#;

/// PgBouncer on one member, in transaction pooling mode, in front of the member's
/// read-write route; TLS towards clients and towards PostgreSQL. Clients are checked
/// against [`pgbouncer_hba`] (the allow-list; re-read on SIGHUP), then by SCRAM password.
pub fn pgbouncer_ini(layout: &MemberLayout, me: &Peer, pooler_port: u16) -> String {
    format!(
        "; Written by sovdb; changes are overwritten.\n\
         [databases]\n* = host={addr} port={rw}\n\n\
         [pgbouncer]\nlisten_addr = {addr}\nlisten_port = {pooler_port}\nunix_socket_dir = {run}\n\
         auth_type = hba\nauth_hba_file = {hba}\nauth_file = {users}\npool_mode = transaction\n\
         max_client_conn = 1000\ndefault_pool_size = 20\nignore_startup_parameters = extra_float_digits\n\
         client_tls_sslmode = require\nclient_tls_cert_file = {cert}\nclient_tls_key_file = {key}\nclient_tls_ca_file = {ca}\n\
         server_tls_sslmode = verify-ca\nserver_tls_ca_file = {ca}\n",
        addr = me.address,
        rw = me.ports.read_write,
        run = layout.run_dir(),
        users = layout.pgbouncer_users(),
        hba = layout.pgbouncer_hba(),
        cert = layout.cert(),
        key = layout.key(),
        ca = layout.ca(),
    )
}

/// PgBouncer's client rules (its `pg_hba.conf`-like file): SCRAM passwords, from
/// loopback, the members and the allow-list only; PgBouncer refuses any other source
/// ("login rejected").
pub fn pgbouncer_hba(allow: &[String], members: &[Peer]) -> String {
    let mut out = String::from("# Written by sovdb; changes are overwritten.\n");
    for l in crate::allow::LOOPBACK {
        out.push_str(&format!("host all all {l} scram-sha-256\n"));
    }
    let mut seen: Vec<String> = Vec::new();
    for s in members.iter().map(|m| crate::allow::host_source(&m.address)).chain(allow.iter().cloned()) {
        if !seen.contains(&s) {
            out.push_str(&format!("hostssl all all {s} scram-sha-256\n"));
            seen.push(s);
        }
    }
    out
}

/// PgBouncer's user list: the application user (its password in clear, in a 0600 file of
/// the database user, so PgBouncer can log in to PostgreSQL with SCRAM).
pub fn pgbouncer_users(user: &str, password: &str) -> String {
    let q = |s: &str| s.replace('"', "\"\"");
    format!("\"{}\" \"{}\"\n", q(user), q(password))
}

pub fn pgbouncer_argv(layout: &MemberLayout) -> Vec<String> {
    vec!["/usr/sbin/pgbouncer".into(), layout.pgbouncer_ini()]
}

/// One member of a location's etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdMember {
    pub name: String,
    pub address: String,
    pub client_port: u16,
    pub peer_port: u16,
}

impl EtcdMember {
    pub fn client_endpoint(&self) -> String {
        format!("{}:{}", self.address, self.client_port)
    }
}

/// Where an etcd member's files live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdLayout {
    pub dir: String,
}

impl EtcdLayout {
    pub fn data(&self) -> String {
        format!("{}/data", self.dir)
    }
    pub fn ca(&self) -> String {
        format!("{}/tls/ca.crt", self.dir)
    }
    pub fn cert(&self) -> String {
        format!("{}/tls/member.crt", self.dir)
    }
    pub fn key(&self) -> String {
        format!("{}/tls/member.key", self.dir)
    }
}

/// etcd's command line: TLS with client certificates from the installation CA on both
/// the client and the peer ports; a static initial cluster of every member.
pub fn etcd_argv(layout: &EtcdLayout, me: &EtcdMember, all: &[EtcdMember], token: &str) -> Vec<String> {
    let initial: Vec<String> =
        all.iter().map(|m| format!("{}=https://{}:{}", m.name, m.address, m.peer_port)).collect();
    let client = format!("https://{}:{}", me.address, me.client_port);
    let peer = format!("https://{}:{}", me.address, me.peer_port);
    [
        "/usr/bin/etcd".to_string(),
        format!("--name={}", me.name),
        format!("--data-dir={}", layout.data()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={}", initial.join(",")),
        "--initial-cluster-state=new".into(),
        format!("--initial-cluster-token={token}"),
        format!("--cert-file={}", layout.cert()),
        format!("--key-file={}", layout.key()),
        format!("--trusted-ca-file={}", layout.ca()),
        "--client-cert-auth".into(),
        format!("--peer-cert-file={}", layout.cert()),
        format!("--peer-key-file={}", layout.key()),
        format!("--peer-trusted-ca-file={}", layout.ca()),
        "--peer-client-cert-auth".into(),
        "--auto-compaction-retention=1".into(),
        "--logger=zap".into(),
    ]
    .into_iter()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, address: &str, base: u16) -> Peer {
        Peer {
            name: name.into(),
            address: address.into(),
            ports: MemberPorts {
                postgres: base,
                patroni: base + 1,
                read_write: base + 2,
                read_only: base + 3,
                pooler: None,
            },
        }
    }

    fn passwords() -> Passwords {
        Passwords { superuser: "su\"pw".into(), replication: "rp".into(), rest: "rest".into(), app: "app".into() }
    }

    #[test]
    fn patroni_config_is_yaml_with_tls_auth_and_the_users_parameters() {
        let layout = MemberLayout::new("/b/pg/abc-1");
        let me = peer("db-1", "10.0.0.1", 20000);
        let params: BTreeMap<String, String> = [("work_mem".to_string(), "8MB".to_string())].into();
        let etcd = vec!["10.0.0.9:2379".to_string()];
        let yml = patroni_yml(&PatroniInput {
            scope: "scope-id",
            member: &me,
            layout: &layout,
            version: "15",
            etcd_hosts: &etcd,
            sync: true,
            params: &params,
            passwords: &passwords(),
            backup_stanza: None,
            restore_command: None,
            peers: std::slice::from_ref(&me),
            allow: &[],
        });
        let doc: serde_yaml::Value = serde_yaml::from_str(&yml).unwrap();
        assert_eq!(doc["scope"].as_str(), Some("scope-id"));
        assert_eq!(doc["restapi"]["listen"].as_str(), Some("10.0.0.1:20001"));
        assert_eq!(doc["restapi"]["authentication"]["username"].as_str(), Some("patroni"));
        assert_eq!(doc["restapi"]["certfile"].as_str(), Some("/b/pg/abc-1/tls/server.crt"));
        assert_eq!(doc["restapi"]["cafile"].as_str(), Some(layout.ca().as_str()), "peers' REST APIs verified");
        assert!(doc["restapi"].get("verify_client").is_none(), "clients need no certificate");
        assert_eq!(doc["etcd3"]["protocol"].as_str(), Some("https"));
        assert_eq!(doc["etcd3"]["hosts"][0].as_str(), Some("10.0.0.9:2379"));
        let dcs = &doc["bootstrap"]["dcs"];
        assert_eq!(dcs["failsafe_mode"].as_bool(), Some(true));
        assert_eq!(dcs["synchronous_mode"].as_bool(), Some(true));
        assert_eq!(dcs["postgresql"]["use_pg_rewind"].as_bool(), Some(true));
        assert_eq!(dcs["postgresql"]["parameters"]["work_mem"].as_str(), Some("8MB"));
        const { assert!(TTL >= LOOP_WAIT + 2 * RETRY_TIMEOUT, "Patroni refuses other timings") };
        assert_eq!(doc["bootstrap"]["initdb"][0].as_str(), Some("data-checksums"));
        let pg = &doc["postgresql"];
        assert_eq!(pg["listen"].as_str(), Some("10.0.0.1:20000"));
        assert_eq!(pg["authentication"]["superuser"]["password"].as_str(), Some("su\"pw"));
        assert_eq!(pg["parameters"]["ssl"].as_str(), Some("on"));
        assert_eq!(pg["bin_dir"].as_str(), Some("/usr/lib/postgresql/15/bin"));
        assert!(pg["parameters"].get("archive_mode").is_none(), "no archiving without a repository");
        assert!(pg.get("callbacks").is_none(), "nothing to archive on promotion");
        assert!(doc["bootstrap"].get("method").is_none(), "initdb");
    }

    #[test]
    fn a_member_with_a_repository_archives_into_its_stanza_and_a_restored_one_bootstraps_from_it() {
        let layout = MemberLayout::new("/b/pg/abc-1");
        let me = peer("db-1", "10.0.0.1", 20000);
        let (params, etcd) = (BTreeMap::new(), vec!["10.0.0.9:2379".to_string()]);
        let restore = "/usr/bin/pgbackrest --stanza=src restore";
        let yml = patroni_yml(&PatroniInput {
            scope: "scope-id",
            member: &me,
            layout: &layout,
            version: "15",
            etcd_hosts: &etcd,
            sync: false,
            params: &params,
            passwords: &passwords(),
            backup_stanza: Some("scope-id"),
            restore_command: Some(restore),
            peers: std::slice::from_ref(&me),
            allow: &[],
        });
        let doc: serde_yaml::Value = serde_yaml::from_str(&yml).unwrap();
        let pg = &doc["postgresql"];
        assert_eq!(pg["parameters"]["archive_mode"].as_str(), Some("on"));
        let archive = pg["parameters"]["archive_command"].as_str().unwrap();
        assert!(
            archive.contains("--config=/b/pg/abc-1/pgbackrest.conf --stanza=scope-id archive-push %p"),
            "{archive}"
        );
        let fetch = pg["recovery_conf"]["restore_command"].as_str().unwrap();
        assert!(fetch.ends_with("--stanza=scope-id archive-get %f \"%p\""), "{fetch}");
        assert_eq!(pg["callbacks"]["on_role_change"].as_str(), Some("/bin/bash /b/pg/abc-1/archive-leftovers.sh"));
        assert_eq!(doc["bootstrap"]["method"].as_str(), Some("pgbackrest"));
        assert_eq!(doc["bootstrap"]["pgbackrest"]["command"].as_str(), Some(restore));
        assert_eq!(doc["bootstrap"]["pgbackrest"]["keep_existing_recovery_conf"].as_bool(), Some(true));
        assert_eq!(doc["bootstrap"]["pgbackrest"]["no_params"].as_bool(), Some(true));
    }

    /// Runs Debian's Patroni (installed by `scripts/install-deps.sh`): the launcher starts it
    /// and, on 3.0.2, replaces the leader-key update.
    #[test]
    fn patroni_runs_through_the_launcher_with_its_leader_update_mended() {
        let argv = patroni_argv(&MemberLayout::new("/b/pg/abc-1"));
        assert_eq!(argv.last().map(String::as_str), Some("/b/pg/abc-1/patroni.yml"));
        let run = |code: &str, arg: &str| {
            let out = std::process::Command::new(&argv[0]).args(["-c", code, arg]).output().expect("run python3");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let version = run(&argv[2], "--version");
        assert!(version.starts_with("patroni 3."), "{version}");
        let main = "from patroni.__main__ import main\nsys.exit(main())\n";
        assert!(PATRONI_LAUNCHER.ends_with(main));
        let probe = PATRONI_LAUNCHER.replace(
            main,
            "from patroni.dcs.etcd3 import Etcd3\nprint(globals().get('_update_leader') is Etcd3._update_leader)\n",
        );
        let replaced = run(&probe, "") == "True";
        assert_eq!(replaced, version == "patroni 3.0.2", "replaced on 3.0.2 only ({version})");
    }

    #[test]
    fn haproxy_routes_by_patroni_health_over_tls() {
        let layout = MemberLayout::new("/b/pg/abc-1");
        let members = [peer("db-1", "10.0.0.1", 20000), peer("db-2", "10.0.0.2", 21000)];
        let allow = vec!["192.168.7.0/24".to_string(), "fd00::/8".to_string()];
        let cfg = haproxy_cfg(&layout, &members[0], &members, &allow);
        let acl = "    tcp-request connection reject unless { src 127.0.0.1/32 ::1/128 10.0.0.1/32 10.0.0.2/32 \
                   192.168.7.0/24 fd00::/8 }\n";
        assert!(cfg.contains(&format!("bind 10.0.0.1:20002\n{acl}    default_backend primary")), "{cfg}");
        assert!(
            cfg.contains(&format!("bind 10.0.0.1:20003\n{acl}    use_backend replicas if {{ nbsrv(replicas) gt 0 }}"))
        );
        assert!(cfg.contains("option httpchk GET /primary"));
        assert!(cfg.contains("option httpchk GET /replica"));
        assert!(cfg.contains("server db-2 10.0.0.2:21000 check port 21001"));
        assert!(cfg.contains("check-ssl verify required ca-file /b/pg/abc-1/tls/ca.crt"));
        assert_eq!(cfg.matches("server db-1 ").count(), 2);
    }

    #[test]
    fn pg_hba_lets_clients_in_only_from_the_allow_list() {
        let members =
            [peer("db-1", "10.0.0.1", 20000), peer("db-2", "10.0.0.2", 21000), peer("db-3", "10.0.0.2", 22000)];
        let allow = vec!["192.168.7.0/24".to_string(), "fd00::/8".to_string()];
        let hba = pg_hba(&allow, &members);
        let want = [
            "local all postgres peer",
            "local all all scram-sha-256",
            "host all all 127.0.0.1/32 scram-sha-256",
            "host all all ::1/128 scram-sha-256",
            "host replication replicator 127.0.0.1/32 scram-sha-256",
            "hostssl replication replicator 10.0.0.1/32 scram-sha-256",
            "hostssl replication replicator 10.0.0.2/32 scram-sha-256",
            "hostssl all all 10.0.0.1/32 scram-sha-256",
            "hostssl all all 10.0.0.2/32 scram-sha-256",
            "hostssl all all 192.168.7.0/24 scram-sha-256",
            "hostssl all all fd00::/8 scram-sha-256",
        ];
        assert_eq!(hba, want);
        assert!(!hba.iter().any(|l| l.contains("0.0.0.0/0") || l.contains("::/0")), "nothing open to the world");
        // An empty list leaves the members and loopback only; 0.0.0.0/0 must be asked for.
        let closed = pg_hba(&[], &members);
        assert_eq!(closed.len(), want.len() - 2);
        let open = pg_hba(&["0.0.0.0/0".to_string()], &members);
        assert_eq!(open.last().map(String::as_str), Some("hostssl all all 0.0.0.0/0 scram-sha-256"));
        // The rendered patroni.yml carries them.
        let layout = MemberLayout::new("/b/pg/abc-1");
        let (params, etcd) = (BTreeMap::new(), vec!["10.0.0.9:2379".to_string()]);
        let yml = patroni_yml(&PatroniInput {
            scope: "s",
            member: &members[0],
            layout: &layout,
            version: "15",
            etcd_hosts: &etcd,
            sync: false,
            params: &params,
            passwords: &passwords(),
            backup_stanza: None,
            restore_command: None,
            peers: &members,
            allow: &allow,
        });
        let doc: serde_yaml::Value = serde_yaml::from_str(&yml).unwrap();
        let lines: Vec<&str> =
            doc["postgresql"]["pg_hba"].as_sequence().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn etcd_runs_a_static_tls_cluster() {
        let all: Vec<EtcdMember> = (0..3)
            .map(|i| EtcdMember {
                name: format!("e{i}"),
                address: format!("10.0.0.{i}"),
                client_port: 2379,
                peer_port: 2380,
            })
            .collect();
        let argv = etcd_argv(&EtcdLayout { dir: "/b/etcd/e1".into() }, &all[1], &all, "tok");
        assert!(argv.contains(
            &"--initial-cluster=e0=https://10.0.0.0:2380,e1=https://10.0.0.1:2380,e2=https://10.0.0.2:2380".to_string()
        ));
        assert!(argv.contains(&"--listen-client-urls=https://10.0.0.1:2379".to_string()));
        assert!(argv.contains(&"--client-cert-auth".to_string()));
        assert!(argv.contains(&"--peer-client-cert-auth".to_string()));
    }

    #[test]
    fn pgbouncer_users_quote_their_values() {
        assert_eq!(pgbouncer_users("app", "p\"w"), "\"app\" \"p\"\"w\"\n");
        let ini = pgbouncer_ini(&MemberLayout::new("/m"), &peer("db-1", "10.0.0.1", 20000), 20004);
        assert!(ini.contains("* = host=10.0.0.1 port=20002"));
        assert!(ini.contains("listen_port = 20004"));
        assert!(ini.contains("auth_type = hba\nauth_hba_file = /m/pgbouncer-hba.conf\n"));
        let hba = pgbouncer_hba(&["192.168.7.0/24".to_string()], &[peer("db-1", "10.0.0.1", 20000)]);
        assert_eq!(
            hba,
            "# Written by sovdb; changes are overwritten.\nhost all all 127.0.0.1/32 scram-sha-256\n\
             host all all ::1/128 scram-sha-256\nhostssl all all 10.0.0.1/32 scram-sha-256\n\
             hostssl all all 192.168.7.0/24 scram-sha-256\n"
        );
    }
}
