//! Signers that turn a window into a compact JWS (PS256): a TPM 2.0 key or a software key.

#[cfg(feature = "tpm")]
pub mod tpm;

use crate::state::{NodeState, SignerKind, StateDir, StateError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PSS_SHA256, RsaKeyPair, RsaPublicKeyComponents};
use wattest_shared::RsaJwk;
use wattest_shared::jws::{JwsSigner, SignError};

/// File name of the software node key (PKCS#8 DER, mode 0600) in the state dir.
pub const SOFTWARE_KEY_FILE: &str = "node-key.der";
/// Size of a software node key, bits (the protocol's minimum and what TPMs hold).
pub const SOFTWARE_KEY_BITS: u32 = 2048;

/// A software node key in memory, signing with ring: constant-time RSA (BoringSSL's code), and
/// no OpenSSL initialisation in the long-running agent, which keeps its start-up CPU and memory
/// small (docs/performance.md). Keys are generated at enrollment with OpenSSL
/// ([`wattest_shared::SoftwareKey`]), which ring cannot do, and stored as PKCS#8 DER.
pub struct SoftwareSigner {
    key: RsaKeyPair,
    rng: SystemRandom,
    kid: String,
}

impl SoftwareSigner {
    /// Loads a PKCS#8 DER RSA private key.
    ///
    /// # Errors
    /// The bytes are not an RSA key ring accepts (2048–8192 bits, PKCS#8 v1), with ring's reason.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignError> {
        let key = RsaKeyPair::from_pkcs8(der)
            .map_err(|err| SignError::Device(format!("RSA key rejected: {err}")))?;
        let public: RsaPublicKeyComponents<Vec<u8>> = key.public().into();
        let jwk = RsaJwk {
            kty: "RSA".into(),
            n: B64.encode(&public.n),
            e: B64.encode(&public.e),
            kid: None,
            alg: None,
            use_: None,
        };
        Ok(Self {
            kid: jwk.thumbprint(),
            key,
            rng: SystemRandom::new(),
        })
    }
}

impl JwsSigner for SoftwareSigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-octet salt: ring's `RSA_PSS_SHA256` uses the
    /// digest length as salt length, which is PS256 (RFC 7518 §3.5).
    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(&RSA_PSS_SHA256, &self.rng, message, &mut signature)
            .map_err(|_| SignError::Device("ring RSA-PSS signing failed".into()))?;
        Ok(signature)
    }
}

/// The node's signer, as chosen at enrollment.
pub enum NodeSigner {
    /// Key file in the state dir, held in memory.
    Software(SoftwareSigner),
    /// Key inside a TPM 2.0.
    #[cfg(feature = "tpm")]
    Tpm(tpm::TpmSigner),
}

impl NodeSigner {
    /// Loads the signer recorded in `state`, and checks that it is the key `state` enrolled
    /// (its RFC 7638 thumbprint is `state.kid`): a different key would sign windows the oracle
    /// refuses, every one of them.
    ///
    /// # Errors
    /// The key file is missing, unreadable or readable by others; the TPM is unreachable; the
    /// key is not the enrolled one (a damaged state dir, e.g. an interrupted re-enrollment).
    pub fn load(dir: &StateDir, state: &NodeState) -> Result<Self, StateError> {
        let signer = Self::load_key(dir, state)?;
        if signer.kid() != state.kid {
            return Err(StateError::Invalid(format!(
                "the node key in {} (kid {}) is not the enrolled one (node.json: kid {}); the state dir is damaged: enroll again with --force",
                dir.path().display(),
                signer.kid(),
                state.kid
            )));
        }
        Ok(signer)
    }

    fn load_key(dir: &StateDir, state: &NodeState) -> Result<Self, StateError> {
        match state.signer {
            SignerKind::Software => {
                let der = dir.read_secret(SOFTWARE_KEY_FILE)?;
                Ok(Self::Software(SoftwareSigner::from_pkcs8_der(&der).map_err(|err| StateError::Invalid(format!("{SOFTWARE_KEY_FILE}: {err}")))?))
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

    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        match self {
            Self::Software(k) => k.sign_jws(message),
            #[cfg(feature = "tpm")]
            Self::Tpm(t) => t.sign_jws(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wattest_shared::SoftwareKey;
    use wattest_shared::jws::{SaltLength, SaltPolicy, decode_header, sign_compact};

    /// The key file must be the enrolled key: another one (an interrupted re-enrollment) is
    /// refused when loaded, not discovered window by window at the oracle.
    #[test]
    fn only_the_enrolled_key_loads() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = StateDir::create(tmp.path()).expect("state dir");
        let key = SoftwareKey::generate(SOFTWARE_KEY_BITS).expect("keygen");
        dir.write_secret(SOFTWARE_KEY_FILE, &key.to_pkcs8_der().expect("der"))
            .expect("write");
        let mut state = NodeState {
            node_id: "n".into(),
            oracle: "http://127.0.0.1:9".into(),
            name: "n".into(),
            zone: "BE".into(),
            kid: key.kid().to_owned(),
            signer: SignerKind::Software,
            tcti: None,
        };
        assert_eq!(
            NodeSigner::load(&dir, &state).expect("loads").kid(),
            key.kid()
        );
        state.kid = "another-key".into();
        let err = NodeSigner::load(&dir, &state).err().expect("refused");
        assert!(err.to_string().contains("not the enrolled one"), "{err}");
    }

    /// A key made by OpenSSL at enrollment loads in ring with the same kid, and ring's signatures
    /// verify as standard PS256 (salt 32) under the public key OpenSSL derived.
    #[test]
    fn ring_signer_is_interchangeable_with_the_enrollment_key() {
        let openssl_key = SoftwareKey::generate(SOFTWARE_KEY_BITS).expect("keygen");
        let signer = SoftwareSigner::from_pkcs8_der(&openssl_key.to_pkcs8_der().expect("der"))
            .expect("ring loads PKCS#8");
        assert_eq!(signer.kid(), openssl_key.kid());
        let jws = sign_compact(&signer, "t+jwt", b"{}").expect("sign");
        let public = openssl_key.public_jwk().to_public_key().expect("public");
        let (_, salt) = decode_header(&jws, "t+jwt")
            .expect("header")
            .verify(&public, SaltPolicy::DigestOnly)
            .expect("verifies");
        assert_eq!(salt, SaltLength::Digest);
        assert!(SoftwareSigner::from_pkcs8_der(b"not a key").is_err());
    }
}
