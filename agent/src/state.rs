//! The agent's state dir: node identity, key, the head of the window chain, the spool, and a
//! lock so that two agents never sign two windows with the same `seq`.
//!
//! Layout (directory mode 0700, secrets 0600):
//! `node.json` (identity), `node-key.der` (software key), `chain.json` (last signed seq and
//! hash), `spool/<seq, 20 digits>.jws` (signed windows not yet acknowledged), `lock`.

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// State dir failures.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Missing, corrupt or unsafe content.
    #[error("{0}")]
    Invalid(String),
}

impl StateError {
    /// True for a file whose content is not what it should be at all (e.g. not UTF-8), as
    /// opposed to one that could not be read now.
    #[must_use]
    pub fn is_invalid_data(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData)
    }
}

/// Which signer the node enrolled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SignerKind {
    /// RSA-2048 key file (mode 0600) in the state dir.
    Software,
    /// Key generated inside a TPM 2.0, certified by its attestation key.
    Tpm,
}

/// `node.json`: who this node is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Node id from enrollment.
    pub node_id: String,
    /// Oracle base URL.
    pub oracle: String,
    /// Node name.
    pub name: String,
    /// Grid zone.
    pub zone: String,
    /// Key thumbprint.
    pub kid: String,
    /// Signer kind.
    pub signer: SignerKind,
    /// TPM TCTI, for TPM signers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcti: Option<String>,
}

/// `chain.json`: the last window this node signed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// seq of the last signed window (0: none).
    pub seq: u64,
    /// Its hash (the next `prev`).
    pub hash: Option<String>,
    /// Its end.
    pub end: Option<chrono::DateTime<chrono::Utc>>,
}

/// An opened (and locked) state dir.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: Option<File>,
}

impl StateDir {
    /// Opens `path`, creating it (and its `spool`) with mode 0700 if needed. Does not lock.
    ///
    /// An existing directory is never chmod'ed (it may be a symlink, or shared on purpose):
    /// one that group or others may access gets a warning instead. Its secrets are 0600
    /// whatever the directory's mode.
    ///
    /// # Errors
    /// File system errors.
    pub fn create(path: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let existed = path.exists();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path.join("spool"))
            .map_err(io)?;
        if existed {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "The state dir can be accessed by group or others; it is left as it is (its key and other secret files are 0600), but 0700 is advised: chmod 700 it."
                );
            }
        }
        Ok(Self {
            path: path.to_owned(),
            _lock: None,
        })
    }

    /// Opens `path` and takes its exclusive lock (held until drop).
    ///
    /// # Errors
    /// Another agent holds the lock; file system errors.
    pub fn lock(path: &Path) -> Result<Self, StateError> {
        let mut dir = Self::create(path)?;
        let lock_path = path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| StateError::Io {
                path: lock_path.clone(),
                source,
            })?;
        // SAFETY-free: flock through the std API (Rust ≥ 1.89).
        file.try_lock().map_err(|_| StateError::Invalid(format!("another wattest-agent is using {} (lock {} is held); one agent per state dir keeps the window chain linear", path.display(), lock_path.display())))?;
        dir._lock = Some(file);
        Ok(dir)
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spool directory.
    #[must_use]
    pub fn spool(&self) -> PathBuf {
        self.path.join("spool")
    }

    /// Reads `node.json`.
    ///
    /// # Errors
    /// Not enrolled, or a corrupt file.
    pub fn node(&self) -> Result<NodeState, StateError> {
        let path = self.path.join("node.json");
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                StateError::Invalid(format!(
                    "{} is not enrolled (no node.json): run `wattest-agent enroll` first",
                    self.path.display()
                ))
            } else {
                StateError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|err| StateError::Invalid(format!("{}: {err}", path.display())))
    }

    /// Writes `node.json`.
    ///
    /// # Errors
    /// File system errors.
    pub fn write_node(&self, node: &NodeState) -> Result<(), StateError> {
        self.write_atomic(
            "node.json",
            &serde_json::to_vec_pretty(node).unwrap_or_default(),
        )
    }

    /// Reads `chain.json` (default when absent: nothing signed yet).
    ///
    /// # Errors
    /// A corrupt file.
    pub fn chain(&self) -> Result<ChainHead, StateError> {
        let path = self.path.join("chain.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|err| StateError::Invalid(format!("{}: {err}", path.display()))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(ChainHead::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes `chain.json` atomically.
    ///
    /// # Errors
    /// File system errors.
    pub fn write_chain(&self, head: &ChainHead) -> Result<(), StateError> {
        self.write_atomic("chain.json", &serde_json::to_vec(head).unwrap_or_default())
    }

    /// Reads a secret file, refusing one that group or others can read.
    ///
    /// # Errors
    /// Missing file, or mode wider than 0600.
    pub fn read_secret(&self, name: &str) -> Result<Vec<u8>, StateError> {
        let path = self.path.join(name);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(StateError::Invalid(format!(
                "{} has mode {:o}; a key must be private to its owner (chmod 600)",
                path.display(),
                mode & 0o777
            )));
        }
        std::fs::read(&path).map_err(io)
    }

    /// Writes a secret file with mode 0600, atomically.
    ///
    /// # Errors
    /// File system errors.
    pub fn write_secret(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        self.write_atomic(name, bytes)
    }

    /// Writes `name` via a temporary file (mode 0600), fsync and rename, so a crash leaves the old
    /// or the new content, never half of one.
    ///
    /// # Errors
    /// File system errors.
    pub fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path.join(name), bytes)
    }
}

/// Writes `path` via `path.tmp` (mode 0600), fsync, rename, then fsync of the directory: the
/// rename itself is durable once this returns (a power loss cannot bring back the old name's
/// content, or no file at all, after the caller went on, e.g. moved the chain head past a
/// spooled window). When writing, syncing or renaming fails (a full disk), `path.tmp` is
/// removed: it may hold part of a key.
///
/// # Errors
/// File system errors.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomic_with(path, bytes, |file, bytes| {
        file.write_all(bytes)?;
        file.sync_all()
    })
}

/// [`write_atomic`] with `write` writing and syncing the temporary file (a failing one in
/// tests).
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut File, &[u8]) -> std::io::Result<()>,
) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    if let Err(err) = write(&mut file, bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(io(err));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_secrets_are_private() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = StateDir::lock(tmp.path()).expect("first lock");
        assert!(
            StateDir::lock(tmp.path()).is_err(),
            "second agent must be refused"
        );
        dir.write_secret("k", b"secret").expect("write");
        let mode = std::fs::metadata(tmp.path().join("k"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(dir.read_secret("k").expect("read"), b"secret");
        std::fs::set_permissions(tmp.path().join("k"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        assert!(dir.read_secret("k").is_err());
        assert_eq!(dir.chain().expect("chain"), ChainHead::default());
        let head = ChainHead {
            seq: 3,
            hash: Some("h".into()),
            end: None,
        };
        dir.write_chain(&head).expect("write chain");
        assert_eq!(dir.chain().expect("chain"), head);
        drop(dir);
        assert!(StateDir::lock(tmp.path()).is_ok(), "lock released on drop");
    }

    /// A write that fails half way (a full disk) leaves no temporary file with part of the
    /// key, and the old content in place.
    #[test]
    fn a_failed_write_removes_its_temporary_file() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("node-key.der");
        std::fs::write(&path, b"old").expect("old");
        for fail_at in ["write", "sync"] {
            let err = write_atomic_with(&path, b"secret key bytes", |file, bytes| {
                file.write_all(&bytes[..6])?;
                if fail_at == "sync" {
                    file.write_all(&bytes[6..])?;
                }
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            })
            .expect_err("fails");
            assert!(matches!(err, StateError::Io { .. }), "{err}");
            assert!(!path.with_extension("tmp").exists(), "{fail_at}");
            assert_eq!(std::fs::read(&path).expect("read"), b"old");
        }
        // A rename that fails (the target is a non-empty directory) cleans up too.
        let dir_target = tmp.path().join("taken");
        std::fs::create_dir_all(dir_target.join("x")).expect("dir");
        assert!(write_atomic(&dir_target, b"secret").is_err());
        assert!(!dir_target.with_extension("tmp").exists());
        // And the ordinary path still writes.
        write_atomic(&path, b"new").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        assert!(!path.with_extension("tmp").exists());
    }

    /// A new state dir is created 0700; an existing one keeps its mode (never chmod'ed, a
    /// warning is logged when group or others may access it).
    #[test]
    fn new_dirs_are_0700_and_existing_ones_are_not_chmoded() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let new = tmp.path().join("a/b/state");
        StateDir::create(&new).expect("create");
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&new.join("spool")), 0o700);
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        drop(StateDir::lock(&shared).expect("lock"));
        assert_eq!(mode(&shared), 0o755, "an existing dir keeps its mode");
        assert_eq!(mode(&shared.join("spool")), 0o700);
    }
}
