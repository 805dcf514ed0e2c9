//! Where the CLI finds its server and token, and where the server keeps its data.

use std::path::PathBuf;

use anyhow::{bail, Context as _};
use serde::Deserialize;

use crate::output::OutputFormat;

/// The default address of `sovdb serve`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOpts {
    /// URL of the sovdb server [default: from the config file, else the server running on this
    /// machine, else https://127.0.0.1:7070]
    #[arg(long, global = true, env = "SOVDB_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// API token [default: from the config file, else this machine's admin.token]
    #[arg(long, global = true, env = "SOVDB_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) to trust for the server's certificate, besides the system's
    /// [default: from the config file, else this machine's <data-dir>/ca.crt for the server
    /// running here]
    #[arg(long, global = true, env = "SOVDB_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Project to act in [default: default]
    #[arg(long, short = 'p', global = true, env = "SOVDB_PROJECT", value_name = "NAME")]
    pub project: Option<String>,

    /// Output format
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `~/.config/sovdb/config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
    ca_file: Option<PathBuf>,
    token: Option<String>,
    project: Option<String>,
}

/// The data directory `sovdb serve` uses when not told: `/var/lib/sovdb` for root,
/// `~/.local/share/sovdb` for everyone else; `SOVDB_DATA_DIR` overrides both.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SOVDB_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/sovdb");
    }
    home().join(".local/share/sovdb")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

pub fn config_path() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".config"))
        .join("sovdb/config.toml")
}

/// Server, token and project, resolved.
#[derive(Debug)]
pub struct Resolved {
    pub server: String,
    /// The CA to trust besides the system's, and whether the user named it (else it is
    /// this machine's server's `ca.crt`).
    pub ca_file: Option<PathBuf>,
    pub ca_named: bool,
    pub token: String,
    pub project: Option<String>,
}

impl GlobalOpts {
    /// Server and project, for the one command that needs no token (`login`).
    pub fn resolve_without_token(&self) -> anyhow::Result<Resolved> {
        let file = read_config(&config_path())?;
        let local_server = std::fs::read_to_string(default_data_dir().join("api.url"))
            .ok()
            .map(|s| s.trim().trim_end_matches('/').to_string());
        let server = self
            .server
            .clone()
            .or(file.server)
            .map(|s| s.trim_end_matches('/').to_string())
            .or(local_server.clone())
            .unwrap_or_else(|| format!("https://{DEFAULT_LISTEN}"));
        let named_ca = self.ca_file.clone().or(file.ca_file);
        let ca_file = named_ca.clone().or_else(|| local_ca(&server, local_server.as_deref()));
        Ok(Resolved {
            server,
            ca_file,
            ca_named: named_ca.is_some(),
            token: String::new(),
            project: self.project.clone().or(file.project),
        })
    }

    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let path = config_path();
        // The config file only fills what flags and environment leave open.
        let file =
            if self.server.is_some() && self.token.is_some() { ConfigFile::default() } else { read_config(&path)? };
        let data_dir = default_data_dir();
        let local_server =
            std::fs::read_to_string(data_dir.join("api.url")).ok().map(|s| s.trim().trim_end_matches('/').to_string());
        let named_server = self.server.clone().or(file.server).map(|s| s.trim_end_matches('/').to_string());
        let server = named_server
            .clone()
            .or_else(|| local_server.clone())
            .unwrap_or_else(|| format!("https://{DEFAULT_LISTEN}"));
        let named_ca = self.ca_file.clone().or(file.ca_file);
        let ca_file = named_ca.clone().or_else(|| local_ca(&server, local_server.as_deref()));
        let token = match self.token.clone().or(file.token) {
            Some(t) => t,
            None => {
                // This machine's admin token goes to this machine's server only: never to a
                // server named by a flag, the environment or the config file.
                if named_server.is_some() && named_server != local_server {
                    bail!(
                        "no API token for {server}: pass --token or set SOVDB_TOKEN (this machine's admin token is only sent to the server running here)"
                    );
                }
                let token_file = data_dir.join("admin.token");
                match std::fs::read_to_string(&token_file) {
                    Ok(t) => t.trim().to_string(),
                    Err(e) => bail!(
                        "no API token: pass --token or set SOVDB_TOKEN, put `token = \"...\"` in {}, or run where {} is readable ({})",
                        path.display(),
                        token_file.display(),
                        e.kind()
                    ),
                }
            }
        };
        Ok(Resolved {
            server,
            ca_file,
            ca_named: named_ca.is_some(),
            token,
            project: self.project.clone().or(file.project),
        })
    }
}

/// This machine's server's CA certificate (`<data-dir>/ca.crt`, beside `api.url`), for
/// that server only.
fn local_ca(server: &str, local_server: Option<&str>) -> Option<PathBuf> {
    if local_server != Some(server) {
        return None;
    }
    let path = default_data_dir().join("ca.crt");
    path.exists().then_some(path)
}

fn read_config(path: &std::path::Path) -> anyhow::Result<ConfigFile> {
    match std::fs::read_to_string(path) {
        // toml's own message spans several lines; the CLI's errors are one.
        Ok(text) => toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1).unwrap_or(1);
            anyhow::anyhow!("cannot read the CLI config {} (line {line}): {}", path.display(), e.message().trim())
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read the CLI config {}", path.display())),
    }
}

/// Writes `token` (and `server` and `project`, when given) into the config file, keeping
/// whatever else it holds. The file is written whole to a temporary file and renamed over the old one,
/// mode 0600 in a 0700 directory: it holds a secret.
pub fn save_token(server: Option<&str>, project: Option<&str>, token: &str) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let path = config_path();
    // Refuse to overwrite a file we can't read: it may hold settings we would lose.
    read_config(&path)?;
    let mut table = match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.parse::<toml::Table>().with_context(|| format!("cannot read the CLI config {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read the CLI config {}", path.display())),
    };
    table.insert("token".into(), toml::Value::String(token.into()));
    if let Some(server) = server {
        table.insert("server".into(), toml::Value::String(server.into()));
    }
    if let Some(project) = project {
        table.insert("project".into(), toml::Value::String(project.into()));
    }
    let dir = path.parent().expect("the config file is in a directory");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(".config.toml.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(toml::to_string(&table).context("the CLI config serialises")?.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(path)
}
