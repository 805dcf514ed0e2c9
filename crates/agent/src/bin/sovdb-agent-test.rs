//! A minimal binary around the agent library for its integration tests, which cannot use
//! the `sovdb` binary (it is built by another package). It understands the same two
//! commands the agent relies on:
//!
//! - `sovdb-agent-test serve --base-dir DIR --listen ADDR`: runs the agent with the default
//!   TLS file locations, prints `listening on ADDR` on stdout once bound, stops on SIGTERM.
//! - `sovdb-agent-test agent supervise --base-dir DIR --name NAME`: the supervisor, started
//!   by the agent itself (see `sovdb_agent::SUPERVISE_ARGS`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SOVDB_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let (Some(base_dir), command) = (flag("--base-dir"), args.first().map(String::as_str)) else {
        eprintln!(
            "usage: sovdb-agent-test serve --base-dir DIR --listen ADDR | agent supervise --base-dir DIR --name NAME"
        );
        return ExitCode::from(2);
    };
    let base_dir = PathBuf::from(base_dir);
    match command {
        Some("agent") if args.get(1).map(String::as_str) == Some("supervise") => {
            let Some(name) = flag("--name") else {
                eprintln!("error: --name is required");
                return ExitCode::from(2);
            };
            match sovdb_agent::supervise(&base_dir, &name) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("serve") => {
            let listen: SocketAddr = match flag("--listen").unwrap_or_else(|| "127.0.0.1:0".into()).parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: --listen: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
            let result = runtime.block_on(async move {
                let config = sovdb_agent::AgentConfig::new(base_dir, listen)?;
                let agent = sovdb_agent::Agent::bind(config).await?;
                let addr = agent.local_addr().map_err(sovdb_agent::ServeError::Serve)?;
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
                agent
                    .serve(async {
                        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                            .expect("a SIGTERM handler");
                        term.recv().await;
                    })
                    .await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {
            eprintln!("error: unknown command");
            ExitCode::from(2)
        }
    }
}
