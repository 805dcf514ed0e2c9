//! Small file-system helpers with the guarantees the server's state files need.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `content` to `path` atomically with `mode`: a reader sees the old file or the
/// whole new one, never a part, and the new one is on disk when this returns.
pub fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// An exclusive advisory lock on a file, held while the value lives (the kernel drops it
/// when the process dies, however it dies).
pub struct FileLock {
    _file: fs::File,
}

impl FileLock {
    /// `Ok(None)` when another process holds it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<FileLock>> {
        use std::os::fd::AsRawFd as _;
        let file = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            Ok(Some(FileLock { _file: file }))
        } else {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(err)
            }
        }
    }
}

/// This data directory's stable identity (created on first use): the name under which
/// its server holds operation leases, so that a restarted server knows which leases were
/// its own.
pub fn node_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("node.id");
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) => Err(std::io::Error::other(format!("{} is empty; delete it and start again", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("serve-{}", uuid::Uuid::now_v7());
            write_atomic(&path, format!("{id}\n").as_bytes(), 0o600)?;
            Ok(id)
        }
        Err(e) => Err(e),
    }
}
