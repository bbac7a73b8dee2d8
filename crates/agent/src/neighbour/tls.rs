//! Mutual TLS between neighbouring meters with the certificates they already hold for the
//! uplink (one CA, common name = meter id, extended key usage `clientAuth`).
//!
//! - The forwarder (TLS server) requires a client certificate from the CA and learns from its
//!   common name which meter hands it envelopes.
//! - The origin (TLS client) accepts only the neighbour it was configured with: the chain must
//!   lead to the CA *as a meter certificate* (`clientAuth`, since meter certificates carry no
//!   `serverAuth` and no DNS name) and the common name must be that neighbour's meter id. This
//!   matters for losslessness, not only privacy: the origin deletes records once the
//!   neighbour acknowledges them, so an impostor must not be able to acknowledge.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, SignatureScheme};
use schema::MeterId;

use crate::uplink::tls::{identity, roots};

fn meter_verifier(ca_file: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots(ca_file)?, provider)
        .build()
        .map_err(|e| format!("{}: {e}", ca_file.display()))
}

/// The forwarder's TLS server config: its own meter certificate, client certificates required.
pub fn server_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::ServerConfig, String> {
    let (chain, key) = identity(cert_file, key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_client_cert_verifier(meter_verifier(ca_file)?)
        .with_single_cert(chain, key)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
}

/// The origin's TLS client config for the neighbour `expected`.
pub fn client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
    expected: &MeterId,
) -> Result<rustls::ClientConfig, String> {
    let (chain, key) = identity(cert_file, key_file)?;
    let verifier = NeighbourVerifier {
        expected: expected.clone(),
        inner: meter_verifier(ca_file)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("{} / {}: {e}", cert_file.display(), key_file.display()))
}

/// Verifies a neighbour's meter certificate: the CA's chain check for meter certificates, then
/// the expected common name. The TLS server name is not used (meter certificates name no host).
#[derive(Debug)]
struct NeighbourVerifier {
    expected: MeterId,
    inner: Arc<dyn ClientCertVerifier>,
}

impl ServerCertVerifier for NeighbourVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let name = common_name(end_entity).map_err(rustls::Error::General)?;
        if name != self.expected.as_str() {
            return Err(rustls::Error::General(format!(
                "neighbour certificate is meter {name}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// DER `id-at-commonName` (2.5.4.3).
const OID_COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// One DER tag-length-value `(tag, contents, rest)`, every length checked against the input.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("certificate truncated")?;
    let (&first, rest) = rest.split_first().ok_or("certificate truncated")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err("certificate has a bad DER length".into());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err("certificate truncated".into());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// The subject common name of a (verified) certificate: the meter id (RFC 5280 §4.1:
/// Certificate → TBSCertificate → [version] serial signature issuer validity subject).
pub fn common_name(cert_der: &[u8]) -> Result<String, String> {
    let (_, cert, _) = tlv(cert_der)?;
    let (_, tbs, _) = tlv(cert)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest)?.2;
    }
    for _ in 0..4 {
        rest = tlv(rest)?.2;
    }
    let (_, mut rdns, _) = tlv(rest)?;
    let mut found = None;
    while !rdns.is_empty() {
        let (_, set, after) = tlv(rdns)?;
        rdns = after;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (_, attr, after) = tlv(attrs)?;
            attrs = after;
            let (_, oid, value) = tlv(attr)?;
            if oid == OID_COMMON_NAME {
                let (_, text, _) = tlv(value)?;
                let text = std::str::from_utf8(text).map_err(|_| "common name is not UTF-8")?;
                if found.replace(text.to_owned()).is_some() {
                    return Err("certificate has more than one common name".into());
                }
            }
        }
    }
    found.ok_or_else(|| "certificate has no common name".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_name_and_rejects_garbage() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "wattline");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "house-7");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(common_name(&der).unwrap(), "house-7");
        for cut in [0, 1, 10, der.len() / 2] {
            assert!(common_name(&der[..cut]).is_err(), "cut at {cut}");
        }
        assert!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
