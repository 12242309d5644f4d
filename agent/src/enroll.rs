//! Enrollment: create the node key and register the node with the oracle.

use crate::signer::{SOFTWARE_KEY_BITS, SOFTWARE_KEY_FILE};
use crate::state::{NodeState, SignerKind, StateDir};
use anyhow::{Context, Result, bail};
use serde::Deserialize;
use wattest_shared::jws::JwsSigner;
use wattest_shared::{RsaJwk, SoftwareKey};

/// Longest wait for the oracle to accept the connection.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Longest wait for one enrollment request's answer (a TPM enrollment makes two): enrollment
/// is one insert at the oracle, so an oracle that takes longer is stuck, and `enroll` should
/// say so rather than hang.
pub const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The HTTP client of enrollment: connection within [`CONNECT_TIMEOUT`], each request within
/// `timeout`.
///
/// # Errors
/// The TLS backend cannot be initialised.
fn client(timeout: std::time::Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("wattest-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

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

/// Creates the key (a software key, or keys in the TPM for `--signer tpm`), enrolls it with the
/// oracle (`POST /v1/nodes`, and for a TPM the credential challenge), then writes the key (0600)
/// and `node.json`: nothing in the state dir changes unless the oracle enrolled the node.
///
/// # Errors
/// The state dir is already enrolled (without `force`), the oracle refuses, or I/O fails.
pub async fn enroll(dir: &StateDir, req: EnrollRequest<'_>) -> Result<NodeState> {
    // A node.json that exists but does not read (damaged, unreadable) is an enrolled node too:
    // enrolling over it without --force would replace its key and chain.
    if !req.force && dir.path().join("node.json").exists() {
        let why = match dir.node() {
            Ok(_) => "is already enrolled".to_owned(),
            Err(err) => format!("holds a node.json that cannot be read ({err})"),
        };
        bail!(
            "{} {why}; pass --force to enroll again with a new key (the old node's chain ends there)",
            dir.path().display()
        );
    }
    let pending = crate::spool::Spool::new(dir.spool()).pending()?.len();
    if pending > 0 {
        bail!(
            "{pending} signed windows of the current node are still in the spool; send them first (`wattest-agent flush`) before enrolling again"
        );
    }
    let base = req.oracle.trim_end_matches('/');
    let client = client(REQUEST_TIMEOUT).context("building the HTTP client")?;
    #[cfg(feature = "tpm")]
    if req.signer == SignerKind::Tpm {
        let tcti = req
            .tcti
            .clone()
            .unwrap_or_else(crate::signer::tpm::tcti_from_env);
        let (enrolled, kid) = enroll_tpm(dir, &client, base, &req, &tcti).await?;
        return finish(dir, base, &req, enrolled, &kid, Some(tcti));
    }
    #[cfg(not(feature = "tpm"))]
    if req.signer == SignerKind::Tpm {
        bail!("--signer tpm: this agent was built without the `tpm` feature");
    }
    let key = tokio::task::spawn_blocking(|| SoftwareKey::generate(SOFTWARE_KEY_BITS))
        .await?
        .context("generating the node key")?;
    let public_key: RsaJwk = key.public_jwk().clone();
    let body = serde_json::json!({ "name": req.name, "zone": req.zone, "public_key": public_key });
    let (status, bytes) = post(&client, &format!("{base}/v1/nodes"), req.token, &body).await?;
    if status != reqwest::StatusCode::CREATED {
        bail!(refusal(status, &bytes));
    }
    let enrolled: Enrolled = serde_json::from_slice(&bytes)
        .context("the oracle's enrollment response is not understood")?;
    dir.write_secret(
        SOFTWARE_KEY_FILE,
        &key.to_pkcs8_der().context("encoding the key")?,
    )?;
    let kid = key.kid().to_owned();
    finish(dir, base, &req, enrolled, &kid, None)
}

/// Checks the oracle's answer against our key and writes `node.json` and an empty chain.
fn finish(
    dir: &StateDir,
    base: &str,
    req: &EnrollRequest<'_>,
    enrolled: Enrolled,
    kid: &str,
    tcti: Option<String>,
) -> Result<NodeState> {
    if enrolled.kid != kid {
        bail!(
            "the oracle registered key {} but ours is {kid}",
            enrolled.kid
        );
    }
    let node = NodeState {
        node_id: enrolled.node_id,
        oracle: base.to_owned(),
        name: req.name.to_owned(),
        zone: enrolled.zone,
        kid: enrolled.kid,
        signer: req.signer,
        tcti,
    };
    dir.write_node(&node)?;
    dir.write_chain(&crate::state::ChainHead::default())?;
    tracing::info!(node_id = %node.node_id, attestation = %enrolled.attestation_level, "Node enrolled.");
    Ok(node)
}

/// POSTs `body` as JSON with the bearer token; returns the status and the body.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<(reqwest::StatusCode, Vec<u8>)> {
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        // reqwest's error names the URL, password included: it is printed without.
        .map_err(reqwest::Error::without_url)
        .with_context(|| format!("contacting the oracle at {}", crate::net::redact_url(url)))?;
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default().to_vec();
    Ok((status, bytes))
}

/// The oracle's problem+json refusal as one line.
fn refusal(status: reqwest::StatusCode, bytes: &[u8]) -> String {
    let problem: Problem = serde_json::from_slice(bytes).unwrap_or(Problem {
        code: None,
        detail: Some(String::from_utf8_lossy(bytes).into_owned()),
    });
    format!(
        "the oracle refused the enrollment (HTTP {status}, {}): {}",
        problem.code.unwrap_or_default(),
        problem.detail.unwrap_or_default()
    )
}

/// Subdirectory of the state dir where a TPM enrollment keeps its key blobs until it succeeds.
#[cfg(feature = "tpm")]
const TPM_STAGING_DIR: &str = "tpm-enrolling";

/// `202` answer to TPM evidence.
#[cfg(feature = "tpm")]
#[derive(Debug, Deserialize)]
struct CredentialChallenge {
    challenge_id: String,
    credential_blob: String,
    encrypted_secret: String,
}

/// TPM enrollment (docs/tpm.md, "Enrollment protocol"): create the EK, AK and signing key,
/// certify the signing key with `extraData` = SHA-256(signing key `TPM2B_PUBLIC`), send the
/// evidence, answer the credential challenge with TPM2_ActivateCredential. The key blobs are in
/// the state dir; `node.json` is written by the caller only once the oracle enrolled the node.
#[cfg(feature = "tpm")]
async fn enroll_tpm(
    dir: &StateDir,
    client: &reqwest::Client,
    base: &str,
    req: &EnrollRequest<'_>,
    tcti: &str,
) -> Result<(Enrolled, String)> {
    use crate::signer::tpm::TpmSigner;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use std::sync::Arc;

    let started = std::time::Instant::now();
    // Key blobs go to a staging dir first and replace the current ones only once the oracle has
    // enrolled the node: a refused re-enrollment (--force) leaves the enrolled node usable.
    let staging = dir.path().join(TPM_STAGING_DIR);
    let _ = std::fs::remove_dir_all(&staging);
    let (state_dir, tcti_owned) = (staging.clone(), tcti.to_owned());
    // TPM commands block (about a second for two RSA key generations on swtpm): off the executor.
    let (signer, evidence) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (signer, mut evidence) = TpmSigner::enroll(&tcti_owned, &state_dir, &[])
            .with_context(|| format!("creating the TPM keys through {tcti_owned}"))?;
        let qualifying_data = openssl::sha::sha256(&evidence.signing_public);
        let (info, signature) = signer
            .certify(&qualifying_data)
            .context("TPM2_Certify of the signing key")?;
        evidence.certify_info = info;
        evidence.certify_signature = signature;
        Ok((signer, evidence))
    })
    .await??;
    let signer = Arc::new(signer);
    let kid = signer.kid().to_owned();
    tracing::debug!(kid = %kid, elapsed_ms = started.elapsed().as_millis(), "TPM keys created and certified.");
    let body = serde_json::json!({
        "name": req.name,
        "zone": req.zone,
        "public_key": signer.public_jwk(),
        "attestation": {
            "type": "tpm",
            "ek_public": B64.encode(&evidence.ek_public),
            "ek_certificate": evidence.ek_certificate.as_ref().map(|c| B64.encode(c)),
            "ak_public": B64.encode(&evidence.ak_public),
            "signing_public": B64.encode(&evidence.signing_public),
            "certify_info": B64.encode(&evidence.certify_info),
            "certify_signature": B64.encode(&evidence.certify_signature),
        },
    });
    let (status, bytes) = post(client, &format!("{base}/v1/nodes"), req.token, &body).await?;
    if status != reqwest::StatusCode::ACCEPTED {
        bail!(refusal(status, &bytes));
    }
    let challenge: CredentialChallenge = serde_json::from_slice(&bytes)
        .context("the oracle's credential challenge is not understood")?;
    let blob = B64
        .decode(&challenge.credential_blob)
        .context("credential_blob is not base64url")?;
    let encrypted = B64
        .decode(&challenge.encrypted_secret)
        .context("encrypted_secret is not base64url")?;
    let activating = Arc::clone(&signer);
    let secret =
        tokio::task::spawn_blocking(move || activating.activate_credential(&blob, &encrypted))
            .await?
            .context("TPM2_ActivateCredential refused the oracle's challenge")?;
    let body = serde_json::json!({ "secret": B64.encode(&secret) });
    let (status, bytes) = post(
        client,
        &format!("{base}/v1/nodes/challenges/{}", challenge.challenge_id),
        req.token,
        &body,
    )
    .await?;
    if status != reqwest::StatusCode::CREATED {
        bail!(refusal(status, &bytes));
    }
    let enrolled: Enrolled = serde_json::from_slice(&bytes)
        .context("the oracle's enrollment response is not understood")?;
    if enrolled.attestation_level != "tpm" {
        bail!(
            "the oracle enrolled the node with attestation level {:?}, not tpm",
            enrolled.attestation_level
        );
    }
    // Dropping the signer joins its TPM thread: do it off the executor too.
    tokio::task::spawn_blocking(move || drop(signer)).await?;
    for entry in
        std::fs::read_dir(&staging).with_context(|| format!("reading {}", staging.display()))?
    {
        let from = entry
            .with_context(|| format!("reading {}", staging.display()))?
            .path();
        if let Some(name) = from.file_name() {
            let to = dir.path().join(name);
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    let _ = std::fs::remove_dir(&staging);
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis(),
        "TPM enrollment complete."
    );
    Ok((enrolled, kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged node.json is an enrollment all the same: without --force nothing is replaced,
    /// and the oracle is not even asked.
    #[tokio::test]
    async fn a_damaged_node_json_is_not_enrolled_over_without_force() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = StateDir::create(tmp.path()).expect("state dir");
        std::fs::write(tmp.path().join("node.json"), "{not json").expect("write");
        let err = enroll(
            &dir,
            EnrollRequest {
                oracle: "http://127.0.0.1:9",
                token: "t",
                name: "n",
                zone: "BE",
                signer: SignerKind::Software,
                tcti: None,
                force: false,
            },
        )
        .await
        .expect_err("refused");
        assert!(err.to_string().contains("cannot be read"), "{err:#}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("node.json")).expect("read"),
            "{not json"
        );
        assert!(!tmp.path().join("node-key.der").exists());
    }

    /// An oracle that accepts the connection and never answers fails the request after its
    /// timeout instead of hanging `enroll` for ever.
    #[tokio::test]
    async fn a_silent_oracle_times_out() {
        wattest_shared::tls::install_crypto_provider();
        // Connections complete in the kernel's backlog; nothing ever answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1/nodes", silent.local_addr().expect("addr"));
        let client = client(std::time::Duration::from_millis(300)).expect("client");
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            post(&client, &url, "t", &serde_json::json!({})),
        )
        .await
        .expect("the client's own timeout ends the request");
        let err = answer.expect_err("no answer");
        assert!(err.to_string().contains("contacting the oracle"), "{err:#}");
        const { assert!(REQUEST_TIMEOUT.as_secs() >= 30 && CONNECT_TIMEOUT.as_secs() >= 5) };
    }

    /// The error of a failed request names the oracle once, without the password of its URL
    /// (reqwest's own message, the error's source, would name the URL again).
    #[tokio::test]
    async fn a_failed_request_does_not_print_the_urls_password() {
        wattest_shared::tls::install_crypto_provider();
        // Bound, then closed: the port refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("http://node:pw-secret@127.0.0.1:{port}/v1/nodes");
        let client = client(std::time::Duration::from_secs(5)).expect("client");
        let err = post(&client, &url, "t", &serde_json::json!({}))
            .await
            .expect_err("refused");
        let shown = format!("{err:#}");
        assert!(!shown.contains("pw-secret"), "{shown}");
        assert_eq!(shown.matches("127.0.0.1").count(), 1, "{shown}");
        assert!(
            shown.contains(&format!("node:***@127.0.0.1:{port}")),
            "{shown}"
        );
    }
}
