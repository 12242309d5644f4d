//! Signers that turn a window into a compact JWS (PS256): a TPM 2.0 key or a software key.

#[cfg(feature = "tpm")]
pub mod tpm;

use crate::state::{NodeState, SignerKind, StateDir, StateError};
use wattest_shared::SoftwareKey;
use wattest_shared::jws::{JwsSigner, SignError};

/// File name of the software node key (PKCS#8 DER, mode 0600) in the state dir.
pub const SOFTWARE_KEY_FILE: &str = "node-key.der";
/// Size of a software node key, bits (the protocol's minimum and what TPMs hold).
pub const SOFTWARE_KEY_BITS: u32 = 2048;

/// The node's signer, as chosen at enrollment.
pub enum NodeSigner {
    /// Key file in the state dir, held in memory (OpenSSL).
    Software(SoftwareKey),
    /// Key inside a TPM 2.0.
    #[cfg(feature = "tpm")]
    Tpm(tpm::TpmSigner),
}

impl NodeSigner {
    /// Loads the signer recorded in `state`.
    ///
    /// # Errors
    /// The key file is missing, unreadable or readable by others; the TPM is unreachable.
    pub fn load(dir: &StateDir, state: &NodeState) -> Result<Self, StateError> {
        match state.signer {
            SignerKind::Software => {
                let der = dir.read_secret(SOFTWARE_KEY_FILE)?;
                Ok(Self::Software(SoftwareKey::from_pkcs8_der(&der).map_err(|err| StateError::Invalid(format!("{SOFTWARE_KEY_FILE}: {err}")))?))
            }
            #[cfg(feature = "tpm")]
            SignerKind::Tpm => {
                let tcti = state.tcti.clone().unwrap_or_else(tpm::tcti_from_env);
                Ok(Self::Tpm(tpm::TpmSigner::load(&tcti, dir.path()).map_err(|err| StateError::Invalid(format!("TPM ({tcti}): {err}")))?))
            }
            #[cfg(not(feature = "tpm"))]
            SignerKind::Tpm => Err(StateError::Invalid("this node was enrolled with a TPM key but this agent was built without the `tpm` feature".into())),
        }
    }
}

impl JwsSigner for NodeSigner {
    fn kid(&self) -> &str {
        match self {
            Self::Software(k) => k.kid(),
            #[cfg(feature = "tpm")]
            Self::Tpm(t) => t.kid(),
        }
    }

    fn sign_ps256(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Self::Software(k) => k.sign_ps256(message),
            #[cfg(feature = "tpm")]
            Self::Tpm(t) => t.sign_ps256(message),
        }
    }
}
