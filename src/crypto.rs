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

/// The certificates of a PEM CA bundle (`ca_file` of an endpoint, a
/// provider or a JWKS issuer), to trust beside the system's roots.
/// Refused: a file with no certificate, or one that does not parse.
pub fn ca_certificates(pem: &[u8]) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| anyhow::anyhow!("not a PEM certificate bundle: {e}"))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no `-----BEGIN CERTIFICATE-----` block in the file"
    );
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_bundle_needs_at_least_one_certificate() {
        assert!(ca_certificates(b"").is_err());
        assert!(
            ca_certificates(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let two = format!("{}{}", ca.cert.pem(), ca.cert.pem());
        assert_eq!(ca_certificates(two.as_bytes()).unwrap().len(), 2);
    }
}
