//! The transparency log of issued certificates: an append-only RFC 9162 Merkle tree in the
//! database, signed checkpoints (C2SP tlog-checkpoint in a signed note, Ed25519), and proofs.
//!
//! Every certificate is appended in the transaction that issues it, so a certificate exists only
//! if it is logged. Appends lock the single `log_head` row: one sequencer, also across replicas.
//! Checkpoints are signed on demand; Ed25519 signatures are deterministic, so the same tree size
//! always yields the same signed note.

use crate::keys::{KeyError, lock_data_dir, read_secret, write_secret};
use crate::storage::ledger::LogHead;
use crate::storage::{Storage, StorageError};
use std::path::Path;
use wattest_shared::checkpoint::{Checkpoint, CheckpointError, LogSigner};
use wattest_shared::merkle::{self, NodeId, ProofError};
use wattest_shared::transparency::{ConsistencyProof, InclusionProof, encode_hash};

/// File name of the log key (Ed25519, PKCS#8 DER, mode 0600) in the data dir.
pub const LOG_KEY_FILE: &str = "log-key.der";

/// Why a log request failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Database.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Signing the checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The certificate is not in the log.
    #[error("certificate {0} is not in the log")]
    NotLogged(String),
    /// A size beyond the current tree.
    #[error("tree size {asked} exceeds the log's current size {size}")]
    BeyondHead {
        /// Requested.
        asked: u64,
        /// Current.
        size: u64,
    },
    /// The certificate was logged after the requested tree size.
    #[error("the certificate is leaf {index}, not in the tree of size {size}")]
    LoggedAfter {
        /// The certificate's leaf index.
        index: u64,
        /// The requested tree size.
        size: u64,
    },
}

/// The log's identity and signing key.
#[derive(Debug)]
pub struct Ledger {
    signer: LogSigner,
}

/// The default origin (and key name) for an oracle published at `public_url`: the URL without
/// its scheme and trailing slash, plus `/wattest-log` (C2SP tlog-checkpoint recommends a
/// schema-less URL naming the log).
#[must_use]
pub fn default_origin(public_url: &str) -> String {
    let bare = public_url
        .split_once("://")
        .map_or(public_url, |(_, rest)| rest)
        .trim_end_matches('/');
    format!("{bare}/wattest-log")
}

/// The log key of `data_dir` named `origin`, `None` when the file does not exist.
fn load_log_key(data_dir: &Path, origin: &str) -> Result<Option<LogSigner>, KeyError> {
    let path = data_dir.join(LOG_KEY_FILE);
    read_secret(&path)?
        .map(|der| {
            LogSigner::from_pkcs8_der(origin, &der)
                .map_err(|err| KeyError::Invalid(format!("{}: {err}", path.display())))
        })
        .transpose()
}

impl Ledger {
    /// Loads `data_dir/log-key.der`, creating it (0600) when absent; refuses a key file others
    /// can read. Replicas may share the data dir: creation happens under the data dir's lock
    /// ([`lock_data_dir`]), and a process that waited for it loads the key the other one created.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn load_or_create(data_dir: &Path, origin: &str) -> Result<Self, KeyError> {
        if let Some(signer) = load_log_key(data_dir, origin)? {
            return Ok(Self { signer });
        }
        let _lock = lock_data_dir(data_dir)?;
        if let Some(signer) = load_log_key(data_dir, origin)? {
            return Ok(Self { signer });
        }
        let path = data_dir.join(LOG_KEY_FILE);
        let invalid =
            |err: CheckpointError| KeyError::Invalid(format!("{}: {err}", path.display()));
        let signer = LogSigner::generate(origin).map_err(invalid)?;
        write_secret(&path, &signer.to_pkcs8_der().map_err(invalid)?).map_err(|source| {
            KeyError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        tracing::info!(origin, path = %path.display(), "Created the transparency log key.");
        Ok(Self { signer })
    }

    /// The log origin (also the note key name).
    #[must_use]
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The verifier key string auditors configure (`<origin>+<key id>+<base64 key>`).
    ///
    /// # Errors
    /// Crypto failure.
    pub fn verifier_key(&self) -> Result<String, CheckpointError> {
        self.signer.verifier_key()
    }

    /// The signed checkpoint of `head`.
    ///
    /// # Errors
    /// Crypto failure.
    pub fn sign(&self, head: LogHead) -> Result<String, CheckpointError> {
        self.signer.sign(&Checkpoint {
            origin: self.origin().to_owned(),
            size: head.size,
            root: head.root,
            extensions: Vec::new(),
        })
    }

    /// The signed checkpoint of the current head.
    ///
    /// # Errors
    /// [`LedgerError`].
    pub async fn checkpoint(&self, storage: &Storage) -> Result<(LogHead, String), LedgerError> {
        let head = storage.log_head().await?;
        Ok((head, self.sign(head)?))
    }

    /// The head at `size` (≤ the current size), computed from stored subtrees.
    async fn head_at(&self, storage: &Storage, size: Option<u64>) -> Result<LogHead, LedgerError> {
        let current = storage.log_head().await?;
        match size {
            None => Ok(current),
            Some(asked) if asked > current.size => Err(LedgerError::BeyondHead {
                asked,
                size: current.size,
            }),
            Some(asked) if asked == current.size => Ok(current),
            Some(asked) => {
                let root = storage
                    .log_proof(|l| merkle::root(asked, l).map(|r| vec![r]))
                    .await?
                    .first()
                    .copied()
                    .ok_or_else(|| StorageError::Corrupt("no root computed".into()))?;
                Ok(LogHead { size: asked, root })
            }
        }
    }

    /// The inclusion proof of a certificate in the tree of `tree_size` leaves (default: the
    /// current size), with the signed checkpoint of that size.
    ///
    /// # Errors
    /// [`LedgerError::NotLogged`], [`LedgerError::BeyondHead`],
    /// [`LedgerError::LoggedAfter`] (the certificate was logged after `tree_size`),
    /// [`StorageError::Corrupt`] when the log's leaf is not the hash of `jws` (the log and the
    /// certificates table disagree), database or signing failure.
    pub async fn inclusion(
        &self,
        storage: &Storage,
        certificate_id: &str,
        jws: &str,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        let index = storage
            .log_index(certificate_id)
            .await?
            .ok_or_else(|| LedgerError::NotLogged(certificate_id.to_owned()))?;
        let head = self.head_at(storage, tree_size).await?;
        if index >= head.size {
            return Err(LedgerError::LoggedAfter {
                index,
                size: head.size,
            });
        }
        // The proof, then the stored leaf: it must be this certificate's, or the log and the
        // certificates table disagree (a damaged database or an edited row), and no proof is
        // served that the client would only find failing.
        let leaf = NodeId { level: 0, index };
        let mut hashes = storage
            .log_proof(|l| {
                let mut proof = merkle::inclusion_proof(index, head.size, &mut *l)?;
                proof.push(l(leaf).ok_or(ProofError::MissingNode(leaf))?);
                Ok(proof)
            })
            .await?;
        let leaf_hash = merkle::leaf_hash(jws.as_bytes());
        if hashes.pop() != Some(leaf_hash) {
            tracing::error!(
                certificate_id,
                leaf_index = index,
                "The log's leaf differs from the certificate's stored JWS: the log and the certificates table disagree."
            );
            return Err(StorageError::Corrupt(format!(
                "log leaf {index} is not the hash of certificate {certificate_id}'s JWS"
            ))
            .into());
        }
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: head.size,
            leaf_hash: encode_hash(&leaf_hash),
            hashes: hashes.iter().map(encode_hash).collect(),
            checkpoint: self.sign(head)?,
        })
    }

    /// The consistency proof from `first` to `second` (default: the current size) leaves.
    ///
    /// # Errors
    /// [`LedgerError::BeyondHead`], [`StorageError::Proof`] for `first` = 0 or `first > second`,
    /// database or signing failure.
    pub async fn consistency(
        &self,
        storage: &Storage,
        first: u64,
        second: Option<u64>,
    ) -> Result<ConsistencyProof, LedgerError> {
        let head = self.head_at(storage, second).await?;
        let hashes = storage
            .log_proof(|l| merkle::consistency_proof(first, head.size, l))
            .await?;
        Ok(ConsistencyProof {
            first,
            second: head.size,
            hashes: hashes.iter().map(encode_hash).collect(),
            checkpoint: self.sign(head)?,
        })
    }
}
