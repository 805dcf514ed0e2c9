//! pgBackRest for a member: its configuration file, the commands PostgreSQL and Patroni
//! run (WAL archiving, fetching WAL, restoring a new cluster from a repository), the
//! commands the control plane runs through the agent (stanza-create, check, backup, info),
//! and the reading of `info`'s JSON.
//!
//! A cluster's stanza is its scope (the cluster's ID), so a re-created cluster of the same
//! name never meets the old one's backups. Every member has its own configuration file
//! (`pgbackrest.conf` in its directory: its data directory, port and socket differ), and
//! every command names it with `--config`, so nothing depends on `/etc/pgbackrest`.

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use sovdb_types::{Backup, BackupType, UriStyle};

use crate::render::{MemberLayout, SUPERUSER};

pub const PGBACKREST: &str = "/usr/bin/pgbackrest";
/// How many full backups a repository keeps for a stanza (older ones and the WAL only
/// they need are expired after each backup) unless the cluster's policy says otherwise.
pub const DEFAULT_RETENTION_FULL: u32 = 2;
/// Seconds after which PostgreSQL switches to a new WAL segment even when little was
/// written, so a restore to a point in time can reach within about a minute of it.
pub const ARCHIVE_TIMEOUT: u32 = 60;

/// Where a repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoTarget {
    /// A directory on the member's own host.
    Posix { path: String },
    /// A directory on another host, through that host's pgBackRest TLS server (see
    /// [`server_conf`]): the database host's pgBackRest connects with the stanza's client
    /// certificate, and the server's side reads the repository's settings (its path, its
    /// passphrase) from `config` on that host, so neither is on the database host.
    Remote {
        /// The repository host's address, as its server certificate names it.
        address: String,
        port: u16,
        /// The repository's settings on the repository host ([`repo_host_conf`]).
        config: String,
        tls: TlsFiles,
    },
    S3 {
        /// `host` or `host:port`.
        endpoint: String,
        bucket: String,
        region: String,
        uri_style: UriStyle,
        /// The prefix in the bucket.
        path: String,
        /// A file with the CA that signed the endpoint's certificate (the system's CAs
        /// when absent).
        ca_file: Option<String>,
    },
}

/// The files of a TLS client or server certificate for pgBackRest: the certificate, its
/// key, and the installation CA that the other side's certificate must be signed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

/// A repository as one member's pgBackRest reaches it, with its secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct RepoAccess {
    pub target: RepoTarget,
    /// aes-256-cbc passphrase; none: not encrypted.
    pub cipher_pass: Option<String>,
    /// S3 access key ID and secret.
    pub s3_key: Option<(String, String)>,
    pub retention_full: u32,
}

impl std::fmt::Debug for RepoAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoAccess")
            .field("target", &self.target)
            .field("encrypted", &self.cipher_pass.is_some())
            .field("retention_full", &self.retention_full)
            .finish_non_exhaustive()
    }
}

/// A member's files for pgBackRest (beside [`MemberLayout`]'s).
impl MemberLayout {
    pub fn pgbackrest_conf(&self) -> String {
        format!("{}/pgbackrest.conf", self.dir)
    }
    /// The configuration a new cluster's first member restores with (the source's
    /// repository and stanza); removed once the cluster is ready.
    pub fn pgbackrest_restore_conf(&self) -> String {
        format!("{}/pgbackrest-restore.conf", self.dir)
    }
    pub fn pgbackrest_log_dir(&self) -> String {
        format!("{}/log/pgbackrest", self.dir)
    }
    /// pgBackRest's lock files: per member, since several members may share a host.
    pub fn pgbackrest_lock_dir(&self) -> String {
        format!("{}/run/pgbackrest", self.dir)
    }
    /// Patroni's `on_role_change` callback: see [`archive_leftovers_script`].
    pub fn archive_leftovers_script(&self) -> String {
        format!("{}/archive-leftovers.sh", self.dir)
    }
}

/// One member's `pgbackrest.conf` (0600: it holds the passphrase and S3 keys): the
/// repository in `[global]`, the member's PostgreSQL in `[<stanza>]`.
pub fn pgbackrest_conf(layout: &MemberLayout, stanza: &str, pg_port: u16, repo: &RepoAccess) -> String {
    let mut out = global_section(layout, repo);
    out.push_str(&format!("\n[{stanza}]\n"));
    out.push_str(&format!(
        "pg1-path={}\npg1-port={pg_port}\npg1-socket-path={}\npg1-user={SUPERUSER}\n",
        layout.data(),
        layout.run_dir()
    ));
    out
}

/// A PostgreSQL on another host, as a repository host's pgBackRest reaches it: through
/// that host's TLS server ([`server_conf`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePg {
    pub address: String,
    /// The TLS server's port on that host.
    pub server_port: u16,
    /// The member's own pgBackRest configuration on that host.
    pub config: String,
    /// The member's directory layout there (its data directory and socket).
    pub layout: MemberLayout,
    pub pg_port: u16,
    /// This side's client certificate.
    pub tls: TlsFiles,
}

/// pgBackRest's configuration on a posix repository's own host for a command that
/// pgBackRest runs only there (`backup` and its `expire`) when the cluster's primary is
/// on another host: the repository in `repo` (a local directory), the database in `pg`.
pub fn repo_host_backup_conf(layout: &MemberLayout, stanza: &str, repo: &RepoAccess, pg: &RemotePg) -> String {
    let mut out = global_section(layout, repo);
    out.push_str(&format!("\n[{stanza}]\n"));
    for (k, v) in [
        ("pg1-host", pg.address.clone()),
        ("pg1-host-type", "tls".into()),
        ("pg1-host-port", pg.server_port.to_string()),
        ("pg1-host-config", pg.config.clone()),
        ("pg1-host-cert-file", pg.tls.cert.clone()),
        ("pg1-host-key-file", pg.tls.key.clone()),
        ("pg1-host-ca-file", pg.tls.ca.clone()),
        ("pg1-path", pg.layout.data()),
        ("pg1-port", pg.pg_port.to_string()),
        ("pg1-socket-path", pg.layout.run_dir()),
        ("pg1-user", SUPERUSER.into()),
    ] {
        out.push_str(&format!("{k}={v}\n"));
    }
    out
}

/// The repository's own settings on a posix repository's host, which the TLS server's
/// side of a remote command reads (`repo1-host-config` on the database hosts): where the
/// directory is and its passphrase. Logs and locks go to `dir`.
pub fn repo_host_conf(dir: &str, repo: &RepoAccess) -> String {
    global_section(&MemberLayout::new(dir.to_string()), repo)
}

/// A host's pgBackRest TLS server: it listens on `address:port` with the host's
/// certificate and lets in only clients whose certificate the installation CA signed
/// and whose common name `auth` lists, each for the stanzas listed with it. pgBackRest
/// reads this file again on SIGHUP (new clients, renewed certificates) without dropping
/// anything.
pub fn server_conf(dir: &str, address: &str, port: u16, tls: &TlsFiles, auth: &[(String, Vec<String>)]) -> String {
    let mut out = String::from("# Written by sovdb; changes are overwritten.\n[global]\n");
    for (k, v) in [
        ("tls-server-address", address.to_string()),
        ("tls-server-port", port.to_string()),
        ("tls-server-cert-file", tls.cert.clone()),
        ("tls-server-key-file", tls.key.clone()),
        ("tls-server-ca-file", tls.ca.clone()),
    ] {
        out.push_str(&format!("{k}={v}\n"));
    }
    for (cn, stanzas) in auth {
        out.push_str(&format!("tls-server-auth={cn}={}\n", stanzas.join(",")));
    }
    out.push_str(&format!(
        "log-path={dir}/log\nlog-level-file=info\nlog-level-console=off\nlog-level-stderr=error\nlock-path={dir}/lock\n"
    ));
    out
}

/// `pgbackrest server` with the configuration in `config`.
pub fn server_argv(config: &str) -> Vec<String> {
    vec![PGBACKREST.into(), format!("--config={config}"), "server".into()]
}

/// The common name of the client certificate a stanza's commands present to TLS servers.
pub fn stanza_client_cn(stanza: &str) -> String {
    format!("sovdb-stanza-{stanza}")
}

/// Everything of a configuration but its stanza section.
fn global_section(layout: &MemberLayout, repo: &RepoAccess) -> String {
    let mut out = String::from("# Written by sovdb; changes are overwritten.\n[global]\n");
    let mut set = |k: &str, v: &str| {
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    };
    match &repo.target {
        RepoTarget::Posix { path } => {
            set("repo1-type", "posix");
            set("repo1-path", path);
        }
        RepoTarget::Remote { address, port, config, tls } => {
            set("repo1-host", address);
            set("repo1-host-type", "tls");
            set("repo1-host-port", &port.to_string());
            set("repo1-host-config", config);
            set("repo1-host-cert-file", &tls.cert);
            set("repo1-host-key-file", &tls.key);
            set("repo1-host-ca-file", &tls.ca);
        }
        RepoTarget::S3 { .. } => {
            for (k, v) in s3_options(&repo.target) {
                set(k, &v);
            }
            if let Some((key, secret)) = &repo.s3_key {
                set("repo1-s3-key", key);
                set("repo1-s3-key-secret", secret);
            }
        }
    }
    if let Some(pass) = &repo.cipher_pass {
        set("repo1-cipher-type", "aes-256-cbc");
        set("repo1-cipher-pass", pass);
    }
    set("repo1-retention-full", &repo.retention_full.to_string());
    set("compress-type", "zst");
    set("start-fast", "y");
    set("process-max", "2");
    set("log-path", &layout.pgbackrest_log_dir());
    set("log-level-file", "info");
    set("log-level-console", "warn");
    set("log-level-stderr", "error");
    set("lock-path", &layout.pgbackrest_lock_dir());
    out
}

/// The options that say where an S3 repository is (no secret among them), as
/// `pgbackrest.conf` and the command line both take them. Empty for a posix repository.
fn s3_options(target: &RepoTarget) -> Vec<(&'static str, String)> {
    let RepoTarget::S3 { endpoint, bucket, region, uri_style, path, ca_file } = target else { return Vec::new() };
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (endpoint.as_str(), None),
    };
    let mut o =
        vec![("repo1-type", "s3".to_string()), ("repo1-path", path.clone()), ("repo1-s3-endpoint", host.into())];
    if let Some(p) = port {
        o.push(("repo1-storage-port", p.into()));
    }
    o.push(("repo1-s3-bucket", bucket.clone()));
    o.push(("repo1-s3-region", region.clone()));
    let style = match uri_style {
        UriStyle::Host => "host",
        UriStyle::Path => "path",
    };
    o.push(("repo1-s3-uri-style", style.into()));
    if let Some(ca) = ca_file {
        o.push(("repo1-storage-ca-file", ca.clone()));
    }
    o
}

/// pgBackRest's `--io-timeout` for [`s3_check_argv`]: how long one connect or read may
/// take. pgBackRest retries within it at two levels, so an endpoint that refuses
/// connections fails after about four times this (8 s), one that never answers after
/// about six (12 s), not after minutes as with the default of 60 s. Long enough for a TLS
/// handshake across continents.
pub const S3_CHECK_IO_TIMEOUT_SECS: u32 = 2;

/// A check that an S3 repository can be used with its keys, before it is recorded: pgBackRest
/// lists `backup/` under the repository's prefix (where the stanzas will be), which needs
/// the endpoint to answer over HTTPS with a certificate the CA file vouches for, the keys
/// to be accepted and the bucket to exist. Listing `backup/` rather than the prefix itself:
/// `repo-ls` first asks for the path it lists as an object, and a key allowed only under
/// the prefix (`prefix/*`) may not ask for the prefix.
///
/// No configuration file (`--no-config`: nothing on the host can change what is checked);
/// the keys go in the environment ([`s3_check_env`]), never on the command line. Nothing
/// is written anywhere: no lock, no log file.
pub fn s3_check_argv(target: &RepoTarget) -> Vec<String> {
    let mut v = vec![
        PGBACKREST.to_string(),
        "--no-config".into(),
        format!("--io-timeout={S3_CHECK_IO_TIMEOUT_SECS}"),
        "--log-level-console=off".into(),
        "--log-level-stderr=error".into(),
        "--log-level-file=off".into(),
        "--output=json".into(),
    ];
    v.extend(s3_options(target).into_iter().map(|(k, val)| format!("--{k}={val}")));
    v.extend(["repo-ls".into(), "backup".into()]);
    v
}

/// The environment that gives [`s3_check_argv`] the keys (pgBackRest reads any option
/// from `PGBACKREST_<OPTION>`).
pub fn s3_check_env(key: &str, secret: &str) -> std::collections::BTreeMap<String, String> {
    [("PGBACKREST_REPO1_S3_KEY", key), ("PGBACKREST_REPO1_S3_KEY_SECRET", secret)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Why an S3 check failed, read from pgBackRest's exit code and first error line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3CheckFailure {
    /// No connection: refused, timed out or a name that does not resolve (error 49).
    Unreachable { detail: String },
    /// HTTP 403: the keys are wrong, or not allowed to list the bucket.
    AccessDenied,
    /// HTTP 404: no such bucket.
    NoBucket,
    /// Another HTTP error status, e.g. `400 (Bad Request)` (a wrong region).
    Http { status: String },
    /// The endpoint's certificate is not trusted, or not for its name (error 95).
    Certificate { detail: String },
    /// Anything else: a TLS error (the endpoint speaks plain HTTP), a server error (5xx).
    Other { detail: String },
}

/// Reads a failed [`s3_check_argv`]: its exit `code` and `stderr`. `detail`s are
/// pgBackRest's own words (it redacts the signature and never prints the keys).
pub fn s3_check_failure(code: Option<i32>, stderr: &str) -> S3CheckFailure {
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    // `ERROR: [049]: unable to connect to ...` → `unable to connect to ...`
    let detail = match first.split_once("]: ") {
        Some((head, rest)) if head.starts_with("ERROR: [") => rest.to_string(),
        _ => first.to_string(),
    };
    let detail = if detail.is_empty() { format!("pgBackRest ended with exit code {code:?}") } else { detail };
    match code {
        Some(49) => S3CheckFailure::Unreachable { detail },
        Some(95) => S3CheckFailure::Certificate { detail },
        // `HTTP request failed with 403 (Forbidden):`
        Some(39) => match detail.split_once("failed with ") {
            Some((_, rest)) => {
                let status = rest.trim_end_matches(':').to_string();
                if status.starts_with("403") {
                    S3CheckFailure::AccessDenied
                } else if status.starts_with("404") {
                    S3CheckFailure::NoBucket
                } else {
                    S3CheckFailure::Http { status }
                }
            }
            None => S3CheckFailure::Other { detail },
        },
        _ => S3CheckFailure::Other { detail },
    }
}

/// The start of every pgBackRest command of a member.
fn base(conf: &str, stanza: &str) -> Vec<String> {
    vec![PGBACKREST.into(), format!("--config={conf}"), format!("--stanza={stanza}")]
}

/// PostgreSQL's `archive_command` on a member.
pub fn archive_command(layout: &MemberLayout, stanza: &str) -> String {
    format!("{} archive-push %p", base(&layout.pgbackrest_conf(), stanza).join(" "))
}

/// PostgreSQL's `restore_command` on a member (a replica fetches WAL it can't stream).
pub fn restore_command(layout: &MemberLayout, stanza: &str) -> String {
    format!("{} archive-get %f \"%p\"", base(&layout.pgbackrest_conf(), stanza).join(" "))
}

/// Any pgBackRest command of a member: `args` after its configuration and stanza.
pub fn command_argv(layout: &MemberLayout, stanza: &str, args: &[&str]) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// Patroni's `on_role_change` callback on a member that archives (Patroni appends the
/// action, the role and the scope).
///
/// Why: a replica marks the WAL it streams as archived without archiving it
/// (`archive_mode = on`; `always` would have every member push every segment, which
/// pgBackRest refuses by default). When a primary dies with complete segments its archiver
/// has not pushed yet (an archiver behind under load, a repository briefly unreachable),
/// the promoted replica holds them, but nothing ever archives them: the repository has a
/// hole before the new timeline, a restore to a time after the failover stops there with
/// an error, and `--latest` ends early without one. So, when PostgreSQL is promoted, this
/// pushes the complete segments of the timeline it came from that it still holds, up to
/// the segment where that timeline ended (from the newest history file; `.partial` and
/// recycled files are left alone); pgBackRest skips those the repository has already.
/// Patroni calls it right after `pg_ctl promote`, so it first waits for the promotion to
/// end (at most two minutes).
pub fn archive_leftovers_script(layout: &MemberLayout, stanza: &str, pg_port: u16, version: &str) -> String {
    format!(
        "#!/bin/bash\n# Written by sovdb; changes are overwritten. See sovdb_postgres::backup::archive_leftovers_script.\n\
         wal={data}/pg_wal\n\
         psql=({bin}/psql -h {run} -p {pg_port} -U {SUPERUSER} -d postgres -XAtq)\n\
         push=({push})\n{LEFTOVERS_BODY}",
        data = layout.data(),
        bin = crate::bin_dir(version),
        run = layout.run_dir(),
        push = base(&layout.pgbackrest_conf(), stanza).join(" ") + " archive-push",
    )
}

/// The body of [`archive_leftovers_script`], after its settings.
const LEFTOVERS_BODY: &str = r#"set -u
[ "${2:-}" = master ] || [ "${2:-}" = primary ] || exit 0
for _ in $(seq 120); do
  [ "$("${psql[@]}" -c "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ] && break
  sleep 1
done
history=$(ls "$wal" | grep -E '^[0-9A-F]{8}\.history$' | sort | tail -n 1)
[ -n "$history" ] || exit 0
# Its last entry: the timeline this one branched from, and the LSN where that one ended.
read -r parent lsn _ < <(grep -E '^[0-9]+[[:space:]]' "$wal/$history" | tail -n 1)
[ -n "${lsn:-}" ] || exit 0
# The last segment with WAL of the parent (at a segment boundary: the one before).
last=$("${psql[@]}" -c "SELECT pg_walfile_name(\$\$$lsn\$\$)") || exit 1
prefix=$(printf %08X "$parent")
for f in $(ls "$wal" | grep -E "^$prefix[0-9A-F]{16}\$" | sort); do
  [[ ${f:8} > ${last:8} ]] && continue
  "${push[@]}" "$wal/$f" || echo "archive-leftovers: $f was not pushed" >&2
done
"#;

/// `stanza-create`: makes the stanza in the repository (again: a no-op).
pub fn stanza_create_argv(layout: &MemberLayout, stanza: &str) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.push("stanza-create".into());
    v
}

/// `check`: on the primary, switches to a new WAL segment and waits until it is archived.
pub fn check_argv(layout: &MemberLayout, stanza: &str) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.extend(["--archive-timeout=60".into(), "check".into()]);
    v
}

/// `backup` on the primary, annotated with the operation that asked for it (so a retried
/// step finds the backup it already took). Afterwards pgBackRest expires what the
/// cluster's retention (`retention_full` full backups) no longer keeps.
pub fn backup_argv(
    layout: &MemberLayout,
    stanza: &str,
    kind: BackupType,
    operation: &str,
    retention_full: u32,
) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.extend([
        format!("--type={}", kind.as_str()),
        format!("--annotation={ANNOTATION}={operation}"),
        format!("--repo1-retention-full={retention_full}"),
        "backup".into(),
    ]);
    v
}

/// The annotation key that names the operation a backup was taken by.
pub const ANNOTATION: &str = "sovdb-operation";

/// `info` as JSON.
pub fn info_argv(layout: &MemberLayout, stanza: &str) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.extend(["--output=json".into(), "info".into()]);
    v
}

/// Where a restore stops.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "at")]
pub enum RestoreTarget {
    /// The end of the archived WAL.
    Latest,
    Time(DateTime<Utc>),
    Lsn(String),
}

/// The command Patroni runs to bootstrap a new cluster's first member from the source's
/// stanza (Patroni's custom bootstrap, `no_params`): pgBackRest restores into the data
/// directory and leaves the recovery settings (`restore_command` reading the source's
/// stanza, the target, `recovery_target_action=promote`), which Patroni keeps for the
/// first start and removes once the member is promoted. The source's repository is only
/// read: the new member archives into its own stanza.
///
/// `set` names the backup to start from (the newest that ended before the target); none:
/// the newest.
pub fn restore_command_line(
    layout: &MemberLayout,
    source_stanza: &str,
    target: &RestoreTarget,
    set: Option<&str>,
) -> String {
    let mut v = base(&layout.pgbackrest_restore_conf(), source_stanza);
    v.push(format!("--pg1-path={}", layout.data()));
    if let Some(set) = set {
        v.push(format!("--set={set}"));
    }
    match target {
        RestoreTarget::Latest => v.push("--type=default".into()),
        RestoreTarget::Time(t) => {
            v.push("--type=time".into());
            v.push(format!("'--target={}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")));
            v.push("--target-action=promote".into());
        }
        RestoreTarget::Lsn(lsn) => {
            v.push("--type=lsn".into());
            v.push(format!("--target={lsn}"));
            v.push("--target-action=promote".into());
        }
    }
    v.push("restore".into());
    v.join(" ")
}

/// `verify`: reads every file of the stanza's backups and archived WAL in the repository
/// and checks it against the checksum recorded when it was written.
pub fn verify_argv(layout: &MemberLayout, stanza: &str) -> Vec<String> {
    command_argv(layout, stanza, &["verify"])
}

/// A restore drill's `restore` of backup `set` into the drill's data directory: recovery
/// stops as soon as the database is consistent, then promotes.
pub fn drill_restore_argv(layout: &MemberLayout, stanza: &str, set: &str) -> Vec<String> {
    let mut v = base(&layout.pgbackrest_conf(), stanza);
    v.extend([format!("--set={set}"), "--type=immediate".into(), "--target-action=promote".into(), "restore".into()]);
    v
}

/// The port a drill's PostgreSQL names its socket with (it listens on no address: the
/// socket is in the drill's own directory, so this can't clash with anything).
pub const DRILL_PORT: u16 = 5432;

/// A drill's PostgreSQL configuration, used instead of the restored `postgresql.conf`
/// (Patroni's, which names the source member's files and ports): only a Unix socket in
/// the drill's directory, no archiving, no hot standby (so the source's connection limits
/// don't matter), small memory.
pub fn drill_postgresql_conf(layout: &MemberLayout) -> String {
    let dir = &layout.dir;
    format!(
        "# Written by sovdb for a restore drill.\n\
         hba_file = '{dir}/pg_hba.conf'\n\
         ident_file = '{dir}/pg_ident.conf'\n\
         listen_addresses = ''\n\
         port = {DRILL_PORT}\n\
         unix_socket_directories = '{run}'\n\
         hot_standby = off\n\
         archive_mode = off\n\
         shared_buffers = '64MB'\n\
         max_connections = 20\n\
         ssl = off\n\
         logging_collector = off\n\
         shared_preload_libraries = ''\n",
        run = layout.run_dir()
    )
}

/// A drill's `pg_hba.conf`: only local connections, whose socket only the database user
/// can reach.
pub const DRILL_HBA: &str = "local all all trust\n";

/// Whether `s` is an LSN as PostgreSQL writes them (`16/B374D848`).
pub fn is_lsn(s: &str) -> bool {
    let Some((hi, lo)) = s.split_once('/') else { return false };
    let hex = |p: &str| !p.is_empty() && p.len() <= 8 && p.chars().all(|c| c.is_ascii_hexdigit());
    hex(hi) && hex(lo)
}

/// What `info --output=json` says of one stanza.
#[derive(Debug, Clone, PartialEq)]
pub struct StanzaInfo {
    /// pgBackRest's status (`ok`, `no valid backups`, `missing stanza path`, …).
    pub status: String,
    pub backups: Vec<BackupInfo>,
    /// The oldest and newest archived WAL segments of the current database.
    pub wal_min: Option<String>,
    pub wal_max: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    pub backup: Backup,
    /// The operation that took it (its annotation).
    pub operation: Option<String>,
    /// `lsn.start`/`lsn.stop` when pgBackRest reports them.
    pub lsn_stop: Option<String>,
}

#[derive(Deserialize)]
struct RawStanza {
    #[serde(default)]
    archive: Vec<RawArchive>,
    #[serde(default)]
    backup: Vec<RawBackup>,
    status: RawStatus,
}
#[derive(Deserialize)]
struct RawArchive {
    min: Option<String>,
    max: Option<String>,
}
#[derive(Deserialize)]
struct RawStatus {
    message: String,
}
#[derive(Deserialize)]
struct RawBackup {
    label: String,
    #[serde(rename = "type")]
    kind: String,
    timestamp: RawRange<i64>,
    archive: RawRange<Option<String>>,
    info: RawSize,
    prior: Option<String>,
    #[serde(default)]
    annotation: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    lsn: Option<RawRange<Option<String>>>,
    #[serde(default)]
    error: Option<bool>,
}
#[derive(Deserialize)]
struct RawRange<T> {
    start: T,
    stop: T,
}
#[derive(Deserialize)]
struct RawSize {
    size: u64,
    repository: RawRepoSize,
}
#[derive(Deserialize)]
struct RawRepoSize {
    delta: u64,
}

/// Reads `info --output=json` for `stanza`; `repository` names the repository in the
/// backups returned.
pub fn parse_info(json: &str, stanza: &str, repository: &str) -> Result<StanzaInfo, String> {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| format!("pgBackRest's info is not the JSON expected: {e}"))?;
    let Some(raw) = all.into_iter().find(|s| s["name"] == stanza) else {
        return Ok(StanzaInfo { status: "missing stanza".into(), backups: vec![], wal_min: None, wal_max: None });
    };
    let raw: RawStanza =
        serde_json::from_value(raw).map_err(|e| format!("pgBackRest's info is not the JSON expected: {e}"))?;
    let time = |t: i64| Utc.timestamp_opt(t, 0).single().ok_or_else(|| format!("a time out of range: {t}"));
    let mut backups = Vec::new();
    for b in raw.backup {
        let kind = match b.kind.as_str() {
            "full" => BackupType::Full,
            "diff" => BackupType::Diff,
            "incr" => BackupType::Incr,
            other => return Err(format!("a backup of unknown type {other}")),
        };
        let operation = b.annotation.as_ref().and_then(|a| a.get(ANNOTATION)).cloned();
        backups.push(BackupInfo {
            backup: Backup {
                id: b.label,
                kind,
                started_at: time(b.timestamp.start)?,
                stopped_at: time(b.timestamp.stop)?,
                size: b.info.size,
                repo_size: b.info.repository.delta,
                wal_start: b.archive.start.unwrap_or_default(),
                wal_stop: b.archive.stop.unwrap_or_default(),
                prior: b.prior,
                repository: repository.to_string(),
                error: b.error.unwrap_or(false),
            },
            operation,
            lsn_stop: b.lsn.and_then(|l| l.stop),
        });
    }
    let archive = raw.archive.last();
    Ok(StanzaInfo {
        status: raw.status.message,
        backups,
        wal_min: archive.and_then(|a| a.min.clone()),
        wal_max: archive.and_then(|a| a.max.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posix() -> RepoAccess {
        RepoAccess {
            target: RepoTarget::Posix { path: "/srv/backups".into() },
            cipher_pass: Some("s3cr3t-pass".into()),
            s3_key: None,
            retention_full: 2,
        }
    }

    #[test]
    fn a_members_configuration_names_its_repository_and_its_postgres() {
        let l = MemberLayout::new("/b/pg/abc-1");
        let conf = pgbackrest_conf(&l, "0190", 5433, &posix());
        for line in [
            "[global]",
            "repo1-type=posix",
            "repo1-path=/srv/backups",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=s3cr3t-pass",
            "repo1-retention-full=2",
            "compress-type=zst",
            "lock-path=/b/pg/abc-1/run/pgbackrest",
            "log-path=/b/pg/abc-1/log/pgbackrest",
            "[0190]",
            "pg1-path=/b/pg/abc-1/data",
            "pg1-port=5433",
            "pg1-socket-path=/b/pg/abc-1/run",
            "pg1-user=postgres",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        let plain = pgbackrest_conf(&l, "0190", 5433, &RepoAccess { cipher_pass: None, ..posix() });
        assert!(!plain.contains("cipher"), "{plain}");
        assert!(!format!("{:?}", posix()).contains("s3cr3t"), "Debug shows no secret");
    }

    fn tls(dir: &str) -> TlsFiles {
        TlsFiles { cert: format!("{dir}/c.crt"), key: format!("{dir}/c.key"), ca: format!("{dir}/ca.crt") }
    }

    #[test]
    fn a_remote_repository_is_reached_through_its_hosts_tls_server_without_its_secrets() {
        let l = MemberLayout::new("/b/pg/abc-1");
        let remote = RepoAccess {
            target: RepoTarget::Remote {
                address: "10.0.0.7".into(),
                port: 7010,
                config: "/r/pgbackrest-server/repo-1a2b.conf".into(),
                tls: tls("/b/pg/abc-1/tls"),
            },
            cipher_pass: None,
            ..posix()
        };
        let conf = pgbackrest_conf(&l, "0190", 5433, &remote);
        for line in [
            "repo1-host=10.0.0.7",
            "repo1-host-type=tls",
            "repo1-host-port=7010",
            "repo1-host-config=/r/pgbackrest-server/repo-1a2b.conf",
            "repo1-host-cert-file=/b/pg/abc-1/tls/c.crt",
            "repo1-host-key-file=/b/pg/abc-1/tls/c.key",
            "repo1-host-ca-file=/b/pg/abc-1/tls/ca.crt",
            "[0190]",
            "pg1-path=/b/pg/abc-1/data",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        assert!(!conf.contains("repo1-path") && !conf.contains("cipher"), "{conf}");

        // The repository host's side: the directory and the passphrase, no stanza.
        let side = repo_host_conf("/r/pgbackrest-server", &posix());
        assert!(side.contains("repo1-path=/srv/backups\n") && side.contains("repo1-cipher-pass=s3cr3t-pass\n"));
        assert!(side.contains("lock-path=/r/pgbackrest-server/run/pgbackrest\n") && !side.contains("[0190]"), "{side}");
    }

    #[test]
    fn a_backup_on_the_repository_host_reaches_the_primary_through_its_tls_server() {
        let scratch = MemberLayout::new("/r/scratch/backup-1");
        let pg = RemotePg {
            address: "10.0.0.5".into(),
            server_port: 7020,
            config: "/b/pg/abc-1/pgbackrest.conf".into(),
            layout: MemberLayout::new("/b/pg/abc-1"),
            pg_port: 5433,
            tls: tls("/r/scratch/backup-1/tls"),
        };
        let conf = repo_host_backup_conf(&scratch, "0190", &posix(), &pg);
        for line in [
            "repo1-path=/srv/backups",
            "lock-path=/r/scratch/backup-1/run/pgbackrest",
            "[0190]",
            "pg1-host=10.0.0.5",
            "pg1-host-type=tls",
            "pg1-host-port=7020",
            "pg1-host-config=/b/pg/abc-1/pgbackrest.conf",
            "pg1-host-cert-file=/r/scratch/backup-1/tls/c.crt",
            "pg1-path=/b/pg/abc-1/data",
            "pg1-port=5433",
            "pg1-socket-path=/b/pg/abc-1/run",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
    }

    #[test]
    fn a_tls_server_lets_in_each_stanzas_certificate_for_that_stanza_only() {
        let auth = vec![
            (stanza_client_cn("s1"), vec!["s1".to_string()]),
            (stanza_client_cn("s2"), vec!["s2".to_string(), "s3".to_string()]),
        ];
        let conf = server_conf("/h/pgbackrest-server", "10.0.0.7", 7010, &tls("/h/t"), &auth);
        for line in [
            "tls-server-address=10.0.0.7",
            "tls-server-port=7010",
            "tls-server-cert-file=/h/t/c.crt",
            "tls-server-ca-file=/h/t/ca.crt",
            "tls-server-auth=sovdb-stanza-s1=s1",
            "tls-server-auth=sovdb-stanza-s2=s2,s3",
            "lock-path=/h/pgbackrest-server/lock",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        assert!(!conf.contains('*'), "never every stanza: {conf}");
    }

    #[test]
    fn s3_takes_its_port_from_the_endpoint() {
        let l = MemberLayout::new("/b/pg/abc-1");
        let repo = RepoAccess {
            target: RepoTarget::S3 {
                endpoint: "127.0.0.1:9000".into(),
                bucket: "bk".into(),
                region: "eu-1".into(),
                uri_style: UriStyle::Path,
                path: "/sovdb".into(),
                ca_file: Some("/b/pg/abc-1/tls/s3-ca.crt".into()),
            },
            s3_key: Some(("AKID".into(), "SECRETKEY".into())),
            ..posix()
        };
        let conf = pgbackrest_conf(&l, "st", 5433, &repo);
        for line in [
            "repo1-type=s3",
            "repo1-s3-endpoint=127.0.0.1",
            "repo1-storage-port=9000",
            "repo1-s3-bucket=bk",
            "repo1-s3-region=eu-1",
            "repo1-s3-uri-style=path",
            "repo1-storage-ca-file=/b/pg/abc-1/tls/s3-ca.crt",
            "repo1-s3-key=AKID",
            "repo1-s3-key-secret=SECRETKEY",
            "repo1-path=/sovdb",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
    }

    #[test]
    fn the_s3_check_takes_its_keys_from_the_environment_and_writes_nothing() {
        let target = RepoTarget::S3 {
            endpoint: "127.0.0.1:9000".into(),
            bucket: "bk".into(),
            region: "eu-1".into(),
            uri_style: UriStyle::Path,
            path: "/sovdb".into(),
            ca_file: Some("/tmp/ca.crt".into()),
        };
        let argv = s3_check_argv(&target);
        assert_eq!(&argv[..3], [PGBACKREST, "--no-config", "--io-timeout=2"]);
        assert_eq!(&argv[argv.len() - 2..], ["repo-ls", "backup"]);
        for arg in [
            "--log-level-file=off",
            "--repo1-type=s3",
            "--repo1-path=/sovdb",
            "--repo1-s3-endpoint=127.0.0.1",
            "--repo1-storage-port=9000",
            "--repo1-s3-bucket=bk",
            "--repo1-s3-region=eu-1",
            "--repo1-s3-uri-style=path",
            "--repo1-storage-ca-file=/tmp/ca.crt",
        ] {
            assert!(argv.iter().any(|a| a == arg), "{arg} missing from {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.contains("key") || a.contains("lock")), "{argv:?}");
        let env = s3_check_env("AKID", "SECRETKEY");
        assert_eq!(env["PGBACKREST_REPO1_S3_KEY"], "AKID");
        assert_eq!(env["PGBACKREST_REPO1_S3_KEY_SECRET"], "SECRETKEY");
    }

    #[test]
    fn s3_check_failures_are_told_apart() {
        // pgBackRest 2.45's words against s3s-fs behind HAProxy.
        let forbidden = "ERROR: [039]: HTTP request failed with 403 (Forbidden):\n       *** Path/Query ***:\n       \
                         HEAD /bk/sovdb/backup\n       authorization: <redacted>\n";
        assert_eq!(s3_check_failure(Some(39), forbidden), S3CheckFailure::AccessDenied);
        let missing = "ERROR: [039]: HTTP request failed with 404 (Not Found):\n       *** Path/Query ***:\n       \
                       GET /nob/?delimiter=%2F\n       <Error><Code>NoSuchBucket</Code></Error>\n";
        assert_eq!(s3_check_failure(Some(39), missing), S3CheckFailure::NoBucket);
        let bad = "ERROR: [039]: HTTP request failed with 400 (Bad Request):\n  *** Path/Query ***:\n";
        assert_eq!(s3_check_failure(Some(39), bad), S3CheckFailure::Http { status: "400 (Bad Request)".into() });
        let refused = "ERROR: [049]: unable to connect to '127.0.0.1:19444': [111] Connection refused\n";
        assert_eq!(
            s3_check_failure(Some(49), refused),
            S3CheckFailure::Unreachable {
                detail: "unable to connect to '127.0.0.1:19444': [111] Connection refused".into()
            }
        );
        let untrusted = "ERROR: [095]: unable to verify certificate presented by '127.0.0.1:19443': [20] unable to \
                         get local issuer certificate\n";
        assert!(matches!(
            s3_check_failure(Some(95), untrusted),
            S3CheckFailure::Certificate { detail } if detail.starts_with("unable to verify certificate presented by")
        ));
        let plain = "ERROR: [101]: TLS error [1:167772427] wrong version number\n";
        assert_eq!(
            s3_check_failure(Some(101), plain),
            S3CheckFailure::Other { detail: "TLS error [1:167772427] wrong version number".into() }
        );
        assert!(matches!(s3_check_failure(None, ""), S3CheckFailure::Other { detail } if detail.contains("exit code")));
    }

    #[test]
    fn commands_name_the_members_configuration() {
        let l = MemberLayout::new("/b/pg/abc-1");
        assert_eq!(
            archive_command(&l, "st"),
            "/usr/bin/pgbackrest --config=/b/pg/abc-1/pgbackrest.conf --stanza=st archive-push %p"
        );
        assert!(restore_command(&l, "st").ends_with("--stanza=st archive-get %f \"%p\""));
        let d = drill_restore_argv(&l, "st", "20261121-101500F");
        assert_eq!(&d[3..], ["--set=20261121-101500F", "--type=immediate", "--target-action=promote", "restore"]);
        let conf = drill_postgresql_conf(&l);
        assert!(conf.contains("listen_addresses = ''") && conf.contains("unix_socket_directories = '/b/pg/abc-1/run'"));
        assert!(conf.contains("hba_file = '/b/pg/abc-1/pg_hba.conf'"), "{conf}");
        let b = backup_argv(&l, "st", BackupType::Incr, "op1", 3);
        assert_eq!(&b[3..], ["--type=incr", "--annotation=sovdb-operation=op1", "--repo1-retention-full=3", "backup"]);
        let t = Utc.with_ymd_and_hms(2026, 11, 21, 10, 15, 0).unwrap();
        let r = restore_command_line(&l, "src", &RestoreTarget::Time(t), Some("20261121-101500F"));
        assert!(r.contains("--set=20261121-101500F"), "{r}");
        assert!(
            r.contains("--config=/b/pg/abc-1/pgbackrest-restore.conf --stanza=src --pg1-path=/b/pg/abc-1/data"),
            "{r}"
        );
        assert!(
            r.contains("--type=time '--target=2026-11-21 10:15:00.000000+00' --target-action=promote restore"),
            "{r}"
        );
        let r = restore_command_line(&l, "src", &RestoreTarget::Lsn("0/3000060".into()), None);
        assert!(r.ends_with("--type=lsn --target=0/3000060 --target-action=promote restore"), "{r}");
        assert!(restore_command_line(&l, "src", &RestoreTarget::Latest, None).ends_with("--type=default restore"));
    }

    #[test]
    fn a_promoted_member_pushes_the_segments_of_its_parent_timeline_it_holds() {
        let l = MemberLayout::new("/b/pg/abc-1");
        let script = archive_leftovers_script(&l, "st", 5433, "15");
        for line in [
            "wal=/b/pg/abc-1/data/pg_wal",
            "psql=(/usr/lib/postgresql/15/bin/psql -h /b/pg/abc-1/run -p 5433 -U postgres -d postgres -XAtq)",
            "push=(/usr/bin/pgbackrest --config=/b/pg/abc-1/pgbackrest.conf --stanza=st archive-push)",
        ] {
            assert!(script.lines().any(|l| l == line), "{line} missing from:\n{script}");
        }
        let checked = std::process::Command::new("bash").args(["-n", "-c", &script]).output().unwrap();
        assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    }

    /// The script's selection, on a pg_wal made here: promoted to timeline 3 from 2 at
    /// 0/8000000 (a segment boundary), it pushes timeline 2's complete segments up to 7,
    /// not 1's, not a `.partial`, not a recycled file of 2 past the end, and does nothing
    /// on a replica. `psql` and pgBackRest are stand-ins that print what they are asked.
    #[test]
    fn the_script_pushes_only_the_parents_complete_segments() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        std::fs::create_dir(&wal).unwrap();
        for f in [
            "00000002.history",
            "00000003.history",
            "000000010000000000000004",
            "000000020000000000000006",
            "000000020000000000000007",
            "000000020000000000000008",
            "000000020000000000000008.partial",
            "000000030000000000000008",
        ] {
            std::fs::write(wal.join(f), "").unwrap();
        }
        std::fs::write(
            wal.join("00000003.history"),
            "1\t0/5000000\tno recovery target specified\n\n2\t0/8000000\tno recovery target specified\n",
        )
        .unwrap();
        let psql = dir.path().join("psql");
        // pg_is_in_recovery: f; pg_walfile_name('0/8000000') on timeline 3: segment 7.
        std::fs::write(&psql, "#!/bin/bash\ncase \"$*\" in *recovery*) echo f;; *'$$0/8000000$$'*) echo 000000030000000000000007;; *) exit 1;; esac\n").unwrap();
        let push = dir.path().join("push");
        std::fs::write(&push, "#!/bin/bash\necho \"pushed ${1##*/}\"\n").unwrap();
        for f in [&psql, &push] {
            std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        }
        let real = archive_leftovers_script(&MemberLayout::new("/nowhere"), "st", 5433, "15");
        let body = real.split_once("push=(").unwrap().1.split_once('\n').unwrap().1;
        let script = format!("wal={}\npsql=({})\npush=({})\n{body}", wal.display(), psql.display(), push.display());
        let run = |role: &str| {
            let out = std::process::Command::new("bash")
                .args(["-c", &script, "archive-leftovers.sh", "on_role_change", role, "scope"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(run("master"), "pushed 000000020000000000000006\npushed 000000020000000000000007\n");
        assert_eq!(run("primary"), run("master"));
        assert_eq!(run("replica"), "");
    }

    #[test]
    fn lsns_are_recognised() {
        assert!(is_lsn("16/B374D848"));
        assert!(is_lsn("0/0"));
        for bad in ["", "16", "/1", "1/", "g/1", "123456789/1", "1/2/3", "1 /2"] {
            assert!(!is_lsn(bad), "{bad}");
        }
    }

    #[test]
    fn info_reads_backups_and_the_archive() {
        let json = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000005","min":"000000010000000000000001"}],
          "backup":[
            {"annotation":{"sovdb-operation":"op-1"},"archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},
             "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,
             "info":{"delta":23000000,"repository":{"delta":3000000,"size":3000000},"size":23000000},
             "label":"20261121-101500F","lsn":{"start":"0/2000028","stop":"0/2000100"},"prior":null,"reference":null,
             "timestamp":{"start":1795256100,"stop":1795256103},"type":"full"},
            {"archive":{"start":"000000010000000000000004","stop":"000000010000000000000004"},
             "backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,
             "info":{"delta":8000,"repository":{"delta":1000,"size":3001000},"size":23000000},
             "label":"20261121-101500F_20261121-102000I","prior":"20261121-101500F","reference":["20261121-101500F"],
             "timestamp":{"start":1795256400,"stop":1795256401},"type":"incr"}],
          "cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7300000000000000000,"version":"15"}],
          "name":"st","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],
          "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;
        let info = parse_info(json, "st", "r1").unwrap();
        assert_eq!(info.status, "ok");
        assert_eq!(info.wal_max.as_deref(), Some("000000010000000000000005"));
        assert_eq!(info.backups.len(), 2);
        let (f, i) = (&info.backups[0], &info.backups[1]);
        assert_eq!(f.backup.kind, BackupType::Full);
        assert_eq!(f.operation.as_deref(), Some("op-1"));
        assert_eq!(f.backup.size, 23000000);
        assert_eq!(f.backup.repo_size, 3000000);
        assert_eq!(f.lsn_stop.as_deref(), Some("0/2000100"));
        assert_eq!(i.backup.kind, BackupType::Incr);
        assert_eq!(i.backup.prior.as_deref(), Some("20261121-101500F"));
        assert_eq!(i.backup.repository, "r1");
        assert_eq!(i.backup.stopped_at.timestamp(), 1795256401);
        let none = parse_info(r#"[{"name":"other","status":{"code":4,"message":"missing stanza path"}}]"#, "st", "r1")
            .unwrap();
        assert!(none.backups.is_empty());
        assert!(parse_info("not json", "st", "r1").unwrap_err().contains("not the JSON expected"));
    }
}
