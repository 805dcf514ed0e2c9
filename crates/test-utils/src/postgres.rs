//! A real PostgreSQL server for tests. PostgreSQL refuses to run as root, so when the test
//! runs as root the server runs as the `postgres` system user (`setpriv` execs in place, so
//! the PID we hold is the postmaster's).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use sqlx::Connection;

use crate::{finish_dir, free_port, running_as_root, tail};

/// The unprivileged user that runs PostgreSQL when tests run as root.
const PG_USER: &str = "postgres";

pub struct TestPostgres {
    dir: Option<tempfile::TempDir>,
    child: Child,
    port: u16,
    password: String,
}

/// The newest `/usr/lib/postgresql/N/bin`, where Debian installs the server.
pub fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (/usr/lib/postgresql is missing): run `make test`, which installs it")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort();
    let v = versions.last().expect("no PostgreSQL version under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

/// A command that runs as the unprivileged PostgreSQL user when we are root.
fn unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", PG_USER, "--regid", PG_USER, "--init-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn chown_to_pg_user(path: &Path) {
    if !running_as_root() {
        return;
    }
    let out = Command::new("chown").arg("-R").arg(format!("{PG_USER}:{PG_USER}")).arg(path).output().unwrap();
    assert!(out.status.success(), "chown {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}

impl TestPostgres {
    /// Initialises a cluster in a new temporary directory and starts it on a free port.
    pub async fn start() -> TestPostgres {
        let bin = pg_bin_dir();
        let mut dir = tempfile::Builder::new().prefix("sovdb-test-pg-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut password = Alphanumeric.sample_string(&mut rand::thread_rng(), 24);
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        chown_to_pg_user(dir.path());

        let data = dir.path().join("data");
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "sovdb", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // A port can be taken between choosing and binding it: try a few.
        let log = dir.path().join("postgres.log");
        for _ in 0..5 {
            let port = free_port();
            let child = unprivileged(&bin.join("postgres"))
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
                .arg("-k")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::options().append(true).open(&log).unwrap())
                .spawn()
                .expect("start postgres");
            let mut pg = TestPostgres { dir: Some(dir), child, port, password };
            if pg.wait_ready().await {
                return pg;
            }
            let text = tail(&log, 20);
            if !text.contains("Address already in use") {
                panic!("postgres did not start:\n{text}");
            }
            let _ = pg.child.wait();
            dir = pg.dir.take().unwrap();
            password = std::mem::take(&mut pg.password);
        }
        panic!("postgres found no free port in 5 tries");
    }

    /// Waits until the server accepts connections; `false` when it exited instead.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok(conn) = sqlx::PgConnection::connect(&self.url("postgres")).await {
                let _ = conn.close().await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("postgres did not accept connections within 60 s");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` as the superuser `sovdb`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://sovdb:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Creates an empty database named after `label` (made a valid identifier) and
    /// returns its URL.
    pub async fn create_database(&self, label: &str) -> String {
        let name: String =
            label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let name = format!("t_{}", &name[..name.len().min(50)]);
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres")).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        self.url(&name)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: it ends sessions and exits cleanly.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test postgres");
        }
    }
}
