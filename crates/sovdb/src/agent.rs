//! `sovdb agent`: the node agent, one per host (see the `sovdb-agent` crate).
//!
//! It serves until SIGTERM or SIGINT. The processes it supervises outlive it: each has a
//! supervisor of its own, this same binary started as the hidden `sovdb agent supervise`,
//! so a restart of the agent neither stops nor restarts them.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use sovdb_agent::{AgentConfig, DEFAULT_BASE_DIR, DEFAULT_LISTEN};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    command: Option<AgentCommand>,

    /// Directory the agent keeps everything in: its TLS files (agent/tls/ca.crt,
    /// agent.crt, agent.key), and the state and logs of the processes it supervises
    #[arg(long, default_value = DEFAULT_BASE_DIR, value_name = "DIR")]
    base_dir: PathBuf,

    /// Address to serve the agent API on, with mutual TLS (port 0 picks a free port)
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    listen: SocketAddr,
}

#[derive(Debug, clap::Subcommand)]
enum AgentCommand {
    /// Supervise one process; the agent starts this itself
    #[command(hide = true)]
    Supervise {
        /// The agent's base directory
        #[arg(long, value_name = "DIR")]
        base_dir: PathBuf,
        /// The supervised process's name
        #[arg(long)]
        name: String,
    },
}

impl AgentArgs {
    /// Runs the supervisor if that is what was asked. It is a plain synchronous program,
    /// so it runs before (and without) the async runtime.
    pub fn supervise(&self) -> Option<anyhow::Result<()>> {
        let Some(AgentCommand::Supervise { base_dir, name }) = &self.command else { return None };
        Some(sovdb_agent::supervise(base_dir, name).with_context(|| format!("cannot supervise {name:?}")))
    }
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = AgentConfig::new(args.base_dir, args.listen)?;
    sovdb_agent::run(config, crate::serve::shutdown_signal()).await?;
    Ok(())
}
