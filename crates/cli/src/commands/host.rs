use anyhow::Context as _;
use clap::Subcommand;
use sovdb_types::{Host, HostCreate, Operation};

use super::location::parse_labels;
use super::op::{post_and_say, started, Wait};
use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// Add a host (admin): install and start sovdb's agent on it
    Add {
        /// Name: a DNS label, unique in the installation
        name: String,
        /// The location the host belongs to
        #[arg(long)]
        location: String,
        /// IP address or DNS name the control plane reaches the host at
        #[arg(long)]
        address: String,
        /// SSH user (ssh locations) [default: root]
        #[arg(long)]
        ssh_user: Option<String>,
        /// SSH private key file sovdb logs in with (ssh locations); kept encrypted
        #[arg(long, value_name = "FILE")]
        ssh_key: Option<std::path::PathBuf>,
        /// SSH port [default: 22]
        #[arg(long)]
        ssh_port: Option<u16>,
        /// Pin the host's SSH public key (`type base64`, or a .pub file) instead of
        /// trusting the key it presents the first time
        #[arg(long, value_name = "KEY|FILE")]
        ssh_host_key: Option<String>,
        /// TCP port for the agent [default: 7450]
        #[arg(long)]
        agent_port: Option<u16>,
        /// Zone [default: the location's]
        #[arg(long)]
        zone: Option<String>,
        /// A label, key=value; repeat for more (e.g. --label tier=nvme)
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Where everything sovdb puts on the host lives [default: /var/lib/sovdb]
        #[arg(long, value_name = "DIR")]
        base_dir: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// List hosts
    List {
        /// Only the hosts of this location
        #[arg(long)]
        location: Option<String>,
    },
    /// Show one host: status, facts, labels
    Show { name: String },
    /// Stop placing new database nodes on a host (admin)
    Drain {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Renew the host's agent certificate, and its pgBackRest TLS server's if it runs one,
    /// now, whatever their age (admin; after a key may have leaked, say); no restart
    RenewCerts {
        name: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a host (admin): stop and remove its agent, then forget it. Database data on
    /// the host is left alone
    Remove {
        name: String,
        /// Forget the host even if it can't be reached
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

impl Tabular for Host {
    const HEADERS: &'static [&'static str] =
        &["NAME", "LOCATION", "ADDRESS", "STATUS", "ZONE", "CPUS", "MEMORY", "LABELS"];
    fn row(&self) -> Vec<String> {
        let fact = |k: &str| self.facts.as_ref().and_then(|f| f.get(k)).cloned();
        vec![
            self.name.clone(),
            self.location.clone(),
            self.address.clone(),
            self.status.as_str().into(),
            self.zone.clone().unwrap_or_else(|| "-".into()),
            fact("cpus").map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
            fact("memory_bytes")
                .and_then(|v| v.as_u64())
                .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
                .unwrap_or_else(|| "-".into()),
            output::labels(&self.labels),
        ]
    }
}

fn show(host: &Host, out: OutputFormat) -> anyhow::Result<()> {
    print_one(host, out)?;
    if out == OutputFormat::Table {
        let mut lines = vec![format!("base dir:   {}", host.base_dir), format!("agent port: {}", host.agent_port)];
        if let Some(m) = &host.status_message {
            lines.push(format!("status:     {m}"));
        }
        if let Some(ssh) = &host.ssh {
            lines.push(format!("ssh:        {}@{}:{}", ssh.user, host.address, ssh.port));
            if let Some(fp) = &ssh.host_key_fingerprint {
                lines.push(format!("host key:   {fp}"));
            }
        }
        if let Some(t) = &host.last_seen_at {
            lines.push(format!("last seen:  {}", output::time(t)));
        }
        if let Some(f) = &host.facts {
            let s = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
            lines.push(format!("os:         {} ({}, kernel {})", s("os"), s("arch"), s("kernel")));
            if let Some(addrs) = f.get("addresses").and_then(|a| a.as_array()) {
                let addrs: Vec<&str> = addrs.iter().filter_map(|a| a.as_str()).collect();
                lines.push(format!("addresses:  {}", addrs.join(", ")));
            }
            for d in f.get("disks").and_then(|d| d.as_array()).into_iter().flatten() {
                let gib = |k: &str| d.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as f64 / (1u64 << 30) as f64;
                lines.push(format!(
                    "disk:       {} {:.1} GiB free of {:.1} GiB",
                    d.get("mount").and_then(|v| v.as_str()).unwrap_or("?"),
                    gib("free_bytes"),
                    gib("total_bytes")
                ));
            }
        }
        println!("\n{}", lines.join("\n"));
    }
    Ok(())
}

pub async fn run(cmd: HostCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        HostCmd::Add {
            name,
            location,
            address,
            ssh_user,
            ssh_key,
            ssh_port,
            ssh_host_key,
            agent_port,
            zone,
            labels,
            base_dir,
            wait,
        } => {
            let ssh_private_key = match &ssh_key {
                Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the SSH key {}: pass --ssh-key with a private key file", path.display())
                })?),
                None => None,
            };
            let ssh_host_key = match ssh_host_key {
                Some(k) if std::path::Path::new(&k).is_file() => Some(
                    std::fs::read_to_string(&k)
                        .with_context(|| format!("cannot read --ssh-host-key {k}"))?
                        .split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                other => other,
            };
            let req = HostCreate {
                name: name.clone(),
                location,
                address,
                ssh_user,
                ssh_port,
                ssh_private_key,
                ssh_host_key,
                agent_port,
                zone,
                labels: parse_labels(&labels)?,
                base_dir,
            };
            let op: Operation = client.post("/hosts", &req).await?;
            match started(client, op, wait, out).await? {
                Some(_) => show(&client.get::<Host>(&format!("/hosts/{name}"), &[]).await?, out),
                None => Ok(()),
            }
        }
        HostCmd::List { location } => {
            let query: Vec<(&str, String)> = location.map(|l| ("location", l)).into_iter().collect();
            print_list(&client.list::<Host>("/hosts", &query).await?, out)
        }
        HostCmd::Show { name } => show(&client.get::<Host>(&format!("/hosts/{name}"), &[]).await?, out),
        // Draining is immediate: there is nothing to wait for.
        HostCmd::Drain { name, wait: _ } => {
            show(&client.post::<_, Host>(&format!("/hosts/{name}/drain"), &serde_json::json!({})).await?, out)
        }
        HostCmd::RenewCerts { name, wait } => {
            post_and_say(client, &format!("/hosts/{name}/renew-certs"), &serde_json::json!({}), wait, out).await
        }
        HostCmd::Remove { name, force, wait } => {
            let path = if force { format!("/hosts/{name}?force=true") } else { format!("/hosts/{name}") };
            let op: Operation = client.delete_json(&path).await?;
            match started(client, op, wait, out).await? {
                Some(op) => print_one(&op, out),
                None => Ok(()),
            }
        }
    }
}
