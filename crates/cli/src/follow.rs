//! Following an operation to its end (`op watch`, and `--wait` on every mutating command).
//!
//! Progress goes to stderr so that stdout stays clean for `-o json`: on a terminal one
//! line redrawn in place (step n of m, the step, its attempt, elapsed time); otherwise a
//! plain line each time a step changes state. The server may restart while we wait (the
//! operation resumes there): the stream is reopened until the server is back.

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use sovdb_types::{Operation, OperationState, StepState};

use crate::client::Client;

/// How long to keep trying while the server can't be reached before giving up waiting.
const UNREACHABLE_LIMIT: Duration = Duration::from_secs(300);

/// Follows operation `id` until it ends. Succeeded → the operation; anything else → an
/// error naming the failed step and the reason (so the command exits non-zero).
pub async fn follow(client: &Client, id: &str) -> anyhow::Result<Operation> {
    let started = Instant::now();
    let op = follow_to_end(client, id).await?;
    let elapsed = format_elapsed(started.elapsed());
    match op.state {
        OperationState::Succeeded => {
            eprintln!("operation {} ({}) succeeded in {elapsed}", op.id, op.kind);
            Ok(op)
        }
        state => {
            let failed = op
                .steps
                .iter()
                .find(|s| s.state == StepState::Failed)
                .or_else(|| op.steps.iter().rev().find(|s| s.error.is_some()));
            let reason = op.error.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "no reason recorded".into());
            let at = failed
                .map(|s| format!(" at step {} of {} ({})", s.index + 1, op.steps.len(), s.name))
                .unwrap_or_default();
            bail!(
                "operation {} ({}) ended {}{at} after {elapsed}: {reason}; see `sovdb op show {}`",
                op.id,
                op.kind,
                state.as_str(),
                op.id
            )
        }
    }
}

/// Follows operation `id` until it ends, however it ends, showing progress.
pub async fn follow_to_end(client: &Client, id: &str) -> anyhow::Result<Operation> {
    let started = Instant::now();
    let mut display = Display::new(std::io::stderr().is_terminal());
    let mut unreachable_since: Option<Instant> = None;
    let path = format!("/operations/{id}/events");
    let op = 'outer: loop {
        let mut stream = match client.events(&path).await {
            Ok(s) => s,
            Err(e) if is_unreachable(&e) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_LIMIT {
                    return Err(
                        e.context(format!("gave up waiting for operation {id}; follow it with `sovdb op watch {id}`"))
                    );
                }
                display.note("the server does not answer; waiting for it to come back");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        unreachable_since = None;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    Ok(Some(ev)) if ev.event == "operation" => {
                        let op: Operation = serde_json::from_str(&ev.data)
                            .map_err(|e| anyhow!("the server sent an operation this CLI can't read ({e}); are both the same version?"))?;
                        display.update(&op, started.elapsed());
                        if op.state.is_final() {
                            break 'outer op;
                        }
                    }
                    Ok(Some(ev)) if ev.event == "error" => bail!("{}", ev.data),
                    Ok(Some(_)) => {}
                    // The server ended the stream or the connection broke: reopen.
                    Ok(None) | Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue 'outer;
                    }
                },
                _ = tick.tick() => display.redraw(started.elapsed()),
            }
        }
    };
    display.finish();
    Ok(op)
}

fn is_unreachable(e: &anyhow::Error) -> bool {
    e.is::<crate::client::Unreachable>()
}

fn format_elapsed(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Where the operation stands, for one line of progress.
fn status_line(op: &Operation) -> String {
    let total = op.steps.len();
    let current = match op.state {
        OperationState::Undoing => {
            op.steps.iter().rev().find(|s| matches!(s.state, StepState::Undoing | StepState::Succeeded))
        }
        _ => op.steps.iter().find(|s| s.state != StepState::Succeeded),
    };
    match current {
        Some(s) if !op.state.is_final() => {
            let attempt = if s.attempts > 1 { format!(", attempt {}", s.attempts) } else { String::new() };
            // What the step last said it sees (a wait's observation), else why it last failed.
            let why = match (&s.progress, &s.error) {
                (Some(p), _) if s.state == StepState::Running => format!(" — {}", p.message),
                (_, Some(e)) => format!(" — {}", e.message),
                _ => String::new(),
            };
            format!(
                "{} step {}/{total} {} ({}{attempt}){why}",
                op.state.as_str(),
                s.index + 1,
                s.name,
                s.state.as_str()
            )
        }
        _ => format!("{} ({total} steps)", op.state.as_str()),
    }
}

struct Display {
    terminal: bool,
    line: String,
    last_printed: String,
}

impl Display {
    fn new(terminal: bool) -> Display {
        Display { terminal, line: String::new(), last_printed: String::new() }
    }

    fn update(&mut self, op: &Operation, elapsed: Duration) {
        self.line = status_line(op);
        if self.terminal {
            self.redraw(elapsed);
        } else if self.line != self.last_printed {
            eprintln!("[{}] {}", format_elapsed(elapsed), self.line);
            self.last_printed = self.line.clone();
        }
    }

    fn redraw(&self, elapsed: Duration) {
        if self.terminal && !self.line.is_empty() {
            // One line redrawn in place: cut to the terminal's width, or it wraps and the
            // carriage return no longer goes back to its start.
            let width = terminal_width().saturating_sub(10).max(20);
            let line: String = if self.line.chars().count() > width {
                self.line.chars().take(width - 1).chain(std::iter::once('…')).collect()
            } else {
                self.line.clone()
            };
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}  {}", line, format_elapsed(elapsed));
            let _ = err.flush();
        }
    }

    fn note(&mut self, message: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K");
        }
        if self.last_printed != message {
            eprintln!("{message}");
            self.last_printed = message.to_string();
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// The terminal's width in columns (`COLUMNS`, else 100).
fn terminal_width() -> usize {
    std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_well() {
        assert_eq!(format_elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_elapsed(Duration::from_secs(125)), "2m05s");
    }
}
