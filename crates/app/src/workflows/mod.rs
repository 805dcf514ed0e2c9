//! Every workflow the control plane runs, one per file. Each file says what its
//! operation's parameters are, its steps (do and undo) and why each step is idempotent.
//!
//! Steps reach hosts only through the app's services (`StepCtx::services` is the
//! [`App`]): the store, the installation's CA, providers and agents.

use sovdb_operations::Workflow;

use crate::App;

/// Every workflow, to register with the engine and to create operations from.
pub fn all() -> Vec<Workflow<App>> {
    vec![]
}
