//! Supervised processes with real supervisors: they run as the given user, their output
//! lands in the log, they come back when killed, they survive `kill -9` of the agent
//! without a restart, and a stop ends their whole process group.

mod common;

use std::collections::BTreeMap;

use common::*;
use sovdb_agent::proto::*;
use sovdb_agent::AgentClient;

fn spec(name: &str, argv: &[&str]) -> EnsureProcessRequest {
    EnsureProcessRequest {
        spec: ProcessSpec {
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            user: None,
            env: BTreeMap::new(),
            cwd: None,
            stop_timeout_secs: 10,
        },
        state: DesiredState::Running,
    }
}

/// `spec(name, argv)` changed by `f`.
fn spec_with(name: &str, argv: &[&str], f: impl FnOnce(&mut ProcessSpec)) -> EnsureProcessRequest {
    let mut req = spec(name, argv);
    f(&mut req.spec);
    req
}

fn stopped(mut req: EnsureProcessRequest) -> EnsureProcessRequest {
    req.state = DesiredState::Stopped;
    req
}

/// Waits until the process runs, and returns its status.
async fn running(c: &AgentClient, name: &str) -> ProcessStatus {
    eventually(&format!("{name} to run"), || async {
        let s = c.process_status(name).await.unwrap();
        (s.state == ProcessState::Running && s.pid.is_some()).then_some(s)
    })
    .await
}

#[tokio::test]
async fn a_supervised_process_runs_as_its_user_logs_restarts_and_outlives_the_agent() {
    let mut agent = TestAgent::start();
    let c = agent.client();
    let mut req = spec("sleeper", &["/bin/sh", "-c", "echo hello from $(id -un) with $GREETING; exec sleep 1000"]);
    req.spec.user = Some("nobody".into());
    req.spec.env.insert("GREETING".into(), "a greeting".into());

    let first = c.ensure_process(&req).await.unwrap();
    assert!(first.changed);
    let status = running(&c, "sleeper").await;
    let pid = status.pid.unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(uid_of(pid), nobody.uid.as_raw());
    assert_eq!(status.desired, DesiredState::Running);

    // Same spec: nothing happens.
    let again = c.ensure_process(&req).await.unwrap();
    assert!(!again.changed);
    assert_eq!(again.status.pid, Some(pid));

    // Output lands in the log.
    let log = status.log_dir.join("stdout.log");
    eventually("the greeting in stdout.log", || async {
        let t = c.tail_file(&TailFileRequest { path: log.clone(), lines: 10 }).await.ok()?;
        t.lines.iter().any(|l| l == "hello from nobody with a greeting").then_some(())
    })
    .await;

    // Killed, it comes back with another pid and one more restart.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let restarted = eventually("the process to be restarted", || async {
        let s = c.process_status("sleeper").await.unwrap();
        (s.state == ProcessState::Running && s.pid.is_some_and(|p| p != pid)).then_some(s)
    })
    .await;
    assert!(restarted.restarts >= 1, "{restarted:?}");
    assert_eq!(restarted.last_exit.and_then(|e| e.signal), Some(libc::SIGKILL));
    let pid = restarted.pid.unwrap();
    let supervisor = restarted.supervisor_pid.unwrap();

    // kill -9 of the agent: the process keeps running, untouched, and a new agent sees it.
    agent.kill9();
    assert!(alive(pid) && alive(supervisor));
    agent.launch();
    let c = agent.client();
    let after = c.process_status("sleeper").await.unwrap();
    assert_eq!((after.state, after.pid, after.supervisor_pid), (ProcessState::Running, Some(pid), Some(supervisor)));
    assert_eq!(after.restarts, restarted.restarts);
    let list = c.process_list().await.unwrap();
    assert_eq!(list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["sleeper"]);
    assert!(!c.ensure_process(&req).await.unwrap().changed, "the new agent restarted the process");
    assert!(agent.log().contains("adopted supervised process"), "{}", agent.log());

    // Stop.
    let stop = c.ensure_process(&stopped(req.clone())).await.unwrap();
    assert!(stop.changed);
    assert_eq!((stop.status.state, stop.status.pid, stop.status.supervisor_pid), (ProcessState::Stopped, None, None));
    assert!(!alive(pid) && !alive(supervisor));
    assert!(!c.ensure_process(&stopped(req)).await.unwrap().changed);
}

#[tokio::test]
async fn stop_ends_the_whole_process_group_and_start_brings_it_back() {
    let agent = TestAgent::start();
    let c = agent.client();
    // A shell that ignores SIGTERM, with two children: a stop must still end them all.
    let req = spec_with("group", &["sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & wait; wait"], |s| {
        s.stop_timeout_secs = 1
    });
    c.ensure_process(&req).await.unwrap();
    let pid = running(&c, "group").await.pid.unwrap();
    let members = eventually("the shell and its two children", || async {
        let m = group_members(pid);
        (m.len() >= 3).then_some(m)
    })
    .await;

    let stop = c.ensure_process(&stopped(req.clone())).await.unwrap();
    assert!(stop.changed);
    assert_eq!(stop.status.state, ProcessState::Stopped);
    eventually("every member of the group to be gone", || async { group_members(pid).is_empty().then_some(()) }).await;
    assert!(members.iter().all(|m| !alive(*m)));

    let start = c.ensure_process(&req).await.unwrap();
    assert!(start.changed);
    let again = running(&c, "group").await;
    assert_ne!(again.pid, Some(pid));
}

#[tokio::test]
async fn a_changed_spec_restarts_the_process() {
    let agent = TestAgent::start();
    let c = agent.client();
    let req = spec("svc", &["sleep", "1000"]);
    c.ensure_process(&req).await.unwrap();
    let old = running(&c, "svc").await.pid.unwrap();

    let mut changed = req.clone();
    changed.spec.env.insert("SETTING".into(), "2".into());
    let r = c.ensure_process(&changed).await.unwrap();
    assert!(r.changed);
    let new = running(&c, "svc").await;
    assert_ne!(new.pid, Some(old));
    assert_eq!(new.spec.env.get("SETTING").map(String::as_str), Some("2"));
    eventually("the old process to be gone", || async { (!alive(old)).then_some(()) }).await;
    assert!(!c.ensure_process(&changed).await.unwrap().changed);
}

#[tokio::test]
async fn a_program_that_cannot_start_is_retried_and_says_why() {
    let agent = TestAgent::start();
    let c = agent.client();
    let req = spec("broken", &["/nonexistent/program"]);
    let r = c.ensure_process(&req).await.unwrap();
    assert!(r.changed);
    let status = eventually("the start failure to be recorded", || async {
        let s = c.process_status("broken").await.unwrap();
        s.last_error.is_some().then_some(s)
    })
    .await;
    assert!(matches!(status.state, ProcessState::Backoff | ProcessState::Starting), "{status:?}");
    assert!(status.last_error.unwrap().contains("/nonexistent/program"));
    eventually("a retry", || async { (c.process_status("broken").await.unwrap().restarts >= 1).then_some(()) }).await;
    assert!(c.ensure_process(&stopped(req)).await.unwrap().changed);
}

#[tokio::test]
async fn bad_process_requests_are_refused() {
    let agent = TestAgent::start();
    let c = agent.client();
    let cases = [
        spec("../escape", &["true"]),
        spec("ok", &[]),
        spec_with("ok", &["true"], |s| s.user = Some("no-such-user-sovdb".into())),
        spec_with("ok", &["true"], |s| s.cwd = Some("relative".into())),
    ];
    for req in cases {
        match c.ensure_process(&req).await {
            Err(sovdb_agent::AgentError::Rejected { code, .. }) => assert_eq!(code, "invalid_request", "{req:?}"),
            other => panic!("{req:?} got {other:?}"),
        }
    }
    match c.process_status("never-created").await {
        Err(sovdb_agent::AgentError::Rejected { code, .. }) => assert_eq!(code, "not_found"),
        other => panic!("got {other:?}"),
    }
    assert!(c.process_list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_second_agent_on_the_same_base_dir_is_refused() {
    let agent = TestAgent::start();
    let out = agent.command().output().unwrap();
    assert!(!out.status.success());
    assert!(agent.log().contains("another agent already runs"), "{}", agent.log());
    agent.client().health().await.unwrap();
}

#[tokio::test]
async fn a_lost_supervisor_is_replaced_and_its_orphan_stopped() {
    let mut agent = TestAgent::start();
    let c = agent.client();
    let req = spec("orphan", &["sleep", "1000"]);
    c.ensure_process(&req).await.unwrap();
    let first = running(&c, "orphan").await;
    let (pid, supervisor) = (first.pid.unwrap(), first.supervisor_pid.unwrap());

    // The supervisor dies, its process runs on without it: the agent says so...
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    let lost = eventually("the supervisor to be gone", || async {
        let s = c.process_status("orphan").await.unwrap();
        (s.state == ProcessState::Failed).then_some(s)
    })
    .await;
    assert!(lost.last_error.is_some_and(|e| e.contains("supervisor")));
    // ...and the next ensure_process stops the orphan and starts afresh.
    assert!(c.ensure_process(&req).await.unwrap().changed);
    let second = running(&c, "orphan").await;
    assert_ne!(second.pid, Some(pid));
    eventually("the orphan to be stopped", || async { (!alive(pid)).then_some(()) }).await;

    // As after a reboot: agent, supervisor and process all gone. The new agent starts the
    // process again by itself.
    agent.kill9();
    // SAFETY: as above; the process leads its own group.
    unsafe {
        libc::kill(second.supervisor_pid.unwrap() as i32, libc::SIGKILL);
        libc::killpg(second.pid.unwrap() as i32, libc::SIGKILL);
    }
    eventually("everything to be gone", || async {
        (!alive(second.pid.unwrap()) && !alive(second.supervisor_pid.unwrap())).then_some(())
    })
    .await;
    agent.launch();
    let c = agent.client();
    let third = running(&c, "orphan").await;
    assert_ne!(third.pid, second.pid);
}
