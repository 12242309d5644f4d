//! Enrollment: create the node key and register the node with the oracle.

use crate::signer::{SOFTWARE_KEY_BITS, SOFTWARE_KEY_FILE};
use crate::state::{NodeState, SignerKind, StateDir};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use wattest_shared::jws::JwsSigner;
use wattest_shared::{RsaJwk, SoftwareKey};

/// What enrollment needs.
#[derive(Debug)]
pub struct EnrollRequest<'a> {
    /// Oracle base URL.
    pub oracle: &'a str,
    /// Enrollment token (role `node`).
    pub token: &'a str,
    /// Node name.
    pub name: &'a str,
    /// Grid zone.
    pub zone: &'a str,
    /// Signer to create.
    pub signer: SignerKind,
    /// TPM TCTI (for `tpm`).
    pub tcti: Option<String>,
    /// Replace an existing enrollment in the state dir.
    pub force: bool,
}

#[derive(Debug, Deserialize)]
struct Enrolled {
    node_id: String,
    zone: String,
    kid: String,
    attestation_level: String,
}

#[derive(Debug, Deserialize)]
struct Problem {
    code: Option<String>,
    detail: Option<String>,
}

/// Creates the key, posts it to `POST /v1/nodes`, then writes the key (0600) and `node.json`:
/// nothing is written unless the oracle accepted the node.
///
/// # Errors
/// The state dir is already enrolled (without `force`), the oracle refuses, or I/O fails.
pub async fn enroll(dir: &StateDir, req: EnrollRequest<'_>) -> Result<NodeState> {
    if dir.node().is_ok() && !req.force {
        bail!(
            "{} is already enrolled; pass --force to enroll again with a new key (the old node's chain ends there)",
            dir.path().display()
        );
    }
    let pending = crate::spool::Spool::new(dir.spool()).pending()?.len();
    if pending > 0 {
        bail!(
            "{pending} signed windows of the current node are still in the spool; send them first (`wattest-agent flush`) before enrolling again"
        );
    }
    if req.signer == SignerKind::Tpm {
        bail!(
            "--signer tpm: TPM enrollment is not wired to the oracle in this build yet; use --signer software"
        );
    }
    let key = tokio::task::spawn_blocking(|| SoftwareKey::generate(SOFTWARE_KEY_BITS))
        .await?
        .context("generating the node key")?;
    let public_key: RsaJwk = key.public_jwk().clone();
    let base = req.oracle.trim_end_matches('/');
    let body = serde_json::json!({ "name": req.name, "zone": req.zone, "public_key": public_key });
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/nodes"))
        .bearer_auth(req.token)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("contacting the oracle at {base}"))?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    if !status.is_success() {
        let problem: Problem = serde_json::from_slice(&bytes).unwrap_or(Problem {
            code: None,
            detail: Some(String::from_utf8_lossy(&bytes).into_owned()),
        });
        bail!(
            "the oracle refused the enrollment (HTTP {status}, {}): {}",
            problem.code.unwrap_or_default(),
            problem.detail.unwrap_or_default()
        );
    }
    let enrolled: Enrolled = serde_json::from_slice(&bytes)
        .context("the oracle's enrollment response is not understood")?;
    if enrolled.kid != key.kid() {
        bail!(
            "the oracle registered key {} but ours is {}",
            enrolled.kid,
            key.kid()
        );
    }
    dir.write_secret(
        SOFTWARE_KEY_FILE,
        &key.to_pkcs8_der().context("encoding the key")?,
    )?;
    let node = NodeState {
        node_id: enrolled.node_id,
        oracle: base.to_owned(),
        name: req.name.to_owned(),
        zone: enrolled.zone,
        kid: enrolled.kid,
        signer: req.signer,
        tcti: req.tcti,
    };
    dir.write_node(&node)?;
    dir.write_chain(&crate::state::ChainHead::default())?;
    tracing::info!(node_id = %node.node_id, attestation = %enrolled.attestation_level, "Node enrolled.");
    Ok(node)
}
