//! Transparency-log proofs as served by the oracle, and their offline verification.
//!
//! Hashes in these bodies are standard base64 (RFC 4648 §4, with padding), as in C2SP
//! checkpoints. A certificate's log entry is its compact JWS as ASCII bytes; its leaf hash is
//! `SHA-256(0x00 ‖ jws)` (RFC 9162 §2.1.1).

use crate::checkpoint::{Checkpoint, CheckpointError, LogVerifier};
use crate::merkle::{self, Hash, ProofError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// Proof that a certificate is leaf `leaf_index` of the log at `tree_size`, with the signed
/// checkpoint of that size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InclusionProof {
    /// 0-based leaf index.
    pub leaf_index: u64,
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// `SHA-256(0x00 ‖ compact JWS)`, standard base64.
    pub leaf_hash: String,
    /// RFC 9162 §2.1.3 audit path, leaf to root, standard base64.
    pub hashes: Vec<String>,
    /// Signed checkpoint (C2SP signed note) of `tree_size`.
    pub checkpoint: String,
}

/// Proof that the log at `second` extends the log at `first` (RFC 9162 §2.1.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsistencyProof {
    /// The older size.
    pub first: u64,
    /// The newer size.
    pub second: u64,
    /// Proof hashes, standard base64.
    pub hashes: Vec<String>,
    /// Signed checkpoint of `second`.
    pub checkpoint: String,
}

/// Why a log check failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogCheckError {
    /// The checkpoint is not signed by the log key, or malformed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The proof does not hold.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// The proof body itself is unusable.
    #[error("malformed proof: {0}")]
    Malformed(String),
}

/// Encodes a hash as standard base64.
#[must_use]
pub fn encode_hash(hash: &Hash) -> String {
    B64.encode(hash)
}

/// Decodes a standard-base64 hash.
///
/// # Errors
/// [`LogCheckError::Malformed`].
pub fn decode_hash(text: &str) -> Result<Hash, LogCheckError> {
    B64.decode(text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| LogCheckError::Malformed(format!("{text:?} is not 32 bytes of base64")))
}

fn decode_all(hashes: &[String]) -> Result<Vec<Hash>, LogCheckError> {
    hashes.iter().map(|h| decode_hash(h)).collect()
}

/// Checks that `jws` is in the log: the checkpoint is signed by `log`, the proof is for the
/// checkpoint's size, the leaf hash is the JWS's, and the audit path leads to the root.
/// Returns the checkpoint proven against.
///
/// # Errors
/// [`LogCheckError`] naming the failed check.
pub fn verify_inclusion(
    jws: &str,
    proof: &InclusionProof,
    log: &LogVerifier,
) -> Result<Checkpoint, LogCheckError> {
    let checkpoint = log.verify(&proof.checkpoint)?;
    if checkpoint.size != proof.tree_size {
        return Err(LogCheckError::Malformed(format!(
            "proof is for tree size {} but the checkpoint has size {}",
            proof.tree_size, checkpoint.size
        )));
    }
    let leaf = merkle::leaf_hash(jws.trim().as_bytes());
    if encode_hash(&leaf) != proof.leaf_hash {
        return Err(LogCheckError::Malformed(
            "the proof's leaf hash is not the hash of this certificate".into(),
        ));
    }
    merkle::verify_inclusion(
        &leaf,
        proof.leaf_index,
        proof.tree_size,
        &decode_all(&proof.hashes)?,
        &checkpoint.root,
    )?;
    Ok(checkpoint)
}

/// Checks that the log grew append-only from `older` (a signed checkpoint an auditor saved) to
/// the proof's checkpoint. Returns the newer checkpoint.
///
/// # Errors
/// [`LogCheckError`].
pub fn verify_consistency(
    older: &str,
    proof: &ConsistencyProof,
    log: &LogVerifier,
) -> Result<Checkpoint, LogCheckError> {
    let old = log.verify(older)?;
    let new = log.verify(&proof.checkpoint)?;
    if old.origin != new.origin {
        return Err(CheckpointError::WrongOrigin {
            expected: old.origin,
            found: new.origin,
        }
        .into());
    }
    if old.size != proof.first || new.size != proof.second {
        return Err(LogCheckError::Malformed(format!(
            "proof is from {} to {} but the checkpoints have sizes {} and {}",
            proof.first, proof.second, old.size, new.size
        )));
    }
    merkle::verify_consistency(
        old.size,
        new.size,
        &decode_all(&proof.hashes)?,
        &old.root,
        &new.root,
    )?;
    Ok(new)
}
