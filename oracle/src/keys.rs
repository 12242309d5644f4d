//! The oracle's signing key: created in the data dir on first start, published as a JWKS.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use wattest_shared::jws::JwsSigner;
use wattest_shared::{Jwks, SoftwareKey};

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
/// # Errors
/// [`KeyError`].
pub fn load_or_create(data_dir: &Path) -> Result<SoftwareKey, KeyError> {
    let path = data_dir.join(KEY_FILE);
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(der) => {
            let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(KeyError::Invalid(format!(
                    "{} has mode {:o}; it must not be readable by group or others (chmod 600)",
                    path.display(),
                    mode & 0o777
                )));
            }
            SoftwareKey::from_pkcs8_der(&der)
                .map_err(|err| KeyError::Invalid(format!("{}: {err}", path.display())))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = SoftwareKey::generate(ORACLE_KEY_BITS)
                .map_err(|err| KeyError::Invalid(err.to_string()))?;
            let der = key
                .to_pkcs8_der()
                .map_err(|err| KeyError::Invalid(err.to_string()))?;
            write_secret(&path, &der).map_err(io)?;
            tracing::info!(kid = key.kid(), path = %path.display(), "Created the oracle signing key.");
            Ok(key)
        }
        Err(err) => Err(io(err)),
    }
}

/// Writes `bytes` to `path` with mode 0600 atomically (temporary file, fsync, rename).
///
/// # Errors
/// File system errors.
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The JWKS publishing `key` (kid = RFC 7638 thumbprint, alg PS256, use sig).
#[must_use]
pub fn jwks(key: &SoftwareKey) -> Jwks {
    Jwks {
        keys: vec![key.public_jwk().clone().for_jwks()],
    }
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
        assert_eq!(jwks(&a).keys[0].kid.as_deref(), Some(a.kid()));
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
}
