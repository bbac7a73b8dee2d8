//! The meter's TLS client identity for the uplink: rustls with exactly one crypto provider.
//!
//! Only `ring` is compiled in (no `aws-lc-rs` anywhere in the build): with two providers
//! rustls cannot pick one and the first handshake panics. [`install_crypto_provider`] makes it
//! the process default at start, and the config is built with it explicitly too.

use std::path::Path;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Installs `ring` as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn pem_err(path: &Path, e: &dyn std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// The CA certificates of `ca_file` (at least one).
pub(crate) fn roots(ca_file: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| pem_err(ca_file, &e))? {
        let cert = cert.map_err(|e| pem_err(ca_file, &e))?;
        roots.add(cert).map_err(|e| pem_err(ca_file, &e))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CA certificate found", ca_file.display()));
    }
    Ok(Arc::new(roots))
}

/// The meter's certificate chain (at least one certificate) and private key.
pub(crate) fn identity(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| pem_err(cert_file, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(cert_file, &e))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| pem_err(key_file, &e))?;
    Ok((chain, key))
}

/// Builds the client config: trust `ca_file`, present `cert_file`/`key_file`.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<ClientConfig, String> {
    let (chain, key) = identity(cert_file, key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots(ca_file)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
}
