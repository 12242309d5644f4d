//! TPM 2.0 evidence for node enrollment, checked in software: TPM structures, the attestation key,
//! credential activation (MakeCredential), TPM2_Certify of the node signing key, and EK certificates.
//!
//! Pure code: it takes bytes and returns values, with no HTTP, database or clock reads of its own
//! (OpenSSL's chain check reads the system time). It depends on `openssl`, `thiserror` and
//! `wattest_shared` only, and in particular not on libtss2, so the oracle needs no TPM stack. The
//! agent's swtpm tests compile this same file through `#[path]` to run the whole enrollment
//! against a real (software) TPM without the agent depending on the oracle crate.
//!
//! All TPM structures are big-endian and follow the TPM 2.0 Library specification, Part 2
//! ("Structures"), revision 1.59; formulas follow Part 1 ("Architecture"). Only RSA keys with
//! nameAlg SHA-256 are accepted.
//!
//! Enrollment, as the oracle runs it:
//! 1. [`check_ak`] on the agent's AK public area; keep [`AkInfo::name`].
//! 2. [`verify_ek_certificate`] when the agent sent an EK certificate (the EK is then a real TPM's).
//! 3. [`make_credential`] for the EK and the AK name with a fresh random secret; the agent answers
//!    with TPM2_ActivateCredential, which only the TPM holding both keys can do;
//!    [`check_credential`] compares the answer.
//! 4. [`verify_certify`]: the AK vouches that the node signing key lives in the same TPM; its
//!    public key becomes the node's JWK.

use openssl::encrypt::Encrypter;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509, X509StoreContext, X509VerifyResult};
use wattest_shared::RsaJwk;

/// `TPM_ALG_RSA` (Part 2 §6.3, table 9).
pub const TPM_ALG_RSA: u16 = 0x0001;
/// `TPM_ALG_AES` (Part 2 §6.3).
pub const TPM_ALG_AES: u16 = 0x0006;
/// `TPM_ALG_SHA256` (Part 2 §6.3).
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// `TPM_ALG_NULL` (Part 2 §6.3).
pub const TPM_ALG_NULL: u16 = 0x0010;
/// `TPM_ALG_RSASSA`, PKCS#1 v1.5 signatures (Part 2 §6.3).
pub const TPM_ALG_RSASSA: u16 = 0x0014;
/// `TPM_ALG_RSAES`, PKCS#1 v1.5 encryption (Part 2 §6.3).
pub const TPM_ALG_RSAES: u16 = 0x0015;
/// `TPM_ALG_RSAPSS` (Part 2 §6.3).
pub const TPM_ALG_RSAPSS: u16 = 0x0016;
/// `TPM_ALG_CFB` block cipher mode (Part 2 §6.3).
pub const TPM_ALG_CFB: u16 = 0x0043;
/// `TPM_GENERATED_VALUE`, the magic that opens every TPMS_ATTEST the TPM signs (Part 2 §6.2).
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// `TPM_ST_ATTEST_CERTIFY`, the TPMS_ATTEST type produced by TPM2_Certify (Part 2 §6.9).
pub const TPM_ST_ATTEST_CERTIFY: u16 = 0x8017;

/// TPMA_OBJECT bits (Part 2 §8.3.2, table 31).
pub mod attr {
    /// The object cannot be duplicated to another TPM.
    pub const FIXED_TPM: u32 = 1 << 1;
    /// The object's parent cannot change.
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// The TPM generated the sensitive part (the private key never existed outside).
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// USER role authorisation may use the auth value.
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    /// The key only signs or decrypts TPM-generated structures.
    pub const RESTRICTED: u32 = 1 << 16;
    /// The key may decrypt.
    pub const DECRYPT: u32 = 1 << 17;
    /// The key may sign (`sign/encrypt` in Part 2).
    pub const SIGN: u32 = 1 << 18;
}

/// Smallest AK and EK modulus accepted, in bits (same floor as JWKs: NIST SP 800-57 Part 1 Rev. 5).
pub const MIN_TPM_RSA_BITS: u16 = 2048;
/// The exponent a TPM2B_PUBLIC means by `exponent = 0` (Part 2 §12.2.3.5).
pub const TPM_DEFAULT_RSA_EXPONENT: u32 = 65_537;
/// OpenSSL's `RSA_PSS_SALTLEN_AUTO`: accept any PSS salt length when verifying AK signatures
/// (libtpms uses 32 octets, older TPMs the maximum).
const PSS_SALTLEN_AUTO: i32 = -2;
/// Size of a SHA-256 digest in octets.
const SHA256_LEN: usize = 32;

/// Why TPM evidence was refused. [`AttestationError::code`] is the stable code for problem bodies.
#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    /// Truncated, over-long or inconsistent TPM structure.
    #[error("malformed TPM structure: {0}")]
    Malformed(String),
    /// A well-formed structure using an algorithm this verifier does not accept.
    #[error("unsupported TPM algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// AK without fixedTPM: it could have been duplicated out of the TPM.
    #[error("attestation key is not fixedTPM")]
    AkNotFixedTpm,
    /// AK without fixedParent.
    #[error("attestation key is not fixedParent")]
    AkNotFixedParent,
    /// AK without sensitiveDataOrigin: the private key may have been imported.
    #[error("attestation key is not sensitiveDataOrigin")]
    AkNotSensitiveDataOrigin,
    /// AK without restricted: it could sign a forged TPMS_ATTEST.
    #[error("attestation key is not restricted")]
    AkNotRestricted,
    /// AK without the sign attribute.
    #[error("attestation key is not a signing key")]
    AkNotSigning,
    /// AK with the decrypt attribute.
    #[error("attestation key can decrypt")]
    AkCanDecrypt,
    /// AK modulus under [`MIN_TPM_RSA_BITS`].
    #[error("attestation key of {0} bits is too small")]
    AkKeyTooSmall(u16),
    /// The EK public area is not a restricted RSA decryption key with AES-CFB (the TCG template).
    #[error("endorsement key unsuitable: {0}")]
    EkUnsuitable(&'static str),
    /// The activated credential differs from the secret sent.
    #[error("activated credential does not match")]
    CredentialMismatch,
    /// TPMS_ATTEST does not start with TPM_GENERATED_VALUE.
    #[error("attestation structure was not generated by a TPM")]
    CertifyBadMagic,
    /// TPMS_ATTEST is not of type TPM_ST_ATTEST_CERTIFY.
    #[error("attestation structure type {0:#06x} is not TPM_ST_ATTEST_CERTIFY")]
    CertifyWrongType(u16),
    /// extraData differs from the qualifying data (a replay or another challenge).
    #[error("certification qualifying data does not match")]
    CertifyNonceMismatch,
    /// The certified Name is not the Name of the presented signing key.
    #[error("certified object is not the presented signing key")]
    CertifyNameMismatch,
    /// The AK signature over TPMS_ATTEST does not verify.
    #[error("certification signature does not verify")]
    CertifyBadSignature,
    /// The certified signing key's attributes or parameters are not acceptable.
    #[error("signing key unsuitable: {0}")]
    SigningKeyUnsuitable(&'static str),
    /// The EK certificate is not DER X.509 or has no RSA key.
    #[error("EK certificate is malformed: {0}")]
    EkCertMalformed(String),
    /// The EK certificate does not chain to a configured root.
    #[error("EK certificate does not chain to a trusted root: {0}")]
    EkCertUntrusted(String),
    /// The EK certificate certifies another key than the EK presented.
    #[error("EK certificate key differs from the endorsement key")]
    EkCertKeyMismatch,
    /// OpenSSL failed on valid input.
    #[error("cryptographic operation failed: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
}

impl AttestationError {
    /// Stable snake_case code for problem+json bodies.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed_tpm_structure",
            Self::UnsupportedAlgorithm(_) => "unsupported_tpm_algorithm",
            Self::AkNotFixedTpm => "ak_not_fixed_tpm",
            Self::AkNotFixedParent => "ak_not_fixed_parent",
            Self::AkNotSensitiveDataOrigin => "ak_not_sensitive_data_origin",
            Self::AkNotRestricted => "ak_not_restricted",
            Self::AkNotSigning => "ak_not_signing",
            Self::AkCanDecrypt => "ak_can_decrypt",
            Self::AkKeyTooSmall(_) => "ak_key_too_small",
            Self::EkUnsuitable(_) => "ek_unsuitable",
            Self::CredentialMismatch => "credential_mismatch",
            Self::CertifyBadMagic => "certify_bad_magic",
            Self::CertifyWrongType(_) => "certify_wrong_type",
            Self::CertifyNonceMismatch => "certify_nonce_mismatch",
            Self::CertifyNameMismatch => "certify_name_mismatch",
            Self::CertifyBadSignature => "certify_bad_signature",
            Self::SigningKeyUnsuitable(_) => "signing_key_unsuitable",
            Self::EkCertMalformed(_) => "ek_cert_malformed",
            Self::EkCertUntrusted(_) => "ek_cert_untrusted",
            Self::EkCertKeyMismatch => "ek_cert_key_mismatch",
            Self::Crypto(_) => "crypto_failure",
        }
    }
}

fn malformed(what: &str) -> AttestationError {
    AttestationError::Malformed(what.to_owned())
}

/// Big-endian cursor over a TPM structure; every read checks the remaining length.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], AttestationError> {
        if self.buf.len() < n {
            return Err(malformed(&format!("{what}: truncated")));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], AttestationError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, AttestationError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, AttestationError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, AttestationError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, AttestationError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// A TPM2B: a u16 size, then that many octets.
    fn tpm2b(&mut self, what: &str) -> Result<&'a [u8], AttestationError> {
        let size = self.u16(what)?;
        self.bytes(usize::from(size), what)
    }

    fn finish(&self, what: &str) -> Result<(), AttestationError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(malformed(&format!(
                "{what}: {} trailing octets",
                self.buf.len()
            )))
        }
    }
}

/// `TPMT_SYM_DEF_OBJECT` of a storage or endorsement key (Part 2 §11.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymmetricDef {
    /// Block cipher (`TPM_ALG_AES` = 0x0006 for TCG EKs).
    pub algorithm: u16,
    /// Key size in bits (128 for the TCG RSA-2048 EK template).
    pub key_bits: u16,
    /// Mode (`TPM_ALG_CFB` = 0x0043 for EKs).
    pub mode: u16,
}

/// `TPMT_RSA_SCHEME` (Part 2 §11.2.4.2): a scheme and, for signing and OAEP schemes, its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RsaScheme {
    /// `TPM_ALG_RSASSA`, `TPM_ALG_RSAPSS`, `TPM_ALG_RSAES`, `TPM_ALG_OAEP`, …
    pub scheme: u16,
    /// The hash algorithm (`TPM_ALG_NULL` for RSAES, which has none).
    pub hash: u16,
}

/// A parsed RSA public area (`TPMT_PUBLIC` with `type = TPM_ALG_RSA`, Part 2 §12.2.4) and the
/// exact bytes it was parsed from, which its Name is computed over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaPublicArea {
    /// Hash of the Name (`TPM_ALG_SHA256` is the only one accepted).
    pub name_alg: u16,
    /// TPMA_OBJECT bits, see [`attr`].
    pub object_attributes: u32,
    /// Policy digest (empty when the object has no policy).
    pub auth_policy: Vec<u8>,
    /// Symmetric algorithm of a storage/endorsement key; `None` when `TPM_ALG_NULL`.
    pub symmetric: Option<SymmetricDef>,
    /// Signing or encryption scheme; `None` when `TPM_ALG_NULL`.
    pub scheme: Option<RsaScheme>,
    /// Modulus size in bits as declared.
    pub key_bits: u16,
    /// Public exponent (the wire value 0 is returned as 65537).
    pub exponent: u32,
    /// Modulus, big-endian, `key_bits / 8` octets.
    pub modulus: Vec<u8>,
    tpmt_public: Vec<u8>,
}

impl RsaPublicArea {
    /// Parses a marshalled `TPM2B_PUBLIC` (u16 size, then `TPMT_PUBLIC`) holding an RSA key.
    ///
    /// # Errors
    /// [`AttestationError::Malformed`] for truncated, over-long or inconsistent bytes;
    /// [`AttestationError::UnsupportedAlgorithm`] for non-RSA keys or a nameAlg other than SHA-256.
    pub fn parse(tpm2b_public: &[u8]) -> Result<Self, AttestationError> {
        let mut outer = Reader::new(tpm2b_public);
        let tpmt = outer.tpm2b("TPM2B_PUBLIC")?;
        outer.finish("TPM2B_PUBLIC")?;
        let mut r = Reader::new(tpmt);
        let kind = r.u16("TPMT_PUBLIC.type")?;
        if kind != TPM_ALG_RSA {
            return Err(AttestationError::UnsupportedAlgorithm(format!(
                "public area type {kind:#06x} is not RSA"
            )));
        }
        let name_alg = r.u16("TPMT_PUBLIC.nameAlg")?;
        if name_alg != TPM_ALG_SHA256 {
            return Err(AttestationError::UnsupportedAlgorithm(format!(
                "nameAlg {name_alg:#06x} is not SHA-256"
            )));
        }
        let object_attributes = r.u32("TPMT_PUBLIC.objectAttributes")?;
        let auth_policy = r.tpm2b("TPMT_PUBLIC.authPolicy")?.to_vec();
        // TPMS_RSA_PARMS (Part 2 §12.2.3.5).
        let sym_alg = r.u16("TPMS_RSA_PARMS.symmetric")?;
        let symmetric = if sym_alg == TPM_ALG_NULL {
            None
        } else {
            Some(SymmetricDef {
                algorithm: sym_alg,
                key_bits: r.u16("TPMS_RSA_PARMS.symmetric.keyBits")?,
                mode: r.u16("TPMS_RSA_PARMS.symmetric.mode")?,
            })
        };
        let scheme_alg = r.u16("TPMS_RSA_PARMS.scheme")?;
        let scheme = match scheme_alg {
            TPM_ALG_NULL => None,
            // RSAES carries TPMS_EMPTY; every other RSA scheme carries a hash algorithm.
            TPM_ALG_RSAES => Some(RsaScheme {
                scheme: scheme_alg,
                hash: TPM_ALG_NULL,
            }),
            _ => Some(RsaScheme {
                scheme: scheme_alg,
                hash: r.u16("TPMS_RSA_PARMS.scheme.hashAlg")?,
            }),
        };
        let key_bits = r.u16("TPMS_RSA_PARMS.keyBits")?;
        let exponent = match r.u32("TPMS_RSA_PARMS.exponent")? {
            0 => TPM_DEFAULT_RSA_EXPONENT,
            e => e,
        };
        let modulus = r.tpm2b("TPMT_PUBLIC.unique")?.to_vec();
        r.finish("TPMT_PUBLIC")?;
        if modulus.len() * 8 != usize::from(key_bits) || modulus.first() == Some(&0) {
            return Err(malformed("RSA modulus length differs from keyBits"));
        }
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            symmetric,
            scheme,
            key_bits,
            exponent,
            modulus,
            tpmt_public: tpmt.to_vec(),
        })
    }

    /// The object's Name: `nameAlg` (u16, big-endian) ‖ SHA-256(`TPMT_PUBLIC`), 34 octets
    /// (Part 1 §16, "Names").
    ///
    /// # Errors
    /// OpenSSL failures only.
    pub fn name(&self) -> Result<Vec<u8>, AttestationError> {
        let mut name = Vec::with_capacity(2 + SHA256_LEN);
        name.extend_from_slice(&self.name_alg.to_be_bytes());
        name.extend_from_slice(&hash(MessageDigest::sha256(), &self.tpmt_public)?);
        Ok(name)
    }

    /// Whether every bit of `bits` (see [`attr`]) is set.
    #[must_use]
    pub fn has(&self, bits: u32) -> bool {
        self.object_attributes & bits == bits
    }

    /// The RSA public key as an OpenSSL key.
    ///
    /// # Errors
    /// OpenSSL refuses the components.
    pub fn public_key(&self) -> Result<PKey<Public>, AttestationError> {
        let n = openssl::bn::BigNum::from_slice(&self.modulus)?;
        let e = openssl::bn::BigNum::from_u32(self.exponent)?;
        Ok(PKey::from_rsa(Rsa::from_public_components(n, e)?)?)
    }
}

/// A checked attestation key.
#[derive(Debug, Clone)]
pub struct AkInfo {
    /// Its Name (34 octets, see [`RsaPublicArea::name`]): the `objectName` of MakeCredential.
    pub name: Vec<u8>,
    /// The parsed public area.
    pub public: RsaPublicArea,
}

/// Checks that `ak_public` (a marshalled `TPM2B_PUBLIC`) is an attestation key a TPM vouches
/// for: RSA ≥ 2048 bits, nameAlg SHA-256, fixedTPM, fixedParent, sensitiveDataOrigin,
/// restricted and sign set, decrypt clear (TCG "TPM 2.0 Keys for Device Identity and
/// Attestation" §3.6 / Part 1 §25.2 on restricted signing keys).
///
/// # Errors
/// One variant per rule: `ak_not_fixed_tpm`, `ak_not_fixed_parent`,
/// `ak_not_sensitive_data_origin`, `ak_not_restricted`, `ak_not_signing`, `ak_can_decrypt`,
/// `ak_key_too_small`, plus `malformed_tpm_structure` / `unsupported_tpm_algorithm`.
pub fn check_ak(ak_public: &[u8]) -> Result<AkInfo, AttestationError> {
    let public = RsaPublicArea::parse(ak_public)?;
    let rules = [
        (attr::FIXED_TPM, AttestationError::AkNotFixedTpm),
        (attr::FIXED_PARENT, AttestationError::AkNotFixedParent),
        (
            attr::SENSITIVE_DATA_ORIGIN,
            AttestationError::AkNotSensitiveDataOrigin,
        ),
        (attr::RESTRICTED, AttestationError::AkNotRestricted),
        (attr::SIGN, AttestationError::AkNotSigning),
    ];
    for (bit, error) in rules {
        if !public.has(bit) {
            return Err(error);
        }
    }
    if public.has(attr::DECRYPT) {
        return Err(AttestationError::AkCanDecrypt);
    }
    if public.key_bits < MIN_TPM_RSA_BITS {
        return Err(AttestationError::AkKeyTooSmall(public.key_bits));
    }
    Ok(AkInfo {
        name: public.name()?,
        public,
    })
}

/// KDFa with HMAC-SHA-256 in counter mode (Part 1 §11.4.10.2):
/// `K(i) = HMAC(key, [i]₃₂ ‖ label ‖ 0x00 ‖ contextU ‖ contextV ‖ [bits]₃₂)`, concatenated and cut
/// to `bits` (a multiple of 8 here). `label` is given without its terminating NUL.
fn kdfa_sha256(
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, AttestationError> {
    let want = usize::try_from(bits.div_ceil(8)).map_err(|_| malformed("KDFa size"))?;
    let hmac_key = PKey::hmac(key)?;
    let mut out = Vec::with_capacity(want + SHA256_LEN);
    let mut counter: u32 = 1;
    while out.len() < want {
        let mut signer = Signer::new(MessageDigest::sha256(), &hmac_key)?;
        signer.update(&counter.to_be_bytes())?;
        signer.update(label)?;
        signer.update(&[0])?;
        signer.update(context_u)?;
        signer.update(context_v)?;
        signer.update(&bits.to_be_bytes())?;
        out.extend_from_slice(&signer.sign_to_vec()?);
        counter += 1;
    }
    out.truncate(want);
    Ok(out)
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, AttestationError> {
    let key = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    for part in parts {
        signer.update(part)?;
    }
    Ok(signer.sign_to_vec()?)
}

fn tpm2b(body: &[u8]) -> Result<Vec<u8>, AttestationError> {
    let size = u16::try_from(body.len()).map_err(|_| malformed("TPM2B body over 65535 octets"))?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Largest credential MakeCredential protects: the size of a SHA-256 TPM2B_DIGEST body.
pub const MAX_CREDENTIAL_LEN: usize = SHA256_LEN;

/// Software TPM2_MakeCredential (Part 1 §24 "Credential Protection", Part 3 §12.6): protects
/// `secret` so that only the TPM holding both the EK `ek_public` and the object named `ak_name`
/// can recover it with TPM2_ActivateCredential.
///
/// 1. seed: 32 random octets (the EK nameAlg digest size), encrypted with RSA-OAEP (SHA-256,
///    MGF1-SHA-256, label `"IDENTITY\0"`) under the EK (Part 1 §24.4, Annex B.10.3).
/// 2. symKey = KDFa(SHA-256, seed, "STORAGE", ak_name, ∅, EK symmetric keyBits);
///    encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(secret)) (Part 1 §24.4).
/// 3. HMACkey = KDFa(SHA-256, seed, "INTEGRITY", ∅, ∅, 256);
///    outerHMAC = HMAC-SHA-256(HMACkey, encIdentity ‖ ak_name) (Part 1 §24.5).
///
/// Returns `(credential_blob, encrypted_secret)`: a marshalled `TPM2B_ID_OBJECT`
/// (u16 size ‖ u16 32 ‖ outerHMAC ‖ encIdentity) and a marshalled `TPM2B_ENCRYPTED_SECRET`
/// (u16 size ‖ OAEP ciphertext, 256 octets for RSA-2048), both exactly what the agent passes on.
///
/// # Errors
/// `ek_unsuitable` when the EK is not a restricted decryption key with AES-CFB;
/// `malformed_tpm_structure` for bad bytes or a secret over [`MAX_CREDENTIAL_LEN`] octets.
pub fn make_credential(
    ek_public: &[u8],
    ak_name: &[u8],
    secret: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), AttestationError> {
    let ek = RsaPublicArea::parse(ek_public)?;
    if ek.key_bits < MIN_TPM_RSA_BITS {
        // The TCG EK templates are RSA-2048 or larger; a small modulus could not even carry
        // the OAEP-SHA-256 encrypted seed.
        return Err(AttestationError::EkUnsuitable("modulus under 2048 bits"));
    }
    if !ek.has(attr::RESTRICTED | attr::DECRYPT) {
        return Err(AttestationError::EkUnsuitable(
            "not a restricted decryption key",
        ));
    }
    let sym = match ek.symmetric {
        Some(sym) if sym.algorithm == TPM_ALG_AES && sym.mode == TPM_ALG_CFB => sym,
        _ => return Err(AttestationError::EkUnsuitable("symmetric is not AES-CFB")),
    };
    let cipher = match sym.key_bits {
        128 => Cipher::aes_128_cfb128(),
        256 => Cipher::aes_256_cfb128(),
        _ => {
            return Err(AttestationError::EkUnsuitable(
                "AES key size not 128 or 256",
            ));
        }
    };
    if secret.is_empty() || secret.len() > MAX_CREDENTIAL_LEN {
        return Err(malformed("credential must be 1..=32 octets"));
    }

    // Step 1: the seed, OAEP-encrypted to the EK.
    let mut seed = [0u8; SHA256_LEN];
    openssl::rand::rand_bytes(&mut seed)?;
    let ek_key = ek.public_key()?;
    let mut encrypter = Encrypter::new(&ek_key)?;
    encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
    encrypter.set_rsa_oaep_md(MessageDigest::sha256())?;
    encrypter.set_rsa_mgf1_md(MessageDigest::sha256())?;
    encrypter.set_rsa_oaep_label(b"IDENTITY\0")?;
    let mut encrypted_seed = vec![0u8; encrypter.encrypt_len(&seed)?];
    let written = encrypter.encrypt(&seed, &mut encrypted_seed)?;
    encrypted_seed.truncate(written);

    // Step 2: encIdentity.
    let sym_key = kdfa_sha256(&seed, b"STORAGE", ak_name, &[], u32::from(sym.key_bits))?;
    let enc_identity = openssl::symm::encrypt(cipher, &sym_key, Some(&[0u8; 16]), &tpm2b(secret)?)?;

    // Step 3: outer integrity.
    let hmac_key = kdfa_sha256(&seed, b"INTEGRITY", &[], &[], 256)?;
    let outer_hmac = hmac_sha256(&hmac_key, &[&enc_identity, ak_name])?;

    let mut id_object = tpm2b(&outer_hmac)?;
    id_object.extend_from_slice(&enc_identity);
    Ok((tpm2b(&id_object)?, tpm2b(&encrypted_seed)?))
}

/// Compares the agent's ActivateCredential answer with the secret sent, in constant time.
///
/// # Errors
/// [`AttestationError::CredentialMismatch`].
pub fn check_credential(expected: &[u8], answer: &[u8]) -> Result<(), AttestationError> {
    if expected.len() == answer.len() && openssl::memcmp::eq(expected, answer) {
        Ok(())
    } else {
        Err(AttestationError::CredentialMismatch)
    }
}

/// A node signing key the AK certified as living in the same TPM.
#[derive(Debug, Clone)]
pub struct CertifiedKey {
    /// Its public key, the node's JWK (thumbprint = `kid` of its windows).
    pub jwk: RsaJwk,
    /// Its Name (34 octets).
    pub name: Vec<u8>,
    /// TPM firmware version from the attestation (vendor-defined).
    pub firmware_version: u64,
}

/// The fields of a parsed `TPMS_ATTEST` of type certify (Part 2 §10.12.12, §10.12.3).
struct CertifyAttest<'a> {
    magic: u32,
    kind: u16,
    extra_data: &'a [u8],
    firmware_version: u64,
    certified_name: &'a [u8],
}

fn parse_certify_attest(bytes: &[u8]) -> Result<CertifyAttest<'_>, AttestationError> {
    let mut r = Reader::new(bytes);
    let magic = r.u32("TPMS_ATTEST.magic")?;
    let kind = r.u16("TPMS_ATTEST.type")?;
    let _qualified_signer = r.tpm2b("TPMS_ATTEST.qualifiedSigner")?;
    let extra_data = r.tpm2b("TPMS_ATTEST.extraData")?;
    // TPMS_CLOCK_INFO: clock u64, resetCount u32, restartCount u32, safe u8 (Part 2 §10.11.1).
    let _clock = r.u64("TPMS_CLOCK_INFO.clock")?;
    let _reset_count = r.u32("TPMS_CLOCK_INFO.resetCount")?;
    let _restart_count = r.u32("TPMS_CLOCK_INFO.restartCount")?;
    let _safe = r.u8("TPMS_CLOCK_INFO.safe")?;
    let firmware_version = r.u64("TPMS_ATTEST.firmwareVersion")?;
    if kind != TPM_ST_ATTEST_CERTIFY {
        return Ok(CertifyAttest {
            magic,
            kind,
            extra_data,
            firmware_version,
            certified_name: &[],
        });
    }
    // TPMS_CERTIFY_INFO: name, qualifiedName (Part 2 §10.12.3).
    let certified_name = r.tpm2b("TPMS_CERTIFY_INFO.name")?;
    let _qualified_name = r.tpm2b("TPMS_CERTIFY_INFO.qualifiedName")?;
    r.finish("TPMS_ATTEST")?;
    Ok(CertifyAttest {
        magic,
        kind,
        extra_data,
        firmware_version,
        certified_name,
    })
}

/// Verifies `signature` (a marshalled `TPMT_SIGNATURE`, Part 2 §11.3.4: sigAlg u16, hash u16,
/// TPM2B sig) by `key` over `message`: RSASSA (PKCS#1 v1.5) or RSAPSS (any salt length), SHA-256.
fn verify_tpm_signature(
    key: &PKey<Public>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), AttestationError> {
    let mut r = Reader::new(signature);
    let sig_alg = r.u16("TPMT_SIGNATURE.sigAlg")?;
    let hash_alg = r.u16("TPMT_SIGNATURE.hash")?;
    let sig = r.tpm2b("TPMT_SIGNATURE.sig")?;
    r.finish("TPMT_SIGNATURE")?;
    if hash_alg != TPM_ALG_SHA256 {
        return Err(AttestationError::UnsupportedAlgorithm(format!(
            "signature hash {hash_alg:#06x} is not SHA-256"
        )));
    }
    let mut verifier = Verifier::new(MessageDigest::sha256(), key)?;
    match sig_alg {
        TPM_ALG_RSASSA => verifier.set_rsa_padding(Padding::PKCS1)?,
        TPM_ALG_RSAPSS => {
            verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
            verifier.set_rsa_mgf1_md(MessageDigest::sha256())?;
            verifier.set_rsa_pss_saltlen(RsaPssSaltlen::custom(PSS_SALTLEN_AUTO))?;
        }
        other => {
            return Err(AttestationError::UnsupportedAlgorithm(format!(
                "signature algorithm {other:#06x} is neither RSASSA nor RSAPSS"
            )));
        }
    }
    verifier.update(message)?;
    // OpenSSL reports a malformed signature as an error, a wrong one as false: both are "bad".
    match verifier.verify(sig) {
        Ok(true) => Ok(()),
        _ => Err(AttestationError::CertifyBadSignature),
    }
}

/// Verifies a TPM2_Certify of the node signing key by the AK (Part 3 §18.2) and returns the
/// signing key's JWK.
///
/// Inputs: `ak_public` and `signing_public` are marshalled `TPM2B_PUBLIC`; `certify_info` is the
/// marshalled `TPMS_ATTEST` (the body of `TPM2B_ATTEST`, without its size); `certify_signature`
/// is a marshalled `TPMT_SIGNATURE`; `qualifying_data` is what the verifier asked to be put in
/// `extraData` (a nonce, or SHA-256 of `signing_public`).
///
/// Steps: (1) the AK passes [`check_ak`]; (2) the AK signature over `certify_info` verifies
/// (RSASSA or RSAPSS with SHA-256, as `sigAlg` says); (3) magic = `TPM_GENERATED_VALUE`, type =
/// `TPM_ST_ATTEST_CERTIFY`; (4) `extraData` = `qualifying_data`; (5) the certified Name = Name of
/// `signing_public`; (6) the signing key is RSA-2048, e = 65537, fixedTPM, fixedParent,
/// sensitiveDataOrigin, sign, not decrypt, scheme RSAPSS-SHA-256 or NULL.
///
/// # Errors
/// Any `ak_*` error, `certify_bad_signature`, `certify_bad_magic`, `certify_wrong_type`,
/// `certify_nonce_mismatch`, `certify_name_mismatch`, `signing_key_unsuitable`,
/// `malformed_tpm_structure`, `unsupported_tpm_algorithm`.
pub fn verify_certify(
    ak_public: &[u8],
    signing_public: &[u8],
    certify_info: &[u8],
    certify_signature: &[u8],
    qualifying_data: &[u8],
) -> Result<CertifiedKey, AttestationError> {
    // Step 1: the AK.
    let ak = check_ak(ak_public)?;
    // Step 2: the signature, before any field of the attestation is believed.
    verify_tpm_signature(&ak.public.public_key()?, certify_info, certify_signature)?;
    // Step 3: generated by the TPM, and a certification.
    let attest = parse_certify_attest(certify_info)?;
    if attest.magic != TPM_GENERATED_VALUE {
        return Err(AttestationError::CertifyBadMagic);
    }
    if attest.kind != TPM_ST_ATTEST_CERTIFY {
        return Err(AttestationError::CertifyWrongType(attest.kind));
    }
    // Step 4: fresh for this enrollment.
    if attest.extra_data.len() != qualifying_data.len()
        || !openssl::memcmp::eq(attest.extra_data, qualifying_data)
    {
        return Err(AttestationError::CertifyNonceMismatch);
    }
    // Step 5: about this key.
    let signing = RsaPublicArea::parse(signing_public)?;
    let name = signing.name()?;
    if attest.certified_name != name.as_slice() {
        return Err(AttestationError::CertifyNameMismatch);
    }
    // Step 6: a key fit to sign windows.
    check_signing_key(&signing)?;
    let jwk = RsaJwk::from_public_key(&signing.public_key()?)
        .map_err(|_| AttestationError::SigningKeyUnsuitable("not an RSA key"))?;
    Ok(CertifiedKey {
        jwk,
        name,
        firmware_version: attest.firmware_version,
    })
}

fn check_signing_key(key: &RsaPublicArea) -> Result<(), AttestationError> {
    let unsuitable = AttestationError::SigningKeyUnsuitable;
    let rules = [
        (attr::FIXED_TPM, "not fixedTPM"),
        (attr::FIXED_PARENT, "not fixedParent"),
        (attr::SENSITIVE_DATA_ORIGIN, "not sensitiveDataOrigin"),
        (attr::SIGN, "not a signing key"),
    ];
    for (bit, why) in rules {
        if !key.has(bit) {
            return Err(unsuitable(why));
        }
    }
    if key.has(attr::DECRYPT) {
        return Err(unsuitable("can decrypt"));
    }
    if key.key_bits != 2048 {
        return Err(unsuitable("modulus is not 2048 bits"));
    }
    if key.exponent != TPM_DEFAULT_RSA_EXPONENT {
        return Err(unsuitable("exponent is not 65537"));
    }
    match key.scheme {
        None => Ok(()),
        Some(RsaScheme {
            scheme: TPM_ALG_RSAPSS,
            hash: TPM_ALG_SHA256,
        }) => Ok(()),
        Some(_) => Err(unsuitable("scheme is neither RSAPSS-SHA256 nor NULL")),
    }
}

fn build_store(roots: &[X509], flags: X509VerifyFlags) -> Result<X509Store, AttestationError> {
    let mut builder = X509StoreBuilder::new()?;
    for root in roots.iter().filter(|c| is_self_issued(c)) {
        builder.add_cert(root.clone())?;
    }
    builder.set_flags(flags)?;
    Ok(builder.build())
}

fn is_self_issued(cert: &X509) -> bool {
    cert.issued(cert) == X509VerifyResult::OK
}

/// OpenSSL's `X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION` (include/openssl/x509_vfy.h).
const X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION: i32 = 34;

/// Checks an EK certificate (DER, as read from NV index 0x01c00002 — trailing NV padding is
/// ignored) against `ek_public` (marshalled `TPM2B_PUBLIC`) and the configured CA certificates.
///
/// `roots` holds the trust anchors (self-signed roots) and may also hold intermediate CA
/// certificates: only self-signed ones are trusted, the others only help build the chain (TPM
/// vendors publish root and intermediate CAs side by side; swtpm's local CA is a root plus
/// `issuercert.pem`).
///
/// TPM EK certificates (TCG EK Credential Profile 2.0 §3.2) may mark extensions critical that
/// OpenSSL does not process, e.g. subjectDirectoryAttributes with the TPM specification version.
/// Verification is strict first; only when the sole complaint is an unhandled critical extension
/// is it repeated ignoring criticality, because the certificate is used for one thing alone:
/// binding the EK public key to a TPM manufacturer, which the chain signatures establish.
///
/// # Errors
/// `ek_cert_malformed`, `ek_cert_untrusted` (with OpenSSL's reason, or because the certificate
/// is not an EK certificate: [`check_ek_profile`]), `ek_cert_key_mismatch`,
/// `malformed_tpm_structure` for `ek_public`.
pub fn verify_ek_certificate(
    ek_certificate_der: &[u8],
    ek_public: &[u8],
    roots: &[X509],
) -> Result<(), AttestationError> {
    let cert = X509::from_der(ek_certificate_der)
        .map_err(|e| AttestationError::EkCertMalformed(e.to_string()))?;
    let ek = RsaPublicArea::parse(ek_public)?;

    // Step 1: the chain.
    let mut chain = Stack::new()?;
    for intermediate in roots.iter().filter(|c| !is_self_issued(c)) {
        chain.push(intermediate.clone())?;
    }
    let verify = |flags: X509VerifyFlags| -> Result<Result<(), (i32, String)>, AttestationError> {
        let store = build_store(roots, flags)?;
        let mut ctx = X509StoreContext::new()?;
        Ok(ctx.init(&store, &cert, &chain, |c| {
            Ok(if c.verify_cert()? {
                Ok(())
            } else {
                Err((c.error().as_raw(), c.error().error_string().to_owned()))
            })
        })?)
    };
    match verify(X509VerifyFlags::empty())? {
        Ok(()) => {}
        Err((X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION, _)) => {
            verify(X509VerifyFlags::IGNORE_CRITICAL)?
                .map_err(|(_, why)| AttestationError::EkCertUntrusted(why))?;
        }
        Err((_, why)) => return Err(AttestationError::EkCertUntrusted(why)),
    }

    check_ek_profile(&cert)?;

    // Step 2: the certified key is this EK.
    let cert_key = cert
        .public_key()
        .and_then(|k| k.rsa())
        .map_err(|_| AttestationError::EkCertMalformed("no RSA public key".into()))?;
    let same = cert_key.n().to_vec() == ek.modulus
        && cert_key.e().to_vec() == openssl::bn::BigNum::from_u32(ek.exponent)?.to_vec();
    if same {
        Ok(())
    } else {
        Err(AttestationError::EkCertKeyMismatch)
    }
}

/// Refuses a certificate that chains to a configured root but is not an end-entity EK
/// certificate: a CA certificate (keyUsage keyCertSign, or a path length), an RSA certificate
/// whose keyUsage lacks keyEncipherment, or one issued for another purpose (TLS, S/MIME, code,
/// OCSP or time-stamp signing). The TCG EK Credential Profile 2.0 gives an RSA EK certificate
/// basicConstraints CA:FALSE, keyUsage keyEncipherment and extendedKeyUsage
/// tcg-kp-EKCertificate (2.23.133.8.1; OpenSSL reports no flag for it, so its presence is not
/// required). Without this, the private key of any other certificate a configured CA issued
/// could play the TPM in MakeCredential/ActivateCredential.
///
/// # Errors
/// `ek_cert_untrusted` naming the reason.
pub fn check_ek_profile(cert: &openssl::x509::X509Ref) -> Result<(), AttestationError> {
    use openssl::x509::{X509ExtendedKeyUsage as Eku, X509KeyUsage as Ku};
    let not_ek = |why: &str| {
        Err(AttestationError::EkCertUntrusted(format!(
            "not an EK certificate: {why}"
        )))
    };
    let usage = cert.key_usage();
    if cert.pathlen().is_some() || usage.is_some_and(|u| u.contains(Ku::KEY_CERT_SIGN)) {
        return not_ek("it is a CA certificate");
    }
    if usage.is_some_and(|u| !u.contains(Ku::KEY_ENCIPHERMENT)) {
        return not_ek("its keyUsage lacks keyEncipherment");
    }
    let other_purposes = Eku::SSL_SERVER
        | Eku::SSL_CLIENT
        | Eku::SMIME
        | Eku::CODE_SIGN
        | Eku::SGC
        | Eku::OCSP_SIGN
        | Eku::TIMESTAMP
        | Eku::DVCS;
    if cert
        .extended_key_usage()
        .is_some_and(|e| e.intersects(other_purposes))
    {
        return not_ek("its extendedKeyUsage is for another purpose");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marshals an RSA `TPM2B_PUBLIC` for tests.
    pub(crate) fn rsa_public(
        attributes: u32,
        symmetric: Option<SymmetricDef>,
        scheme: Option<RsaScheme>,
        key: &Rsa<openssl::pkey::Private>,
    ) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
        t.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        t.extend_from_slice(&attributes.to_be_bytes());
        t.extend_from_slice(&0u16.to_be_bytes());
        match symmetric {
            None => t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()),
            Some(s) => {
                for v in [s.algorithm, s.key_bits, s.mode] {
                    t.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        match scheme {
            None => t.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()),
            Some(s) => {
                for v in [s.scheme, s.hash] {
                    t.extend_from_slice(&v.to_be_bytes());
                }
            }
        }
        let n = key.n().to_vec();
        t.extend_from_slice(&u16::try_from(n.len() * 8).expect("bits").to_be_bytes());
        t.extend_from_slice(&0u32.to_be_bytes());
        t.extend_from_slice(&tpm2b(&n).expect("n"));
        tpm2b(&t).expect("public")
    }

    const AK_ATTRS: u32 = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::USER_WITH_AUTH
        | attr::RESTRICTED
        | attr::SIGN;
    const SIGNING_ATTRS: u32 = attr::FIXED_TPM
        | attr::FIXED_PARENT
        | attr::SENSITIVE_DATA_ORIGIN
        | attr::USER_WITH_AUTH
        | attr::SIGN;
    const RSASSA: Option<RsaScheme> = Some(RsaScheme {
        scheme: TPM_ALG_RSASSA,
        hash: TPM_ALG_SHA256,
    });
    const PSS: Option<RsaScheme> = Some(RsaScheme {
        scheme: TPM_ALG_RSAPSS,
        hash: TPM_ALG_SHA256,
    });

    fn rsa() -> Rsa<openssl::pkey::Private> {
        Rsa::generate(2048).expect("rsa")
    }

    #[test]
    fn parses_and_names_a_public_area() {
        let key = rsa();
        let bytes = rsa_public(AK_ATTRS, None, RSASSA, &key);
        let parsed = RsaPublicArea::parse(&bytes).expect("parse");
        assert_eq!(parsed.key_bits, 2048);
        assert_eq!(parsed.exponent, 65_537);
        assert_eq!(parsed.modulus, key.n().to_vec());
        let name = parsed.name().expect("name");
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        assert_eq!(name.len(), 34);
        // Truncated and over-long inputs are refused.
        for bad in [
            &bytes[..bytes.len() - 1],
            &[bytes.as_slice(), &[0]].concat(),
        ] {
            let err = RsaPublicArea::parse(bad).expect_err("bad");
            assert_eq!(err.code(), "malformed_tpm_structure");
        }
    }

    #[test]
    fn each_ak_rule_has_its_own_code() {
        let key = rsa();
        assert!(check_ak(&rsa_public(AK_ATTRS, None, RSASSA, &key)).is_ok());
        let cases = [
            (AK_ATTRS & !attr::FIXED_TPM, "ak_not_fixed_tpm"),
            (AK_ATTRS & !attr::FIXED_PARENT, "ak_not_fixed_parent"),
            (
                AK_ATTRS & !attr::SENSITIVE_DATA_ORIGIN,
                "ak_not_sensitive_data_origin",
            ),
            (AK_ATTRS & !attr::RESTRICTED, "ak_not_restricted"),
            (AK_ATTRS & !attr::SIGN, "ak_not_signing"),
            (AK_ATTRS | attr::DECRYPT, "ak_can_decrypt"),
        ];
        for (attrs, code) in cases {
            let err = check_ak(&rsa_public(attrs, None, RSASSA, &key)).expect_err(code);
            assert_eq!(err.code(), code);
        }
        let small = Rsa::generate(1024).expect("rsa");
        let err = check_ak(&rsa_public(AK_ATTRS, None, RSASSA, &small)).expect_err("small");
        assert_eq!(err.code(), "ak_key_too_small");
    }

    /// Software TPM2_ActivateCredential, the inverse of [`make_credential`] (Part 1 §24).
    fn activate(
        ek: &Rsa<openssl::pkey::Private>,
        ak_name: &[u8],
        blob: &[u8],
        secret: &[u8],
    ) -> Result<Vec<u8>, AttestationError> {
        let mut r = Reader::new(secret);
        let encrypted_seed = r.tpm2b("secret")?;
        let key = PKey::from_rsa(ek.clone())?;
        let mut dec = openssl::encrypt::Decrypter::new(&key)?;
        dec.set_rsa_padding(Padding::PKCS1_OAEP)?;
        dec.set_rsa_oaep_md(MessageDigest::sha256())?;
        dec.set_rsa_mgf1_md(MessageDigest::sha256())?;
        dec.set_rsa_oaep_label(b"IDENTITY\0")?;
        let mut seed = vec![0; dec.decrypt_len(encrypted_seed)?];
        let n = dec.decrypt(encrypted_seed, &mut seed)?;
        seed.truncate(n);
        let mut r = Reader::new(blob);
        let mut id = Reader::new(r.tpm2b("blob")?);
        let hmac = id.tpm2b("hmac")?;
        let enc_identity = id.buf;
        let hmac_key = kdfa_sha256(&seed, b"INTEGRITY", &[], &[], 256)?;
        if hmac_sha256(&hmac_key, &[enc_identity, ak_name])? != hmac {
            return Err(AttestationError::CredentialMismatch);
        }
        let sym_key = kdfa_sha256(&seed, b"STORAGE", ak_name, &[], 128)?;
        let plain = openssl::symm::decrypt(
            Cipher::aes_128_cfb128(),
            &sym_key,
            Some(&[0u8; 16]),
            enc_identity,
        )?;
        Ok(Reader::new(&plain).tpm2b("identity")?.to_vec())
    }

    fn ek_template() -> Option<SymmetricDef> {
        Some(SymmetricDef {
            algorithm: TPM_ALG_AES,
            key_bits: 128,
            mode: TPM_ALG_CFB,
        })
    }

    #[test]
    fn make_credential_round_trips_in_software() {
        let ek = rsa();
        let ek_attrs = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::RESTRICTED
            | attr::DECRYPT;
        let ek_public = rsa_public(ek_attrs, ek_template(), None, &ek);
        let ak = check_ak(&rsa_public(AK_ATTRS, None, RSASSA, &rsa())).expect("ak");
        let secret = b"0123456789abcdef0123456789abcdef";
        let (blob, enc) = make_credential(&ek_public, &ak.name, secret).expect("make");
        assert_eq!(enc.len(), 2 + 256);
        let got = activate(&ek, &ak.name, &blob, &enc).expect("activate");
        assert!(check_credential(secret, &got).is_ok());
        // Bound to the AK name: another name fails the integrity check.
        let mut other = ak.name.clone();
        other[5] ^= 1;
        assert!(activate(&ek, &other, &blob, &enc).is_err());
        assert_eq!(
            check_credential(secret, b"wrong")
                .expect_err("wrong")
                .code(),
            "credential_mismatch"
        );
        // A signing key is no EK.
        let err = make_credential(&rsa_public(AK_ATTRS, None, RSASSA, &ek), &ak.name, secret)
            .expect_err("not an EK");
        assert_eq!(err.code(), "ek_unsuitable");
        // Nor is a 1024-bit key (it would fail inside OAEP as a 500 otherwise).
        let small = Rsa::generate(1024).expect("rsa");
        let err = make_credential(
            &rsa_public(ek_attrs, ek_template(), None, &small),
            &ak.name,
            secret,
        )
        .expect_err("too small");
        assert_eq!(err.code(), "ek_unsuitable");
    }

    fn attest_bytes(magic: u32, kind: u16, extra: &[u8], name: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&magic.to_be_bytes());
        a.extend_from_slice(&kind.to_be_bytes());
        a.extend_from_slice(&tpm2b(&[0; 34]).expect("qs"));
        a.extend_from_slice(&tpm2b(extra).expect("extra"));
        a.extend_from_slice(&[0; 17]);
        a.extend_from_slice(&7u64.to_be_bytes());
        a.extend_from_slice(&tpm2b(name).expect("name"));
        a.extend_from_slice(&tpm2b(name).expect("qname"));
        a
    }

    fn sign_attest(ak: &Rsa<openssl::pkey::Private>, attest: &[u8]) -> Vec<u8> {
        let key = PKey::from_rsa(ak.clone()).expect("pkey");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("signer");
        signer.set_rsa_padding(Padding::PKCS1).expect("pad");
        signer.update(attest).expect("update");
        let sig = signer.sign_to_vec().expect("sign");
        let mut out = Vec::new();
        out.extend_from_slice(&TPM_ALG_RSASSA.to_be_bytes());
        out.extend_from_slice(&TPM_ALG_SHA256.to_be_bytes());
        out.extend_from_slice(&tpm2b(&sig).expect("sig"));
        out
    }

    #[test]
    fn certify_rules() {
        let ak = rsa();
        let ak_public = rsa_public(AK_ATTRS, None, RSASSA, &ak);
        let node = rsa();
        let node_public = rsa_public(SIGNING_ATTRS, None, PSS, &node);
        let name = RsaPublicArea::parse(&node_public)
            .expect("p")
            .name()
            .expect("n");
        let nonce = b"nonce-1";
        let good = attest_bytes(TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, nonce, &name);
        let certified = verify_certify(
            &ak_public,
            &node_public,
            &good,
            &sign_attest(&ak, &good),
            nonce,
        )
        .expect("certified");
        let node_key = PKey::from_rsa(
            Rsa::from_public_components(
                node.n().to_owned().expect("n"),
                node.e().to_owned().expect("e"),
            )
            .expect("public"),
        )
        .expect("pkey");
        assert_eq!(
            certified.jwk,
            RsaJwk::from_public_key(&node_key).expect("jwk")
        );

        let check = |attest: &[u8], sig: &[u8], public: &[u8], nonce: &[u8]| {
            verify_certify(&ak_public, public, attest, sig, nonce)
                .expect_err("refused")
                .code()
        };
        let sig = sign_attest(&ak, &good);
        assert_eq!(
            check(&good, &sig, &node_public, b"other"),
            "certify_nonce_mismatch"
        );
        let other_public = rsa_public(SIGNING_ATTRS, None, PSS, &rsa());
        assert_eq!(
            check(&good, &sig, &other_public, nonce),
            "certify_name_mismatch"
        );
        let mut tampered = good.clone();
        tampered[20] ^= 1;
        assert_eq!(
            check(&tampered, &sig, &node_public, nonce),
            "certify_bad_signature"
        );
        let forged_sig = sign_attest(&rsa(), &good);
        assert_eq!(
            check(&good, &forged_sig, &node_public, nonce),
            "certify_bad_signature"
        );
        let magic = attest_bytes(0xdead_beef, TPM_ST_ATTEST_CERTIFY, nonce, &name);
        assert_eq!(
            check(&magic, &sign_attest(&ak, &magic), &node_public, nonce),
            "certify_bad_magic"
        );
        let quote = attest_bytes(TPM_GENERATED_VALUE, 0x8018, nonce, &name);
        assert_eq!(
            check(&quote, &sign_attest(&ak, &quote), &node_public, nonce),
            "certify_wrong_type"
        );
        // A certified decryption key is no window signer.
        let dec_public = rsa_public(SIGNING_ATTRS | attr::DECRYPT, None, None, &node);
        let dec_name = RsaPublicArea::parse(&dec_public)
            .expect("p")
            .name()
            .expect("n");
        let dec = attest_bytes(TPM_GENERATED_VALUE, TPM_ST_ATTEST_CERTIFY, nonce, &dec_name);
        assert_eq!(
            check(&dec, &sign_attest(&ak, &dec), &dec_public, nonce),
            "signing_key_unsuitable"
        );
    }

    /// A self-signed CA certificate, or a leaf issued by `issuer` with `extensions`.
    fn certificate(
        subject: &str,
        key: &PKey<openssl::pkey::Private>,
        issuer: Option<(&X509, &PKey<openssl::pkey::Private>)>,
        extensions: Vec<openssl::x509::X509Extension>,
    ) -> X509 {
        let mut name = openssl::x509::X509NameBuilder::new().expect("name");
        name.append_entry_by_text("CN", subject).expect("cn");
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().expect("builder");
        b.set_version(2).expect("v3");
        b.set_subject_name(&name).expect("subject");
        b.set_pubkey(key).expect("pubkey");
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(30).expect("t"))
            .expect("na");
        for ext in extensions {
            b.append_extension(ext).expect("ext");
        }
        match issuer {
            None => {
                b.set_issuer_name(&name).expect("issuer");
                b.append_extension(
                    openssl::x509::extension::BasicConstraints::new()
                        .critical()
                        .ca()
                        .build()
                        .expect("bc"),
                )
                .expect("ext");
                b.sign(key, MessageDigest::sha256()).expect("sign");
            }
            Some((ca, ca_key)) => {
                b.set_issuer_name(ca.subject_name()).expect("issuer");
                b.sign(ca_key, MessageDigest::sha256()).expect("sign");
            }
        }
        b.build()
    }

    /// EK certificates mark subjectDirectoryAttributes (TPM specification version, TCG EK
    /// Credential Profile 2.0 §3.2.12) critical, which OpenSSL 3.0 does not process.
    #[test]
    fn ek_certificate_with_unhandled_critical_extension() {
        let ca_key = PKey::from_rsa(rsa()).expect("pkey");
        let ca = certificate("TPM vendor root", &ca_key, None, vec![]);
        let ek = rsa();
        let ek_key = PKey::from_rsa(ek.clone()).expect("pkey");
        // SEQUENCE { Attribute { tpmSpecification 2.23.133.2.16, SET { ("2.0", 0, 138) } } }
        let sda: [u8; 27] = [
            0x30, 0x19, 0x30, 0x17, 0x06, 0x05, 0x67, 0x81, 0x05, 0x02, 0x10, 0x31, 0x0e, 0x30,
            0x0c, 0x0c, 0x03, 0x32, 0x2e, 0x30, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0x8a,
        ];
        let oid = openssl::asn1::Asn1Object::from_str("2.5.29.9").expect("oid");
        let contents = openssl::asn1::Asn1OctetString::new_from_bytes(&sda).expect("octets");
        let critical =
            openssl::x509::X509Extension::new_from_der(&oid, true, &contents).expect("ext");
        let leaf = certificate("EK", &ek_key, Some((&ca, &ca_key)), vec![critical]);
        let ek_attrs = attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::RESTRICTED
            | attr::DECRYPT;
        let ek_public = rsa_public(ek_attrs, ek_template(), None, &ek);
        let der = leaf.to_der().expect("der");
        // What strict OpenSSL says (3.0: unhandled critical extension; newer may accept it).
        let store = build_store(std::slice::from_ref(&ca), X509VerifyFlags::empty()).expect("st");
        let strict = X509StoreContext::new()
            .expect("ctx")
            .init(&store, &leaf, &Stack::new().expect("stack"), |c| {
                Ok((c.verify_cert()?, c.error().as_raw()))
            })
            .expect("verify");
        assert!(strict.0 || strict.1 == X509_V_ERR_UNHANDLED_CRITICAL_EXTENSION);
        println!("strict OpenSSL verification: {strict:?}");
        verify_ek_certificate(&der, &ek_public, std::slice::from_ref(&ca)).expect("accepted");
        // Trailing NV padding after the DER is ignored.
        let padded = [der.as_slice(), &[0xff; 16]].concat();
        verify_ek_certificate(&padded, &ek_public, std::slice::from_ref(&ca)).expect("padded");
        // Ignoring criticality does not mean ignoring the issuer.
        let other_key = PKey::from_rsa(rsa()).expect("pkey");
        let other = certificate("Another root", &other_key, None, vec![]);
        let err = verify_ek_certificate(&der, &ek_public, &[other]).expect_err("untrusted");
        assert_eq!(err.code(), "ek_cert_untrusted");
        let err = verify_ek_certificate(b"not DER", &ek_public, std::slice::from_ref(&ca))
            .expect_err("garbage");
        assert_eq!(err.code(), "ek_cert_malformed");
        // The same root also issued a TLS server certificate and a sub-CA for this key: neither
        // is an EK certificate, though both chain.
        use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage};
        for ext in [
            ExtendedKeyUsage::new().server_auth().build().expect("eku"),
            KeyUsage::new().key_cert_sign().build().expect("ku"),
            KeyUsage::new().digital_signature().build().expect("ku"),
        ] {
            let leaf = certificate("not an EK", &ek_key, Some((&ca, &ca_key)), vec![ext]);
            let err = verify_ek_certificate(
                &leaf.to_der().expect("der"),
                &ek_public,
                std::slice::from_ref(&ca),
            )
            .expect_err("not an EK certificate");
            assert_eq!(err.code(), "ek_cert_untrusted");
            assert!(err.to_string().contains("not an EK certificate"), "{err}");
        }
        // The EK profile's own extensions pass.
        let leaf = certificate(
            "EK",
            &ek_key,
            Some((&ca, &ca_key)),
            vec![
                KeyUsage::new()
                    .critical()
                    .key_encipherment()
                    .build()
                    .expect("ku"),
            ],
        );
        verify_ek_certificate(
            &leaf.to_der().expect("der"),
            &ek_public,
            std::slice::from_ref(&ca),
        )
        .expect("an EK certificate");
    }
}
