//! What a host needs to run the postgres engine, and the checks that prove it has it,
//! before anything waits on it: the packages of each role (from `packages.list`, which
//! `scripts/install-deps.sh` reads too), the system users, the programs (each must answer
//! its version), and the Python modules Patroni imports, imported as the user that runs
//! Patroni. A failed check names the missing piece and the command that installs it, so a
//! host with a broken Python fails in seconds with the reason instead of leaving a wait
//! for a primary to time out.
//!
//! Pure: the app runs [`Checks::script`] through the agent and reads its answer with
//! [`Checks::problems`].

use crate::{bin_dir, ETCD_OS_USER, OS_USER};

/// `packages.list`, compiled in.
const PACKAGES_LIST: &str = include_str!("../packages.list");

/// What a host does for a cluster; each role has its packages and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PostgreSQL, Patroni and HAProxy.
    Member,
    /// The location's etcd.
    Dcs,
    /// PgBouncer.
    Pooler,
    /// pgBackRest.
    Backup,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Dcs => "dcs",
            Role::Pooler => "pooler",
            Role::Backup => "backup",
        }
    }
}

/// The Debian packages of `role`, for PostgreSQL `version`.
pub fn packages(role: Role, version: &str) -> Vec<String> {
    PACKAGES_LIST
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .find(|(r, _)| r.trim() == role.as_str())
        .map(|(_, names)| names.split_whitespace().map(|n| n.replace("{version}", version)).collect())
        .unwrap_or_default()
}

/// A program that must answer `args` with exit status 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub path: String,
    pub args: &'static [&'static str],
    pub package: String,
}

/// A Python module Patroni imports, and the package that has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Module {
    pub name: &'static str,
    pub package: &'static str,
}

/// The Python modules of Patroni's that a member needs: Patroni itself and what it
/// imports for our configuration (etcd3 DCS over TLS, the REST API over TLS, PostgreSQL
/// through psycopg2), including the ones Debian makes only a Recommends.
pub const PATRONI_MODULES: &[Module] = &[
    Module { name: "patroni", package: "patroni" },
    Module { name: "psycopg2", package: "python3-psycopg2" },
    Module { name: "urllib3", package: "python3-urllib3" },
    Module { name: "idna", package: "python3-idna" },
    Module { name: "etcd", package: "python3-etcd" },
    Module { name: "yaml", package: "python3-yaml" },
    Module { name: "dateutil", package: "python3-dateutil" },
    Module { name: "psutil", package: "python3-psutil" },
];

/// The Python interpreter Patroni's script names in its `#!` line.
pub const PYTHON: &str = "/usr/bin/python3";

/// The checks of one role on one host, run as one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checks {
    pub role: Role,
    /// The system user the role's processes run as, and the package that creates it.
    pub user: &'static str,
    pub user_package: &'static str,
    pub programs: Vec<Program>,
    pub modules: Vec<Module>,
}

/// What is wrong, and how to mend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `python module idna does not import as user postgres (ModuleNotFoundError: …)`.
    pub what: String,
    /// The package that brings the missing piece.
    pub package: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}; install it with `apt-get install {}` (`apt-get install --reinstall {}` if it is installed but broken)",
            self.what,
            self.package.trim_start_matches("--reinstall "),
            self.package.trim_start_matches("--reinstall ")
        )
    }
}

pub fn checks(role: Role, version: &str) -> Checks {
    let pkg = |p: &str| p.to_string();
    let bin = bin_dir(version);
    let server = format!("postgresql-{version}");
    match role {
        Role::Member => Checks {
            role,
            user: OS_USER,
            user_package: "postgresql-common",
            programs: vec![
                Program { path: format!("{bin}/postgres"), args: &["--version"], package: server.clone() },
                Program { path: format!("{bin}/initdb"), args: &["--version"], package: server.clone() },
                Program { path: format!("{bin}/pg_ctl"), args: &["--version"], package: server.clone() },
                Program {
                    path: format!("{bin}/psql"),
                    args: &["--version"],
                    package: format!("postgresql-client-{version}"),
                },
                Program { path: PYTHON.into(), args: &["--version"], package: pkg("python3") },
                Program { path: "/usr/bin/patroni".into(), args: &["--version"], package: pkg("patroni") },
                Program { path: "/usr/sbin/haproxy".into(), args: &["-v"], package: pkg("haproxy") },
            ],
            modules: PATRONI_MODULES.to_vec(),
        },
        Role::Dcs => Checks {
            role,
            user: ETCD_OS_USER,
            user_package: "etcd-server",
            programs: vec![
                Program { path: "/usr/bin/etcd".into(), args: &["--version"], package: pkg("etcd-server") },
                Program { path: "/usr/bin/etcdctl".into(), args: &["version"], package: pkg("etcd-client") },
            ],
            modules: Vec::new(),
        },
        Role::Pooler => Checks {
            role,
            user: OS_USER,
            user_package: "postgresql-common",
            programs: vec![Program {
                path: "/usr/sbin/pgbouncer".into(),
                args: &["--version"],
                package: pkg("pgbouncer"),
            }],
            modules: Vec::new(),
        },
        Role::Backup => Checks {
            role,
            user: OS_USER,
            user_package: "postgresql-common",
            programs: vec![Program {
                path: "/usr/bin/pgbackrest".into(),
                args: &["version"],
                package: pkg("pgbackrest"),
            }],
            modules: Vec::new(),
        },
    }
}

/// The package that has Python module `name` (the top-level one), where we know it.
fn module_package(name: &str) -> Option<&'static str> {
    let top = name.split('.').next().unwrap_or(name);
    PATRONI_MODULES.iter().find(|m| m.name == top).map(|m| m.package).or(match top {
        "OpenSSL" => Some("python3-openssl"),
        "cryptography" => Some("python3-cryptography"),
        "certifi" => Some("python3-certifi"),
        "six" => Some("python3-six"),
        "click" => Some("python3-click"),
        "prettytable" => Some("python3-prettytable"),
        "ydiff" | "cdiff" => Some("python3-cdiff"),
        _ => None,
    })
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/-_.=:".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Imports each module given as an argument on its own, printing one line per failure:
/// `module<TAB>NAME<TAB>EXCEPTION: MESSAGE`.
const IMPORTS_PY: &str = r#"import importlib, sys
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except BaseException as e:
        print('module\t%s\t%s: %s' % (m, type(e).__name__, str(e).replace('\n', ' ')))
"#;

impl Checks {
    /// A `sh -c` script, to run as [`Checks::user`], that prints one tab-separated line
    /// per failure (`program<TAB>PATH<TAB>STATUS<TAB>LAST LINE`, `module<TAB>…`) and
    /// nothing when all is well; it always exits 0.
    pub fn script(&self) -> String {
        let mut s = String::new();
        for p in &self.programs {
            let argv: Vec<String> =
                std::iter::once(&p.path as &str).chain(p.args.iter().copied()).map(sh_quote).collect();
            s.push_str(&format!(
                "out=$({} 2>&1 </dev/null); rc=$?; if [ $rc -ne 0 ]; then \
                 printf 'program\\t%s\\t%s\\t%s\\n' {} \"$rc\" \"$(printf '%s' \"$out\" | tail -n 1)\"; fi\n",
                argv.join(" "),
                sh_quote(&p.path)
            ));
        }
        if !self.modules.is_empty() {
            let names: Vec<&str> = self.modules.iter().map(|m| m.name).collect();
            // The interpreter failing as a whole (not one module) is a problem too.
            s.push_str(&format!(
                "if [ -x {py} ]; then out=$({py} -c {} {} 2>&1 </dev/null); rc=$?; \
                 printf '%s\\n' \"$out\" | grep '^module'; if [ $rc -ne 0 ]; then \
                 printf 'program\\t%s\\t%s\\t%s\\n' {py} \"$rc\" \"$(printf '%s' \"$out\" | tail -n 1)\"; fi; fi\n",
                sh_quote(IMPORTS_PY),
                names.join(" "),
                py = PYTHON
            ));
        }
        s.push_str("exit 0\n");
        s
    }

    /// The problems [`Checks::script`]'s output reports.
    pub fn problems(&self, output: &str) -> Vec<Problem> {
        let mut found = Vec::new();
        for line in output.lines() {
            let fields: Vec<&str> = line.splitn(4, '\t').collect();
            match fields.as_slice() {
                ["program", path, rc, last] => {
                    let package = self
                        .programs
                        .iter()
                        .find(|p| p.path == *path)
                        .map(|p| p.package.clone())
                        .unwrap_or_else(|| "the package that has it".into());
                    let why = match *rc {
                        "127" => "is missing".to_string(),
                        "126" => format!("can't be run by user {}", self.user),
                        rc => format!("fails as user {} (exit status {rc}: {})", self.user, last.trim()),
                    };
                    found.push(Problem { what: format!("{path} {why}"), package });
                }
                ["module", name, error] => {
                    // A module that can't import because another is missing: name that one.
                    let missing = error
                        .split_once("No module named '")
                        .and_then(|(_, rest)| rest.split_once('\''))
                        .map(|(m, _)| m);
                    let package = missing
                        .and_then(module_package)
                        .or_else(|| module_package(name))
                        .unwrap_or("python3")
                        .to_string();
                    found.push(Problem {
                        what: format!("python module {name} does not import as user {} ({})", self.user, error.trim()),
                        package,
                    });
                }
                _ => {}
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_its_packages_with_the_version() {
        let member = packages(Role::Member, "15");
        assert_eq!(member[0], "postgresql-15");
        for p in ["patroni", "python3-psycopg2", "python3-etcd", "python3-urllib3", "python3-idna", "haproxy"] {
            assert!(member.contains(&p.to_string()), "{p} in {member:?}");
        }
        assert_eq!(packages(Role::Dcs, "15"), ["etcd-server", "etcd-client"]);
        assert_eq!(packages(Role::Pooler, "15"), ["pgbouncer"]);
        assert_eq!(packages(Role::Backup, "15"), ["pgbackrest", "ca-certificates"]);
    }

    #[test]
    fn every_module_checked_comes_from_a_package_the_member_installs_or_its_depends() {
        let member = packages(Role::Member, "15");
        // Those that Debian makes only a Recommends must be named in the list.
        for m in ["python3-psycopg2", "python3-etcd", "python3-idna"] {
            assert!(member.contains(&m.to_string()), "{m}");
        }
    }

    #[test]
    fn a_missing_module_names_its_package() {
        let c = checks(Role::Member, "15");
        let out = "module\tidna\tModuleNotFoundError: No module named 'idna'\n\
                   module\tpatroni\tModuleNotFoundError: No module named 'yaml'\n";
        let p = c.problems(out);
        assert_eq!(p.len(), 2);
        assert_eq!(
            p[0].to_string(),
            "python module idna does not import as user postgres (ModuleNotFoundError: No module named 'idna'); \
             install it with `apt-get install python3-idna` (`apt-get install --reinstall python3-idna` if it is \
             installed but broken)"
        );
        assert_eq!(p[1].package, "python3-yaml", "the module that is missing, not the one that imports it");
    }

    #[test]
    fn a_missing_or_failing_program_names_its_package() {
        let c = checks(Role::Member, "15");
        let out = "program\t/usr/bin/patroni\t127\tsh: 1: /usr/bin/patroni: not found\n\
                   program\t/usr/sbin/haproxy\t1\tsegfault\n";
        let p = c.problems(out);
        assert!(p[0].to_string().starts_with("/usr/bin/patroni is missing; install it with `apt-get install patroni`"));
        assert_eq!(p[1].what, "/usr/sbin/haproxy fails as user postgres (exit status 1: segfault)");
        assert!(c.problems("").is_empty());
    }

    #[test]
    fn the_script_checks_every_program_and_module() {
        let c = checks(Role::Member, "15");
        let s = c.script();
        assert!(s.contains("/usr/lib/postgresql/15/bin/postgres --version"));
        assert!(s.contains("/usr/bin/patroni --version"));
        assert!(s.contains("patroni psycopg2 urllib3 idna etcd"));
        assert!(s.ends_with("exit 0\n"));
    }
}
