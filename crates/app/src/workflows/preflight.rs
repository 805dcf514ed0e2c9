//! Preflight on a host: before a cluster's processes start there (after the packages are
//! ensured) and when a host is added, check that what the engine needs is really there
//! and works — the system users, every program answering its version, every Python module
//! Patroni imports importing as the user that runs Patroni (see
//! `sovdb_postgres::preflight`). A failure is permanent and says what is missing and which
//! `apt-get install` brings it: a host with a broken Python fails in seconds, with the
//! reason, instead of leaving a wait for a primary to run to its deadline.
//!
//! Read-only: nothing on the host changes, so running it twice is harmless.

use std::time::Duration;

use sovdb_agent::proto::RunCommandRequest;
use sovdb_agent::AgentClient;
use sovdb_operations::StepFailure;
use sovdb_postgres::preflight::{checks, Problem, Role};
use sovdb_store::HostRecord;

use super::{agent_failure, pg};
use crate::App;

/// How long the checks of one role may take on a host (Python imports on a slow disk).
const CHECK_TIMEOUT_SECS: u64 = 120;

/// Runs the checks of `roles` on `host`; a permanent failure listing every problem.
pub(crate) async fn run(app: &App, host: &HostRecord, roles: &[Role], version: &str) -> Result<(), StepFailure> {
    let client = pg::agent(app, host, Duration::from_secs(CHECK_TIMEOUT_SECS + 30)).await?;
    let problems = problems(&client, roles, version).await?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(StepFailure::permanent(format!(
        "host {} is not ready to run {}: {}",
        host.host.name,
        roles.iter().map(|r| describe(*r)).collect::<Vec<_>>().join(", "),
        problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )))
}

/// What `roles` lack on the host the agent serves.
pub(crate) async fn problems(client: &AgentClient, roles: &[Role], version: &str) -> Result<Vec<Problem>, StepFailure> {
    let mut found = Vec::new();
    let mut users_checked = Vec::new();
    for role in roles {
        let c = checks(*role, version);
        if !users_checked.contains(&c.user) {
            users_checked.push(c.user);
            let out = pg::exec(client, &["getent", "passwd", c.user], None, None).await?;
            if out.status.code == Some(2) {
                found.push(Problem {
                    what: format!("there is no system user {} (Debian's {} creates it)", c.user, c.user_package),
                    package: format!("--reinstall {}", c.user_package),
                });
                continue;
            }
        }
        let req = RunCommandRequest {
            user: Some(c.user.to_string()),
            timeout_secs: CHECK_TIMEOUT_SECS,
            ..RunCommandRequest::new(["/bin/sh", "-c", &c.script()])
        };
        let out = client.run_command(&req).await.map_err(|e| {
            let mut f = agent_failure(e);
            f.error.message = format!("cannot run the preflight checks as user {}: {}", c.user, f.error.message);
            f
        })?;
        if out.timed_out {
            return Err(StepFailure::permanent(format!(
                "the preflight checks of {} as user {} did not end within {CHECK_TIMEOUT_SECS} s: is the host's disk or \
                 Python stuck?",
                describe(*role),
                c.user
            )));
        }
        found.extend(c.problems(&out.stdout));
    }
    Ok(found)
}

fn describe(role: Role) -> &'static str {
    match role {
        Role::Member => "PostgreSQL members (PostgreSQL, Patroni, HAProxy)",
        Role::Dcs => "etcd",
        Role::Pooler => "PgBouncer",
        Role::Backup => "pgBackRest",
    }
}
