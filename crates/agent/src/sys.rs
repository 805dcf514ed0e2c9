//! Small Linux facilities shared by the agent and the supervisor: telling whether a
//! recorded process still runs, the users programs run as, the environment they get, and
//! atomic file replacement.
//!
//! A process is identified by its pid *and* its start time (field 22 of `/proc/<pid>/stat`,
//! in clock ticks since boot). Pids are reused; a pid with the same start time is the same
//! process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use rand::RngCore as _;

/// The `PATH` programs get: the usual system directories, nothing from the agent's own
/// environment, so what runs does not depend on how the agent was started.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Start time of a live process, in clock ticks since boot. `None` when there is no such
/// process or it is a zombie (it exited and only waits to be reaped).
pub(crate) fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and
    // parentheses: the fields after it start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?; // field 3
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 is the 19th after the state.
    fields.nth(18)?.parse().ok()
}

/// Whether the process recorded as (`pid`, `start_ticks`) still runs.
pub(crate) fn is_alive(pid: u32, start_ticks: u64) -> bool {
    process_start_ticks(pid) == Some(start_ticks)
}

/// Sends `signal` to every process of group `pgid`; a group that is already gone is fine.
pub(crate) fn signal_group(pgid: u32, signal: libc::c_int) {
    // SAFETY: killpg has no memory-safety preconditions. pgid 0 or 1 would mean our own
    // group or every process: never ask for those.
    if pgid > 1 {
        unsafe { libc::killpg(pgid as libc::pid_t, signal) };
    }
}

/// Sends `signal` to one process.
pub(crate) fn signal_process(pid: u32, signal: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, signal) };
    }
}

/// A user to run a program as, resolved before forking: the child may only make system
/// calls between fork and exec, never read `/etc/passwd`.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    /// Supplementary groups, as `initgroups` would set them.
    pub groups: Vec<libc::gid_t>,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `user` up (a name, or a numeric ID).
    pub fn resolve(user: &str) -> Result<RunAs, String> {
        let found = match user.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(user),
        };
        let pw = match found {
            Ok(Some(pw)) => pw,
            Ok(None) => return Err(format!("there is no user {user:?} on this host")),
            Err(e) => return Err(format!("cannot look up user {user:?}: {e}")),
        };
        let cname = CString::new(pw.name.clone()).map_err(|_| format!("user name {user:?} contains a NUL byte"))?;
        let groups = nix::unistd::getgrouplist(&cname, pw.gid)
            .map_err(|e| format!("cannot list the groups of user {user:?}: {e}"))?;
        Ok(RunAs {
            name: pw.name,
            uid: pw.uid.as_raw(),
            gid: pw.gid.as_raw(),
            groups: groups.into_iter().map(|g| g.as_raw()).collect(),
            home: pw.dir,
        })
    }

    /// Whether this process may become the user (root may become anyone; others only
    /// themselves).
    pub fn check_permitted(&self) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid == 0 || euid == self.uid {
            Ok(())
        } else {
            Err(format!("the agent does not run as root, so it cannot run programs as user {:?}", self.name))
        }
    }

    /// Becomes the user: groups, then group, then user (after `setuid` the others are no
    /// longer allowed).
    ///
    /// # Safety
    /// For `pre_exec`: makes only async-signal-safe system calls and allocates nothing.
    pub unsafe fn become_user(&self) -> io::Result<()> {
        if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setgid(self.gid) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::setuid(self.uid) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The environment a program starts with: a fixed `PATH` and the identity of the user it
/// runs as, then `extra` on top.
pub(crate) fn program_env(run_as: Option<&RunAs>, extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    let me;
    let who = match run_as {
        Some(r) => Some(r),
        None => {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            me = nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|pw| RunAs {
                name: pw.name,
                uid,
                gid: pw.gid.as_raw(),
                groups: Vec::new(),
                home: pw.dir,
            });
            me.as_ref()
        }
    };
    if let Some(who) = who {
        env.insert("HOME".to_owned(), who.home.to_string_lossy().into_owned());
        env.insert("USER".to_owned(), who.name.clone());
        env.insert("LOGNAME".to_owned(), who.name.clone());
    }
    env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    env
}

/// Refuses what a program cannot be started with: an empty argv, NUL bytes, bad
/// environment names.
pub(crate) fn check_argv_env(argv: &[String], env: &BTreeMap<String, String>) -> Result<(), String> {
    let Some(program) = argv.first() else {
        return Err("argv is empty: give at least the program to run".to_owned());
    };
    if program.is_empty() {
        return Err("argv[0] is empty: give the program to run".to_owned());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err("an argument contains a NUL byte".to_owned());
    }
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("{k:?} is not a valid environment variable name"));
        }
        if v.contains('\0') {
            return Err(format!("the value of environment variable {k} contains a NUL byte"));
        }
    }
    Ok(())
}

/// Refuses a path that is not absolute or that has `..` in it: the agent acts on the
/// path it is given, never on one relative to where it happens to run.
pub(crate) fn check_path(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("path {} is relative: give an absolute path", path.display()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("path {} contains `..`: give the path without it", path.display()));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err("the path contains a NUL byte".to_owned());
    }
    Ok(())
}

/// Replaces `path` with `content` atomically and durably: a temporary file in the same
/// directory, synced, then renamed over `path`, then the directory synced. `prepare` sets
/// mode and owner on the temporary file, so the file never shows with the wrong ones.
///
/// Crash safety: a crash leaves the old file or the new one, and at worst a temporary file
/// named `.<name>.<random>.tmp` next to it.
pub(crate) fn replace_file(
    path: &Path,
    content: &[u8],
    mode: u32,
    prepare: impl FnOnce(&fs::File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("/"));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut suffix = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode & 0o777).open(&tmp)?;
        prepare(&f)?;
        // The mode given to open is reduced by the umask; set it exactly.
        nix::sys::stat::fchmod(&f, nix::sys::stat::Mode::from_bits_truncate(mode as libc::mode_t))?;
        f.write_all(content)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    fs::File::open(dir)?.sync_all()
}

/// Writes one of the agent's own state files (JSON) atomically.
pub(crate) fn write_state_file(path: &Path, content: &[u8]) -> io::Result<()> {
    replace_file(path, content, 0o644, |_| Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_process_is_alive_and_a_made_up_start_time_is_not() {
        let me = std::process::id();
        let ticks = process_start_ticks(me).expect("our own start time");
        assert!(is_alive(me, ticks));
        assert!(!is_alive(me, ticks + 1));
    }

    #[test]
    fn a_reaped_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_start_ticks(pid), None);
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(check_path(Path::new("/etc/hosts")).is_ok());
        assert!(check_path(Path::new("etc/hosts")).unwrap_err().contains("relative"));
        assert!(check_path(Path::new("/etc/../root")).unwrap_err().contains("`..`"));
    }

    #[test]
    fn users_resolve_by_name_and_id() {
        let root = RunAs::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(RunAs::resolve("0").unwrap().name, "root");
        assert!(RunAs::resolve("no-such-user-sovdb").unwrap_err().contains("no user"));
    }

    #[test]
    fn programs_get_a_fixed_path_and_their_user() {
        let mut extra = BTreeMap::new();
        extra.insert("A".to_owned(), "1".to_owned());
        let env = program_env(Some(&RunAs::resolve("root").unwrap()), &extra);
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["USER"], "root");
        assert_eq!(env["A"], "1");
        assert!(!env.contains_key("CARGO"));
    }

    #[test]
    fn replace_file_is_exact_about_mode_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        replace_file(&path, b"one", 0o640, |_| Ok(())).unwrap();
        replace_file(&path, b"two", 0o600, |_| Ok(())).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
