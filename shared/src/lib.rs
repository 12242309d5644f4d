//! The Wattest wire contract shared by the agent, the oracle and the offline verifier: telemetry
//! windows, certificate claims, units, JWK/JWS (PS256) and certificate verification.

pub mod api;
pub mod certificate;
pub mod checkpoint;
pub mod credential;
pub mod json;
pub mod jwk;
pub mod jws;
pub mod merkle;
pub mod net;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transparency;
pub mod units;
pub mod window;

pub use certificate::{
    AttestationLevel, CERTIFICATE_TYP, CertificateClaims, CheckedCertificate, verify_certificate,
};
pub use jwk::{EcJwk, Jwk, Jwks, RsaJwk};
pub use jws::{JwsSigner, SigningKey, SoftwareEcKey, SoftwareKey};
pub use units::{Decimal6, Eur, GramsCo2ePerKwh, Joules, KgCo2e, WattHours, Watts};
pub use window::{
    Attribution, Method, PROTOCOL_VERSION, SourceEnergy, SourceKind, WINDOW_TYP, WindowClaims,
};
