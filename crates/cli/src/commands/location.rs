use anyhow::bail;
use clap::Subcommand;
use sovdb_types::{DcsMemberStatus, DcsState, Labels, Location, LocationCreate, LocationDetail, LocationSet, Provider};

use crate::client::Client;
use crate::output::{self, print_list, print_one, render_table, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum LocationCmd {
    /// Register a location (admin)
    Create {
        /// Name: a DNS label, unique in the installation
        name: String,
        /// How sovdb reaches the location's hosts
        #[arg(long, value_parser = ["local", "ssh"])]
        provider: String,
        /// The provider's region, e.g. eu-central or dc1
        #[arg(long)]
        region: String,
        /// Default zone for the location's hosts
        #[arg(long)]
        zone: Option<String>,
        /// A label, key=value; repeat for more (e.g. --label jurisdiction=EU)
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Accepted for uniformity: a location is created at once
        #[command(flatten)]
        wait: super::op::Wait,
    },
    /// List locations
    List,
    /// Show one location, with the health of its DCS (etcd)
    Show { name: String },
    /// Change a location's settings (admin)
    Set {
        name: String,
        /// Forward the PostgreSQL and Patroni logs of the location's clusters to this syslog
        /// server as RFC 5424 messages, over TCP (tcp://HOST:PORT) or TLS (tls://HOST:PORT,
        /// RFC 5425), done by each host's agent; `none` stops forwarding
        #[arg(long, value_name = "tcp://HOST:PORT|tls://HOST:PORT|none")]
        syslog: Option<String>,
        /// With a tls:// target: a file of PEM CA certificates the syslog server's
        /// certificate must chain to [default: each host's system bundle]
        #[arg(long, value_name = "FILE", requires = "syslog")]
        syslog_ca: Option<std::path::PathBuf>,
    },
    /// Renew the certificates of the location's etcd members now, whatever their age
    /// (admin; after a key may have leaked, say); no restart
    RenewCerts {
        name: String,
        #[command(flatten)]
        wait: super::op::Wait,
    },
    /// Delete a location that has nothing in it (admin)
    Delete {
        name: String,
        /// Accepted for uniformity: a location is deleted at once
        #[command(flatten)]
        wait: super::op::Wait,
    },
}

impl Tabular for Location {
    const HEADERS: &'static [&'static str] = &["NAME", "PROVIDER", "REGION", "ZONE", "LABELS", "CREATED"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.provider.as_str().into(),
            self.region.clone(),
            self.zone.clone().unwrap_or_else(|| "-".into()),
            output::labels(&self.labels),
            output::time(&self.created_at),
        ]
    }
}

impl Tabular for LocationDetail {
    const HEADERS: &'static [&'static str] = Location::HEADERS;
    fn row(&self) -> Vec<String> {
        self.location.row()
    }
}

impl Tabular for DcsMemberStatus {
    const HEADERS: &'static [&'static str] = &["ETCD", "HOST", "ENDPOINT", "HEALTH", "ERROR"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.host.clone(),
            self.endpoint.clone(),
            if self.healthy { "healthy".into() } else { "unhealthy".into() },
            self.error.clone().unwrap_or_else(|| "-".into()),
        ]
    }
}

fn show(l: &LocationDetail, out: OutputFormat) -> anyhow::Result<()> {
    print_one(l, out)?;
    if out == OutputFormat::Table {
        let dcs = &l.dcs;
        let healthy = dcs.members.iter().filter(|m| m.healthy).count();
        match dcs.status {
            DcsState::None => println!("\ndcs:       none (the location's first cluster creates it)"),
            s => println!("\ndcs:       {} ({healthy} of {} etcd members healthy)", s.as_str(), dcs.members.len()),
        }
        println!("syslog:    {}", l.syslog.as_deref().unwrap_or("none"));
        if l.syslog.as_deref().is_some_and(|t| t.starts_with("tls://")) {
            let ca = match &l.syslog_ca {
                Some(pem) => format!("{} certificate(s) given", pem.matches("-----BEGIN CERTIFICATE-----").count()),
                None => "each host's system bundle".to_owned(),
            };
            println!("syslog CA: {ca}");
        }
        if !dcs.members.is_empty() {
            let rows: Vec<Vec<String>> = dcs.members.iter().map(Tabular::row).collect();
            println!("\n{}", render_table(DcsMemberStatus::HEADERS, &rows));
        }
    }
    Ok(())
}

/// `k=v` pairs into labels; a pair without `=` or with an empty key is refused.
pub fn parse_labels(pairs: &[String]) -> anyhow::Result<Labels> {
    let mut labels = Labels::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_string(), v.to_string());
            }
            _ => bail!("--label {pair:?} must be KEY=VALUE"),
        }
    }
    Ok(labels)
}

pub async fn run(cmd: LocationCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        LocationCmd::Create { name, provider, region, zone, labels, wait: _ } => {
            let req = LocationCreate {
                name,
                provider: Provider::parse(&provider).expect("clap checked the provider"),
                region,
                zone,
                labels: parse_labels(&labels)?,
            };
            let created: Location = client.post("/locations", &req).await?;
            print_one(&created, out)
        }
        LocationCmd::List => print_list(&client.list::<Location>("/locations", &[]).await?, out),
        LocationCmd::Show { name } => {
            show(&client.get::<LocationDetail>(&format!("/locations/{name}"), &[]).await?, out)
        }
        LocationCmd::Set { name, syslog, syslog_ca } => {
            if syslog.is_none() {
                bail!("say what to change: --syslog tcp://HOST:PORT, --syslog tls://HOST:PORT or --syslog none");
            }
            let syslog_ca = match syslog_ca {
                Some(path) => Some(
                    std::fs::read_to_string(&path)
                        .map_err(|e| anyhow::anyhow!("cannot read the syslog CA file {}: {e}", path.display()))?,
                ),
                None => None,
            };
            let set: LocationDetail =
                client.patch(&format!("/locations/{name}"), &LocationSet { syslog, syslog_ca }).await?;
            show(&set, out)
        }
        LocationCmd::RenewCerts { name, wait } => {
            let path = format!("/locations/{name}/renew-certs");
            super::op::post_and_say(client, &path, &serde_json::json!({}), wait, out).await
        }
        LocationCmd::Delete { name, wait: _ } => {
            client.delete(&format!("/locations/{name}")).await?;
            eprintln!("location {name} deleted");
            Ok(())
        }
    }
}
