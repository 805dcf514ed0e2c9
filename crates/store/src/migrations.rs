//! Versioned migrations. Each is one SQL file, applied once, in its own transaction, and
//! recorded in `schema_migrations`; the files are the history of the schema and are never
//! edited once released (add a new one instead).

/// `(version, name, sql)`, in order, versions from 1 without gaps.
pub(crate) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (2, "operations", include_str!("../migrations/0002_operations.sql")),
    (3, "hosts", include_str!("../migrations/0003_hosts.sql")),
    (4, "clusters", include_str!("../migrations/0004_clusters.sql")),
    (5, "backup_repos", include_str!("../migrations/0005_backup_repos.sql")),
    (6, "retained_backups", include_str!("../migrations/0006_retained_backups.sql")),
    (7, "users", include_str!("../migrations/0007_users.sql")),
    (8, "metrics", include_str!("../migrations/0008_metrics.sql")),
    (9, "alerts", include_str!("../migrations/0009_alerts.sql")),
    (10, "alert_rule_settings", include_str!("../migrations/0010_alert_rule_settings.sql")),
    (11, "step_progress", include_str!("../migrations/0011_step_progress.sql")),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at BIGINT NOT NULL
)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_from_one_without_gaps() {
        for (i, (version, _, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
        }
    }
}
