//! A log file that rotates by size: `name.log`, then `name.log.1` (newest) to
//! `name.log.N` (oldest); the oldest is dropped at each rotation. So a service that logs
//! without end uses at most `(keep + 1) × max_bytes` of disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The size at which a service's log rotates.
pub(crate) const MAX_LOG_BYTES: u64 = 10 << 20;
/// How many rotated files are kept.
pub(crate) const KEEP_LOGS: u32 = 5;

pub(crate) struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
}

impl RotatingLog {
    /// Opens `path` for appending (creating it).
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<RotatingLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog { path: path.to_owned(), max_bytes, keep, file: Some(file), size })
    }

    /// Appends `buf`, rotating first if it would make the file larger than the limit.
    /// A chunk is never split, so one write may overshoot the limit by its own size.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(OpenOptions::new().create(true).append(true).open(&self.path)?),
        };
        file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        let numbered = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        let _ = fs::remove_file(numbered(self.keep));
        for i in (1..self.keep).rev() {
            let _ = fs::rename(numbered(i), numbered(i + 1));
        }
        if self.keep > 0 {
            fs::rename(&self.path, numbered(1))?;
        } else {
            fs::remove_file(&self.path)?;
        }
        self.file = Some(OpenOptions::new().create(true).append(true).open(&self.path)?);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        for chunk in ["aaaaaa", "bbbbbb", "cccccc", "dddddd"] {
            log.write(chunk.as_bytes()).unwrap();
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), "dddddd");
        assert_eq!(fs::read_to_string(dir.path().join("stdout.log.1")).unwrap(), "cccccc");
        assert_eq!(fs::read_to_string(dir.path().join("stdout.log.2")).unwrap(), "bbbbbb");
        assert!(!dir.path().join("stdout.log.3").exists());

        // Reopening continues from the current size.
        let mut log = RotatingLog::open(&path, 10, 2).unwrap();
        log.write(b"eeee").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "ddddddeeee");
        log.write(b"f").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "f");
        assert_eq!(fs::read_to_string(dir.path().join("stdout.log.1")).unwrap(), "ddddddeeee");
    }
}
