//! `host.add`: install and start the agent on a host, then record what it reports.
//!
//! Parameters: `{"host": NAME}`; the host record (written with the operation, status
//! `bootstrapping`) holds the address, SSH access and base dir.
//!
//! Steps, each idempotent:
//! 1. `register`: nothing to do (the record exists); its undo forgets the host, so a
//!    failed or cancelled add leaves nothing registered.
//! 2. `check-host`: for SSH, record the host key on first use (or check the pinned one);
//!    then check the host can run the agent (architecture, apt, root) and is not managed
//!    by another installation.
//! 3. `issue-certificate` (allocates): the agent's certificate and key, the key sealed
//!    with the master key in the step's output.
//! 4. `install-agent` (undo: remove it): the binary (copied only when its checksum
//!    differs), the CA, the certificate and key, and the installation marker.
//! 5. `start-agent` (undo: stop it): started unless already running (a systemd unit where
//!    systemd runs, else a detached process).
//! 6. `wait-agent`: the agent answers over mutual TLS, for at most [`AGENT_DEADLINE`];
//!    meanwhile the step's progress says what the connection meets and the end of the
//!    agent's log.
//! 7. `record-facts`: the preflight checks of every engine role whose packages are
//!    installed already (see `preflight`; a host whose engine can't work is refused with
//!    the reason), then the agent's facts are stored and the host becomes `ready`.
//!
//! Crash safety: every step checks before it acts, so a rerun after a crash at any point
//! finds its work done and does nothing twice (one binary, one agent process, one record).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sovdb_operations::{Probe, StepCtx, StepFailure, Wait, Workflow};
use sovdb_provider::shell_quote;
use sovdb_store::HostRecord;
use sovdb_types::{HostStatus, StepError};

use super::{agent_failure, app_failure, host_record, provider_failure, Params};
use crate::App;

pub const KIND: &str = "host.add";

/// How long a script on the host may take (the binary copy is the longest).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn workflow() -> Workflow<App> {
    Workflow::new(KIND)
        .step_with_undo("register", |_| async { Ok(json!({})) }, forget)
        .step("check-host", check_host)
        .allocate("issue-certificate", issue_certificate)
        .step_with_undo("install-agent", install_agent, uninstall_agent)
        .step_with_undo("start-agent", start_agent, stop_agent)
        .step("wait-agent", wait_agent)
        .step("record-facts", record_facts)
}

/// The files of the agent on a host, under its base dir.
pub(crate) struct AgentPaths {
    pub dir: String,
    pub bin: String,
    pub pid: String,
    pub log: String,
}

impl AgentPaths {
    pub(crate) fn new(app: &App, record: &HostRecord) -> AgentPaths {
        let base = &record.host.base_dir;
        let dir = format!("{base}/agent");
        let bin = match record.host.ssh {
            // This machine: the control plane's own binary.
            None => app.config.agent_exe.display().to_string(),
            Some(_) => format!("{dir}/bin/sovdb"),
        };
        AgentPaths { pid: format!("{dir}/agent.pid"), log: format!("{dir}/log/agent.log"), bin, dir }
    }
}

async fn forget(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let mut tx = app.store.write().await.map_err(|e| app_failure(e.into()))?;
    if let Some(record) = tx.host_get(&host).await.map_err(|e| app_failure(e.into()))? {
        tx.host_delete(record.host.id).await.map_err(|e| app_failure(e.into()))?;
    }
    tx.commit().await.map_err(|e| app_failure(e.into()))?;
    Ok(json!({}))
}

async fn check_host(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let mut record = host_record(app, &host).await?;
    if let Some(ssh) = &record.host.ssh {
        if ssh.host_key.is_none() {
            // Trust on first use: record the key the host presents now; every later
            // connection must present the same one.
            let key = sovdb_provider::scan_host_key(&record.host.address, ssh.port, Duration::from_secs(10))
                .await
                .map_err(provider_failure)?;
            let fp = sovdb_provider::fingerprint(&key).map_err(provider_failure)?;
            let mut tx = app.store.write().await.map_err(|e| app_failure(e.into()))?;
            tx.host_set_ssh_host_key(record.host.id, &key, &fp).await.map_err(|e| app_failure(e.into()))?;
            tx.commit().await.map_err(|e| app_failure(e.into()))?;
            tracing::info!(host = %host, fingerprint = %fp, "recorded the host's SSH key on first use");
            record = host_record(app, &host).await?;
        }
    }
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let base = shell_quote(&record.host.base_dir);
    let script = format!(
        "echo \"arch=$(uname -m)\"; echo \"uid=$(id -u)\"; \
         if command -v apt-get >/dev/null 2>&1; then echo apt=yes; else echo apt=no; fi; \
         if [ -f {base}/agent/installation ]; then echo \"installation=$(cat {base}/agent/installation)\"; fi"
    );
    let out = transport.run(&script, SCRIPT_TIMEOUT).await.map_err(provider_failure)?;
    if !out.success() {
        return Err(command_failure("cannot inspect the host", "inspect host", &out));
    }
    let facts: std::collections::BTreeMap<&str, &str> = out.stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let arch = facts.get("arch").copied().unwrap_or("");
    if arch != std::env::consts::ARCH {
        return Err(StepFailure::permanent(format!(
            "the host's architecture is {arch:?} but this sovdb is built for {:?}; add hosts of the same architecture",
            std::env::consts::ARCH
        )));
    }
    if facts.get("apt") != Some(&"yes") {
        return Err(StepFailure::permanent(
            "the host has no apt-get: sovdb installs engines from Debian's packages, so hosts must run Debian or a derivative",
        ));
    }
    if record.host.ssh.is_some() && facts.get("uid") != Some(&"0") {
        return Err(StepFailure::permanent(
            "the SSH user is not root: the agent installs packages and runs databases as their own users; log in as root (--ssh-user root)",
        ));
    }
    let ours = installation_id(app).await?;
    if let Some(theirs) = facts.get("installation") {
        if *theirs != ours {
            return Err(StepFailure::permanent(format!(
                "{}/agent belongs to another sovdb installation ({theirs}); remove the host from that installation first, \
                 or use another --base-dir",
                record.host.base_dir
            )));
        }
    }
    let uid: Option<u32> = facts.get("uid").and_then(|u| u.parse().ok());
    Ok(json!({ "arch": arch, "uid": uid }))
}

#[derive(Serialize, Deserialize)]
struct IssuedAgentCert {
    cert_pem: String,
    key_sealed: String,
}

fn agent_key_aad(op: &sovdb_types::OperationId) -> String {
    format!("sovdb/operation/{op}/agent-key")
}

async fn issue_certificate(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let record = host_record(app, &host).await?;
    let pki = app.pki().map_err(app_failure)?;
    let req = super::host_renew_certs::agent_cert_request(&record.host);
    let cert = pki.issue_for(&req, app.config.internal_cert_validity).map_err(app_failure)?;
    let issued = IssuedAgentCert {
        key_sealed: pki.seal(cert.key_pem.as_bytes(), &agent_key_aad(&ctx.operation)),
        cert_pem: cert.cert_pem,
    };
    Ok(serde_json::to_value(issued).expect("serialise"))
}

async fn install_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let record = host_record(app, &host).await?;
    let issued: IssuedAgentCert = ctx.output("issue-certificate")?;
    let pki = app.pki().map_err(app_failure)?;
    let key = pki.open(&issued.key_sealed, &agent_key_aad(&ctx.operation)).map_err(app_failure)?;
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let paths = AgentPaths::new(app, &record);

    let mut copied = false;
    if record.host.ssh.is_some() {
        let exe = &app.config.agent_exe;
        let binary = std::fs::read(exe)
            .map_err(|e| StepFailure::permanent(format!("cannot read this server's binary {}: {e}", exe.display())))?;
        let want = sovdb_provider::sha256_hex(&binary);
        let out = transport
            .run(&format!("sha256sum {} 2>/dev/null | cut -d' ' -f1", shell_quote(&paths.bin)), SCRIPT_TIMEOUT)
            .await
            .map_err(provider_failure)?;
        if out.stdout.trim() != want {
            transport.put(&paths.bin, &binary, 0o755, SCRIPT_TIMEOUT).await.map_err(provider_failure)?;
            copied = true;
        }
    }
    let tls = format!("{}/tls", paths.dir);
    let installation = installation_id(app).await?;
    let files: [(String, &[u8], u32); 4] = [
        (format!("{tls}/ca.crt"), pki.ca_pem().as_bytes(), 0o644),
        (format!("{tls}/agent.crt"), issued.cert_pem.as_bytes(), 0o644),
        (format!("{tls}/agent.key"), &key, 0o600),
        (format!("{}/installation", paths.dir), installation.as_bytes(), 0o644),
    ];
    for (path, content, mode) in files {
        transport.put(&path, content, mode, SCRIPT_TIMEOUT).await.map_err(provider_failure)?;
    }
    Ok(json!({ "binary": paths.bin, "copied": copied }))
}

async fn uninstall_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let Some(record) = maybe_host_record(app, &host).await? else { return Ok(json!({})) };
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let script = uninstall_script(&record, &AgentPaths::new(app, &record));
    let out = transport.run(&script, SCRIPT_TIMEOUT).await.map_err(provider_failure)?;
    if !out.success() {
        return Err(command_failure("cannot remove the agent", "remove agent", &out));
    }
    Ok(json!({}))
}

/// The shell that removes the agent's files (and the base dir, if nothing else is in it).
pub(crate) fn uninstall_script(record: &HostRecord, paths: &AgentPaths) -> String {
    format!(
        "rm -rf {dir}; rmdir {base} 2>/dev/null || true",
        dir = shell_quote(&paths.dir),
        base = shell_quote(&record.host.base_dir)
    )
}

/// The shell that starts the agent unless it already runs. Where systemd runs, the agent
/// is a unit (restarted by systemd, started at boot); elsewhere a detached process whose
/// pid is recorded (the control plane restarts it if it dies).
pub(crate) fn start_script(record: &HostRecord, paths: &AgentPaths) -> String {
    let q = shell_quote;
    let listen = match record.host.address.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", record.host.agent_port),
        _ => format!("{}:{}", record.host.address, record.host.agent_port),
    };
    format!(
        r#"set -eu
B={base}; BIN={bin}; PIDF={pid}; LOG={log}; LISTEN={listen}
UNIT="sovdb-agent-$(printf %s "$B" | sha256sum | cut -c1-12).service"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  cat > "/etc/systemd/system/$UNIT.tmp" <<EOF
[Unit]
Description=sovdb agent ($B)
After=network-online.target
[Service]
ExecStart=$BIN agent --base-dir $B --listen $LISTEN
Restart=always
RestartSec=2
KillMode=process
[Install]
WantedBy=multi-user.target
EOF
  if cmp -s "/etc/systemd/system/$UNIT.tmp" "/etc/systemd/system/$UNIT"; then rm -f "/etc/systemd/system/$UNIT.tmp"; changed=no
  else mv -f "/etc/systemd/system/$UNIT.tmp" "/etc/systemd/system/$UNIT"; systemctl daemon-reload; changed=yes; fi
  if [ "$changed" = yes ]; then systemctl enable "$UNIT" >/dev/null 2>&1; systemctl restart "$UNIT"; echo started-systemd
  elif systemctl is-active --quiet "$UNIT"; then echo running; else systemctl start "$UNIT"; echo started-systemd; fi
  exit 0
fi
if [ -f "$PIDF" ]; then
  pid=$(cat "$PIDF")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--base-dir $B "; then echo running; exit 0; fi
fi
mkdir -p "$(dirname "$LOG")"
cd /
setsid "$BIN" agent --base-dir "$B" --listen "$LISTEN" >>"$LOG" 2>&1 </dev/null &
echo $! > "$PIDF.tmp"; mv -f "$PIDF.tmp" "$PIDF"
echo started
"#,
        base = q(&record.host.base_dir),
        bin = q(&paths.bin),
        pid = q(&paths.pid),
        log = q(&paths.log),
        listen = q(&listen),
    )
}

/// The shell that stops the agent (not the processes it supervises: those stop only when
/// asked through the agent).
pub(crate) fn stop_script(record: &HostRecord, paths: &AgentPaths) -> String {
    format!(
        r#"B={base}; PIDF={pid}
UNIT="sovdb-agent-$(printf %s "$B" | sha256sum | cut -c1-12).service"
if [ -f "/etc/systemd/system/$UNIT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now "$UNIT" >/dev/null 2>&1 || true; rm -f "/etc/systemd/system/$UNIT"; systemctl daemon-reload || true
fi
if [ -f "$PIDF" ]; then
  pid=$(cat "$PIDF")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "--base-dir $B "; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDF"
fi
exit 0
"#,
        base = shell_quote(&record.host.base_dir),
        pid = shell_quote(&paths.pid),
    )
}

async fn start_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let record = host_record(app, &host).await?;
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let paths = AgentPaths::new(app, &record);
    let out = transport.run(&start_script(&record, &paths), SCRIPT_TIMEOUT).await.map_err(provider_failure)?;
    if !out.success() {
        return Err(command_failure("cannot start the agent", "start agent", &out));
    }
    Ok(json!({}))
}

async fn stop_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let Some(record) = maybe_host_record(app, &host).await? else { return Ok(json!({})) };
    let transport = app.host_transport(&record).map_err(app_failure)?;
    let out = transport
        .run(&stop_script(&record, &AgentPaths::new(app, &record)), SCRIPT_TIMEOUT)
        .await
        .map_err(provider_failure)?;
    if !out.success() {
        return Err(command_failure("cannot stop the agent", "stop agent", &out));
    }
    Ok(json!({}))
}

/// How long `wait-agent` waits for a started agent to answer over mutual TLS (it
/// answers within a second here; a loaded host or a slow disk may take longer).
pub(crate) const AGENT_DEADLINE: Duration = Duration::from_secs(2 * 60);

async fn wait_agent(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let record = host_record(app, &host).await?;
    let client = app.agent_client(&record.host, Duration::from_secs(5)).await.map_err(app_failure)?;
    let wait =
        Wait::new(format!("the agent of host {host} to answer"), AGENT_DEADLINE).poll(Duration::from_millis(200));
    let version = ctx
        .wait(
            &wait,
            || async {
                Ok(match client.health().await {
                    Ok(h) => Probe::Ready(h.version),
                    Err(e) => Probe::Waiting(sovdb_types::error_chain(&e)),
                })
            },
            |seen| async {
                // Say why: the end of the agent's own log usually does.
                let log = match app.host_transport(&record) {
                    Ok(t) => {
                        let paths = AgentPaths::new(app, &record);
                        t.run(&format!("tail -n 3 {} 2>/dev/null", shell_quote(&paths.log)), SCRIPT_TIMEOUT)
                            .await
                            .map(|o| o.stdout)
                            .unwrap_or_default()
                    }
                    Err(_) => String::new(),
                };
                let log: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                if log.is_empty() {
                    seen
                } else {
                    format!("{seen}; the agent's log ends: {}", log.join(" / "))
                }
            },
        )
        .await?;
    Ok(json!({ "version": version }))
}

async fn record_facts(ctx: StepCtx<App>) -> Result<Value, StepFailure> {
    let Params { host } = ctx.params()?;
    let app = &ctx.services;
    let record = host_record(app, &host).await?;
    let client = app.agent_client(&record.host, Duration::from_secs(30)).await.map_err(app_failure)?;
    // The agent runs as root on hosts that run engines; one that doesn't (this machine,
    // under a server run as another user) can't switch to the engines' users to check.
    let root = ctx.output::<Value>("check-host")?["uid"].as_u64() == Some(0);
    let checked = if root { preflight_installed(&client, &record).await? } else { Vec::new() };
    let facts = client.facts().await.map_err(agent_failure)?;
    let facts = serde_json::to_value(&facts).expect("serialise");
    let mut tx = app.store.write().await.map_err(|e| app_failure(e.into()))?;
    tx.host_observed(record.host.id, crate::now(), Some(&facts)).await.map_err(|e| app_failure(e.into()))?;
    if record.host.status == HostStatus::Bootstrapping {
        tx.host_set_status(record.host.id, HostStatus::Ready, None).await.map_err(|e| app_failure(e.into()))?;
    }
    tx.commit().await.map_err(|e| app_failure(e.into()))?;
    Ok(json!({ "preflight": checked }))
}

/// The preflight of every engine role whose packages are all installed already (the
/// others get theirs, and their checks, when a cluster first needs them): a host whose
/// installed engine can't work is refused now, with the reason. Answers the roles checked.
async fn preflight_installed(
    client: &sovdb_agent::AgentClient,
    record: &HostRecord,
) -> Result<Vec<&'static str>, StepFailure> {
    use sovdb_postgres::Role;
    let version = sovdb_postgres::DEFAULT_VERSION;
    let mut roles = Vec::new();
    for role in [Role::Member, Role::Dcs] {
        let names = sovdb_postgres::packages(role, version);
        let mut argv = vec!["dpkg-query", "-W", "-f", "${Status}\\n", "--"];
        argv.extend(names.iter().map(String::as_str));
        let out = super::pg::exec(client, &argv, None, None).await?;
        let installed = out.stdout.lines().filter(|l| l.trim() == "install ok installed").count();
        if installed == names.len() {
            roles.push(role);
        }
    }
    let problems = super::preflight::problems(client, &roles, version).await?;
    if !problems.is_empty() {
        return Err(StepFailure::permanent(format!(
            "host {} has the engines' packages but they don't work: {}",
            record.host.name,
            problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
        )));
    }
    Ok(roles.iter().map(|r| r.as_str()).collect())
}

async fn installation_id(app: &App) -> Result<String, StepFailure> {
    let mut tx = app.store.read().await.map_err(|e| app_failure(e.into()))?;
    tx.meta_get("installation_id")
        .await
        .map_err(|e| app_failure(e.into()))?
        .ok_or_else(|| StepFailure::permanent("the installation has no ID; is the store bootstrapped?"))
}

pub(crate) async fn maybe_host_record(app: &App, host: &str) -> Result<Option<HostRecord>, StepFailure> {
    let mut tx = app.store.read().await.map_err(|e| app_failure(e.into()))?;
    tx.host_get(host).await.map_err(|e| app_failure(e.into()))
}

pub(crate) fn command_failure(message: &str, command: &str, out: &sovdb_provider::Output) -> StepFailure {
    StepFailure { transient: false, error: StepError::command(message, command, out.status, &out.stderr) }
}
