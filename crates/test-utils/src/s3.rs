//! A real S3 endpoint for tests, on loopback: s3s-fs (an S3 server that keeps each bucket
//! as a directory and each object as a file) behind HAProxy, which adds the HTTPS that
//! pgBackRest insists on. Each `S3Server` has a temporary directory, two free ports, keys
//! and a CA of its own, so tests run in parallel; both processes are killed on drop.
//!
//! What pgBackRest 2.45 needs, and so what this gives: an `https://` endpoint whose
//! certificate names `127.0.0.1` as a DNS name (pgBackRest ignores IP addresses in a
//! certificate's names), signed by a CA the client is given (`ca_pem`), and path-style
//! URIs (`127.0.0.1:PORT/bucket/...`: a bucket can't be a subdomain of an IP address).
//!
//! s3s-fs is not a Debian package: `scripts/install-deps.sh` installs it with cargo. It is
//! looked for in `PATH`, then in cargo's bin directory. HAProxy is Debian's.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::distributions::{Alphanumeric, DistString};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::{finish_dir, free_port, tail};

/// The bucket every `S3Server` has.
pub const BUCKET: &str = "sovdb-test";
/// The region it answers for (s3s-fs takes any; pgBackRest signs requests with it).
pub const REGION: &str = "us-east-1";

pub struct S3Server {
    dir: Option<tempfile::TempDir>,
    s3s_fs: Running,
    haproxy: Running,
    port: u16,
    access_key: String,
    secret_key: String,
    ca_pem: String,
}

/// A child process that is killed when dropped, so a start that fails half-way (a panic)
/// leaves nothing running.
struct Running(Child);

impl Running {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A program from `PATH`, else the first of `fallbacks` that exists.
fn find_program(name: &str, fallbacks: &[PathBuf]) -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path.into_iter().chain(fallbacks.iter().cloned()).find(|p| p.is_file())
}

fn s3s_fs_program() -> PathBuf {
    let mut fallbacks = Vec::new();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        fallbacks.push(PathBuf::from(cargo_home).join("bin/s3s-fs"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        fallbacks.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    find_program("s3s-fs", &fallbacks).expect(
        "s3s-fs is not installed (neither in PATH nor in cargo's bin directory): run `make test`, whose \
         scripts/install-deps.sh installs it, or `cargo install s3s-fs --version 0.14.1 --features binary --locked`",
    )
}

fn haproxy_program() -> PathBuf {
    find_program("haproxy", &[PathBuf::from("/usr/sbin/haproxy")])
        .expect("HAProxy is not installed: run `make test`, whose scripts/install-deps.sh installs it")
}

/// A throwaway CA and a certificate for `127.0.0.1` signed by it: the CA's PEM, and the
/// server's certificate and key in one PEM (as HAProxy's `crt` takes them).
fn certificates() -> (String, String) {
    let ca_key = KeyPair::generate().expect("generate the test CA's key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "sovdb test S3 CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let ca_cert = ca.self_signed(&ca_key).expect("sign the test CA");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("generate the test S3 server's key");
    let mut server = CertificateParams::default();
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    // pgBackRest 2.45 matches the host only against DNS names: 127.0.0.1 must be one.
    server.subject_alt_names = vec![
        SanType::DnsName("127.0.0.1".try_into().expect("an IA5 string")),
        SanType::IpAddress([127, 0, 0, 1].into()),
    ];
    let cert = server.signed_by(&key, &issuer).expect("sign the test S3 server's certificate");
    (ca_cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

/// Starts `command` (logging to `log`) and waits until `port` on 127.0.0.1 accepts
/// connections; `None` when the program exited first (a port taken meanwhile, say).
fn spawn_listening(mut command: Command, log: &Path, port: u16, what: &str) -> Option<Child> {
    let out = std::fs::File::create(log).unwrap();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return None;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not listen on 127.0.0.1:{port} within 20 s:\n{}", tail(log, 20));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tries up to five free ports: another program may take one between its choice and its use.
fn start_on_free_port(what: &str, log: &Path, mut command: impl FnMut(u16) -> Command) -> (Running, u16) {
    for _ in 0..5 {
        let port = free_port();
        if let Some(child) = spawn_listening(command(port), log, port, what) {
            return (Running(child), port);
        }
    }
    panic!("{what} did not start in 5 tries; its last output:\n{}", tail(log, 20));
}

impl S3Server {
    /// Starts s3s-fs with the bucket [`BUCKET`] and HAProxy in front of it, each on a free
    /// port of 127.0.0.1, with new keys and a new CA.
    pub fn start() -> S3Server {
        let (s3s_fs_exe, haproxy_exe) = (s3s_fs_program(), haproxy_program());
        let dir = tempfile::Builder::new().prefix("sovdb-test-s3-").tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let rng = &mut rand::thread_rng();
        let access_key = format!("TEST{}", Alphanumeric.sample_string(rng, 16).to_uppercase());
        let secret_key = Alphanumeric.sample_string(rng, 40);

        let (ca_pem, server_pem) = certificates();
        std::fs::write(dir.path().join("ca.crt"), &ca_pem).unwrap();
        let server_pem_path = dir.path().join("server.pem");
        std::fs::write(&server_pem_path, server_pem).unwrap();
        std::fs::set_permissions(&server_pem_path, std::fs::Permissions::from_mode(0o600)).unwrap();

        let (s3s_fs, s3s_port) = start_on_free_port("s3s-fs", &dir.path().join("s3s-fs.log"), |port| {
            let mut c = Command::new(&s3s_fs_exe);
            c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &access_key, "--secret-key", &secret_key])
                .arg(&root);
            c
        });
        let haproxy_cfg = dir.path().join("haproxy.cfg");
        let (haproxy, port) = start_on_free_port("haproxy", &dir.path().join("haproxy.log"), |port| {
            let cfg = format!(
                "global\n    nbthread 1\n    maxconn 256\n\
                 defaults\n    mode http\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n\
                 frontend s3\n    bind 127.0.0.1:{port} ssl crt {pem}\n    default_backend s3s-fs\n\
                 backend s3s-fs\n    server s3s-fs 127.0.0.1:{s3s_port}\n",
                pem = server_pem_path.display()
            );
            std::fs::write(&haproxy_cfg, cfg).unwrap();
            let mut c = Command::new(&haproxy_exe);
            c.arg("-db").arg("-f").arg(&haproxy_cfg);
            c
        });
        S3Server { dir: Some(dir), s3s_fs, haproxy, port, access_key, secret_key, ca_pem }
    }

    /// `127.0.0.1:PORT`: the endpoint as `sovdb repo create --endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.endpoint())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn region(&self) -> &str {
        REGION
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The CA that signed the endpoint's certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A file holding [`ca_pem`](Self::ca_pem).
    pub fn ca_file(&self) -> PathBuf {
        self.dir().join("ca.crt")
    }

    /// The bucket's directory: the object `a/b` is the file `a/b` in it.
    pub fn bucket_dir(&self) -> PathBuf {
        self.dir().join("root").join(BUCKET)
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("present until drop").path()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Before the directory goes: s3s-fs writes into it.
        self.haproxy.stop();
        self.s3s_fs.stop();
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test S3 server");
        }
    }
}
