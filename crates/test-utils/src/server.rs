//! A real `sovdb serve` process for end-to-end tests: its own data directory, an ephemeral
//! port, and a HOME of its own so no user configuration leaks in. Tests can kill it
//! (`kill -9`), stop it (SIGTERM) and start it again on the same data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{finish_dir, tail};

pub struct TestServer {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    store: Option<String>,
    /// Extra environment of the next launches (failpoints, say).
    env: Vec<(String, String)>,
    /// Extra arguments of `serve` in the next launches (`--insecure-http`, say).
    args: Vec<String>,
    child: Option<Child>,
    /// `FIRST-LAST`: the ports this server gives out on hosts, and the lock that holds them.
    ports: String,
    _ports_lock: std::fs::File,
    /// Base URL, e.g. `https://127.0.0.1:41234` (`http://` with `--insecure-http`).
    pub url: String,
    /// The admin token the server wrote on first start.
    pub token: String,
}

impl TestServer {
    /// Starts `bin serve` on the embedded default (SQLite in a fresh data directory).
    pub fn start(bin: &Path) -> TestServer {
        Self::start_with_store(bin, None)
    }

    /// Starts `bin serve` with `--store store` when given.
    pub fn start_with_store(bin: &Path, store: Option<String>) -> TestServer {
        let mut s = Self::new(bin, store);
        s.launch();
        s
    }

    /// A server not started yet (see [`TestServer::launch`]): its data directory is fresh.
    pub fn new(bin: &Path, store: Option<String>) -> TestServer {
        let dir = tempfile::Builder::new().prefix("sovdb-test-serve-").tempdir().unwrap();
        // Like /var/lib: the database users of the local host pass through it.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
        let (ports, _ports_lock) = next_port_range();
        TestServer {
            bin: bin.to_path_buf(),
            dir: Some(dir),
            store,
            env: Vec::new(),
            args: Vec::new(),
            child: None,
            ports,
            _ports_lock,
            url: String::new(),
            token: String::new(),
        }
    }

    /// Whether the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root().join("data")
    }

    pub fn home(&self) -> PathBuf {
        self.root().join("home")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root().join("serve.log")
    }

    /// `sovdb` with the environment of a user on this machine: no server, token or
    /// config given, so the CLI must find the local server by itself.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("SOVDB_DATA_DIR", self.data_dir())
            .stdin(Stdio::null());
        c
    }

    /// The installation CA's certificate the server writes (`<data-dir>/ca.crt`): what a
    /// client of its HTTPS API trusts.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir().join("ca.crt")
    }

    /// A `reqwest` client builder for the API: it trusts the installation CA (and nothing
    /// else), so it speaks to the server at [`TestServer::url`] as any HTTPS client would.
    /// Call after the server started (the CA file exists from then on).
    pub fn http_client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false);
        match std::fs::read(self.ca_path()) {
            Ok(pem) => builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("ca.crt is PEM")),
            Err(_) => builder,
        }
    }

    /// [`TestServer::http_client_builder`], built.
    pub fn http_client(&self) -> reqwest::Client {
        self.http_client_builder().build().expect("build the HTTP client")
    }

    /// Adds arguments to `serve` for the next launches.
    pub fn add_args(&mut self, args: &[&str]) {
        self.args.extend(args.iter().map(|a| a.to_string()));
    }

    /// Sets (or with `None` removes) an environment variable of the next launches.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    /// Starts the server and waits for it to exit by itself (a crash at a failpoint).
    /// Panics if it still runs after `timeout`.
    pub fn launch_until_exit(&mut self, timeout: Duration) -> ExitStatus {
        assert!(self.child.is_none(), "already running");
        std::fs::create_dir_all(self.home()).unwrap();
        self.child = Some(self.spawn());
        self.wait_exit(timeout)
    }

    /// Waits for the running server to exit by itself; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().expect("not running").try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sovdb serve still runs after {timeout:?}:\n{}",
                tail(&self.log_path(), 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut cmd = self.cli();
        cmd.arg("serve").arg("--listen").arg("127.0.0.1:0").env("SOVDB_LOG", "info,sovdb=debug");
        // Servers of one test process run at once: each gives out its own ports.
        cmd.env("SOVDB_PORT_RANGE", &self.ports);
        if let Some(store) = &self.store {
            cmd.arg("--store").arg(store);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start sovdb serve")
    }

    /// Starts the server on the existing data directory and waits until it answers.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        std::fs::create_dir_all(self.home()).unwrap();
        let url_file = self.data_dir().join("api.url");
        let _ = std::fs::remove_file(&url_file);
        self.child = Some(self.spawn());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("sovdb serve exited ({status}) before it answered:\n{}", tail(&self.log_path(), 30));
            }
            if let Ok(url) = std::fs::read_to_string(&url_file) {
                self.url = url.trim().to_string();
                self.token = std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap().trim().to_string();
                return;
            }
            assert!(Instant::now() < deadline, "sovdb serve did not answer in 60 s:\n{}", tail(&self.log_path(), 30));
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9`: the server gets no chance to finish anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("not running");
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        child.wait().unwrap()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill9();
        // The server started agents (and they supervisors) that outlive it by design.
        if let Some(dir) = &self.dir {
            crate::kill_processes_mentioning(dir.path());
        }
        if std::thread::panicking() {
            eprintln!("sovdb serve log:\n{}", tail(&self.log_path(), 40));
        }
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test sovdb serve");
        }
    }
}

/// A block of 400 ports (20000–29999 holds 25) held by one server for its life, so
/// servers running at once (nextest runs each test in its own process) never give out
/// the same port on this machine: each block is claimed with a `flock` on a file in
/// `/tmp/sovdb-test-ports/`, released when the server is dropped.
fn next_port_range() -> (String, std::fs::File) {
    use std::os::fd::AsRawFd as _;
    let dir = std::path::Path::new("/tmp/sovdb-test-ports");
    std::fs::create_dir_all(dir).unwrap();
    let start = std::process::id() as u16 % 25;
    loop {
        for i in 0..25u16 {
            let n = (start + i) % 25;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(n.to_string()))
                .unwrap();
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                let first = 20000 + n * 400;
                return (format!("{first}-{}", first + 399), file);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
