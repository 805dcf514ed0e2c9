//! The sovdb node agent: one per host, the only way the control plane acts on a host.
//!
//! The agent serves a small set of idempotent primitives (write a file, install packages,
//! keep a process running, run a command, read files, report facts and metrics) as JSON
//! over HTTPS with mutual TLS: it answers only clients whose certificate the installation
//! CA signed. The protocol is in [`proto`], shared with the [`client`].
//!
//! Guarantees:
//! - Every primitive that changes the host is idempotent and reports `changed`.
//! - Everything the agent keeps is under its base directory; agents with different base
//!   directories (and ports) on one host do not interfere.
//! - Supervised processes do not depend on the agent: each has a detached supervisor
//!   process (the same binary, see [`supervise`]), so an agent restart, even `kill -9`,
//!   neither stops nor restarts them. A new agent reads their state from files.
//! - Errors are `{code, message}` with an HTTP status; a command that fails is an answer,
//!   not an error. Nothing logged or returned as an error contains file contents or keys.
//!
//! See `docs/agent.md` for the protocol and the supervision model.

pub mod client;
mod command;
mod error;
mod files;
mod host;
mod logfile;
mod metrics;
mod logs;
mod packages;
pub mod proto;
mod server;
mod services;
mod supervisor;
mod syslog;
mod sys;
mod tls;

pub use client::{AgentClient, AgentError, ClientIdentity};
pub use error::ServeError;
pub use server::{
    run, tls_dir, Agent, AgentConfig, TlsListener, DEFAULT_BASE_DIR, DEFAULT_LISTEN, DEFAULT_METRICS_INTERVAL,
};
pub use services::SUPERVISE_ARGS;
pub use supervisor::{supervise, SuperviseError};
