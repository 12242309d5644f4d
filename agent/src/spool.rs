//! The durable spool: every signed window is on disk before it is sent, and leaves only when
//! the oracle has acknowledged it (or rejected it for good, into `spool/rejected/`).

use crate::state::{StateError, write_atomic};
use std::path::{Path, PathBuf};

/// Default disk budget of the spool, bytes: 256 MiB. A window JWS is about 1.5–3 KB, so this
/// holds about 100 000 windows: four weeks of 30 s windows while the oracle is unreachable.
pub const DEFAULT_SPOOL_BUDGET_BYTES: u64 = 256 * 1024 * 1024;
/// Share of the budget above which every new window logs a loud warning.
pub const SPOOL_WARN_FRACTION: f64 = 0.8;

/// Signed windows waiting for acknowledgement, one file per seq: `<seq, 20 digits>.jws`.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    budget: u64,
}

impl Spool {
    /// The spool in `dir` (created by the state dir), with the default disk budget.
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            budget: DEFAULT_SPOOL_BUDGET_BYTES,
        }
    }

    /// The same spool with a disk budget of `bytes` for pending windows.
    #[must_use]
    pub fn with_budget(mut self, bytes: u64) -> Self {
        self.budget = bytes;
        self
    }

    /// Bytes of the pending windows (`*.jws` directly in the spool; `rejected/` not counted).
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn used_bytes(&self) -> Result<u64, StateError> {
        Ok(self
            .pending()?
            .iter()
            .filter_map(|(_, path)| std::fs::metadata(path).ok())
            .map(|m| m.len())
            .sum())
    }

    fn file(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.jws"))
    }

    /// Stores a signed window (atomic write, fsync). Above [`SPOOL_WARN_FRACTION`] of the
    /// budget it logs a warning with every window; a window that would exceed the budget is
    /// refused (nothing written), so the agent stops measuring loudly rather than filling the
    /// disk or dropping signed windows.
    ///
    /// # Errors
    /// [`StateError::Invalid`] when the budget would be exceeded; file system errors.
    pub fn put(&self, seq: u64, jws: &str) -> Result<(), StateError> {
        let used = self.used_bytes()?;
        let after = used + jws.len() as u64;
        if after > self.budget {
            return Err(StateError::Invalid(format!(
                "the spool {} is full: {used} bytes of windows the oracle has not acknowledged, budget {} bytes; \
                 window {seq} was signed but is not spooled, and measurement stops. Bring the oracle back (`wattest-agent flush` sends the spool) or raise --spool-budget-mb",
                self.dir.display(),
                self.budget
            )));
        }
        if after as f64 > SPOOL_WARN_FRACTION * self.budget as f64 {
            tracing::warn!(
                spool = %self.dir.display(),
                used_bytes = after,
                budget_bytes = self.budget,
                "SPOOL NEARLY FULL: the oracle has not acknowledged windows for a long time; measurement stops when the budget is reached."
            );
        }
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
                let stem = name.strip_suffix(".jws")?;
                // Only the names `put` writes: `ack` and `reject` find a window by that name.
                if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                    tracing::warn!(file = %e.path().display(), "Not a spooled window's name (20 digits and .jws); left alone.");
                    return None;
                }
                let seq = stem.parse().ok()?;
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
        // Files not named as `put` names them are not windows of this spool: ack and reject
        // could not find them by seq, so they are left out (and alone).
        for name in [
            "7.jws",
            "+0000000000000000007.jws",
            "00000000000000000007.jws.tmp",
        ] {
            std::fs::write(tmp.path().join(name), "x").expect("write");
        }
        assert_eq!(spool.pending().expect("pending").len(), 3);
        spool.ack(2).expect("ack");
        let target = spool
            .reject(10, "{\"code\":\"implausible\"}")
            .expect("reject");
        assert!(target.exists());
        let left = spool.pending().expect("pending");
        assert_eq!(left.len(), 1);
        assert_eq!(Spool::read(&left[0].1).expect("read"), "jws-33");
        assert!(tmp.path().join("7.jws").exists(), "left alone");
    }

    #[test]
    fn budget_refuses_a_window_that_would_exceed_it_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let spool = Spool::new(tmp.path().to_owned()).with_budget(10);
        spool.put(1, "12345").expect("first fits");
        spool
            .put(2, "12345")
            .expect("second fills the budget exactly");
        let err = spool.put(3, "1").expect_err("over budget");
        assert!(err.to_string().contains("is full"), "{err}");
        assert!(
            err.to_string()
                .contains("window 3 was signed but is not spooled"),
            "{err}"
        );
        assert_eq!(spool.used_bytes().expect("used"), 10);
        let seqs: Vec<u64> = spool
            .pending()
            .expect("pending")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(seqs, vec![1, 2], "nothing written for the refused window");
        spool.ack(1).expect("ack");
        spool
            .put(3, "1")
            .expect("room again after an acknowledgement");
    }
}
