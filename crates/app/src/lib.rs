//! The application layer: the only place with business rules.
//!
//! Every public method takes the request's [`Ctx`] (who, in which project, from where),
//! validates its input, checks the caller may do it, and then reads or writes the store.
//! Every accepted change writes its desired state and its audit record in one store
//! transaction, so there is never a change without a record or a record without a change.

use std::sync::Arc;

use sovdb_store::Store;

mod audit;
mod auth;
mod bootstrap;
mod clusters;
mod error;
mod locations;
mod operations;
mod projects;
mod validate;

pub use auth::{hash_token, new_token_secret, Ctx};
pub use bootstrap::{Bootstrapped, ADMIN_USER, DEFAULT_PROJECT, LOCAL_LOCATION};
pub use error::AppError;

pub type Result<T, E = AppError> = std::result::Result<T, E>;

/// The current time at the precision the store keeps (milliseconds), so what a create
/// returns is exactly what a later read returns.
pub(crate) fn now() -> chrono::DateTime<chrono::Utc> {
    let t = chrono::Utc::now();
    chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The application: cheap to clone, shared by every request handler.
#[derive(Clone)]
pub struct App {
    store: Arc<dyn Store>,
}

impl App {
    pub fn new(store: Arc<dyn Store>) -> App {
        App { store }
    }

    /// Whether the store answers; for health checks.
    pub async fn health(&self) -> Result<()> {
        let mut tx = self.store.read().await?;
        tx.meta_get("installation_id").await?;
        Ok(())
    }
}
