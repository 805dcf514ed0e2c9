//! The client subcommands, one module per resource.

use clap::Subcommand;

use crate::client::Client;
use crate::config::GlobalOpts;

mod audit;
mod cluster;
mod location;
mod project;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Locations: the regions and zones where hosts and databases run
    #[command(subcommand)]
    Location(location::LocationCmd),
    /// Database clusters of the project
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Projects (tenants)
    #[command(subcommand)]
    Project(project::ProjectCmd),
    /// The audit log of every change
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Show who the token belongs to and the project in use
    Whoami,
}

/// Runs one client command against the API.
pub async fn run(cmd: ClientCommand, global: GlobalOpts) -> anyhow::Result<()> {
    let client = Client::new(global.resolve()?);
    let out = global.output;
    match cmd {
        ClientCommand::Location(c) => location::run(c, &client, out).await,
        ClientCommand::Cluster(c) => cluster::run(c, &client, out).await,
        ClientCommand::Project(c) => project::run(c, &client, out).await,
        ClientCommand::Audit(c) => audit::run(c, &client, out).await,
        ClientCommand::Whoami => project::whoami(&client, out).await,
    }
}
