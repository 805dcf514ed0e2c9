//! `sovdb admin`: installation administration (admin role).

use clap::Subcommand;
use sovdb_types::MasterKeyRotation;

use crate::client::Client;
use crate::output::{print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Replace the server's master key with a new one and re-seal every stored secret
    /// under it, in one transaction; the old key is kept as master.key.old
    RotateMasterKey,
}

impl Tabular for MasterKeyRotation {
    const HEADERS: &'static [&'static str] =
        &["KEY ID", "PREVIOUS KEY ID", "SECRETS", "HOST KEYS", "CA KEY", "PREVIOUS KEY FILE"];
    fn row(&self) -> Vec<String> {
        vec![
            self.key_id.clone(),
            self.previous_key_id.clone(),
            self.secrets.to_string(),
            self.host_keys.to_string(),
            if self.ca_key { "re-sealed".into() } else { "-".into() },
            self.previous_key_file.clone(),
        ]
    }
}

pub async fn run(cmd: AdminCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::RotateMasterKey => print_one(
            &client.post::<_, MasterKeyRotation>("/admin/master-key/rotate", &serde_json::json!({})).await?,
            out,
        ),
    }
}
