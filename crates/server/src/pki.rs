//! Certificates for the MQTT transport: a CA, the broker's server certificate and per-meter
//! client certificates whose common name is the meter id (DESIGN §3.3), made with `rcgen`.
//!
//! This is the seed of `wattline pki` (issue 5): tests, `wattline loadgen` and the demo use it
//! today; enrolment, revocation and renewal grow here. Keys are ECDSA P-256 (rcgen's default,
//! signed with ring, the one rustls provider of the build).

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use schema::MeterId;

use crate::broker::{MqttError, MqttErrorKind};

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8). Never log it.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs and panics (DESIGN §4: secrets never appear in logs).
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A certificate authority that signs broker and meter certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

fn pki_error(doing: &str, e: impl std::fmt::Display) -> MqttError {
    MqttError::new(MqttErrorKind::Certificate(format!("{doing}: {e}")))
}

impl CertificateAuthority {
    /// Creates a new self-signed CA named `name`.
    pub fn generate(name: &str) -> Result<Self, MqttError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("ca", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(|e| pki_error("ca key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_error("self-signing the ca", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what meters and the broker trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (for `wattline pki` to store owner-only); never log it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues the broker's server certificate for `dns_names` and `ips`.
    pub fn issue_server(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, MqttError> {
        let names: Vec<String> = dns_names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(|e| pki_error("server", e))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params
            .distinguished_name
            .push(DnType::CommonName, "wattline broker");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, "server certificate")
    }

    /// Issues a meter's client certificate: common name = the meter id.
    pub fn issue_meter(&self, meter: &MeterId) -> Result<IssuedCert, MqttError> {
        self.issue_client(meter.as_str())
    }

    /// Issues a client certificate with common name `name`: a meter, or a server instance
    /// that consumes from an external broker (whose ACL grants that name read access).
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, MqttError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("client", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params, "meter certificate")
    }

    fn sign(&self, params: CertificateParams, what: &str) -> Result<IssuedCert, MqttError> {
        let key = KeyPair::generate().map_err(|e| pki_error(what, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| pki_error(what, e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_certificate_carries_the_meter_id_as_common_name() {
        let ca = CertificateAuthority::generate("test ca").unwrap();
        let meter = MeterId::parse("house-7").unwrap();
        let issued = ca.issue_meter(&meter).unwrap();
        let der = rustls::pki_types::CertificateDer::from_pem_slice(issued.cert_pem.as_bytes());
        use rustls::pki_types::pem::PemObject;
        let der = der.unwrap();
        assert_eq!(crate::broker::common_name(der.as_ref()).unwrap(), "house-7");
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }
}
