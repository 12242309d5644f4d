//! Node signing keys held in a TPM 2.0 (tss-esapi): enrollment evidence, credential activation
//! and PS256 signatures made by the TPM.
//!
//! Key hierarchy:
//! - **EK**: the RSA-2048 endorsement key from the TCG default template (TCG EK Credential Profile
//!   2.0 §B.3.3, template L-1), re-created on demand; its certificate is read from NV index
//!   `0x01c00002` (same profile, §2.2.1.4) when the manufacturer provisioned one.
//! - **AK**: a restricted RSA-2048 RSASSA-SHA-256 signing key under the EK (fixedTPM, fixedParent,
//!   sensitiveDataOrigin, userWithAuth, restricted, sign), used only for TPM2_Certify and
//!   TPM2_ActivateCredential.
//! - **node signing key**: an unrestricted RSA-2048 RSASSA-PSS/SHA-256 key (fixedTPM, fixedParent,
//!   sensitiveDataOrigin, userWithAuth, sign) under an owner-hierarchy storage primary (RSA-2048,
//!   AES-128-CFB, the tss-esapi restricted-decryption template). It signs windows.
//!
//! Persistence: the AK's and signing key's private and public blobs are written to the state
//! directory (mode 0600); on [`TpmSigner::load`] the primaries are re-created from the same
//! templates (a primary is a deterministic function of the hierarchy seed and the template,
//! TPM 2.0 Part 1 §27.2.3) and the blobs loaded under them. No NV space and no persistent handle
//! is used; `ContextSave` blobs would not survive a TPM reset. A TPM2_Clear changes the owner
//! seed and therefore loses the node key: the node must then enroll again.
//!
//! tss-esapi's `Context` is not `Send`, so a [`TpmSigner`] owns a worker thread that owns the
//! context; calls block the caller (as the `JwsSigner` contract expects: the agent signs on its
//! signer thread, never on the async executor).

use std::fs;

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::mpsc;
use std::thread::JoinHandle;

use openssl::bn::BigNum;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, DefaultKey, ak, ek};
use tss_esapi::attributes::SessionAttributesBuilder;
use tss_esapi::constants::SessionType;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{
    AsymmetricAlgorithm, HashingAlgorithm, RsaSchemeAlgorithm, SignatureSchemeAlgorithm,
};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EncryptedSecret, HashcheckTicket, IdObject, Private, Public, RsaExponent,
    RsaScheme, Signature, SignatureScheme, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::traits::{Marshall as _, UnMarshall as _};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use tss_esapi::utils::{
    create_restricted_decryption_rsa_public, create_unrestricted_signing_rsa_public,
};
use tss_esapi::{Context, TctiNameConf};
use wattest_shared::RsaJwk;
use wattest_shared::jws::{JwsSigner, SignError};

/// TCTI used when none is configured: the kernel's resource-managed TPM device.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";
/// Environment variable naming the TCTI, e.g. `swtpm:host=127.0.0.1,port=2321`.
pub const TCTI_ENV: &str = "WATTEST_TCTI";

/// AK private blob (`TPM2B_PRIVATE` body) in the state directory.
const AK_PRIVATE_FILE: &str = "tpm-ak.priv";
/// AK public area (`TPM2B_PUBLIC`) in the state directory.
const AK_PUBLIC_FILE: &str = "tpm-ak.pub";
/// Node signing key private blob (`TPM2B_PRIVATE` body).
const SIGNING_PRIVATE_FILE: &str = "tpm-signing.priv";
/// Node signing key public area (`TPM2B_PUBLIC`).
const SIGNING_PUBLIC_FILE: &str = "tpm-signing.pub";
/// RSA modulus size of every key made here, in octets (RSA-2048).
const RSA_2048_OCTETS: usize = 256;

/// The TCTI from `WATTEST_TCTI`, or [`DEFAULT_TCTI`].
#[must_use]
pub fn tcti_from_env() -> String {
    std::env::var(TCTI_ENV).unwrap_or_else(|_| DEFAULT_TCTI.to_owned())
}

/// Why a TPM operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// The TCTI string is not understood by tss-esapi (`device:…`, `swtpm:…`, `mssim:…`, `tabrmd:…`).
    #[error("invalid TCTI {tcti:?}: {source}")]
    Tcti {
        /// The string given.
        tcti: String,
        /// tss-esapi's reason.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command or the TSS failed.
    #[error("TPM operation {operation} failed: {source}")]
    Tss {
        /// What was being done.
        operation: &'static str,
        /// The TSS or TPM response code.
        #[source]
        source: tss_esapi::Error,
    },
    /// Reading or writing the state directory failed.
    #[error("TPM state file {path}: {source}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TPM returned something unexpected (wrong key type, signature scheme or size).
    #[error("unexpected TPM output: {0}")]
    Unexpected(&'static str),
    /// OpenSSL failed while hashing or building the public key.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// The TPM worker thread has stopped (it panicked or failed to start).
    #[error("TPM worker thread stopped")]
    WorkerStopped,
}

fn tss(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Tss { operation, source }
}

/// What the oracle needs to enroll a TPM-backed node. Every field is a TPM structure marshalled
/// as the TPM 2.0 Library spec Part 2 defines it (big-endian, TPM2B = u16 size ‖ octets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmEvidence {
    /// EK public area: `TPM2B_PUBLIC` (Part 2 §12.2.5), RSA-2048, TCG default template.
    pub ek_public: Vec<u8>,
    /// EK certificate, DER X.509, from NV index 0x01c00002; `None` when not provisioned.
    /// Trailing NV padding, if any, is left as read.
    pub ek_certificate: Option<Vec<u8>>,
    /// AK public area: `TPM2B_PUBLIC`.
    pub ak_public: Vec<u8>,
    /// Node signing key public area: `TPM2B_PUBLIC`.
    pub signing_public: Vec<u8>,
    /// `TPMS_ATTEST` (Part 2 §10.12.12) of type `TPM_ST_ATTEST_CERTIFY`: the body of the
    /// `TPM2B_ATTEST` returned by TPM2_Certify, without the u16 size; the signed bytes.
    pub certify_info: Vec<u8>,
    /// `TPMT_SIGNATURE` (Part 2 §11.3.4) by the AK over `certify_info`: sigAlg u16 (RSASSA
    /// 0x0014), hash u16 (SHA-256 0x000B), `TPM2B_PUBLIC_KEY_RSA` signature.
    pub certify_signature: Vec<u8>,
}

/// Where the worker sends a request's outcome.
type Reply<T> = mpsc::Sender<Result<T, TpmError>>;

enum Request {
    Sign {
        digest: [u8; 32],
        reply: Reply<Vec<u8>>,
    },
    Activate {
        credential_blob: Vec<u8>,
        encrypted_secret: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Certify {
        qualifying_data: Vec<u8>,
        reply: Reply<(Vec<u8>, Vec<u8>)>,
    },
}

/// A node signing key inside a TPM; implements [`JwsSigner`] (PS256 through TPM2_Sign).
pub struct TpmSigner {
    requests: Option<mpsc::Sender<Request>>,
    worker: Option<JoinHandle<()>>,
    jwk: RsaJwk,
    kid: String,
}

impl std::fmt::Debug for TpmSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TpmSigner {
    /// Creates the EK, an AK and a node signing key in the TPM reached through `tcti`, certifies
    /// the signing key with the AK (`extraData` = `qualifying_data`, at most 64 octets: a nonce
    /// from the oracle, or SHA-256 of the signing key's `TPM2B_PUBLIC`), saves the key blobs in
    /// `state_dir` (created 0700, files 0600, overwritten) and returns the signer and the
    /// evidence for the oracle.
    ///
    /// Takes about a second on swtpm (two RSA key generations and two primaries).
    ///
    /// # Errors
    /// [`TpmError::Tcti`], [`TpmError::Tss`] (no TPM, TPM refused a command), [`TpmError::State`].
    pub fn enroll(
        tcti: &str,
        state_dir: &Path,
        qualifying_data: &[u8],
    ) -> Result<(Self, TpmEvidence), TpmError> {
        let tcti = tcti.to_owned();
        let state_dir = state_dir.to_owned();
        let qualifying_data = qualifying_data.to_vec();
        Self::spawn(move || {
            let mut ctx = open(&tcti)?;
            let mut created = Vec::new();
            let outcome = enroll_in(&mut ctx, &mut created, &state_dir, &qualifying_data);
            if outcome.is_err() {
                flush_all(&mut ctx, &mut created);
            }
            let (signing, ak, evidence, signing_pub) = outcome?;
            Ok((Worker { ctx, signing, ak }, evidence, signing_pub))
        })
    }

    /// Reloads the node signing key saved by [`TpmSigner::enroll`] in `state_dir`, after a
    /// restart or a TPM reset (not after TPM2_Clear).
    ///
    /// # Errors
    /// [`TpmError::State`] when the files are missing, [`TpmError::Tss`] when the TPM refuses
    /// them (another TPM, or the owner hierarchy was cleared), [`TpmError::Tcti`].
    pub fn load(tcti: &str, state_dir: &Path) -> Result<Self, TpmError> {
        let tcti = tcti.to_owned();
        let state_dir = state_dir.to_owned();
        let (signer, ()) = Self::spawn(move || {
            let private = read_private(&state_dir.join(SIGNING_PRIVATE_FILE))?;
            let public = read_public(&state_dir.join(SIGNING_PUBLIC_FILE))?;
            let ak = (
                read_private(&state_dir.join(AK_PRIVATE_FILE))?,
                read_public(&state_dir.join(AK_PUBLIC_FILE))?,
            );
            let mut ctx = open(&tcti)?;
            let signing = load_signing_key(&mut ctx, private, public.clone())?;
            Ok((Worker { ctx, signing, ak }, (), public))
        })?;
        Ok(signer)
    }

    /// Starts the worker thread, runs `setup` on it and returns once it has succeeded or failed.
    fn spawn<T, F>(setup: F) -> Result<(Self, T), TpmError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<(Worker, T, Public), TpmError> + Send + 'static,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (requests, inbox) = mpsc::channel::<Request>();
        let worker = std::thread::Builder::new()
            .name("wattest-tpm".into())
            .spawn(move || match setup() {
                Ok((mut worker, value, public)) => {
                    let jwk = signing_jwk(&public);
                    let ok = jwk.is_ok();
                    let _ = ready_tx.send(jwk.map(|jwk| (jwk, value)));
                    if ok {
                        worker.serve(&inbox);
                    }
                    worker.close();
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            })
            .map_err(|source| TpmError::State {
                path: PathBuf::from("<thread>"),
                source,
            })?;
        let (jwk, value) = ready_rx.recv().map_err(|_| TpmError::WorkerStopped)??;
        let kid = jwk.thumbprint();
        Ok((
            Self {
                requests: Some(requests),
                worker: Some(worker),
                jwk,
                kid,
            },
            value,
        ))
    }

    fn call<R>(&self, request: impl FnOnce(Reply<R>) -> Request) -> Result<R, TpmError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or(TpmError::WorkerStopped)?
            .send(request(reply))
            .map_err(|_| TpmError::WorkerStopped)?;
        answer.recv().map_err(|_| TpmError::WorkerStopped)?
    }

    /// The node signing key's public JWK (no `kid`; its thumbprint is [`JwsSigner::kid`]).
    #[must_use]
    pub fn public_jwk(&self) -> RsaJwk {
        self.jwk.clone()
    }

    /// TPM2_ActivateCredential (Part 3 §12.5) with the AK as the activated object and the EK as
    /// the decryption key: recovers the secret the oracle protected with MakeCredential.
    ///
    /// `credential_blob` is a marshalled `TPM2B_ID_OBJECT`, `encrypted_secret` a marshalled
    /// `TPM2B_ENCRYPTED_SECRET` (both with their u16 size, as the oracle sends them). The EK is
    /// re-created and the AK reloaded from the state directory blobs for the call, then flushed.
    ///
    /// # Errors
    /// [`TpmError::Unexpected`] for sizes that do not match, [`TpmError::Tss`] when the TPM
    /// refuses (the blob was made for another EK or another AK name: `TPM_RC_INTEGRITY`).
    pub fn activate_credential(
        &self,
        credential_blob: &[u8],
        encrypted_secret: &[u8],
    ) -> Result<Vec<u8>, TpmError> {
        let credential_blob = strip_tpm2b(credential_blob)?.to_vec();
        let encrypted_secret = strip_tpm2b(encrypted_secret)?.to_vec();
        self.call(|reply| Request::Activate {
            credential_blob,
            encrypted_secret,
            reply,
        })
    }

    /// Certifies the node signing key again with the AK, with `extraData` = `qualifying_data`
    /// (at most 64 octets), e.g. for a fresh oracle nonce. Returns `(certify_info,
    /// certify_signature)` in the [`TpmEvidence`] formats.
    ///
    /// # Errors
    /// [`TpmError::Tss`].
    pub fn certify(&self, qualifying_data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let qualifying_data = qualifying_data.to_vec();
        self.call(|reply| Request::Certify {
            qualifying_data,
            reply,
        })
    }
}

impl Drop for TpmSigner {
    fn drop(&mut self) {
        // Closing the channel stops the worker, which flushes the key from the TPM; waiting for
        // it keeps a raw TPM (no resource manager) from running out of object slots.
        self.requests.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl JwsSigner for TpmSigner {
    fn kid(&self) -> &str {
        &self.kid
    }

    /// TPM2_Sign (Part 3 §20.2) with RSASSA-PSS over SHA-256(`message`); libtpms uses a 32-octet
    /// salt, some older TPMs the maximum (222): verifiers accept both for TPM keys.
    fn sign_jws(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let digest = openssl::sha::sha256(message);
        self.call(|reply| Request::Sign { digest, reply })
            .map_err(|err| SignError::Device(err.to_string()))
    }
}

/// The state the worker thread owns.
struct Worker {
    ctx: Context,
    signing: KeyHandle,
    /// AK private and public blobs, loaded under a re-created EK when needed.
    ak: (Private, Public),
}

impl Worker {
    fn serve(&mut self, inbox: &mpsc::Receiver<Request>) {
        while let Ok(request) = inbox.recv() {
            match request {
                Request::Sign { digest, reply } => {
                    let _ = reply.send(self.sign(&digest));
                }
                Request::Activate {
                    credential_blob,
                    encrypted_secret,
                    reply,
                } => {
                    let _ = reply.send(self.activate(credential_blob, encrypted_secret));
                }
                Request::Certify {
                    qualifying_data,
                    reply,
                } => {
                    let _ = reply.send(self.certify(&qualifying_data));
                }
            }
        }
    }

    fn close(mut self) {
        let _ = self.ctx.flush_context(self.signing.into());
    }

    fn sign(&mut self, digest: &[u8; 32]) -> Result<Vec<u8>, TpmError> {
        // An unrestricted key needs no hash check ticket: a NULL ticket (Part 3 §20.2.1).
        let validation = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(tss("build hash check ticket"))?;
        let digest = Digest::try_from(digest.to_vec()).map_err(tss("digest"))?;
        let signing = self.signing;
        let signature = self
            .ctx
            .execute_with_nullauth_session(|ctx| {
                // NULL scheme: the key's own scheme, RSASSA-PSS with SHA-256.
                ctx.sign(signing, digest, SignatureScheme::Null, validation)
            })
            .map_err(tss("TPM2_Sign"))?;
        let Signature::RsaPss(signature) = signature else {
            return Err(TpmError::Unexpected("signature is not RSASSA-PSS"));
        };
        left_pad(signature.signature().value())
    }

    fn activate(
        &mut self,
        credential_blob: Vec<u8>,
        encrypted_secret: Vec<u8>,
    ) -> Result<Vec<u8>, TpmError> {
        let credential_blob = IdObject::try_from(credential_blob).map_err(tss("credential"))?;
        let encrypted_secret =
            EncryptedSecret::try_from(encrypted_secret).map_err(tss("encrypted secret"))?;
        with_ek_and_ak(&mut self.ctx, self.ak.clone(), |ctx, ek, ak| {
            let session = ek_policy_session(ctx)?;
            ctx.set_sessions((Some(AuthSession::Password), Some(session), None));
            let result = ctx.activate_credential(ak, ek, credential_blob, encrypted_secret);
            ctx.clear_sessions();
            let _ = ctx.flush_context(ObjectHandle::from(SessionHandle::from(session)));
            Ok(result
                .map_err(tss("TPM2_ActivateCredential"))?
                .value()
                .to_vec())
        })
    }

    fn certify(&mut self, qualifying_data: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let signing = self.signing;
        with_ek_and_ak(&mut self.ctx, self.ak.clone(), |ctx, _ek, ak| {
            certify(ctx, signing, ak, qualifying_data)
        })
    }
}

fn open(tcti: &str) -> Result<Context, TpmError> {
    let conf = TctiNameConf::from_str(tcti).map_err(|source| TpmError::Tcti {
        tcti: tcti.to_owned(),
        source,
    })?;
    Context::new(conf).map_err(tss("open TPM context"))
}

/// Flushes every transient object in `handles` (best effort, for error paths).
fn flush_all(ctx: &mut Context, handles: &mut Vec<ObjectHandle>) {
    for handle in handles.drain(..) {
        let _ = ctx.flush_context(handle);
    }
}

fn flush(
    ctx: &mut Context,
    handles: &mut Vec<ObjectHandle>,
    handle: ObjectHandle,
) -> Result<(), TpmError> {
    handles.retain(|h| *h != handle);
    ctx.flush_context(handle).map_err(tss("TPM2_FlushContext"))
}

type Enrolled = (KeyHandle, (Private, Public), TpmEvidence, Public);

/// The enrollment sequence; every transient object it creates is recorded in `created` so the
/// caller can flush them if a later step fails. On success only the signing key stays loaded.
fn enroll_in(
    ctx: &mut Context,
    created: &mut Vec<ObjectHandle>,
    state_dir: &Path,
    qualifying_data: &[u8],
) -> Result<Enrolled, TpmError> {
    // Step 1: the node signing key under the owner storage primary.
    let primary = owner_primary(ctx)?;
    created.push(primary.into());
    let template = create_unrestricted_signing_rsa_public(
        RsaScheme::create(RsaSchemeAlgorithm::RsaPss, Some(HashingAlgorithm::Sha256))
            .map_err(tss("signing scheme"))?,
        RsaKeyBits::Rsa2048,
        RsaExponent::default(),
    )
    .map_err(tss("signing key template"))?;
    let key = ctx
        .execute_with_nullauth_session(|ctx| ctx.create(primary, template, None, None, None, None))
        .map_err(tss("TPM2_Create signing key"))?;
    let signing = ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.load(primary, key.out_private.clone(), key.out_public.clone())
        })
        .map_err(tss("TPM2_Load signing key"))?;
    created.push(signing.into());
    flush(ctx, created, primary.into())?;

    // Step 2: the EK, its certificate, and the AK under it.
    let ek = ek::create_ek_object(ctx, AsymmetricAlgorithm::Rsa, DefaultKey)
        .map_err(tss("create EK"))?;
    created.push(ek.into());
    let (ek_public, _, _) = ctx
        .execute_without_session(|ctx| ctx.read_public(ek))
        .map_err(tss("TPM2_ReadPublic EK"))?;
    // Absent on TPMs without a provisioned certificate (many firmware TPMs, swtpm without
    // --create-ek-cert): the oracle then refuses the enrollment (`ek_cert_required`), as an EK
    // without a manufacturer's certificate may be a software key.
    let ek_certificate = match ek::retrieve_ek_pubcert(
        ctx,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
    ) {
        Ok(der) => Some(der),
        Err(error) => {
            tracing::info!(%error, "No RSA EK certificate in NV index 0x01c00002.");
            None
        }
    };
    let ak_key = ak::create_ak(
        ctx,
        ek,
        HashingAlgorithm::Sha256,
        SignatureSchemeAlgorithm::RsaSsa,
        None,
        DefaultKey,
    )
    .map_err(tss("create AK"))?;
    let ak = ak::load_ak(
        ctx,
        ek,
        None,
        ak_key.out_private.clone(),
        ak_key.out_public.clone(),
    )
    .map_err(tss("load AK"))?;
    created.push(ak.into());

    // Step 3: the AK vouches for the signing key.
    let (certify_info, certify_signature) = certify(ctx, signing, ak, qualifying_data)?;
    flush(ctx, created, ak.into())?;
    flush(ctx, created, ek.into())?;

    // Step 4: persist what reloading needs.
    create_state_dir(state_dir)?;
    write_secret_file(&state_dir.join(AK_PRIVATE_FILE), ak_key.out_private.value())?;
    write_secret_file(
        &state_dir.join(AK_PUBLIC_FILE),
        &tpm2b_public(&ak_key.out_public)?,
    )?;
    write_secret_file(
        &state_dir.join(SIGNING_PRIVATE_FILE),
        key.out_private.value(),
    )?;
    write_secret_file(
        &state_dir.join(SIGNING_PUBLIC_FILE),
        &tpm2b_public(&key.out_public)?,
    )?;

    let evidence = TpmEvidence {
        ek_public: tpm2b_public(&ek_public)?,
        ek_certificate,
        ak_public: tpm2b_public(&ak_key.out_public)?,
        signing_public: tpm2b_public(&key.out_public)?,
        certify_info,
        certify_signature,
    };
    Ok((
        signing,
        (ak_key.out_private, ak_key.out_public),
        evidence,
        key.out_public,
    ))
}

/// The owner-hierarchy storage primary (RSA-2048, AES-128-CFB, restricted decryption): the
/// same template always yields the same key for the same owner seed (Part 1 §27.2.3).
fn owner_primary(ctx: &mut Context) -> Result<KeyHandle, TpmError> {
    let template = create_restricted_decryption_rsa_public(
        SymmetricDefinitionObject::AES_128_CFB,
        RsaKeyBits::Rsa2048,
        RsaExponent::default(),
    )
    .map_err(tss("storage primary template"))?;
    Ok(ctx
        .execute_with_nullauth_session(|ctx| {
            ctx.create_primary(Hierarchy::Owner, template, None, None, None, None)
        })
        .map_err(tss("TPM2_CreatePrimary owner"))?
        .key_handle)
}

fn load_signing_key(
    ctx: &mut Context,
    private: Private,
    public: Public,
) -> Result<KeyHandle, TpmError> {
    let primary = owner_primary(ctx)?;
    let loaded = ctx
        .execute_with_nullauth_session(|ctx| ctx.load(primary, private, public))
        .map_err(tss("TPM2_Load signing key"));
    let flushed = ctx
        .flush_context(primary.into())
        .map_err(tss("TPM2_FlushContext"));
    let signing = loaded?;
    flushed?;
    Ok(signing)
}

/// Re-creates the EK, reloads the AK from its blobs, runs `f`, and flushes both whatever `f`
/// returned.
fn with_ek_and_ak<R>(
    ctx: &mut Context,
    (private, public): (Private, Public),
    f: impl FnOnce(&mut Context, KeyHandle, KeyHandle) -> Result<R, TpmError>,
) -> Result<R, TpmError> {
    let ek = ek::create_ek_object(ctx, AsymmetricAlgorithm::Rsa, DefaultKey)
        .map_err(tss("create EK"))?;
    let result = ak::load_ak(ctx, ek, None, private, public)
        .map_err(tss("load AK"))
        .and_then(|ak| {
            let result = f(ctx, ek, ak);
            let _ = ctx.flush_context(ak.into());
            result
        });
    let _ = ctx.flush_context(ek.into());
    result
}

/// A policy session satisfying the TCG EK policy A: PolicySecret(TPM_RH_ENDORSEMENT)
/// (TCG EK Credential Profile 2.0 §B.3.3).
fn ek_policy_session(ctx: &mut Context) -> Result<AuthSession, TpmError> {
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tss("TPM2_StartAuthSession"))?
        .ok_or(TpmError::Unexpected("no policy session"))?;
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    ctx.tr_sess_set_attributes(session, attributes, mask)
        .map_err(tss("session attributes"))?;
    let policy = PolicySession::try_from(session).map_err(tss("policy session"))?;
    ctx.execute_with_nullauth_session(|ctx| {
        ctx.policy_secret(
            policy,
            AuthHandle::Endorsement,
            Default::default(),
            Default::default(),
            Default::default(),
            None,
        )
    })
    .map_err(tss("TPM2_PolicySecret endorsement"))?;
    Ok(session)
}

fn certify(
    ctx: &mut Context,
    signing: KeyHandle,
    ak: KeyHandle,
    qualifying_data: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let data = Data::try_from(qualifying_data.to_vec()).map_err(tss("qualifying data"))?;
    let (attest, signature) = ctx
        .execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |ctx| ctx.certify(signing.into(), ak, data, SignatureScheme::Null),
        )
        .map_err(tss("TPM2_Certify"))?;
    Ok((
        attest.marshall().map_err(tss("marshal TPMS_ATTEST"))?,
        signature
            .marshall()
            .map_err(tss("marshal TPMT_SIGNATURE"))?,
    ))
}

/// Marshals a public area as `TPM2B_PUBLIC`: u16 size ‖ `TPMT_PUBLIC`.
fn tpm2b_public(public: &Public) -> Result<Vec<u8>, TpmError> {
    let body = public.marshall().map_err(tss("marshal TPMT_PUBLIC"))?;
    let size = u16::try_from(body.len()).map_err(|_| TpmError::Unexpected("public area size"))?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body of a TPM2B whose u16 size must match the rest exactly.
fn strip_tpm2b(bytes: &[u8]) -> Result<&[u8], TpmError> {
    match bytes {
        [hi, lo, body @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == body.len() => {
            Ok(body)
        }
        _ => Err(TpmError::Unexpected(
            "TPM2B size does not match its contents",
        )),
    }
}

fn left_pad(signature: &[u8]) -> Result<Vec<u8>, TpmError> {
    if signature.len() > RSA_2048_OCTETS {
        return Err(TpmError::Unexpected("signature longer than the modulus"));
    }
    let mut out = vec![0u8; RSA_2048_OCTETS - signature.len()];
    out.extend_from_slice(signature);
    Ok(out)
}

fn signing_jwk(public: &Public) -> Result<RsaJwk, TpmError> {
    let Public::Rsa {
        parameters, unique, ..
    } = public
    else {
        return Err(TpmError::Unexpected("signing key is not RSA"));
    };
    let exponent = match parameters.exponent().value() {
        0 => 65_537,
        e => e,
    };
    let rsa = Rsa::from_public_components(
        BigNum::from_slice(unique.value())?,
        BigNum::from_u32(exponent)?,
    )?;
    RsaJwk::from_public_key(&PKey::from_rsa(rsa)?)
        .map_err(|_| TpmError::Unexpected("signing key is not RSA"))
}

fn create_state_dir(dir: &Path) -> Result<(), TpmError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TpmError::State {
            path: dir.to_owned(),
            source,
        })
}

/// Writes a key blob with mode 0600 atomically, as every secret of the state dir is written
/// ([`crate::state::write_atomic`]).
fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), TpmError> {
    crate::state::write_atomic(path, bytes).map_err(|err| match err {
        crate::state::StateError::Io { path, source } => TpmError::State { path, source },
        crate::state::StateError::Invalid(message) => TpmError::State {
            path: path.to_owned(),
            source: std::io::Error::other(message),
        },
    })
}

fn read_file(path: &Path) -> Result<Vec<u8>, TpmError> {
    fs::read(path).map_err(|source| TpmError::State {
        path: path.to_owned(),
        source,
    })
}

fn read_private(path: &Path) -> Result<Private, TpmError> {
    Private::try_from(read_file(path)?).map_err(tss("parse private blob"))
}

fn read_public(path: &Path) -> Result<Public, TpmError> {
    let bytes = read_file(path)?;
    Public::unmarshall(strip_tpm2b(&bytes)?).map_err(tss("parse public blob"))
}

/// The oracle's pure attestation checks, compiled into the agent's tests so the swtpm tests can
/// run the whole enrollment (agent and oracle halves) without the agent depending on the oracle
/// crate. The file only needs `openssl`, `thiserror` and `wattest_shared`.
#[cfg(test)]
#[path = "../../../oracle/src/attestation.rs"]
#[allow(dead_code)]
mod attestation;

#[cfg(test)]
mod tests {
    //! Tests against a real software TPM (swtpm), started per test on free ports by
    //! `scripts/swtpm.sh`. Without swtpm they fail, unless `WATTEST_SKIP_TPM=1` is set, in which
    //! case they print a loud SKIPPED line. Run with `TSS2_LOG=all+none` to silence the TSS's
    //! ERROR lines for the failures the negative tests provoke.

    use super::attestation::{
        check_ak, check_credential, make_credential, verify_certify, verify_ek_certificate,
    };
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;
    use std::time::Instant;
    use wattest_shared::jws::{SaltPolicy, decode_header, sign_compact};

    const TYP: &str = "wattest-window+jwt";

    use wattest_tests::Swtpm;

    fn random(n: usize) -> Vec<u8> {
        let mut out = vec![0; n];
        openssl::rand::rand_bytes(&mut out).expect("rand");
        out
    }

    /// The agent signs on its own thread: the signer must cross threads.
    #[test]
    fn signer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TpmSigner>();
    }

    #[test]
    fn configuration_errors_need_no_tpm() {
        let empty = tempfile::tempdir().expect("dir");
        let err = TpmSigner::load(DEFAULT_TCTI, empty.path()).expect_err("no state");
        assert!(matches!(err, TpmError::State { .. }), "{err}");
        let err = TpmSigner::enroll("nonsense:x", empty.path(), b"n").expect_err("bad TCTI");
        assert!(matches!(err, TpmError::Tcti { .. }), "{err}");
        assert!(strip_tpm2b(&[0, 3, 1, 2]).is_err());
        assert_eq!(strip_tpm2b(&[0, 2, 1, 2]).expect("ok"), &[1, 2]);
    }

    #[test]
    fn enrollment_end_to_end_on_swtpm() {
        let Some(tpm) = Swtpm::start("enrollment_end_to_end_on_swtpm") else {
            return;
        };
        let state = tempfile::tempdir().expect("state");
        let nonce = random(32);

        let started = Instant::now();
        let (signer, evidence) =
            TpmSigner::enroll(&tpm.tcti, state.path(), &nonce).expect("enroll");
        let enroll_time = started.elapsed();
        println!("swtpm enroll: {enroll_time:?}");

        // Oracle step 1: the AK.
        let ak = check_ak(&evidence.ak_public).expect("AK accepted");
        // Oracle step 2: the EK certificate chains to swtpm's local CA and names this EK.
        let ek_cert = evidence
            .ek_certificate
            .as_deref()
            .expect("swtpm has an EK cert");
        verify_ek_certificate(ek_cert, &evidence.ek_public, &tpm.ca_certificates())
            .expect("EK certificate");
        // Oracle step 3: credential activation proves the AK and the EK share a TPM.
        let secret = random(32);
        let (blob, encrypted) =
            make_credential(&evidence.ek_public, &ak.name, &secret).expect("make credential");
        let answer = signer
            .activate_credential(&blob, &encrypted)
            .expect("activate");
        check_credential(&secret, &answer).expect("the TPM recovered the secret");
        // Oracle step 4: the AK certified the signing key; its JWK is the signer's.
        let certified = verify_certify(
            &evidence.ak_public,
            &evidence.signing_public,
            &evidence.certify_info,
            &evidence.certify_signature,
            &nonce,
        )
        .expect("certify");
        assert_eq!(certified.jwk, signer.public_jwk());
        assert_eq!(certified.jwk.thumbprint(), signer.kid());

        // Windows signed by the TPM verify as PS256.
        let payload = br#"{"seq":1}"#;
        let jws = sign_compact(&signer, TYP, payload).expect("sign");
        let key = signer.public_jwk().to_public_key().expect("key");
        let (got, salt) = decode_header(&jws, TYP)
            .expect("header")
            .verify(&key, SaltPolicy::DigestOrMaximum)
            .expect("TPM signature verifies");
        assert_eq!(got, payload);
        println!("swtpm RSASSA-PSS salt length: {salt:?}");

        // A later challenge: certify again with a fresh nonce.
        let nonce2 = random(16);
        let (info, sig) = signer.certify(&nonce2).expect("certify again");
        verify_certify(
            &evidence.ak_public,
            &evidence.signing_public,
            &info,
            &sig,
            &nonce2,
        )
        .expect("fresh certification");

        // Throughput of TPM2_Sign on swtpm (printed, not asserted).
        let rounds = 50;
        let started = Instant::now();
        for i in 0..rounds {
            signer
                .sign_jws(format!("window {i}").as_bytes())
                .expect("sign");
        }
        let per_second = f64::from(rounds) / started.elapsed().as_secs_f64();
        println!("swtpm TPM2_Sign: {per_second:.1} signatures/s");

        // Key blobs are private, and reloading gives the same key.
        for file in [
            AK_PRIVATE_FILE,
            AK_PUBLIC_FILE,
            SIGNING_PRIVATE_FILE,
            SIGNING_PUBLIC_FILE,
        ] {
            let mode = fs::metadata(state.path().join(file))
                .expect("state file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        let kid = signer.kid().to_owned();
        drop(signer);
        let started = Instant::now();
        let reloaded = TpmSigner::load(&tpm.tcti, state.path()).expect("reload");
        println!("swtpm load after restart: {:?}", started.elapsed());
        assert_eq!(reloaded.kid(), kid);
        let jws = sign_compact(&reloaded, TYP, payload).expect("sign");
        decode_header(&jws, TYP)
            .expect("header")
            .verify(&key, SaltPolicy::DigestOrMaximum)
            .expect("reloaded key signs");
        // The reloaded AK still activates credentials.
        let (blob, encrypted) =
            make_credential(&evidence.ek_public, &ak.name, &secret).expect("make credential");
        let answer = reloaded
            .activate_credential(&blob, &encrypted)
            .expect("activate after reload");
        check_credential(&secret, &answer).expect("same secret");
    }

    #[test]
    fn wrong_evidence_is_refused_on_swtpm() {
        let Some(tpm) = Swtpm::start("wrong_evidence_is_refused_on_swtpm") else {
            return;
        };
        let nonce = random(32);
        let first_dir = tempfile::tempdir().expect("state");
        let (signer, first) =
            TpmSigner::enroll(&tpm.tcti, first_dir.path(), &nonce).expect("enroll");
        let ak = check_ak(&first.ak_public).expect("AK");

        // A credential bound to another AK name: the TPM refuses it (integrity check).
        let mut other_name = ak.name.clone();
        other_name[2] ^= 0xff;
        let secret = random(32);
        let (blob, encrypted) =
            make_credential(&first.ek_public, &other_name, &secret).expect("make");
        assert!(signer.activate_credential(&blob, &encrypted).is_err());
        // A wrong answer is detected by the oracle.
        let (blob, encrypted) = make_credential(&first.ek_public, &ak.name, &secret).expect("make");
        let mut answer = signer
            .activate_credential(&blob, &encrypted)
            .expect("activate");
        answer[0] ^= 1;
        assert_eq!(
            check_credential(&secret, &answer)
                .expect_err("wrong")
                .code(),
            "credential_mismatch"
        );
        // A real TPM key that is not restricted is no AK.
        assert_eq!(
            check_ak(&first.signing_public)
                .expect_err("unrestricted")
                .code(),
            "ak_not_restricted"
        );
        // Nor is the EK (restricted, but a decryption key).
        assert_eq!(
            check_ak(&first.ek_public).expect_err("EK").code(),
            "ak_not_signing"
        );
        drop(signer);

        // Certification of one key presented with another key: name mismatch.
        let second_dir = tempfile::tempdir().expect("state");
        let (_second_signer, second) =
            TpmSigner::enroll(&tpm.tcti, second_dir.path(), &nonce).expect("enroll again");
        let err = verify_certify(
            &first.ak_public,
            &second.signing_public,
            &first.certify_info,
            &first.certify_signature,
            &nonce,
        )
        .expect_err("other key");
        assert_eq!(err.code(), "certify_name_mismatch");
        // Another AK's signature over the certification does not verify.
        let err = verify_certify(
            &second.ak_public,
            &first.signing_public,
            &first.certify_info,
            &first.certify_signature,
            &nonce,
        )
        .expect_err("other AK");
        assert_eq!(err.code(), "certify_bad_signature");
        // A replayed certification for another challenge.
        let err = verify_certify(
            &first.ak_public,
            &first.signing_public,
            &first.certify_info,
            &first.certify_signature,
            b"another nonce",
        )
        .expect_err("replay");
        assert_eq!(err.code(), "certify_nonce_mismatch");

        // EK certificate checked against a CA we made ourselves: untrusted.
        let ek_cert = first.ek_certificate.as_deref().expect("EK cert");
        let (unknown_ca, unknown_key) = wattest_tests::test_ca("Not a TPM vendor");
        let err =
            verify_ek_certificate(ek_cert, &first.ek_public, std::slice::from_ref(&unknown_ca))
                .expect_err("unknown CA");
        assert_eq!(err.code(), "ek_cert_untrusted");
        // A certificate from a trusted CA for another key: key mismatch.
        let other = wattest_tests::issue_leaf(&unknown_ca, &unknown_key, "EK of another TPM")
            .to_der()
            .expect("der");
        let err =
            verify_ek_certificate(&other, &first.ek_public, &[unknown_ca]).expect_err("other key");
        assert_eq!(err.code(), "ek_cert_key_mismatch");
    }
}
