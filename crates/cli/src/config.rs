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
    /// URL of the sovdb server [default: the server on this machine, else http://127.0.0.1:7070]
    #[arg(long, global = true, env = "SOVDB_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// API token [default: from the config file, else this machine's admin.token]
    #[arg(long, global = true, env = "SOVDB_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Project to act in [default: default]
    #[arg(long, short = 'p', global = true, env = "SOVDB_PROJECT", value_name = "NAME")]
    pub project: Option<String>,

    /// Output format of read commands
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// `~/.config/sovdb/config.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: Option<String>,
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
    pub token: String,
    pub project: Option<String>,
}

impl GlobalOpts {
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let path = config_path();
        let file: ConfigFile = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("cannot read the CLI config {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(e).with_context(|| format!("cannot read the CLI config {}", path.display())),
        };
        let data_dir = default_data_dir();
        let server = self
            .server
            .clone()
            .or(file.server)
            .or_else(|| std::fs::read_to_string(data_dir.join("api.url")).ok().map(|s| s.trim().to_string()))
            .unwrap_or_else(|| format!("http://{DEFAULT_LISTEN}"));
        let token = match self.token.clone().or(file.token) {
            Some(t) => t,
            None => {
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
        Ok(Resolved { server: server.trim_end_matches('/').to_string(), token, project: self.project.clone().or(file.project) })
    }
}
