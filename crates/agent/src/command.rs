//! `run_command`: runs a program to its end, as a given user, with a timeout.
//!
//! The program runs in a process group of its own, so a timeout kills everything it
//! started, not just the first process. It gets a clean environment (see
//! [`sys::program_env`]) and `/` as working directory unless told otherwise. Output is
//! kept up to [`MAX_OUTPUT`] per stream and drained past that, so a chatty program never
//! blocks on a full pipe.
//!
//! A program that cannot be started (not found, not executable) is an error; one that ran
//! and failed is an answer with its status and output.

use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use crate::error::ApiError;
use crate::proto::{ExitStatus, RunCommandRequest, RunCommandResponse};
use crate::sys::{self, check_path, RunAs};

/// The most output kept per stream.
pub(crate) const MAX_OUTPUT: usize = 8 << 20;
/// The longest timeout a command may ask for (a day).
pub(crate) const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// After the command ended, how long to wait for output from processes it left behind
/// that still hold its pipes (a daemon it started), before answering without it.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn run_command(req: &RunCommandRequest) -> Result<RunCommandResponse, ApiError> {
    sys::check_argv_env(&req.argv, &req.env).map_err(ApiError::invalid)?;
    if req.timeout_secs == 0 || req.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(ApiError::invalid(format!("timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}")));
    }
    if let Some(cwd) = &req.cwd {
        check_path(cwd).map_err(ApiError::invalid)?;
    }
    let run_as = match &req.user {
        Some(user) => {
            let r = RunAs::resolve(user).map_err(ApiError::invalid)?;
            r.check_permitted().map_err(ApiError::invalid)?;
            Some(r)
        }
        None => None,
    };

    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(sys::program_env(run_as.as_ref(), &req.env))
        .current_dir(req.cwd.as_deref().unwrap_or("/".as_ref()))
        .stdin(if req.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(run_as) = run_as.clone() {
        // SAFETY: become_user makes only async-signal-safe system calls.
        unsafe { cmd.pre_exec(move || run_as.become_user()) };
    }
    let mut child = cmd.spawn().map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "spawn_failed", format!("cannot start {:?}: {e}", req.argv[0]))
    })?;
    let pgid = child.id().unwrap_or(0);
    tracing::info!(program = %req.argv[0], pid = pgid, user = ?req.user, "command started");

    if let (Some(mut stdin), Some(text)) = (child.stdin.take(), req.stdin.clone()) {
        // A program that does not read its input makes this fail (broken pipe): that is
        // the program's business, not an error of the call.
        tokio::spawn(async move {
            let _ = stdin.write_all(text.as_bytes()).await;
        });
    }
    let stdout = capture(child.stdout.take());
    let stderr = capture(child.stderr.take());

    let (status, timed_out) = match tokio::time::timeout(Duration::from_secs(req.timeout_secs), child.wait()).await {
        Ok(status) => (status.map_err(|e| ApiError::internal(format!("cannot wait for the command: {e}")))?, false),
        Err(_) => {
            tracing::warn!(program = %req.argv[0], pid = pgid, timeout_secs = req.timeout_secs, "command timed out; killing its process group");
            sys::signal_group(pgid, libc::SIGKILL);
            let status =
                child.wait().await.map_err(|e| ApiError::internal(format!("cannot wait for the command: {e}")))?;
            (status, true)
        }
    };
    if timed_out {
        // Members of the group that outlived the leader's death would keep the pipes
        // open; they were sent SIGKILL too, make sure with a second round.
        sys::signal_group(pgid, libc::SIGKILL);
    }

    let (stdout, stdout_truncated) = finish_read(stdout).await;
    let (stderr, stderr_truncated) = finish_read(stderr).await;
    let status = ExitStatus::from(status);
    tracing::info!(program = %req.argv[0], pid = pgid, %status, timed_out, "command ended");
    Ok(RunCommandResponse { status, stdout, stderr, stdout_truncated, stderr_truncated, timed_out })
}

/// Output read so far, and whether some was dropped.
type Captured = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads a stream to its end into `into`, keeping the first [`MAX_OUTPUT`] bytes.
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, into: Captured) {
    let Some(mut stream) = stream else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut captured = into.lock().unwrap_or_else(|p| p.into_inner());
                let room = MAX_OUTPUT - captured.0.len();
                if n > room {
                    captured.1 = true;
                }
                captured.0.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Starts reading a stream in the background.
fn capture(stream: Option<impl AsyncRead + Unpin + Send + 'static>) -> (tokio::task::JoinHandle<()>, Captured) {
    let captured = Captured::default();
    (tokio::spawn(read_capped(stream, captured.clone())), captured)
}

/// What a stream gave once the command ended. If something the command started still
/// holds the pipe after [`DRAIN_GRACE`], answer with what came so far, marked truncated.
async fn finish_read((task, captured): (tokio::task::JoinHandle<()>, Captured)) -> (String, bool) {
    let abort = task.abort_handle();
    let complete = tokio::time::timeout(DRAIN_GRACE, task).await.is_ok();
    abort.abort();
    let captured = captured.lock().unwrap_or_else(|p| p.into_inner());
    (String::from_utf8_lossy(&captured.0).into_owned(), captured.1 || !complete)
}
