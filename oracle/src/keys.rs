//! The oracle's signing key: created in the data dir on first start, published as a JWKS.

use chrono::{DateTime, Duration, Utc};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use wattest_shared::jws::JwsSigner;
use wattest_shared::{Jwks, SigningKey, SoftwareEcKey, SoftwareKey};

/// File name of the oracle key (PKCS#8 DER, mode 0600) in the data dir.
pub const KEY_FILE: &str = "oracle-key.der";
/// Oracle key size, bits: RSA-3072 gives 128-bit security (NIST SP 800-57 Part 1 Rev. 5,
/// table 2), fitting certificates that must stay verifiable beyond 2030.
pub const ORACLE_KEY_BITS: u32 = 3072;

/// Key loading failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File system.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not a usable key, or group/world-readable.
    #[error("{0}")]
    Invalid(String),
}

/// Loads `data_dir/oracle-key.der`, creating it (0600, written to a temporary file then renamed,
/// so a crash never leaves half a key) when absent. Refuses a key file others can read.
///
/// Replicas may share the data dir: creation happens under the data dir's lock
/// ([`lock_data_dir`]), and a process that waited for it loads the key the other one created.
///
/// # Errors
/// [`KeyError`].
pub fn load_or_create(data_dir: &Path) -> Result<SoftwareKey, KeyError> {
    if let Some(key) = load_oracle_key(data_dir)? {
        return Ok(key);
    }
    let _lock = lock_data_dir(data_dir)?;
    load_or_create_locked(data_dir)
}

/// The oracle key of `data_dir`, `None` when the file does not exist.
fn load_oracle_key(data_dir: &Path) -> Result<Option<SoftwareKey>, KeyError> {
    let path = data_dir.join(KEY_FILE);
    read_secret(&path)?
        .map(|der| {
            SoftwareKey::from_pkcs8_der(&der)
                .map_err(|err| KeyError::Invalid(format!("{}: {err}", path.display())))
        })
        .transpose()
}

/// [`load_or_create`] for a caller holding the data dir's lock: reads the key again (another
/// process may have created it while this one waited for the lock), creates it if still absent.
fn load_or_create_locked(data_dir: &Path) -> Result<SoftwareKey, KeyError> {
    if let Some(key) = load_oracle_key(data_dir)? {
        return Ok(key);
    }
    let path = data_dir.join(KEY_FILE);
    let key =
        SoftwareKey::generate(ORACLE_KEY_BITS).map_err(|err| KeyError::Invalid(err.to_string()))?;
    write_key(&path, key.to_pkcs8_der())?;
    tracing::info!(kid = key.kid(), path = %path.display(), "Created the oracle signing key.");
    Ok(key)
}

/// File in the data dir that processes lock (`flock`, exclusive) while they create or rotate
/// keys, so replicas sharing the data dir never create two different keys or lose a rotation.
pub const LOCK_FILE: &str = "keys.lock";

/// The data dir's key lock, held until dropped (closing the file releases the lock).
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

/// Takes the exclusive lock of `data_dir` ([`LOCK_FILE`], created 0600 when absent), waiting
/// while another process or thread holds it. Not reentrant: a holder must not take it again.
/// Processes on other hosts are excluded only where the file system honours `flock` (local
/// file systems; NFS emulates it with byte-range locks).
///
/// # Errors
/// [`KeyError::Io`] when the lock file cannot be opened or locked.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, KeyError> {
    let path = data_dir.join(LOCK_FILE);
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io)?;
    file.lock().map_err(io)?;
    Ok(DataDirLock { _file: file })
}

/// Reads a secret key file: `None` when it does not exist; refuses a file that group or others
/// can read (it must be 0600).
///
/// # Errors
/// [`KeyError::Io`] on read failure, [`KeyError::Invalid`] on a too-open mode.
pub fn read_secret(path: &Path) -> Result<Option<Vec<u8>>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let der = match std::fs::read(path) {
        Ok(der) => der,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io(err)),
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(KeyError::Invalid(format!(
            "{} has mode {:o}; it must not be readable by group or others (chmod 600)",
            path.display(),
            mode & 0o777
        )));
    }
    Ok(Some(der))
}

/// Writes a key's PKCS#8 DER encoding (`der`, as its `to_pkcs8_der` returned it) to `path`, a
/// new 0600 file ([`write_secret`]).
///
/// # Errors
/// [`KeyError::Invalid`] when the key could not be encoded; [`KeyError::Io`] naming `path`.
fn write_key(
    path: &Path,
    der: Result<Vec<u8>, wattest_shared::jws::SignError>,
) -> Result<(), KeyError> {
    let der = der.map_err(|err| KeyError::Invalid(err.to_string()))?;
    write_secret(path, &der).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Writes `bytes` to `path` with mode 0600 from creation, atomically and durably: a temporary
/// file of a name unique to this write (process id and a random number, so concurrent writers
/// never share one) in the same directory, fsync, rename over `path`, fsync of the directory.
/// The temporary file is removed when a step fails.
///
/// # Errors
/// File system errors.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("a secret's path must name a file"))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.{:016x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    // The rename is durable once the directory entry is.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// The JWKS publishing `key` (kid = RFC 7638 thumbprint, alg PS256, use sig).
#[must_use]
pub fn jwks(key: &SoftwareKey) -> Jwks {
    Jwks {
        keys: vec![wattest_shared::Jwk::Rsa(key.public_jwk().clone()).for_jwks()],
    }
}

/// Which kind of key `keys rotate` creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KeyAlg {
    /// RSA-3072, certificates signed PS256 (the default).
    #[default]
    Ps256,
    /// EC P-256, certificates signed ES256 (RFC 7518 §3.4): 64-octet signatures, faster signing.
    Es256,
}

impl KeyAlg {
    fn generate(self) -> Result<SigningKey, KeyError> {
        let invalid = |err: wattest_shared::jws::SignError| KeyError::Invalid(err.to_string());
        Ok(match self {
            Self::Ps256 => {
                SigningKey::Rsa(SoftwareKey::generate(ORACLE_KEY_BITS).map_err(invalid)?)
            }
            Self::Es256 => SigningKey::Ec(SoftwareEcKey::generate().map_err(invalid)?),
        })
    }
}

/// File listing the oracle keys and when each becomes the signing key (JSON, in the data dir).
pub const KEYRING_FILE: &str = "keyring.json";
/// Default delay between `keys rotate` publishing a new key and signing with it: relying
/// parties that cache the JWKS for up to a day (a common HTTP cache lifetime) see the new key
/// before any certificate needs it.
pub const DEFAULT_ACTIVATION_DELAY_HOURS: i64 = 24;

/// One entry of `keyring.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct RingEntry {
    /// RFC 7638 thumbprint.
    kid: String,
    /// Key file name in the data dir (PKCS#8 DER, 0600).
    file: String,
    /// When it was created (the first key: when its file was written).
    created_at: DateTime<Utc>,
    /// From when it signs (until a later key activates); the first key's is the Unix epoch.
    activate_at: DateTime<Utc>,
}

/// The oracle's keys: every key ever used stays published (certificates stay verifiable for
/// their whole validity); the signing key is the newest one whose activation time has passed.
#[derive(Debug)]
pub struct Keyring {
    keys: Vec<(RingEntry, Arc<SigningKey>)>,
    /// The earliest-activating key, used when no key is active yet.
    first: Arc<SigningKey>,
}

/// A key as listed by `wattest-oracle keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// JWS algorithm the key signs with (`PS256` or `ES256`).
    pub alg: &'static str,
    /// `active` (signs now), `next` (published, not yet signing) or `retired` (published for
    /// verification only).
    pub state: &'static str,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Activation time.
    pub activate_at: DateTime<Utc>,
}

impl Keyring {
    /// Loads the keyring of `data_dir`, creating the first key when there is none. A data dir
    /// from before key rotation (only `oracle-key.der`) becomes a keyring of that one key.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn load_or_create(data_dir: &Path) -> Result<Self, KeyError> {
        let ring_path = data_dir.join(KEYRING_FILE);
        match read_ring(&ring_path)? {
            Some(entries) => Self::from_entries(data_dir, entries),
            None => {
                let _lock = lock_data_dir(data_dir)?;
                Self::load_or_create_locked(data_dir)
            }
        }
    }

    /// [`Keyring::load_or_create`] for a caller holding the data dir's lock: reads the keyring
    /// again (another process may have created it meanwhile), creates it if still absent.
    fn load_or_create_locked(data_dir: &Path) -> Result<Self, KeyError> {
        let ring_path = data_dir.join(KEYRING_FILE);
        let entries = match read_ring(&ring_path)? {
            Some(entries) => entries,
            None => {
                let key = load_or_create_locked(data_dir)?;
                // The first key signs whatever the time (active since the epoch); it was created
                // when its file was written, now or, for a data dir from before keyrings, then.
                let epoch = DateTime::<Utc>::UNIX_EPOCH;
                let created_at = std::fs::metadata(data_dir.join(KEY_FILE))
                    .and_then(|m| m.modified())
                    .map_or_else(|_| Utc::now(), DateTime::<Utc>::from);
                let entries = vec![RingEntry {
                    kid: key.kid().to_owned(),
                    file: KEY_FILE.to_owned(),
                    created_at,
                    activate_at: epoch,
                }];
                write_ring(&ring_path, &entries)?;
                entries
            }
        };
        Self::from_entries(data_dir, entries)
    }

    fn from_entries(data_dir: &Path, entries: Vec<RingEntry>) -> Result<Self, KeyError> {
        let ring_path = data_dir.join(KEYRING_FILE);
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = load_file(&data_dir.join(&entry.file))?;
            if key.kid() != entry.kid {
                return Err(KeyError::Invalid(format!(
                    "{}: key file {} holds key {}, not {}",
                    ring_path.display(),
                    entry.file,
                    key.kid(),
                    entry.kid
                )));
            }
            keys.push((entry, Arc::new(key)));
        }
        keys.sort_by_key(|(e, _)| e.activate_at);
        let first = keys
            .first()
            .map(|(_, k)| k.clone())
            .ok_or_else(|| KeyError::Invalid(format!("{} lists no key", ring_path.display())))?;
        Ok(Self { keys, first })
    }

    /// Creates a new key of kind `alg`, published at once and signing from
    /// `now + activate_after`. Kids are thumbprints of fresh random keys; a collision with a
    /// listed kid is refused. Runs under the data dir's lock: rotations at once (from replicas
    /// sharing the data dir) each add their key.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn rotate(
        data_dir: &Path,
        alg: KeyAlg,
        activate_after: Duration,
        now: DateTime<Utc>,
    ) -> Result<KeyInfo, KeyError> {
        let _lock = lock_data_dir(data_dir)?;
        let ring = Self::load_or_create_locked(data_dir)?;
        let key = alg.generate()?;
        if ring.keys.iter().any(|(e, _)| e.kid == key.kid()) {
            return Err(KeyError::Invalid(
                "generated a key with a kid already in use".into(),
            ));
        }
        let file = format!("oracle-key-{}.der", &key.kid()[..16.min(key.kid().len())]);
        let path = data_dir.join(&file);
        write_key(&path, key.to_pkcs8_der())?;
        let entry = RingEntry {
            kid: key.kid().to_owned(),
            file,
            created_at: now,
            activate_at: now + activate_after,
        };
        let mut entries: Vec<RingEntry> = ring.keys.into_iter().map(|(e, _)| e).collect();
        entries.push(entry.clone());
        write_ring(&data_dir.join(KEYRING_FILE), &entries)?;
        Ok(KeyInfo {
            kid: entry.kid,
            alg: key.alg(),
            state: "next",
            created_at: entry.created_at,
            activate_at: entry.activate_at,
        })
    }

    /// The signing key at `now`: the newest key whose activation time has passed (the oldest key
    /// when none has).
    #[must_use]
    pub fn active(&self, now: DateTime<Utc>) -> Arc<SigningKey> {
        self.keys
            .iter()
            .rev()
            .find(|(e, _)| e.activate_at <= now)
            .map_or_else(|| self.first.clone(), |(_, k)| k.clone())
    }

    /// Every key, for `/.well-known/jwks.json`.
    #[must_use]
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self.keys.iter().map(|(_, k)| k.jwks_entry()).collect(),
        }
    }

    /// The keys with their state at `now`.
    #[must_use]
    pub fn list(&self, now: DateTime<Utc>) -> Vec<KeyInfo> {
        let active = self.active(now);
        self.keys
            .iter()
            .map(|(e, k)| KeyInfo {
                kid: e.kid.clone(),
                alg: k.alg(),
                state: if k.kid() == active.kid() {
                    "active"
                } else if e.activate_at > now {
                    "next"
                } else {
                    "retired"
                },
                created_at: e.created_at,
                activate_at: e.activate_at,
            })
            .collect()
    }
}

fn load_file(path: &Path) -> Result<SigningKey, KeyError> {
    let der = read_secret(path)?.ok_or_else(|| KeyError::Io {
        path: path.display().to_string(),
        source: std::io::ErrorKind::NotFound.into(),
    })?;
    SigningKey::from_pkcs8_der(&der)
        .map_err(|err| KeyError::Invalid(format!("{}: {err}", path.display())))
}

/// The entries of `keyring.json`, `None` when it does not exist.
fn read_ring(path: &Path) -> Result<Option<Vec<RingEntry>>, KeyError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| KeyError::Invalid(format!("{}: {err}", path.display()))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

fn write_ring(path: &Path, entries: &[RingEntry]) -> Result<(), KeyError> {
    let json =
        serde_json::to_vec_pretty(entries).map_err(|err| KeyError::Invalid(err.to_string()))?;
    write_secret(path, &json).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The keyring of a running oracle, reloaded when `keyring.json` changes on disk (after
/// `wattest-oracle keys rotate`), so every replica sharing the data dir publishes a new key
/// without a restart.
#[derive(Debug)]
pub struct KeyringHandle {
    data_dir: std::path::PathBuf,
    current: std::sync::RwLock<(Option<std::time::SystemTime>, Arc<Keyring>)>,
}

impl KeyringHandle {
    /// Loads the keyring of `data_dir`.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn open(data_dir: &Path) -> Result<Self, KeyError> {
        let ring = Keyring::load_or_create(data_dir)?;
        Ok(Self {
            data_dir: data_dir.to_owned(),
            current: std::sync::RwLock::new((mtime(data_dir), Arc::new(ring))),
        })
    }

    /// The current keyring (reloaded if the file changed; on a reload error the loaded one is
    /// kept and the error logged).
    #[must_use]
    pub fn get(&self) -> Arc<Keyring> {
        let now_mtime = mtime(&self.data_dir);
        if let Ok(guard) = self.current.read()
            && guard.0 == now_mtime
        {
            return guard.1.clone();
        }
        match Keyring::load_or_create(&self.data_dir) {
            Ok(ring) => {
                let ring = Arc::new(ring);
                if let Ok(mut guard) = self.current.write() {
                    *guard = (now_mtime, ring.clone());
                }
                tracing::info!("Reloaded the oracle keyring.");
                ring
            }
            Err(err) => {
                tracing::error!(error = %err, "Keyring reload failed; keeping the loaded keys.");
                self.current
                    .read()
                    .map(|g| g.1.clone())
                    .unwrap_or_else(|e| e.into_inner().1.clone())
            }
        }
    }
}

fn mtime(data_dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(data_dir.join(KEYRING_FILE))
        .and_then(|m| m.modified())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("dir");
        let a = load_or_create(dir.path()).expect("create");
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(dir.path()).expect("load");
        assert_eq!(a.kid(), b.kid());
        assert_eq!(jwks(&a).keys[0].kid(), Some(a.kid()));
        std::fs::set_permissions(
            dir.path().join(KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(KeyError::Invalid(_))
        ));
    }

    #[test]
    fn rotation_publishes_before_use_and_keeps_old_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let before = Utc::now() - Duration::seconds(1);
        let first = Keyring::load_or_create(dir.path()).expect("ring");
        let t0 = Utc::now();
        // The first key was created now, and signs whatever the time.
        let listed = first.list(t0);
        assert!(
            listed[0].created_at >= before && listed[0].created_at <= t0,
            "{listed:?}"
        );
        assert_eq!(listed[0].activate_at, DateTime::<Utc>::UNIX_EPOCH);
        let old = first.active(t0).kid().to_owned();
        let next =
            Keyring::rotate(dir.path(), KeyAlg::Ps256, Duration::hours(24), t0).expect("rotate");
        assert_eq!(next.state, "next");
        let ring = Keyring::load_or_create(dir.path()).expect("reload");
        // Published at once, signing only after the delay; the old key stays published.
        let kids: Vec<String> = ring
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.kid().map(str::to_owned))
            .collect();
        assert!(kids.contains(&old) && kids.contains(&next.kid));
        assert_eq!(ring.active(t0).kid(), old);
        assert_eq!(ring.active(t0 + Duration::hours(25)).kid(), next.kid);
        let states: Vec<&str> = ring
            .list(t0 + Duration::hours(25))
            .iter()
            .map(|k| k.state)
            .collect();
        assert_eq!(states, ["retired", "active"]);
        let mode = std::fs::metadata(dir.path().join(KEYRING_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A running oracle picks the rotation up without a restart.
        let handle = KeyringHandle::open(dir.path()).expect("handle");
        assert_eq!(handle.get().jwks().keys.len(), 2);
        std::thread::sleep(std::time::Duration::from_millis(20));
        Keyring::rotate(dir.path(), KeyAlg::Es256, Duration::zero(), Utc::now())
            .expect("rotate again");
        assert_eq!(handle.get().jwks().keys.len(), 3);
        // The ES256 key is active at once, published as an EC JWK, and signs ES256.
        let ring = handle.get();
        assert!(
            ring.jwks()
                .keys
                .iter()
                .any(|k| matches!(k, wattest_shared::Jwk::Ec(_)))
        );
        assert_eq!(
            ring.active(Utc::now()).alg(),
            wattest_shared::jws::ALG_ES256
        );
    }
}
