//! Who may do what: the one permission table, and the checks every app method makes.
//!
//! Every public app method that serves a request names its [`Action`] and calls
//! [`Ctx::require`] (or [`Ctx::require_in`] when the action is about another project than
//! the request's) before it reads or writes anything else, so a refusal never depends on
//! whether the target exists. Roles are ordered: each may do everything the roles below it
//! may (`admin` > `owner` > `operator` > `developer` > `viewer`); `admin` holds everywhere.
//!
//! A project in which the caller holds no role is "not found" (see
//! [`App::authenticate`](crate::App::authenticate)), never "forbidden": the checks here
//! only ever see projects the caller belongs to.

use sovdb_types::{Project, Role};

use crate::{AppError, Ctx, Result};

/// Who may do an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller.
    Anyone,
    /// The installation-wide `admin` role.
    Admin,
    /// At least this role in the project the action is about (or `admin`).
    InProject(Role),
}

/// Everything a caller can ask for, by what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    // Installation-wide.
    LocationRead,
    LocationCreate,
    LocationDelete,
    /// Changing a location's settings (its syslog forwarding).
    LocationSet,
    HostRead,
    HostAdd,
    HostDrain,
    HostRemove,
    /// Renewing a location's etcd certificates before they are due.
    LocationRenewCerts,
    /// Renewing a host's agent and pgBackRest server certificates before they are due.
    HostRenewCerts,
    AuditRead,
    /// Re-sealing every secret under a new master key.
    MasterKeyRotate,
    /// Reading and changing where directory (LDAP) logins go.
    DirectoryConfigure,
    ProjectCreate,
    /// Creating a user without a role in a project.
    UserCreate,
    /// Disabling and enabling users.
    UserDisable,
    UserPasswordReset,
    UserDelete,
    /// Granting and revoking the installation-wide admin role.
    AdminGrant,
    /// Creating, listing and revoking the caller's own tokens.
    OwnTokens,
    /// Creating, listing and revoking another user's tokens.
    OthersTokens,
    // In a project.
    ClusterRead,
    ClusterCreate,
    ClusterDelete,
    ClusterConnect,
    /// Reading a cluster's PostgreSQL and Patroni logs (they may hold SQL text).
    ClusterLogs,
    ClusterSwitchover,
    ClusterFailover,
    ClusterRestart,
    ClusterScale,
    ClusterSetParams,
    /// Changing a cluster's network allow-list.
    ClusterAllowList,
    /// Renewing a cluster's internal certificates before they are due.
    ClusterRenewCerts,
    BackupRead,
    /// Reading clusters' metrics (the API, `/metrics`, Prometheus' service discovery).
    MetricsRead,
    BackupCreate,
    BackupVerify,
    BackupPolicySet,
    /// Deleting backups: a deleted cluster's kept ones, or a cluster's with its delete.
    BackupDelete,
    ClusterRestore,
    RepoRead,
    RepoCreate,
    RepoDelete,
    OperationRead,
    OperationCancel,
    /// Reading alerts, their rules, channels (without secrets), silences and deliveries.
    AlertRead,
    /// Creating and deleting alert rules, channels and silences; testing a channel.
    AlertManage,
    /// Listing the project's members.
    MemberRead,
    /// Creating users with a role in the project; granting and revoking its roles.
    MemberChange,
}

impl Action {
    /// Every action, in the order of the table in `docs/security.md`.
    pub const ALL: &'static [Action] = &[
        Action::LocationRead,
        Action::LocationCreate,
        Action::LocationDelete,
        Action::LocationSet,
        Action::HostRead,
        Action::HostAdd,
        Action::HostDrain,
        Action::HostRemove,
        Action::LocationRenewCerts,
        Action::HostRenewCerts,
        Action::AuditRead,
        Action::MasterKeyRotate,
        Action::DirectoryConfigure,
        Action::ProjectCreate,
        Action::UserCreate,
        Action::UserDisable,
        Action::UserPasswordReset,
        Action::UserDelete,
        Action::AdminGrant,
        Action::OwnTokens,
        Action::OthersTokens,
        Action::ClusterRead,
        Action::BackupRead,
        Action::RepoRead,
        Action::OperationRead,
        Action::MetricsRead,
        Action::AlertRead,
        Action::ClusterCreate,
        Action::ClusterDelete,
        Action::ClusterConnect,
        Action::ClusterLogs,
        Action::ClusterSwitchover,
        Action::ClusterFailover,
        Action::ClusterRestart,
        Action::ClusterScale,
        Action::ClusterSetParams,
        Action::ClusterAllowList,
        Action::ClusterRenewCerts,
        Action::BackupCreate,
        Action::BackupVerify,
        Action::BackupPolicySet,
        Action::BackupDelete,
        Action::ClusterRestore,
        Action::RepoCreate,
        Action::RepoDelete,
        Action::OperationCancel,
        Action::AlertManage,
        Action::MemberRead,
        Action::MemberChange,
    ];

    /// The permission table: who may do the action, and how a refusal names it.
    pub fn rule(self) -> (Need, &'static str) {
        use Need::{Admin as AdminRole, Anyone, InProject};
        use Role::{Developer, Operator, Owner, Viewer};
        match self {
            Action::LocationRead => (Anyone, "reading locations"),
            Action::LocationCreate => (AdminRole, "creating a location"),
            Action::LocationDelete => (AdminRole, "deleting a location"),
            Action::LocationSet => (AdminRole, "changing a location's settings"),
            Action::HostRead => (AdminRole, "reading hosts"),
            Action::HostAdd => (AdminRole, "adding a host"),
            Action::HostDrain => (AdminRole, "draining a host"),
            Action::HostRemove => (AdminRole, "removing a host"),
            Action::LocationRenewCerts => (AdminRole, "renewing a location's etcd certificates"),
            Action::HostRenewCerts => (AdminRole, "renewing a host's certificates"),
            Action::AuditRead => (AdminRole, "reading the audit log"),
            Action::MasterKeyRotate => (AdminRole, "rotating the master key"),
            Action::DirectoryConfigure => (AdminRole, "configuring directory logins"),
            Action::ProjectCreate => (AdminRole, "creating a project"),
            Action::UserCreate => (AdminRole, "creating a user without a project role"),
            Action::UserDisable => (AdminRole, "disabling or enabling a user"),
            Action::UserPasswordReset => (AdminRole, "setting another user's password"),
            Action::UserDelete => (AdminRole, "deleting a user"),
            Action::AdminGrant => (AdminRole, "granting or revoking the admin role"),
            Action::OwnTokens => (Anyone, "managing your own tokens"),
            Action::OthersTokens => (AdminRole, "managing another user's tokens"),
            Action::ClusterRead => (InProject(Viewer), "reading clusters and their events"),
            Action::BackupRead => (InProject(Viewer), "reading backups, backup policies and kept backups"),
            Action::RepoRead => (InProject(Viewer), "reading backup repositories"),
            Action::OperationRead => (InProject(Viewer), "reading operations"),
            Action::MetricsRead => (InProject(Viewer), "reading metrics"),
            Action::AlertRead => (InProject(Viewer), "reading alerts"),
            Action::AlertManage => (InProject(Operator), "managing alert rules, channels and silences"),
            Action::ClusterCreate => (InProject(Developer), "creating a cluster"),
            Action::ClusterDelete => (InProject(Developer), "deleting a cluster"),
            Action::ClusterConnect => (InProject(Developer), "reading a cluster's connection and password"),
            Action::ClusterLogs => (InProject(Developer), "reading a cluster's logs"),
            Action::ClusterSwitchover => (InProject(Operator), "switching over a cluster"),
            Action::ClusterFailover => (InProject(Operator), "failing over a cluster"),
            Action::ClusterRestart => (InProject(Operator), "restarting a cluster"),
            Action::ClusterScale => (InProject(Operator), "scaling a cluster"),
            Action::ClusterSetParams => (InProject(Operator), "changing a cluster's parameters"),
            Action::ClusterAllowList => (InProject(Operator), "changing a cluster's network allow-list"),
            Action::ClusterRenewCerts => (InProject(Operator), "renewing a cluster's certificates"),
            Action::BackupCreate => (InProject(Operator), "backing up a cluster"),
            Action::BackupVerify => (InProject(Operator), "verifying a cluster's backups"),
            Action::BackupPolicySet => (InProject(Operator), "setting a backup policy"),
            Action::BackupDelete => (InProject(Operator), "deleting backups"),
            Action::ClusterRestore => (InProject(Operator), "restoring a cluster"),
            Action::RepoCreate => (InProject(Operator), "creating a backup repository"),
            Action::RepoDelete => (InProject(Operator), "deleting a backup repository"),
            Action::OperationCancel => (InProject(Operator), "cancelling an operation"),
            Action::MemberRead => (InProject(Owner), "listing the project's users"),
            Action::MemberChange => (InProject(Owner), "managing the project's users and roles"),
        }
    }

    pub fn need(self) -> Need {
        self.rule().0
    }

    /// What the caller was doing, for refusals: "switching over a cluster".
    pub fn doing(self) -> &'static str {
        self.rule().1
    }

    /// Whether a caller with `roles` may do the action in `project`: the pure rule.
    pub fn allows(self, is_admin: bool, role_in_project: Option<Role>) -> bool {
        match self.need() {
            _ if is_admin => true,
            Need::Anyone => true,
            Need::Admin => false,
            Need::InProject(needed) => role_in_project.is_some_and(|have| have.includes(needed)),
        }
    }
}

impl Ctx {
    /// The strongest role the caller holds in `project` (the installation-wide admin role
    /// is not a project role and is not counted).
    pub fn role_in(&self, project: &Project) -> Option<Role> {
        self.roles
            .iter()
            .filter(|b| b.project_id == Some(project.id) && b.role != Role::Admin)
            .map(|b| b.role)
            .max_by_key(|r| r.rank())
    }

    /// Refuses, with a message naming the role needed, unless the caller may do `action`
    /// in the request's project.
    pub fn require(&self, action: Action) -> Result<()> {
        self.require_in(action, &self.project)
    }

    /// As [`Ctx::require`], for an action about `project`, which the caller must already
    /// be known to belong to (else it answers "not found" before this is asked).
    pub fn require_in(&self, action: Action, project: &Project) -> Result<()> {
        let have = self.role_in(project);
        if action.allows(self.is_admin(), have) {
            return Ok(());
        }
        let doing = action.doing();
        Err(AppError::Forbidden(match action.need() {
            Need::Anyone => unreachable!("anyone may"),
            Need::Admin => format!("{doing} needs the admin role"),
            Need::InProject(needed) => {
                let have = have.map(|r| r.as_str()).unwrap_or("no role");
                format!("{doing} needs the {} role in project {} (you have {have})", needed.as_str(), project.name)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use sovdb_types::{ProjectId, RoleBinding, User, UserId};

    use super::*;

    fn ctx(roles: &[(Role, Option<ProjectId>)], project: &Project) -> Ctx {
        let user = User { id: UserId::new(), name: "ann".into(), disabled: false, created_at: chrono::Utc::now() };
        Ctx {
            roles: roles
                .iter()
                .map(|(role, p)| RoleBinding { user_id: user.id, role: *role, project_id: *p })
                .collect(),
            user,
            project: project.clone(),
            source: None,
            request_id: None,
            token: None,
        }
    }

    fn project(name: &str) -> Project {
        Project { id: ProjectId::new(), name: name.into(), created_at: chrono::Utc::now() }
    }

    /// The least role that may do each action: what docs/security.md promises.
    fn least_role(a: Action) -> &'static str {
        match a.need() {
            Need::Anyone => "anyone",
            Need::Admin => "admin",
            Need::InProject(r) => r.as_str(),
        }
    }

    #[test]
    fn every_action_is_in_the_table_once() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            assert!(seen.insert(*a), "{a:?} twice");
            assert!(!a.doing().is_empty());
        }
        // A new variant that is not in ALL would have no row in the docs.
        assert_eq!(seen.len(), 49, "update Action::ALL, docs/security.md and this count together");
    }

    #[test]
    fn the_table_says_who_may_do_what() {
        use Action::*;
        let expect: &[(Action, &str)] = &[
            (LocationRead, "anyone"),
            (LocationCreate, "admin"),
            (LocationDelete, "admin"),
            (LocationSet, "admin"),
            (HostRead, "admin"),
            (HostAdd, "admin"),
            (HostDrain, "admin"),
            (HostRemove, "admin"),
            (LocationRenewCerts, "admin"),
            (HostRenewCerts, "admin"),
            (AuditRead, "admin"),
            (MasterKeyRotate, "admin"),
            (DirectoryConfigure, "admin"),
            (ProjectCreate, "admin"),
            (UserCreate, "admin"),
            (UserDisable, "admin"),
            (UserPasswordReset, "admin"),
            (UserDelete, "admin"),
            (AdminGrant, "admin"),
            (OwnTokens, "anyone"),
            (OthersTokens, "admin"),
            (ClusterRead, "viewer"),
            (BackupRead, "viewer"),
            (RepoRead, "viewer"),
            (OperationRead, "viewer"),
            (MetricsRead, "viewer"),
            (AlertRead, "viewer"),
            (ClusterCreate, "developer"),
            (ClusterDelete, "developer"),
            (ClusterConnect, "developer"),
            (ClusterLogs, "developer"),
            (ClusterSwitchover, "operator"),
            (ClusterFailover, "operator"),
            (ClusterRestart, "operator"),
            (ClusterScale, "operator"),
            (ClusterSetParams, "operator"),
            (ClusterAllowList, "operator"),
            (ClusterRenewCerts, "operator"),
            (BackupCreate, "operator"),
            (BackupVerify, "operator"),
            (BackupPolicySet, "operator"),
            (BackupDelete, "operator"),
            (ClusterRestore, "operator"),
            (RepoCreate, "operator"),
            (RepoDelete, "operator"),
            (OperationCancel, "operator"),
            (AlertManage, "operator"),
            (MemberRead, "owner"),
            (MemberChange, "owner"),
        ];
        assert_eq!(expect.len(), Action::ALL.len());
        for (a, who) in expect {
            assert_eq!(least_role(*a), *who, "{a:?}");
        }
    }

    #[test]
    fn each_role_may_do_what_the_roles_below_it_may() {
        let p = project("p");
        for a in Action::ALL {
            for weak in Role::ALL {
                for strong in Role::ALL.into_iter().filter(|s| s.includes(weak) && *s != Role::Admin) {
                    let (w, s) = (ctx(&[(weak, Some(p.id))], &p), ctx(&[(strong, Some(p.id))], &p));
                    if w.require(*a).is_ok() {
                        assert!(s.require(*a).is_ok(), "{a:?}: {weak:?} may but {strong:?} may not");
                    }
                }
            }
        }
    }

    #[test]
    fn a_viewer_may_only_read() {
        let p = project("p");
        let viewer = ctx(&[(Role::Viewer, Some(p.id))], &p);
        let allowed: Vec<Action> = Action::ALL.iter().copied().filter(|a| viewer.require(*a).is_ok()).collect();
        use Action::*;
        assert_eq!(
            allowed,
            [LocationRead, OwnTokens, ClusterRead, BackupRead, RepoRead, OperationRead, MetricsRead, AlertRead]
        );
        assert!(viewer.require(ClusterConnect).is_err(), "no secrets");
        assert!(viewer.require(ClusterLogs).is_err(), "logs may hold SQL text");
    }

    #[test]
    fn admin_may_do_everything_anywhere() {
        let p = project("p");
        let admin = ctx(&[(Role::Admin, None)], &p);
        for a in Action::ALL {
            assert!(admin.require(*a).is_ok(), "{a:?}");
        }
    }

    #[test]
    fn roles_count_only_in_their_own_project() {
        let (p, q) = (project("p"), project("q"));
        // Owner of q, viewer of p, acting in p: a viewer there.
        let c = ctx(&[(Role::Owner, Some(q.id)), (Role::Viewer, Some(p.id))], &p);
        assert_eq!(c.role_in(&p), Some(Role::Viewer));
        assert!(c.require(Action::ClusterDelete).is_err());
        assert!(c.require_in(Action::ClusterDelete, &q).is_ok());
        // The strongest of several roles in one project counts.
        let c = ctx(&[(Role::Viewer, Some(p.id)), (Role::Operator, Some(p.id))], &p);
        assert_eq!(c.role_in(&p), Some(Role::Operator));
        assert!(c.require(Action::ClusterSwitchover).is_ok());
        // A project owner is no admin.
        let c = ctx(&[(Role::Owner, Some(p.id))], &p);
        assert!(c.require(Action::HostAdd).is_err());
        assert!(c.require(Action::OwnTokens).is_ok());
    }

    #[test]
    fn refusals_name_the_role_needed_and_the_role_held() {
        let p = project("p");
        let viewer = ctx(&[(Role::Viewer, Some(p.id))], &p);
        let e = viewer.require(Action::ClusterSwitchover).unwrap_err();
        assert!(matches!(e, AppError::Forbidden(_)));
        assert_eq!(e.to_string(), "switching over a cluster needs the operator role in project p (you have viewer)");
        let e = viewer.require(Action::HostAdd).unwrap_err();
        assert_eq!(e.to_string(), "adding a host needs the admin role");
    }

    #[test]
    fn the_docs_hold_the_table() {
        let docs = include_str!("../../../docs/security.md");
        for a in Action::ALL {
            let row = format!("| {} | {} |", a.doing(), least_role(*a));
            assert!(docs.contains(&row), "docs/security.md lacks the row {row:?}");
        }
    }
}
