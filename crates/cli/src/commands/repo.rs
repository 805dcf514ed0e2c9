use std::io::Read as _;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sovdb_types::{Repo, RepoCreate, RepoType, UriStyle};

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum RepoCmd {
    /// Create a backup repository: a directory on a host (posix) or a bucket (s3)
    Create {
        /// Name: a DNS label, unique in the project
        name: String,
        /// Where [default: the installation's default location, `local` on a fresh install]
        #[arg(long)]
        location: Option<String>,
        /// posix: a directory on a host of the location; s3: a bucket of S3-compatible storage
        #[arg(long = "type", value_enum, value_name = "TYPE")]
        kind: TypeArg,
        /// posix: the directory, empty or new (created, owned by postgres, mode 0750);
        /// s3: the prefix in the bucket [default: /sovdb]
        #[arg(long)]
        path: Option<String>,
        /// posix: the host that keeps the directory [default: the location's only host]
        #[arg(long)]
        host: Option<String>,
        /// s3: the S3 server, host or host:port (reached over HTTPS)
        #[arg(long)]
        endpoint: Option<String>,
        /// s3: the bucket
        #[arg(long)]
        bucket: Option<String>,
        /// s3: the bucket's region, e.g. us-east-1
        #[arg(long)]
        region: Option<String>,
        /// s3: `host` (bucket.endpoint) or `path` (endpoint/bucket, most self-hosted servers)
        /// [default: host]
        #[arg(long, value_enum)]
        uri_style: Option<UriStyleArg>,
        /// s3: the CA certificate (PEM file) that signed the endpoint's certificate
        /// [default: the system's CAs]
        #[arg(long = "s3-ca-file", id = "s3_ca_file", value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// s3: the access key ID (kept encrypted, never shown)
        #[arg(long, value_name = "ID")]
        access_key_id: Option<String>,
        /// s3: read the secret access key from standard input (kept encrypted, never shown)
        #[arg(long)]
        secret_access_key_stdin: bool,
        /// Do not encrypt the repository [default: encrypted, with a generated passphrase]
        #[arg(long)]
        no_encrypt: bool,
        /// Make it the default repository of the project's new clusters in its location
        #[arg(long)]
        default: bool,
        /// Accepted for uniformity: a repository is created at once
        #[command(flatten)]
        wait: super::op::Wait,
    },
    /// List the project's backup repositories
    List,
    /// Show one backup repository and the clusters that use it
    Show { name: String },
    /// Forget a backup repository and its secrets (its files stay where they are)
    Delete {
        name: String,
        /// Accepted for uniformity: a repository is deleted at once
        #[command(flatten)]
        wait: super::op::Wait,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TypeArg {
    Posix,
    S3,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UriStyleArg {
    Host,
    Path,
}

/// Where the repository's files are, in one cell.
fn location_of_files(r: &Repo) -> String {
    match r.kind {
        RepoType::Posix => format!("{}:{}", r.host.as_deref().unwrap_or("?"), r.path),
        RepoType::S3 => {
            format!("s3://{}{} at {}", r.bucket.as_deref().unwrap_or("?"), r.path, r.endpoint.as_deref().unwrap_or("?"))
        }
    }
}

impl Tabular for Repo {
    const HEADERS: &'static [&'static str] =
        &["NAME", "TYPE", "LOCATION", "WHERE", "ENCRYPTED", "DEFAULT", "CLUSTERS", "CREATED"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.kind.as_str().into(),
            self.location.clone(),
            location_of_files(self),
            if self.encrypted { "yes".into() } else { "no".into() },
            if self.default { "yes".into() } else { "no".into() },
            if self.clusters.is_empty() { "-".into() } else { self.clusters.join(",") },
            output::time(&self.created_at),
        ]
    }
}

fn show(r: &Repo, out: OutputFormat) -> anyhow::Result<()> {
    print_one(r, out)?;
    if out == OutputFormat::Table && r.kind == RepoType::S3 {
        let style = match r.uri_style.unwrap_or_default() {
            UriStyle::Host => "host",
            UriStyle::Path => "path",
        };
        println!("\nregion:     {}\nuri style:  {style}", r.region.as_deref().unwrap_or("-"));
    }
    Ok(())
}

/// The secret access key from standard input: one line (a trailing line end is dropped).
fn secret_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the secret access key from standard input")?;
    let key = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if key.is_empty() {
        bail!("--secret-access-key-stdin: standard input is empty; write the secret access key on it");
    }
    Ok(key.to_string())
}

pub async fn run(cmd: RepoCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        RepoCmd::Create {
            name,
            location,
            kind,
            path,
            host,
            endpoint,
            bucket,
            region,
            uri_style,
            ca_file,
            access_key_id,
            secret_access_key_stdin,
            no_encrypt,
            default,
            wait: _,
        } => {
            let ca_pem = match &ca_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read --s3-ca-file {}", path.display()))?,
                ),
                None => None,
            };
            let secret_access_key = if secret_access_key_stdin { Some(secret_from_stdin()?) } else { None };
            let req = RepoCreate {
                name,
                location,
                kind: Some(match kind {
                    TypeArg::Posix => RepoType::Posix,
                    TypeArg::S3 => RepoType::S3,
                }),
                path,
                host,
                endpoint,
                bucket,
                region,
                uri_style: uri_style.map(|s| match s {
                    UriStyleArg::Host => UriStyle::Host,
                    UriStyleArg::Path => UriStyle::Path,
                }),
                ca_pem,
                access_key_id,
                secret_access_key,
                encrypt: Some(!no_encrypt),
                default,
            };
            let created: Repo = client.post("/repos", &req).await?;
            show(&created, out)
        }
        RepoCmd::List => print_list(&client.list::<Repo>("/repos", &[]).await?, out),
        RepoCmd::Show { name } => show(&client.get::<Repo>(&format!("/repos/{name}"), &[]).await?, out),
        RepoCmd::Delete { name, wait: _ } => {
            let repo: Repo = client.get(&format!("/repos/{name}"), &[]).await?;
            client.delete(&format!("/repos/{name}")).await?;
            let files = match repo.kind {
                RepoType::Posix => format!("in {} on host {}", repo.path, repo.host.as_deref().unwrap_or("?")),
                RepoType::S3 => format!("in {}", location_of_files(&repo)),
            };
            eprintln!("repository {name} deleted; its files stay {files}");
            Ok(())
        }
    }
}
