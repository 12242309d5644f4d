//! The one TLS crypto provider of the workspace's HTTP clients.
//!
//! reqwest is built with `rustls-no-provider`: rustls with ring (already in the build through the
//! database driver), no second crypto library. Each binary installs the provider once at start;
//! building an HTTP client before that panics inside reqwest.

/// Installs ring as the process-wide rustls crypto provider. Idempotent: later calls (and a
/// provider installed by someone else first) are fine.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
