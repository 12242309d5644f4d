//! The durable spool: every signed window is on disk before it is sent, and leaves only when
//! the oracle has acknowledged it (or rejected it for good, into `spool/rejected/`).

use crate::state::{StateError, write_atomic};
use std::path::{Path, PathBuf};

/// Signed windows waiting for acknowledgement, one file per seq: `<seq, 20 digits>.jws`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// The spool in `dir` (created by the state dir).
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.jws"))
    }

    /// Stores a signed window (atomic write, fsync).
    ///
    /// # Errors
    /// File system errors.
    pub fn put(&self, seq: u64, jws: &str) -> Result<(), StateError> {
        write_atomic(&self.file(seq), jws.as_bytes())
    }

    /// Pending windows in seq order.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn pending(&self) -> Result<Vec<(u64, PathBuf)>, StateError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| StateError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut out: Vec<(u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let seq = name.strip_suffix(".jws")?.parse().ok()?;
                Some((seq, e.path()))
            })
            .collect();
        out.sort_unstable_by_key(|(seq, _)| *seq);
        Ok(out)
    }

    /// Reads one pending window.
    ///
    /// # Errors
    /// File system errors.
    pub fn read(path: &Path) -> Result<String, StateError> {
        std::fs::read_to_string(path).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Removes an acknowledged window.
    ///
    /// # Errors
    /// File system errors.
    pub fn ack(&self, seq: u64) -> Result<(), StateError> {
        let path = self.file(seq);
        std::fs::remove_file(&path).map_err(|source| StateError::Io { path, source })
    }

    /// Moves a window the oracle refused for good to `rejected/`, with the reason beside it.
    ///
    /// # Errors
    /// File system errors.
    pub fn reject(&self, seq: u64, reason: &str) -> Result<PathBuf, StateError> {
        let dir = self.dir.join("rejected");
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        let target = dir.join(format!("{seq:020}.jws"));
        std::fs::rename(self.file(seq), &target).map_err(|source| StateError::Io {
            path: target.clone(),
            source,
        })?;
        write_atomic(&target.with_extension("reason.json"), reason.as_bytes())?;
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_in_seq_order_and_ack_removes() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spool = Spool::new(tmp.path().to_owned());
        for seq in [10, 2, 33] {
            spool.put(seq, &format!("jws-{seq}")).expect("put");
        }
        let seqs: Vec<u64> = spool
            .pending()
            .expect("pending")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![2, 10, 33]);
        spool.ack(2).expect("ack");
        let target = spool
            .reject(10, "{\"code\":\"implausible\"}")
            .expect("reject");
        assert!(target.exists());
        let left = spool.pending().expect("pending");
        assert_eq!(left.len(), 1);
        assert_eq!(Spool::read(&left[0].1).expect("read"), "jws-33");
    }
}
