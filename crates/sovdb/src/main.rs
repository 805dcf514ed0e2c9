//! `sovdb`: one binary for the control plane (`sovdb serve`), the node agent (`sovdb agent`)
//! and every client command.
//!
//! Errors end here: printed as one line (`error: what happened: why`) on stderr with a
//! non-zero exit status. Usage errors come from clap with exit status 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sovdb_cli::ClientCommand;

mod agent;
mod fsutil;
mod serve;
mod tls;

/// sovdb: sovereign databases on demand, on infrastructure you control.
///
/// Run `sovdb serve` for the control plane and `sovdb agent` on each host; every other command
/// is a client of the control plane's API.
#[derive(Debug, Parser)]
#[command(name = "sovdb", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the REST API over the state store
    Serve(serve::ServeArgs),
    /// Run the node agent on a host: the control plane acts on the host through it
    Agent(agent::AgentArgs),
    #[command(flatten)]
    Client(ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_) | Command::Agent(_));
    init_logging(serving);
    if !serving {
        // A client writing into a closed pipe (`sovdb cluster show -o json | head -1`)
        // ends quietly, as Unix tools do, instead of panicking in `println!`.
        // SAFETY: setting a signal's disposition to the default has no preconditions.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    if let Command::Agent(args) = &cli.command {
        if let Some(result) = args.supervise() {
            return exit_status(result);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Agent(args) => agent::run(args).await,
            Command::Client(cmd) => sovdb_cli::run(cmd).await,
        }
    });
    exit_status(result)
}

fn exit_status(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The server logs at `info` by default, client commands only warnings; `SOVDB_LOG`
/// (a tracing filter such as `debug` or `info,sovdb_store=debug`) overrides both.
fn init_logging(serving: bool) {
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOVDB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    /// clap checks a command's definition only when it is parsed: check every one here
    /// (two arguments with one name, a bad default) rather than in a user's hands.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }

    /// A subcommand's own flag with the name of a global one (`--ca-file` once meant the
    /// API's CA and an S3 endpoint's at once) is not caught by clap: the global one wins.
    #[test]
    fn no_command_reuses_a_global_flags_name() {
        use clap::CommandFactory as _;
        fn walk(cmd: &clap::Command, globals: &mut Vec<String>, clashes: &mut Vec<String>) {
            let mine: Vec<&clap::Arg> = cmd.get_arguments().collect();
            // clap tells arguments apart by ID (the field's name), so a field named like a
            // global one takes its value whatever its flag is called: check both.
            for a in mine.iter().filter(|a| !a.is_global_set()) {
                let names = [Some(a.get_id().as_str()), a.get_long()];
                if names.iter().flatten().any(|n| globals.iter().any(|g| g == n)) {
                    clashes.push(format!("{} {}", cmd.get_name(), a.get_id()));
                }
            }
            let before = globals.len();
            for a in mine.iter().filter(|a| a.is_global_set()) {
                globals.push(a.get_id().to_string());
                globals.extend(a.get_long().map(String::from));
            }
            for sub in cmd.get_subcommands() {
                walk(sub, globals, clashes);
            }
            globals.truncate(before);
        }
        let mut clashes = Vec::new();
        walk(&super::Cli::command(), &mut Vec::new(), &mut clashes);
        assert!(clashes.is_empty(), "flags that a global flag shadows: {clashes:?}");
    }
}
