//! Reading logs line by line with a cursor that survives rotation: `read_log`, which the
//! control plane polls to stream a member's logs, and which the syslog forwarder
//! ([`crate::syslog`]) uses on this host.
//!
//! A cursor is the file's inode and the offset after the last whole line handed out. A
//! changed inode means the file was rotated (renamed to `<path>.1`, as Patroni's and the
//! supervisors' logs are): the rest of the rotated file is read first, then the new one
//! from its start. A file shorter than the offset was truncated (PostgreSQL's
//! `log_truncate_on_rotation`): it is read from its start. Lines being written (no line
//! end yet) are left for the next read, so no line is ever cut in two.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::ApiError;
use crate::proto::{LogCursor, LogFile, ReadLogRequest, ReadLogResponse};

/// The most lines a read without a cursor returns.
const MAX_TAIL_LINES: u32 = 10_000;
/// How far back a read without a cursor looks for its lines.
const MAX_TAIL_BYTES: u64 = 4 << 20;

pub(crate) fn read_log(req: &ReadLogRequest) -> Result<ReadLogResponse, ApiError> {
    if req.max_bytes > crate::files::MAX_READ {
        return Err(ApiError::invalid(format!("max_bytes {} is more than {}", req.max_bytes, crate::files::MAX_READ)));
    }
    if req.tail > MAX_TAIL_LINES {
        return Err(ApiError::invalid(format!("tail {} is more than {MAX_TAIL_LINES}", req.tail)));
    }
    let path = match resolve(&req.file)? {
        Some(p) => p,
        None => return Ok(ReadLogResponse { lines: Vec::new(), cursor: req.cursor, path: None }),
    };
    let mut f = match fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(ReadLogResponse { lines: Vec::new(), cursor: req.cursor, path: None })
        }
        Err(e) => return Err(ApiError::io("open", &path, &e)),
    };
    let meta = f.metadata().map_err(|e| ApiError::io("inspect", &path, &e))?;
    if !meta.is_file() {
        return Err(ApiError::conflict(format!("{} is not a regular file", path.display())));
    }
    let (inode, size) = (meta.ino(), meta.len());
    let mut lines = Vec::new();
    let cursor = match req.cursor {
        None => {
            let (tail, end) = tail(&mut f, &path, size, req.tail)?;
            lines = tail;
            LogCursor { inode, offset: end }
        }
        Some(c) => {
            let mut budget = req.max_bytes;
            let mut start = c.offset;
            if c.inode != inode {
                // Rotated: finish the old file if it is still there as `<path>.1`.
                if let LogFile::File { path: base } = &req.file {
                    let old = rotated(base);
                    if let Ok(mut of) = fs::File::open(&old) {
                        let om = of.metadata().map_err(|e| ApiError::io("inspect", &old, &e))?;
                        if om.ino() == c.inode {
                            let (mut l, next) = read_lines(&mut of, &old, c.offset, om.len(), budget)?;
                            budget = budget.saturating_sub(next - c.offset.min(next));
                            lines.append(&mut l);
                            if next < om.len() {
                                // The budget ran out inside the rotated file.
                                return Ok(ReadLogResponse {
                                    lines,
                                    cursor: Some(LogCursor { inode: c.inode, offset: next }),
                                    path: Some(old),
                                });
                            }
                        }
                    }
                }
                start = 0;
            } else if size < c.offset {
                start = 0;
            }
            let (mut l, next) = read_lines(&mut f, &path, start, size, budget)?;
            lines.append(&mut l);
            LogCursor { inode, offset: next }
        }
    };
    Ok(ReadLogResponse { lines, cursor: Some(cursor), path: Some(path) })
}

/// The file a log is in now; `None` when there is none yet.
pub(crate) fn resolve(file: &LogFile) -> Result<Option<PathBuf>, ApiError> {
    match file {
        LogFile::File { path } => {
            crate::sys::check_path(path).map_err(ApiError::invalid)?;
            Ok(Some(path.clone()))
        }
        LogFile::Postgres { data_dir } => {
            crate::sys::check_path(data_dir).map_err(ApiError::invalid)?;
            let listing = data_dir.join("current_logfiles");
            let text = match fs::read_to_string(&listing) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ApiError::io("read", &listing, &e)),
            };
            // `stderr log/postgresql-Sun.log`: relative paths are relative to the data directory.
            Ok(text.lines().find_map(|l| l.strip_prefix("stderr ")).map(|p| data_dir.join(p.trim())))
        }
    }
}

fn rotated(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.1", path.display()))
}

/// The whole lines from `start` (at most `budget` bytes, but at least one line even if it
/// is longer), and the offset after the last of them.
fn read_lines(f: &mut fs::File, path: &Path, start: u64, size: u64, budget: u64) -> Result<(Vec<String>, u64), ApiError> {
    if start >= size || budget == 0 {
        return Ok((Vec::new(), start.min(size)));
    }
    f.seek(SeekFrom::Start(start)).map_err(|e| ApiError::io("seek in", path, &e))?;
    let mut buf = Vec::new();
    f.take((size - start).min(budget)).read_to_end(&mut buf).map_err(|e| ApiError::io("read", path, &e))?;
    let whole = match buf.iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        // A line longer than the budget: hand it out in pieces rather than never.
        None if buf.len() as u64 == budget => buf.len(),
        None => 0,
    };
    let lines = split(&buf[..whole]);
    Ok((lines, start + whole as u64))
}

/// The last `wanted` whole lines of the file, and the offset after them.
fn tail(f: &mut fs::File, path: &Path, size: u64, wanted: u32) -> Result<(Vec<String>, u64), ApiError> {
    let from = size.saturating_sub(MAX_TAIL_BYTES);
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(from)).map_err(|e| ApiError::io("seek in", path, &e))?;
    f.take(size - from).read_to_end(&mut buf).map_err(|e| ApiError::io("read", path, &e))?;
    let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let end = from + whole as u64;
    if wanted == 0 {
        return Ok((Vec::new(), end));
    }
    let mut lines = split(&buf[..whole]);
    if from > 0 && !lines.is_empty() {
        lines.remove(0); // Probably cut at the front.
    }
    let first = lines.len().saturating_sub(wanted as usize);
    lines.drain(..first);
    Ok((lines, end))
}

fn split(bytes: &[u8]) -> Vec<String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() && bytes.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == b'\n').map(|l| String::from_utf8_lossy(l).trim_end_matches('\r').to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn read(file: &LogFile, cursor: Option<LogCursor>, tail: u32, max_bytes: u64) -> ReadLogResponse {
        read_log(&ReadLogRequest { file: file.clone(), cursor, tail, max_bytes }).unwrap()
    }

    fn append(path: &Path, text: &str) {
        fs::OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn follows_a_file_across_partial_lines_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("patroni.log");
        let file = LogFile::File { path: p.clone() };
        // No file yet: nothing, no cursor.
        let r = read(&file, None, 10, 1 << 20);
        assert!(r.lines.is_empty() && r.cursor.is_none());

        append(&p, "a\nb\nc\npart");
        let r = read(&file, None, 2, 1 << 20);
        assert_eq!(r.lines, ["b", "c"]);
        let c = r.cursor.unwrap();
        assert_eq!(c.offset, 6);

        // The rest of the partial line, then more.
        append(&p, "ial\nd\n");
        let r = read(&file, Some(c), 0, 1 << 20);
        assert_eq!(r.lines, ["partial", "d"]);
        let c = r.cursor.unwrap();

        // Lines written, then the file rotated, then lines in the new file.
        append(&p, "e\n");
        fs::rename(&p, dir.path().join("patroni.log.1")).unwrap();
        append(&p, "f\ng\n");
        let r = read(&file, Some(c), 0, 1 << 20);
        assert_eq!(r.lines, ["e", "f", "g"]);
        let c = r.cursor.unwrap();

        // Truncated in place: from the start again.
        fs::write(&p, "h\n").unwrap();
        let r = read(&file, Some(c), 0, 1 << 20);
        assert_eq!(r.lines, ["h"]);

        // A small budget pages through.
        let c = r.cursor.unwrap();
        append(&p, "1111\n2222\n3333\n");
        let r = read(&file, Some(c), 0, 11);
        assert_eq!(r.lines, ["1111", "2222"]);
        let r = read(&file, r.cursor, 0, 11);
        assert_eq!(r.lines, ["3333"]);
    }

    #[test]
    fn postgres_logs_are_found_through_current_logfiles() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let file = LogFile::Postgres { data_dir: data.clone() };
        assert!(read(&file, None, 5, 1 << 20).path.is_none());
        let log = dir.path().join("postgresql-Sun.log");
        fs::write(&log, "x\ny\n").unwrap();
        fs::write(data.join("current_logfiles"), format!("stderr {}\n", log.display())).unwrap();
        let r = read(&file, None, 5, 1 << 20);
        assert_eq!((r.lines.as_slice(), r.path.as_deref()), (&["x".to_string(), "y".to_string()][..], Some(&*log)));
    }
}
