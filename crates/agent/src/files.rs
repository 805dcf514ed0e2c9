//! The file primitives: `write_file`, `remove`, `read_file`, `tail_file`.
//!
//! Writes are atomic and durable (see [`sys::replace_file`]) and idempotent: a file that
//! already has the content, mode and owner asked for is not touched, and the answer says
//! `changed: false`. Only absolute paths without `..` are accepted.

use std::fs::{self, DirBuilder};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::ApiError;
use crate::proto::{
    Changed, ReadFileRequest, ReadFileResponse, RemoveRequest, TailFileRequest, TailFileResponse, WriteFileRequest,
};
use crate::sys::{self, check_path};

/// The most `read_file` returns in one call.
pub(crate) const MAX_READ: u64 = 16 << 20;
/// The most lines `tail_file` returns.
const MAX_TAIL_LINES: u32 = 10_000;
/// How far back `tail_file` looks for line ends, whatever the number of lines asked.
const MAX_TAIL_BYTES: u64 = 16 << 20;

pub(crate) fn write_file(req: &WriteFileRequest) -> Result<Changed, ApiError> {
    check_path(&req.path).map_err(ApiError::invalid)?;
    if req.mode > 0o7777 {
        return Err(ApiError::invalid(format!("mode {:#o} is not a permission mode (at most 0o7777)", req.mode)));
    }
    let (uid, gid) = resolve_owner(req.owner.as_deref(), req.group.as_deref())?;
    let path = &req.path;

    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(ApiError::conflict(format!(
                "{} is a directory: remove it first or write to a path inside it",
                path.display()
            )));
        }
        Ok(m) if m.is_file() => {
            let same_owner = uid.is_none_or(|u| m.uid() == u) && gid.is_none_or(|g| m.gid() == g);
            let same_mode = m.mode() & 0o7777 == req.mode;
            let same_content = m.len() == req.content.len() as u64
                && fs::read(path).map_err(|e| ApiError::io("read", path, &e))? == req.content;
            if same_content && same_mode && same_owner {
                return Ok(Changed { changed: false });
            }
            if same_content {
                // Only the metadata differs: fix it in place. Owner first, because
                // changing the owner clears set-user-ID bits that the mode may ask for.
                if !same_owner {
                    std::os::unix::fs::chown(path, uid, gid)
                        .map_err(|e| ApiError::io("change the owner of", path, &e))?;
                }
                fs::set_permissions(path, fs::Permissions::from_mode(req.mode))
                    .map_err(|e| ApiError::io("change the mode of", path, &e))?;
                tracing::info!(path = %path.display(), "file metadata updated");
                return Ok(Changed { changed: true });
            }
        }
        // Anything else (absent, a symlink, a FIFO) is replaced by the regular file.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::io("inspect", path, &e)),
    }

    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| ApiError::io("create the directory", parent, &e))?;
    }
    sys::replace_file(path, &req.content, req.mode, |f| {
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(f, uid, gid)?;
        }
        Ok(())
    })
    .map_err(|e| ApiError::io("write", path, &e))?;
    tracing::info!(path = %path.display(), bytes = req.content.len(), "file written");
    Ok(Changed { changed: true })
}

/// The owner and group to give a file. A user without a group gets the user's primary
/// group, as `chown user` would not but as every admin expects.
fn resolve_owner(owner: Option<&str>, group: Option<&str>) -> Result<(Option<u32>, Option<u32>), ApiError> {
    let mut uid = None;
    let mut gid = None;
    if let Some(owner) = owner {
        let run_as = sys::RunAs::resolve(owner).map_err(ApiError::invalid)?;
        uid = Some(run_as.uid);
        gid = Some(run_as.gid);
    }
    if let Some(group) = group {
        let found = match group.parse::<u32>() {
            Ok(id) => nix::unistd::Group::from_gid(id.into()),
            Err(_) => nix::unistd::Group::from_name(group),
        };
        match found {
            Ok(Some(g)) => gid = Some(g.gid.as_raw()),
            Ok(None) => return Err(ApiError::invalid(format!("there is no group {group:?} on this host"))),
            Err(e) => return Err(ApiError::internal(format!("cannot look up group {group:?}: {e}"))),
        }
    }
    Ok((uid, gid))
}

pub(crate) fn remove(req: &RemoveRequest) -> Result<Changed, ApiError> {
    check_path(&req.path).map_err(ApiError::invalid)?;
    let path = &req.path;
    if path.parent().is_none() {
        return Err(ApiError::invalid("refusing to remove /"));
    }
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Changed { changed: false }),
        Err(e) => return Err(ApiError::io("inspect", path, &e)),
    };
    let removed = if meta.is_dir() {
        if req.recursive {
            fs::remove_dir_all(path)
        } else {
            fs::remove_dir(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::DirectoryNotEmpty {
                    std::io::Error::new(
                        e.kind(),
                        "the directory is not empty; pass recursive to remove it with its content",
                    )
                } else {
                    e
                }
            })
        }
    } else {
        fs::remove_file(path)
    };
    removed.map_err(|e| ApiError::io("remove", path, &e))?;
    if let Some(parent) = path.parent() {
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    tracing::info!(path = %path.display(), recursive = req.recursive, "removed");
    Ok(Changed { changed: true })
}

pub(crate) fn read_file(req: &ReadFileRequest) -> Result<ReadFileResponse, ApiError> {
    check_path(&req.path).map_err(ApiError::invalid)?;
    if req.max_bytes > MAX_READ {
        return Err(ApiError::invalid(format!(
            "max_bytes {} is more than {MAX_READ}: read in several calls with offset",
            req.max_bytes
        )));
    }
    let path = &req.path;
    let mut f = open_regular(path)?;
    let size = f.metadata().map_err(|e| ApiError::io("inspect", path, &e))?.len();
    let mut content = Vec::new();
    if req.offset < size {
        f.seek(SeekFrom::Start(req.offset)).map_err(|e| ApiError::io("seek in", path, &e))?;
        f.take(req.max_bytes).read_to_end(&mut content).map_err(|e| ApiError::io("read", path, &e))?;
    }
    let eof = req.offset + content.len() as u64 >= size;
    Ok(ReadFileResponse { content, size, eof })
}

pub(crate) fn tail_file(req: &TailFileRequest) -> Result<TailFileResponse, ApiError> {
    check_path(&req.path).map_err(ApiError::invalid)?;
    if req.lines > MAX_TAIL_LINES {
        return Err(ApiError::invalid(format!("lines {} is more than {MAX_TAIL_LINES}", req.lines)));
    }
    let path = &req.path;
    let wanted = req.lines as usize;
    let mut f = open_regular(path)?;
    let size = f.metadata().map_err(|e| ApiError::io("inspect", path, &e))?.len();

    // Read backwards in chunks until there are more line ends than lines wanted (the
    // extra one is the end of the line before the first wanted one).
    let mut start = size;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && size - start < MAX_TAIL_BYTES {
        let step = (64 * 1024).min(start);
        start -= step;
        let mut chunk = vec![0u8; step as usize];
        f.seek(SeekFrom::Start(start)).map_err(|e| ApiError::io("seek in", path, &e))?;
        f.read_exact(&mut chunk).map_err(|e| ApiError::io("read", path, &e))?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if body.iter().filter(|b| **b == b'\n').count() >= wanted {
            break;
        }
    }
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<String> = if buf.is_empty() {
        Vec::new()
    } else {
        body.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).into_owned()).collect()
    };
    let first = lines.len().saturating_sub(wanted);
    lines.drain(..first);
    Ok(TailFileResponse { lines })
}

fn open_regular(path: &Path) -> Result<fs::File, ApiError> {
    let f = fs::File::open(path).map_err(|e| ApiError::io("open", path, &e))?;
    let meta = f.metadata().map_err(|e| ApiError::io("inspect", path, &e))?;
    if !meta.is_file() {
        return Err(ApiError::conflict(format!("{} is not a regular file", path.display())));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(path: &Path, lines: u32) -> Vec<String> {
        tail_file(&TailFileRequest { path: path.to_owned(), lines }).unwrap().lines
    }

    #[test]
    fn tail_returns_the_last_lines_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        fs::write(&p, "a\nb\nc\n").unwrap();
        assert_eq!(tail(&p, 2), ["b", "c"]);
        assert_eq!(tail(&p, 10), ["a", "b", "c"]);
        assert!(tail(&p, 0).is_empty());
        fs::write(&p, "a\nb\nc").unwrap();
        assert_eq!(tail(&p, 1), ["c"]);
        fs::write(&p, "").unwrap();
        assert!(tail(&p, 5).is_empty());
        fs::write(&p, "\n\nx\n").unwrap();
        assert_eq!(tail(&p, 3), ["", "", "x"]);
    }

    #[test]
    fn tail_reads_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..50_000).map(|i| format!("line {i}\n")).collect();
        fs::write(&p, text).unwrap();
        let got = tail(&p, 2000);
        assert_eq!(got.len(), 2000);
        assert_eq!(got[0], "line 48000");
        assert_eq!(got[1999], "line 49999");
    }

    #[test]
    fn read_file_pages_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"0123456789").unwrap();
        let r = read_file(&ReadFileRequest { path: p.clone(), offset: 2, max_bytes: 3 }).unwrap();
        assert_eq!((r.content.as_slice(), r.size, r.eof), (&b"234"[..], 10, false));
        let r = read_file(&ReadFileRequest { path: p.clone(), offset: 7, max_bytes: 100 }).unwrap();
        assert_eq!((r.content.as_slice(), r.eof), (&b"789"[..], true));
        let r = read_file(&ReadFileRequest { path: p, offset: 50, max_bytes: 100 }).unwrap();
        assert!(r.content.is_empty() && r.eof);
    }
}
