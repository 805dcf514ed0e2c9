use clap::Subcommand;
use sovdb_types::Cluster;

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the project's clusters
    List,
    /// Show one cluster
    Show { name: String },
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

pub async fn run(cmd: ClusterCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        ClusterCmd::List => print_list(&client.list::<Cluster>("/clusters", &[]).await?, out),
        ClusterCmd::Show { name } => print_one(&client.get::<Cluster>(&format!("/clusters/{name}"), &[]).await?, out),
    }
}
