//! The client subcommands, one module per resource.

use clap::Subcommand;

use crate::client::Client;
use crate::config::GlobalOpts;

mod admin;
mod alert;
mod audit;
mod backup;
mod cluster;
mod events;
mod host;
mod location;
mod metrics;
mod op;
mod project;
mod repo;
mod users;

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Locations: the regions and zones where hosts and databases run
    Location {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: location::LocationCmd,
    },
    /// Hosts: the machines databases run on, each with sovdb's agent
    Host {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: host::HostCmd,
    },
    /// Database clusters of the project
    Cluster {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: cluster::ClusterCmd,
    },
    /// The timeline: failovers, switchovers, restarts, changes, backups, drills, alerts
    /// of the project's clusters (and, for admins, the hosts)
    Events {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(flatten)]
        args: events::EventsArgs,
    },
    /// PostgreSQL and Patroni logs of a cluster's members, each line prefixed by member
    /// and source
    Logs {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(flatten)]
        args: events::LogsArgs,
    },
    /// Backup repositories of the project: where its clusters keep backups and WAL
    Repo {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: repo::RepoCmd,
    },
    /// Backups of a cluster into its repository
    Backup {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: backup::BackupCmd,
    },
    /// Projects (tenants)
    Project {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: project::ProjectCmd,
    },
    /// The audit log of every change, secret read and refused request
    Audit {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: audit::AuditCmd,
    },
    /// Installation administration: master key rotation (admin)
    Admin {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// Operations: the durable work behind every change, with its progress
    Op {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: op::OpCmd,
    },
    /// Users: who may call the API (admins; a project's owners for its members)
    User {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: users::UserCmd,
    },
    /// Roles: grant and revoke what a user may do, installation-wide or in a project
    Role {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: users::RoleCmd,
    },
    /// API tokens: create (shown once), list and revoke
    Token {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: users::TokenCmd,
    },
    /// Log in with a password: get a token and save it in the CLI config
    Login {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(flatten)]
        args: users::LoginArgs,
    },
    /// A cluster's metrics: a table with small charts, or one metric (--name)
    Metrics {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(flatten)]
        args: metrics::MetricsArgs,
    },
    /// Alerts of the project: firing and resolved alerts, rules, notification channels,
    /// silences and maintenance windows, deliveries
    Alert {
        #[command(flatten)]
        global: GlobalOpts,
        #[command(subcommand)]
        cmd: alert::AlertCmd,
    },
    /// Show who the token belongs to and the project in use
    Whoami {
        #[command(flatten)]
        global: GlobalOpts,
    },
}

/// Runs one client command against the API.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    let global = match &cmd {
        ClientCommand::Location { global, .. }
        | ClientCommand::Cluster { global, .. }
        | ClientCommand::Events { global, .. }
        | ClientCommand::Logs { global, .. }
        | ClientCommand::Backup { global, .. }
        | ClientCommand::Host { global, .. }
        | ClientCommand::Repo { global, .. }
        | ClientCommand::Project { global, .. }
        | ClientCommand::Audit { global, .. }
        | ClientCommand::Admin { global, .. }
        | ClientCommand::Op { global, .. }
        | ClientCommand::User { global, .. }
        | ClientCommand::Role { global, .. }
        | ClientCommand::Token { global, .. }
        | ClientCommand::Login { global, .. }
        | ClientCommand::Metrics { global, .. }
        | ClientCommand::Alert { global, .. }
        | ClientCommand::Whoami { global } => global.clone(),
    };
    if let ClientCommand::Login { args, .. } = cmd {
        // The one command without a token: it is how a token is got.
        let client = Client::new(global.resolve_without_token()?)?;
        let (server, project) = (global.server.as_deref(), global.project.as_deref());
        return users::login(args, &client, server, project, global.token.is_some(), global.output).await;
    }
    let client = Client::new(global.resolve()?)?;
    let explicit_project = global.project.is_some();
    let out = global.output;
    match cmd {
        ClientCommand::Location { cmd, .. } => location::run(cmd, &client, out).await,
        ClientCommand::Cluster { cmd, .. } => cluster::run(cmd, &client, out).await,
        ClientCommand::Events { args, .. } => events::events(args, &client, out).await,
        ClientCommand::Logs { args, .. } => events::logs(args, &client, out).await,
        ClientCommand::Backup { cmd, .. } => backup::run(cmd, &client, out).await,
        ClientCommand::Host { cmd, .. } => host::run(cmd, &client, out).await,
        ClientCommand::Repo { cmd, .. } => repo::run(cmd, &client, out).await,
        ClientCommand::Project { cmd, .. } => project::run(cmd, &client, out).await,
        ClientCommand::Audit { cmd, .. } => audit::run(cmd, &client, out).await,
        ClientCommand::Admin { cmd, .. } => admin::run(cmd, &client, out).await,
        ClientCommand::Op { cmd, .. } => op::run(cmd, &client, out).await,
        ClientCommand::User { cmd, .. } => users::run_user(cmd, &client, out, explicit_project).await,
        ClientCommand::Role { cmd, .. } => users::run_role(cmd, &client, out, explicit_project).await,
        ClientCommand::Token { cmd, .. } => users::run_token(cmd, &client, out).await,
        ClientCommand::Login { .. } => unreachable!("handled above"),
        ClientCommand::Metrics { args, .. } => metrics::run(args, &client, out).await,
        ClientCommand::Alert { cmd, .. } => alert::run(cmd, &client, out).await,
        ClientCommand::Whoami { .. } => project::whoami(&client, out).await,
    }
}
