//! Providers: how the control plane reaches a host *before* its agent runs, to install
//! and start the agent (and to start it again if it died while the machine lives on).
//! After that, everything goes through the agent.
//!
//! Two transports with one interface: [`Transport::Local`] runs shell scripts on this
//! machine, [`Transport::Ssh`] on a remote host through Debian's OpenSSH client, with the
//! host key checked strictly against the one recorded (trust on first use happens in
//! [`scan_host_key`], never implicitly). The SSH private key only exists on disk for the
//! life of a [`Transport`], in a private temporary directory, and never appears in an
//! error or a log line.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

/// What a script printed and how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Exit status; `None` when it was killed by a signal.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("cannot reach {address}:{port} over SSH: {reason}; check the address, the port and that sshd runs there")]
    Unreachable { address: String, port: u16, reason: String },
    #[error("SSH login as {user:?} to {address}:{port} was refused: {reason}; check --ssh-user and --ssh-key")]
    LoginRefused { user: String, address: String, port: u16, reason: String },
    #[error(
        "the SSH host key of {address}:{port} is not the one recorded; if the host was reinstalled on purpose, \
         remove the host and add it again (or pin the new key with --ssh-host-key)"
    )]
    HostKeyChanged { address: String, port: u16 },
    #[error("{what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ProviderError {
    /// Whether trying again later may help (the host may come back).
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Unreachable { .. } | ProviderError::Timeout { .. })
    }
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// How to log in to a host over SSH.
#[derive(Clone)]
pub struct SshTarget {
    pub address: String,
    pub port: u16,
    pub user: String,
    /// OpenSSH private key text.
    pub private_key: String,
    /// The host's public key (`type base64`) as recorded; the connection is refused if the
    /// host presents another.
    pub host_key: String,
}

impl std::fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshTarget")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

/// Runs scripts on a host and copies files to it.
pub enum Transport {
    Local,
    Ssh(Ssh),
}

impl Transport {
    pub fn ssh(target: SshTarget) -> Result<Transport> {
        Ok(Transport::Ssh(Ssh::new(target)?))
    }

    /// Runs `script` with `bash -c`, standard input empty. Scripts carry no secrets (they
    /// would show in a process list); secrets travel as input to [`Transport::put`].
    pub async fn run(&self, script: &str, timeout: Duration) -> Result<Output> {
        self.exec(&["bash", "-c", script], None, timeout).await
    }

    /// Runs `script` with `input` on its standard input.
    pub async fn run_with_input(&self, script: &str, input: &[u8], timeout: Duration) -> Result<Output> {
        self.exec(&["bash", "-c", script], Some(input), timeout).await
    }

    /// Copies `content` to `path` on the host with `mode`, atomically (a temporary file in
    /// the same directory, then a rename), creating the parent directory.
    pub async fn put(&self, path: &str, content: &[u8], mode: u32, timeout: Duration) -> Result<()> {
        check_abs(path)?;
        let script = format!(
            "set -e; p={p}; mkdir -p \"$(dirname \"$p\")\"; t=\"$p.sovdb-tmp.$$\"; umask 077; cat > \"$t\"; \
             chmod {mode:o} \"$t\"; mv -f \"$t\" \"$p\"",
            p = shell_quote(path)
        );
        let out = self.run_with_input(&script, content, timeout).await?;
        if out.success() {
            Ok(())
        } else {
            Err(ProviderError::Invalid(format!(
                "cannot write {path} on the host (exit status {}): {}",
                status_text(out.status),
                out.stderr.trim()
            )))
        }
    }

    async fn exec(&self, argv: &[&str], input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
        match self {
            Transport::Local => {
                let mut cmd = tokio::process::Command::new(argv[0]);
                cmd.args(&argv[1..]);
                run_command(cmd, input, timeout, "a local command").await
            }
            Transport::Ssh(ssh) => ssh.exec(argv, input, timeout).await,
        }
    }
}

fn check_abs(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(ProviderError::Invalid(format!("{path:?} is not an absolute path")));
    }
    Ok(())
}

fn status_text(status: Option<i32>) -> String {
    status.map(|s| s.to_string()).unwrap_or_else(|| "killed by a signal".into())
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn run_command(
    mut cmd: tokio::process::Command,
    input: Option<&[u8]>,
    timeout: Duration,
    what: &str,
) -> Result<Output> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let io = |source| ProviderError::Io { what: format!("cannot run {what}"), source };
    let mut child = cmd.spawn().map_err(io)?;
    if let Some(input) = input {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let data = input.to_vec();
        // Written concurrently with reading the output, so a large input can't deadlock.
        tokio::spawn(async move {
            let _ = stdin.write_all(&data).await;
            let _ = stdin.shutdown().await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(Output {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
        Ok(Err(e)) => Err(io(e)),
        Err(_) => Err(ProviderError::Timeout { what: what.to_string(), timeout }),
    }
}

/// An SSH connection recipe: a private directory holding the key and a known-hosts file
/// with exactly the recorded host key; each call is one `ssh` process.
pub struct Ssh {
    target: SshTarget,
    dir: tempfile::TempDir,
}

impl Ssh {
    fn new(target: SshTarget) -> Result<Ssh> {
        let dir = tempfile::Builder::new().prefix("sovdb-ssh-").tempdir().map_err(|source| ProviderError::Io {
            what: "cannot create a private temporary directory".into(),
            source,
        })?;
        let write =
            |name: &str, content: &str| -> Result<()> {
                use std::os::unix::fs::OpenOptionsExt as _;
                let path = dir.path().join(name);
                let mut f =
                    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(
                        |source| ProviderError::Io { what: format!("cannot write {}", path.display()), source },
                    )?;
                std::io::Write::write_all(&mut f, content.as_bytes())
                    .map_err(|source| ProviderError::Io { what: format!("cannot write {}", path.display()), source })
            };
        let mut key = target.private_key.clone();
        if !key.ends_with('\n') {
            key.push('\n');
        }
        write("key", &key)?;
        write(
            "known_hosts",
            &format!("{} {}\n", known_hosts_name(&target.address, target.port), target.host_key.trim()),
        )?;
        Ok(Ssh { target, dir })
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        let d = self.dir.path();
        cmd.arg("-F")
            .arg("/dev/null")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes"])
            .args(["-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .args(["-o", "LogLevel=ERROR", "-o", "PasswordAuthentication=no"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", d.join("known_hosts").display()))
            .arg("-i")
            .arg(d.join("key"))
            .arg("-p")
            .arg(self.target.port.to_string())
            .arg(format!("{}@{}", self.target.user, self.target.address));
        cmd
    }

    async fn exec(&self, argv: &[&str], input: Option<&[u8]>, timeout: Duration) -> Result<Output> {
        let mut cmd = self.command();
        cmd.arg("--");
        // ssh joins its arguments into one remote command line: quote each.
        cmd.arg(argv.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
        let out = run_command(cmd, input, timeout, &format!("ssh to {}", self.target.address)).await?;
        if out.status == Some(255) {
            return Err(classify_ssh_failure(&self.target, &out.stderr));
        }
        Ok(out)
    }
}

fn known_hosts_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// Turns ssh's own failure (exit status 255) into an error that names the cause.
fn classify_ssh_failure(t: &SshTarget, stderr: &str) -> ProviderError {
    let reason = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("ssh failed").trim().to_string();
    let (address, port) = (t.address.clone(), t.port);
    if stderr.contains("Host key verification failed") || stderr.contains("HOST IDENTIFICATION HAS CHANGED") {
        ProviderError::HostKeyChanged { address, port }
    } else if stderr.contains("Permission denied") || stderr.contains("Too many authentication failures") {
        ProviderError::LoginRefused { user: t.user.clone(), address, port, reason }
    } else if stderr.contains("Load key") || stderr.contains("invalid format") {
        ProviderError::Invalid("the SSH private key is not a valid OpenSSH private key".into())
    } else {
        ProviderError::Unreachable { address, port, reason }
    }
}

/// Asks the host at `address:port` for its SSH host key (ed25519 preferred, then ECDSA,
/// then RSA) and returns it as `type base64`. This is the only place a key is trusted
/// without being known: the caller records it.
pub async fn scan_host_key(address: &str, port: u16, timeout: Duration) -> Result<String> {
    let mut cmd = tokio::process::Command::new("ssh-keyscan");
    cmd.args(["-T", &timeout.as_secs().max(1).to_string(), "-p", &port.to_string()])
        .args(["-t", "ed25519,ecdsa,rsa"])
        .arg(address);
    let out = run_command(cmd, None, timeout + Duration::from_secs(5), "ssh-keyscan").await?;
    let mut keys: Vec<(usize, String)> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (_host, kind, key) = (parts.next()?, parts.next()?, parts.next()?);
            let rank = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa"].iter().position(|k| *k == kind)?;
            Some((rank, format!("{kind} {key}")))
        })
        .collect();
    keys.sort();
    keys.into_iter().next().map(|(_, k)| k).ok_or_else(|| ProviderError::Unreachable {
        address: address.to_string(),
        port,
        reason: if out.stderr.trim().is_empty() { "no SSH server answered".into() } else { out.stderr.trim().into() },
    })
}

/// The SHA-256 fingerprint of a public key line (`type base64`), as `ssh-keygen -l` shows.
pub fn fingerprint(key: &str) -> Result<String> {
    let blob = key
        .split_whitespace()
        .nth(1)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .ok_or_else(|| ProviderError::Invalid(format!("{key:?} is not an SSH public key (`type base64`)")))?;
    let digest = sha2::Sha256::digest(&blob);
    Ok(format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)))
}

/// Whether `key` looks like an SSH public key line; for validating input early.
pub fn check_public_key(key: &str) -> Result<()> {
    fingerprint(key).map(|_| ())
}

/// SHA-256 of `data`, hex as `sha256sum` prints it; to skip copying a binary the host
/// already has.
pub fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // What `ssh-keygen -lf` prints for this key.
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let fp = fingerprint(key).unwrap();
        assert_eq!(fp, "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU");
        assert!(fingerprint("not a key").is_err());
    }

    #[tokio::test]
    async fn local_runs_scripts_and_puts_files_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let t = Transport::Local;
        let out = t.run("echo out; echo err >&2; exit 3", Duration::from_secs(10)).await.unwrap();
        assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (Some(3), "out\n", "err\n"));
        let path = dir.path().join("sub/file");
        t.put(path.to_str().unwrap(), b"hello", 0o640, Duration::from_secs(10)).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let out = t.run_with_input("wc -c", &vec![b'x'; 1 << 20], Duration::from_secs(10)).await.unwrap();
        assert_eq!(out.stdout.trim(), (1 << 20).to_string());
        let err = t.run("sleep 5", Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Timeout { .. }), "{err}");
    }
}
