//! The `sovdb` client commands. They talk to the REST API only: anything the CLI can do, an
//! HTTP client with the same token can do, with the same permissions and audit.
//!
//! Where the server and token come from, first match wins: `--server`/`--token`; then
//! `SOVDB_SERVER`/`SOVDB_TOKEN`; then `~/.config/sovdb/config.toml`; then the server running
//! on this machine (its data directory's `api.url` and `admin.token`), so on the machine
//! that runs `sovdb serve` the CLI works with no configuration.

mod client;
mod commands;
pub mod config;
mod follow;
mod output;

pub use commands::{run, ClientCommand};
pub use config::{default_data_dir, GlobalOpts};
