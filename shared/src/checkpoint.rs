//! Signed checkpoints of the transparency log: the C2SP `tlog-checkpoint` body inside a C2SP
//! `signed-note`, signed with an Ed25519 log key.
//!
//! A checkpoint (https://c2sp.org/tlog-checkpoint) is the text
//! `<origin>\n<tree size, decimal>\n<root hash, standard base64>\n` followed by optional extension
//! lines. As a signed note (https://c2sp.org/signed-note) it is followed by a blank line and one
//! signature line per signer: `— <key name> <base64(key id ‖ signature)>\n` (the dash is U+2014).
//! For Ed25519 the key id is the first 4 bytes of `SHA-256(<key name> ‖ 0x0A ‖ 0x01 ‖ public key)`
//! and the signature covers the note text including its final newline. Verifiers are configured
//! with the verifier key string `<key name>+<key id, 8 hex digits>+<base64(0x01 ‖ public key)>`.

use crate::merkle::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
use sha2::{Digest, Sha256};

/// Signature algorithm identifier of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// The signature line prefix: an em dash (U+2014) and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint or key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The text is not a well-formed checkpoint or signed note.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// The verifier key string is not `<name>+<hex id>+<base64 key>` for Ed25519.
    #[error("malformed log verifier key: {0}")]
    BadKey(String),
    /// No signature line by the expected key.
    #[error("checkpoint carries no signature by log key {0}")]
    NotSignedByKey(String),
    /// A signature line by the expected key does not verify.
    #[error("checkpoint signature by {0} does not verify")]
    BadSignature(String),
    /// The checkpoint is for another log.
    #[error("checkpoint origin {found:?} is not the expected {expected:?}")]
    WrongOrigin {
        /// Expected origin.
        expected: String,
        /// Origin in the checkpoint.
        found: String,
    },
    /// The crypto library failed.
    #[error("crypto: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for CheckpointError {
    fn from(err: openssl::error::ErrorStack) -> Self {
        Self::Crypto(err.to_string())
    }
}

/// A log checkpoint: the log's identity, size and root hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Origin line: a schema-less URL naming the log, e.g. `oracle.example/wattest-log`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 9162 root hash of those leaves.
    pub root: Hash,
    /// Extension lines (none are written by Wattest).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint body (the note text), ending with a newline.
    #[must_use]
    pub fn body(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint body (the note text, without signatures).
    ///
    /// # Errors
    /// [`CheckpointError::Malformed`].
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_owned());
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the note text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(bad(
                "tree size is not a decimal number without leading zeros",
            ));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| bad("tree size does not fit 64 bits"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("root hash is not 32 bytes of standard base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(bad("empty extension line"));
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn key_id(name: &str, public: &[u8]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ALG_ED25519]);
    h.update(public);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('+') {
        return Err(CheckpointError::BadKey(format!(
            "key name {name:?} must be non-empty without spaces or '+'"
        )));
    }
    Ok(())
}

/// The log's Ed25519 signing key, with its note key name.
pub struct LogSigner {
    name: String,
    key: PKey<Private>,
    id: [u8; 4],
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner")
            .field("name", &self.name)
            .field("key", &"<private>")
            .finish()
    }
}

impl LogSigner {
    /// A new random key.
    ///
    /// # Errors
    /// Bad name or crypto failure.
    pub fn generate(name: &str) -> Result<Self, CheckpointError> {
        Self::from_key(name, PKey::generate_ed25519()?)
    }

    /// Loads a PKCS#8 DER private key.
    ///
    /// # Errors
    /// Bad name, not an Ed25519 key, or crypto failure.
    pub fn from_pkcs8_der(name: &str, der: &[u8]) -> Result<Self, CheckpointError> {
        Self::from_key(name, PKey::private_key_from_pkcs8(der)?)
    }

    fn from_key(name: &str, key: PKey<Private>) -> Result<Self, CheckpointError> {
        check_name(name)?;
        if key.id() != Id::ED25519 {
            return Err(CheckpointError::BadKey(
                "the log key must be Ed25519".into(),
            ));
        }
        let public = key.raw_public_key()?;
        Ok(Self {
            id: key_id(name, &public),
            name: name.to_owned(),
            key,
        })
    }

    /// The PKCS#8 DER encoding of the private key (store it 0600).
    ///
    /// # Errors
    /// Crypto failure.
    pub fn to_pkcs8_der(&self) -> Result<Vec<u8>, CheckpointError> {
        Ok(self.key.private_key_to_pkcs8()?)
    }

    /// The key name used in signature lines.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw 32-byte Ed25519 public key.
    ///
    /// # Errors
    /// Crypto failure.
    pub fn public_key(&self) -> Result<Vec<u8>, CheckpointError> {
        Ok(self.key.raw_public_key()?)
    }

    /// The verifier key string `<name>+<key id hex>+<base64(0x01 ‖ public key)>`.
    ///
    /// # Errors
    /// Crypto failure.
    pub fn verifier_key(&self) -> Result<String, CheckpointError> {
        let mut material = vec![ALG_ED25519];
        material.extend(self.public_key()?);
        Ok(format!(
            "{}+{}+{}",
            self.name,
            hex_id(self.id),
            B64.encode(material)
        ))
    }

    /// Signs `checkpoint` and returns the whole signed note.
    ///
    /// # Errors
    /// Crypto failure.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let body = checkpoint.body();
        let signature =
            Signer::new_without_digest(&self.key)?.sign_oneshot_to_vec(body.as_bytes())?;
        let mut blob = self.id.to_vec();
        blob.extend(signature);
        Ok(format!(
            "{body}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(blob)
        ))
    }
}

fn hex_id(id: [u8; 4]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// A log verifier key: checks checkpoints signed by one log.
#[derive(Clone)]
pub struct LogVerifier {
    name: String,
    id: [u8; 4],
    key: PKey<Public>,
}

impl std::fmt::Debug for LogVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogVerifier")
            .field("name", &self.name)
            .field("id", &hex_id(self.id))
            .finish()
    }
}

impl LogVerifier {
    /// Parses a verifier key string `<name>+<8 hex digits>+<base64(0x01 ‖ 32-byte key)>`.
    ///
    /// # Errors
    /// [`CheckpointError::BadKey`].
    pub fn parse(vkey: &str) -> Result<Self, CheckpointError> {
        let bad = |why: &str| CheckpointError::BadKey(why.to_owned());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<hex key id>+<base64 key>"));
        };
        check_name(name)?;
        let material = B64
            .decode(material)
            .map_err(|_| bad("key is not standard base64"))?;
        let [alg, public @ ..] = material.as_slice() else {
            return Err(bad("empty key"));
        };
        if *alg != ALG_ED25519 || public.len() != 32 {
            return Err(bad("only Ed25519 keys (0x01 ‖ 32 bytes) are supported"));
        }
        let id = key_id(name, public);
        if !id_hex.eq_ignore_ascii_case(&hex_id(id)) {
            return Err(bad("key id does not match the name and key"));
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            key: PKey::public_key_from_raw_bytes(public, Id::ED25519)?,
        })
    }

    /// The key name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies a signed note by this key and parses its checkpoint, whose origin must be the
    /// key's name (C2SP tlog-checkpoint: "the key name is the origin"). Signature lines of other
    /// keys (witnesses, say) are ignored.
    ///
    /// # Errors
    /// [`CheckpointError`]: malformed note, no signature by this key, a bad signature, or
    /// [`CheckpointError::WrongOrigin`] for a checkpoint of another log.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let bad = |why: &str| CheckpointError::Malformed(why.to_owned());
        let split = note
            .find("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        let checkpoint = Checkpoint::parse_body(text)?;
        if !signatures.ends_with('\n') {
            return Err(bad("the signature block must end with a newline"));
        }
        let mut found = false;
        for line in signatures
            .strip_suffix('\n')
            .unwrap_or(signatures)
            .split('\n')
        {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("a signature line must start with an em dash and a space"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line needs a key name and a signature"))?;
            if name != self.name {
                continue;
            }
            let blob = B64
                .decode(blob)
                .map_err(|_| bad("signature is not standard base64"))?;
            if blob.len() < 4 || blob[..4] != self.id {
                continue;
            }
            found = true;
            let ok = Verifier::new_without_digest(&self.key)?
                .verify_oneshot(&blob[4..], text.as_bytes())
                .unwrap_or(false);
            if !ok {
                return Err(CheckpointError::BadSignature(self.name.clone()));
            }
        }
        if !found {
            return Err(CheckpointError::NotSignedByKey(self.name.clone()));
        }
        if checkpoint.origin != self.name {
            return Err(CheckpointError::WrongOrigin {
                expected: self.name.clone(),
                found: checkpoint.origin,
            });
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "oracle.example/wattest-log".into(),
            size: 42,
            root: [7u8; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn signed_checkpoints_round_trip_and_tampering_fails() {
        let signer = LogSigner::generate("oracle.example/wattest-log").expect("key");
        let note = signer.sign(&checkpoint()).expect("sign");
        assert!(note.starts_with("oracle.example/wattest-log\n42\nBwcH"));
        let verifier = LogVerifier::parse(&signer.verifier_key().expect("vkey")).expect("parse");
        assert_eq!(verifier.verify(&note).expect("verifies"), checkpoint());

        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            verifier.verify(&tampered),
            Err(CheckpointError::BadSignature(
                "oracle.example/wattest-log".into()
            ))
        );
        let other = LogSigner::generate("oracle.example/wattest-log").expect("key");
        let foreign = other.sign(&checkpoint()).expect("sign");
        assert!(matches!(
            verifier.verify(&foreign),
            Err(CheckpointError::NotSignedByKey(_))
        ));
        // Signed by the log's key, but for another origin: the key name is the origin.
        let elsewhere = signer
            .sign(&Checkpoint {
                origin: "other.example/log".into(),
                ..checkpoint()
            })
            .expect("sign");
        assert_eq!(
            verifier.verify(&elsewhere),
            Err(CheckpointError::WrongOrigin {
                expected: "oracle.example/wattest-log".into(),
                found: "other.example/log".into()
            })
        );
        let unsigned = checkpoint().body() + "\n";
        assert!(verifier.verify(&unsigned).is_err());
        assert!(verifier.verify("garbage").is_err());
    }

    #[test]
    fn keys_survive_storage_and_bad_keys_are_refused() {
        let signer = LogSigner::generate("log").expect("key");
        let again =
            LogSigner::from_pkcs8_der("log", &signer.to_pkcs8_der().expect("der")).expect("load");
        assert_eq!(
            signer.verifier_key().expect("v"),
            again.verifier_key().expect("v")
        );
        let vkey = signer.verifier_key().expect("v");
        assert!(LogVerifier::parse(&vkey.replacen("log+", "log2+", 1)).is_err());
        assert!(LogVerifier::parse("log+00000000+AQ==").is_err());
        assert!(LogSigner::generate("has space").is_err());
    }

    #[test]
    fn bodies_parse_strictly() {
        let body = checkpoint().body();
        assert_eq!(Checkpoint::parse_body(&body).expect("parse"), checkpoint());
        for bad in [
            "origin\n042\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
            "origin\n1\nBwcH\n",
            "origin\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=",
            "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        ] {
            assert!(Checkpoint::parse_body(bad).is_err(), "{bad:?}");
        }
    }
}
