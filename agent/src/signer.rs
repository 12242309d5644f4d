//! Signers that turn a window into a compact JWS (PS256): a TPM 2.0 key or a software key.

#[cfg(feature = "tpm")]
pub mod tpm;
