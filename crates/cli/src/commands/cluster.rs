use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use sovdb_types::{
    Cluster, ClusterAllowList, ClusterConnection, ClusterCreate, ClusterDetail, ClusterMember, ClusterRestart,
    ClusterRestore, ClusterScale, ClusterSetParams, ClusterSwitchover, Event, Operation, Spread,
};

use super::location::parse_labels;
use super::op::{post_and_say, started, Wait};
use crate::client::Client;
use crate::output::{self, print_list, print_one, render_table, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Create a highly available cluster: Patroni-managed PostgreSQL, HAProxy routes, TLS
    #[command(disable_version_flag = true)]
    Create {
        /// Name: a DNS label, unique in the project
        name: String,
        /// The engine
        #[arg(long, default_value = "postgres")]
        engine: String,
        /// Major version [default: 15]
        #[arg(long = "version", id = "pg_version")]
        version: Option<String>,
        /// How many PostgreSQL instances: one primary and N-1 standbys [default: 1]
        #[arg(long, allow_negative_numbers = true)]
        replicas: Option<i64>,
        /// Synchronous replication: no acknowledged commit is lost on failover
        #[arg(long)]
        sync: bool,
        /// Where [default: the installation's default location, `local` on a fresh install]
        #[arg(long)]
        location: Option<String>,
        /// Every member in its own zone, or on its own host
        #[arg(long, value_enum)]
        spread: Option<SpreadArg>,
        /// Only hosts with this label, key=value; repeat for more
        #[arg(long = "require-label", value_name = "KEY=VALUE")]
        require_labels: Vec<String>,
        /// The application database [default: app]
        #[arg(long)]
        db: Option<String>,
        /// The application user [default: app]
        #[arg(long)]
        user: Option<String>,
        /// A PostgreSQL parameter, key=value; repeat for more (checked before anything is created)
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// PgBouncer on every member, in front of the read-write route
        #[arg(long)]
        pooler: bool,
        /// Archive WAL and back up into this repository [default: the location's default
        /// repository, if one is set]
        #[arg(long)]
        backup_repo: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// A new cluster from a backup of this one: at a time, an LSN, or the latest state
    Restore {
        /// The cluster whose backups to restore
        source: String,
        /// The new cluster's name
        #[arg(long = "as", value_name = "NAME")]
        name: String,
        /// Recover up to this time (RFC 3339, e.g. 2026-11-21T10:15:00Z)
        #[arg(long)]
        to_time: Option<chrono::DateTime<chrono::Utc>>,
        /// Recover up to this LSN (e.g. 0/3000060)
        #[arg(long)]
        to_lsn: Option<String>,
        /// Recover everything archived [the default]
        #[arg(long)]
        latest: bool,
        /// Where [default: the source's location]
        #[arg(long)]
        location: Option<String>,
        /// How many PostgreSQL instances [default: the source's]
        #[arg(long, allow_negative_numbers = true)]
        replicas: Option<i64>,
        /// Every member in its own zone, or on its own host [default: the source's rule]
        #[arg(long, value_enum)]
        spread: Option<SpreadArg>,
        /// Only hosts with this label, key=value; repeat for more [default: the source's]
        #[arg(long = "require-label", value_name = "KEY=VALUE")]
        require_labels: Vec<String>,
        /// The new cluster's repository [default: the source's]
        #[arg(long)]
        backup_repo: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// List the project's clusters
    List,
    /// Show one cluster: state, members (role, lag), endpoints
    Show { name: String },
    /// Print a libpq URI: `psql "$(sovdb cluster connect NAME)"` (the CA is saved beside
    /// the CLI's config and named in the URI)
    Connect {
        name: String,
        /// A URI that prefers standbys
        #[arg(long)]
        read_only: bool,
        /// Print the CA certificate (PEM) that signed the servers' certificates instead
        #[arg(long)]
        print_ca: bool,
    },
    /// What happened to a cluster, oldest first: failovers, switchovers, restarts, changes
    Events { name: String },
    /// A planned switchover: the primary hands over to a replica
    Switchover {
        name: String,
        /// The member to promote [default: Patroni's choice, the synchronous standby with --sync]
        #[arg(long, value_name = "MEMBER")]
        to: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// A forced failover: promote a replica whatever the primary does (also when there is none)
    Failover {
        name: String,
        /// The member to promote [default: the synchronous standby, else the replica least behind]
        #[arg(long, value_name = "MEMBER")]
        to: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// A rolling restart of PostgreSQL: replicas first, the primary last
    Restart {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// More or fewer members (scaling down never removes the primary)
    Scale {
        name: String,
        /// The new number of PostgreSQL instances
        #[arg(long, allow_negative_numbers = true)]
        replicas: i64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Change PostgreSQL parameters, rolling; restarts only where a parameter needs it, and says so
    Set {
        name: String,
        /// A parameter, key=value; repeat for more (checked before anything changes)
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// A parameter back to its default; repeat for more
        #[arg(long = "reset", value_name = "KEY")]
        reset: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Let clients from these networks connect (PostgreSQL's pg_hba and HAProxy, applied
    /// without a restart); 0.0.0.0/0 and ::/0 (everyone) only when given
    Allow {
        name: String,
        /// A network, IPv4 or IPv6 (10.0.0.0/8, fd00::/8; an address alone is one host); repeat for more
        #[arg(long = "cidr", value_name = "CIDR", required = true)]
        cidrs: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Take networks off the allow-list: new connections from them are refused (open
    /// sessions stay); loopback and the cluster's own members always stay allowed
    Deny {
        name: String,
        /// A network exactly as listed by `cluster show`; repeat for more
        #[arg(long = "cidr", value_name = "CIDR", required = true)]
        cidrs: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Renew every internal certificate of a cluster now, whatever its age (after a key may
    /// have leaked, say): its members' and its backup client's; no restart
    RenewCerts {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete a cluster: stop and remove every member, release its ports and secrets. Its
    /// backups stay in its repository (`cluster restore NAME --as NEW` restores it) unless
    /// --delete-backups
    Delete {
        name: String,
        /// Delete the cluster's backups from its repository too
        #[arg(long)]
        delete_backups: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpreadArg {
    Zone,
    Host,
}

impl Tabular for Cluster {
    const HEADERS: &'static [&'static str] = &["NAME", "ENGINE", "VERSION", "STATE", "LOCATION", "CREATED"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.engine.as_str().into(),
            self.version.clone(),
            self.state.as_str().into(),
            self.location.clone(),
            output::time(&self.created_at),
        ]
    }
}

impl Tabular for ClusterDetail {
    const HEADERS: &'static [&'static str] = Cluster::HEADERS;
    fn row(&self) -> Vec<String> {
        self.cluster.row()
    }
}

impl Tabular for ClusterMember {
    const HEADERS: &'static [&'static str] = &["MEMBER", "HOST", "ROLE", "SYNC", "STATE", "TL", "LAG", "ADDRESS"];
    fn row(&self) -> Vec<String> {
        let dash = || "-".to_string();
        vec![
            self.name.clone(),
            self.host.clone(),
            self.role.map(|r| format!("{r:?}").to_lowercase()).unwrap_or_else(dash),
            if self.sync { "sync".into() } else { dash() },
            self.state.clone(),
            self.timeline.map(|t| t.to_string()).unwrap_or_else(dash),
            self.lag_bytes.map(|l| l.to_string()).unwrap_or_else(dash),
            self.address.clone(),
        ]
    }
}

impl Tabular for Event {
    const HEADERS: &'static [&'static str] = &["AT", "TARGET", "KIND", "MESSAGE"];
    fn row(&self) -> Vec<String> {
        vec![output::time(&self.at), self.target.clone(), self.kind.clone(), self.message.clone()]
    }
}

fn show(c: &ClusterDetail, out: OutputFormat) -> anyhow::Result<()> {
    print_one(c, out)?;
    if out == OutputFormat::Table {
        if let Some(m) = &c.status_message {
            println!("\nstatus:     {m}");
        }
        println!(
            "\nreplicas:   {}{}{}\ndatabase:   {} (user {})",
            c.replicas,
            if c.sync { ", synchronous" } else { ", asynchronous" },
            if c.pooler { ", pooler" } else { "" },
            c.database,
            c.user
        );
        if !c.params.is_empty() {
            let p: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("parameters: {}", p.join(" "));
        }
        println!(
            "allow:      {} (and loopback, the members)",
            if c.allow.is_empty() { "no client network".to_string() } else { c.allow.join(", ") }
        );
        let e = &c.endpoints;
        println!("read-write: {}\nread-only:  {}", e.read_write.join(", "), e.read_only.join(", "));
        if !e.pooler.is_empty() {
            println!("pooler:     {}", e.pooler.join(", "));
        }
        if !c.members.is_empty() {
            let rows: Vec<Vec<String>> = c.members.iter().map(Tabular::row).collect();
            println!("\n{}", render_table(ClusterMember::HEADERS, &rows));
        }
    }
    Ok(())
}

/// How long `--wait` waits for a location's hosts to finish being added before a create
/// or restore can be placed: longer than a host add's slowest step (its agent's wait).
const HOSTS_READY_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// Posts a create or restore; with `--wait`, a refusal because the location's hosts are
/// still being added (`not_ready`) is retried until they are, for at most
/// [`HOSTS_READY_DEADLINE`], saying what it waits for. A refusal creates nothing, so
/// trying again is safe.
async fn post_when_hosts_ready<B: serde::Serialize>(
    client: &Client,
    path: &str,
    req: &B,
    wait: Wait,
) -> anyhow::Result<Operation> {
    let started = std::time::Instant::now();
    let mut said = String::new();
    loop {
        match client.post(path, req).await {
            Err(e) if wait.wait && crate::client::refused_code(&e) == Some("not_ready") => {
                let reason = e.downcast_ref::<crate::client::Refused>().map(|r| r.message.clone()).unwrap_or_default();
                // What to do about it is what this loop does.
                let reason = reason.split("; `sovdb host list`").next().unwrap_or_default().to_string();
                if started.elapsed() > HOSTS_READY_DEADLINE {
                    anyhow::bail!(
                        "gave up waiting after {}s for the location's hosts to be ready: {reason}",
                        HOSTS_READY_DEADLINE.as_secs()
                    );
                }
                if reason != said {
                    eprintln!("waiting (up to {}s): {reason}", HOSTS_READY_DEADLINE.as_secs());
                    said = reason;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// `--param key=value`s as a map.
fn parse_params(params: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for p in params {
        let (k, v) =
            p.split_once('=').with_context(|| format!("--param {p:?} is not key=value (e.g. --param work_mem=8MB)"))?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(map)
}

/// After a day-2 change: with `--wait`, the cluster as it is now.
async fn after(client: &Client, name: &str, op: Operation, wait: Wait, out: OutputFormat) -> anyhow::Result<()> {
    match started(client, op, wait, out).await? {
        Some(_) => show(&client.get::<ClusterDetail>(&format!("/clusters/{name}"), &[]).await?, out),
        None => Ok(()),
    }
}

/// Saves the CA where `sslrootcert` can name it; returns the path.
fn save_ca(pem: &str) -> anyhow::Result<std::path::PathBuf> {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(pem.as_bytes()));
    let dir = crate::config::config_path().parent().map(|p| p.join("ca")).unwrap_or_else(|| "ca".into());
    let path = dir.join(format!("{}.crt", &digest[..16]));
    if std::fs::read_to_string(&path).ok().as_deref() != Some(pem) {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, pem).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(path)
}

pub async fn run(cmd: ClusterCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::Create {
            name,
            engine,
            version,
            replicas,
            sync,
            location,
            spread,
            require_labels,
            db,
            user,
            params,
            pooler,
            backup_repo,
            wait,
        } => {
            let param_map = parse_params(&params)?;
            let req = ClusterCreate {
                name: name.clone(),
                engine,
                version,
                replicas,
                sync,
                location,
                spread: spread.map(|s| match s {
                    SpreadArg::Zone => Spread::Zone,
                    SpreadArg::Host => Spread::Host,
                }),
                require_labels: parse_labels(&require_labels)?,
                db,
                user,
                params: param_map,
                pooler,
                backup_repo,
            };
            let op: Operation = post_when_hosts_ready(client, "/clusters", &req, wait).await?;
            match started(client, op, wait, out).await? {
                Some(_) => show(&client.get::<ClusterDetail>(&format!("/clusters/{name}"), &[]).await?, out),
                None => Ok(()),
            }
        }
        ClusterCmd::Restore {
            source,
            name,
            to_time,
            to_lsn,
            latest,
            location,
            replicas,
            spread,
            require_labels,
            backup_repo,
            wait,
        } => {
            let req = ClusterRestore {
                name: name.clone(),
                to_time,
                to_lsn,
                latest,
                location,
                replicas,
                spread: spread.map(|s| match s {
                    SpreadArg::Zone => Spread::Zone,
                    SpreadArg::Host => Spread::Host,
                }),
                require_labels: parse_labels(&require_labels)?,
                backup_repo,
            };
            let op: Operation =
                post_when_hosts_ready(client, &format!("/clusters/{source}/restore"), &req, wait).await?;
            match started(client, op, wait, out).await? {
                Some(_) => show(&client.get::<ClusterDetail>(&format!("/clusters/{name}"), &[]).await?, out),
                None => Ok(()),
            }
        }
        ClusterCmd::List => print_list(&client.list::<Cluster>("/clusters", &[]).await?, out),
        ClusterCmd::Show { name } => show(&client.get::<ClusterDetail>(&format!("/clusters/{name}"), &[]).await?, out),
        ClusterCmd::Connect { name, read_only, print_ca } => {
            let q = [("read_only", read_only.to_string())];
            let c: ClusterConnection = client.get(&format!("/clusters/{name}/connection"), &q).await?;
            if print_ca {
                print!("{}", c.ca_pem);
                return Ok(());
            }
            let ca = save_ca(&c.ca_pem)?;
            let uri = format!("{}&sslrootcert={}", c.uri, ca.display());
            match out {
                OutputFormat::Table => println!("{uri}"),
                _ => {
                    let v = serde_json::json!({
                        "uri": uri, "user": c.user, "password": c.password, "database": c.database,
                        "ca_pem": c.ca_pem, "ca_file": ca, "endpoints": c.endpoints,
                    });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                }
            }
            Ok(())
        }
        ClusterCmd::Events { name } => {
            print_list(&client.list::<Event>(&format!("/clusters/{name}/events"), &[]).await?, out)
        }
        ClusterCmd::Switchover { name, to, wait } => {
            let op: Operation = client.post(&format!("/clusters/{name}/switchover"), &ClusterSwitchover { to }).await?;
            after(client, &name, op, wait, out).await
        }
        ClusterCmd::Failover { name, to, wait } => {
            let op: Operation = client.post(&format!("/clusters/{name}/failover"), &ClusterSwitchover { to }).await?;
            after(client, &name, op, wait, out).await
        }
        ClusterCmd::Restart { name, wait } => {
            let op: Operation = client.post(&format!("/clusters/{name}/restart"), &ClusterRestart {}).await?;
            after(client, &name, op, wait, out).await
        }
        ClusterCmd::Scale { name, replicas, wait } => {
            let op: Operation = client.post(&format!("/clusters/{name}/scale"), &ClusterScale { replicas }).await?;
            after(client, &name, op, wait, out).await
        }
        ClusterCmd::Set { name, params, reset, wait } => {
            // What changed and where it restarted: the last step says.
            let req = ClusterSetParams { params: parse_params(&params)?, reset };
            post_and_say(client, &format!("/clusters/{name}/params"), &req, wait, out).await
        }
        ClusterCmd::Allow { name, cidrs, wait } => {
            let req = ClusterAllowList { allow: cidrs, deny: vec![] };
            post_and_say(client, &format!("/clusters/{name}/allow-list"), &req, wait, out).await
        }
        ClusterCmd::Deny { name, cidrs, wait } => {
            let req = ClusterAllowList { allow: vec![], deny: cidrs };
            post_and_say(client, &format!("/clusters/{name}/allow-list"), &req, wait, out).await
        }
        ClusterCmd::RenewCerts { name, wait } => {
            // Which members got new certificates: the last step says.
            post_and_say(client, &format!("/clusters/{name}/renew-certs"), &serde_json::json!({}), wait, out).await
        }
        ClusterCmd::Delete { name, delete_backups, wait } => {
            let query = if delete_backups { "?delete_backups=true" } else { "" };
            let op: Operation = client.delete_json(&format!("/clusters/{name}{query}")).await?;
            match started(client, op, wait, out).await? {
                Some(op) => print_one(&op, out),
                None => Ok(()),
            }
        }
    }
}
