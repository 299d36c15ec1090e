//! Cryptographic primitives every layer uses: secure random bytes, SHA-256,
//! and the process's TLS crypto provider.
//!
//! Policy: one provider for the whole process (rustls with ring), installed
//! once at start by the entry points (`app::run`, `app::run_worker`, the
//! CLI); no constructor installs it on the side.

/// Fills `buf` from a cryptographically secure generator (the thread-local
/// ChaCha generator seeded from the OS).
pub fn random_bytes(buf: &mut [u8]) {
    rand::fill(buf);
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Installs ring as the process-wide rustls crypto provider (the server's
/// TLS, the HTTP clients). Idempotent: a second call, or a provider another
/// part of the process installed first, changes nothing.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
