//! The broker's TLS server config: TLS 1.2/1.3 with ring, a client certificate from our CA
//! required on every connection.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::{MqttError, MqttErrorKind};

fn tls_error(what: &str, e: impl std::fmt::Display) -> MqttError {
    MqttError::new(MqttErrorKind::Certificate(format!("{what}: {e}")))
}

/// Builds the server config: present `cert_pem`/`key_pem`, require a client certificate that
/// chains to one of the CAs in `client_ca_pem`.
///
/// ring is the one provider (DESIGN §7): it is passed explicitly, so this works whether or not
/// a process default was installed, and never meets a second provider.
pub fn server_config(
    client_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ServerConfig>, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| tls_error("client ca", e))?;
        roots.add(cert).map_err(|e| tls_error("client ca", e))?;
    }
    if roots.is_empty() {
        return Err(tls_error("client ca", "no certificate in the pem text"));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("broker certificate", e))?;
    if chain.is_empty() {
        return Err(tls_error(
            "broker certificate",
            "no certificate in the pem text",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| tls_error("broker key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_error("client verifier", e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("broker certificate/key", e))?;
    Ok(Arc::new(config))
}
