//! TLS for the listener: rustls with the ring provider.
//!
//! Policy: HTTPS by default. A configured certificate and key are used as
//! they are; without them a self-signed certificate for `localhost`,
//! `127.0.0.1` and `::1` (plus `server.tls.self_signed_names`) is generated
//! into `<data dir>/tls/` on first start and reused afterwards, and its path
//! is logged. Plain HTTP only with `server.plain_http = true`. ALPN offers
//! h2 and http/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::catalog::Catalog;

/// Where the generated certificate lives.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Builds the server TLS config from PEM files.
pub fn load_files(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Generates a self-signed certificate into `data_dir/tls/` unless one is
/// already there; returns its paths.
pub fn ensure_self_signed(
    data_dir: &Path,
    extra_names: &[String],
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (cert_path, key_path) = self_signed_paths(data_dir);
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let dir = cert_path.parent().unwrap_or(data_dir);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    names.extend(extra_names.iter().cloned());
    let certified = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert_path, certified.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The listener's TLS config per the settings, or `None` for plain HTTP.
pub fn server_config(config: &Catalog) -> anyhow::Result<Option<Arc<ServerConfig>>> {
    let server = &config.main.server;
    if server.plain_http {
        tracing::warn!(
            "serving plain HTTP (server.plain_http = true): only behind a TLS-terminating proxy"
        );
        return Ok(None);
    }
    let (cert, key) = match (&server.tls.cert_file, &server.tls.key_file) {
        (Some(c), Some(k)) => (config.dir.join(c), config.dir.join(k)),
        _ => {
            let (c, k) = ensure_self_signed(&config.data_dir, &server.tls.self_signed_names)?;
            tracing::info!(cert = %c.display(), "using the self-signed development certificate (set server.tls.cert_file/key_file for a real one)");
            (c, k)
        }
    };
    load_files(&cert, &key).map(Some)
}

/// The certificate file this server presents (configured or generated),
/// `None` for plain HTTP.
pub fn served_certificate(config: &Catalog) -> Option<PathBuf> {
    let server = &config.main.server;
    if server.plain_http {
        return None;
    }
    match &server.tls.cert_file {
        Some(c) => Some(config.dir.join(c)),
        None => Some(self_signed_paths(&config.data_dir).0),
    }
}
