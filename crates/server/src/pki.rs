//! Certificates for the MQTT transport: a CA, the broker's server certificate and per-meter
//! client certificates whose common name is the meter id (DESIGN §3.3), made with `rcgen`.
//!
//! `wattline pki init` keeps them in the data directory ([`files`]); `wattline meter enroll`
//! signs meter certificates with the stored CA; the web is served over HTTPS with a
//! certificate from here or a configured one ([`https`]). Keys are ECDSA P-256 (rcgen's
//! default, signed with ring, the one rustls provider of the build).
//!
//! Validity: the CA 20 years, server certificates 2 years, meter certificates
//! [`METER_CERT_DAYS`]; `not_before` is one day back so a meter whose clock is a little
//! behind still accepts a fresh certificate.

pub mod files;
pub mod https;

use std::net::IpAddr;

use chrono::{Datelike, Duration as Days};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
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

impl IssuedCert {
    /// The serial number, lowercase hex (the key of the revocation list).
    pub fn serial_hex(&self) -> Result<String, MqttError> {
        let der = CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| pki_error("reading the issued certificate", e))?;
        crate::broker::serial_hex(der.as_ref()).map_err(|e| pki_error("certificate serial", e))
    }
}

/// Meter client certificates are valid this long; renew before (`wattline meter renew-cert`).
pub const METER_CERT_DAYS: i64 = 2 * 365;
/// Server (broker, HTTPS) certificates are valid this long.
pub const SERVER_CERT_DAYS: i64 = 2 * 365;
const CA_DAYS: i64 = 20 * 365;

/// Sets `not_before` to yesterday and `not_after` to `days` from today (UTC midnight), and
/// returns `not_after` in Unix ms.
fn set_validity(params: &mut CertificateParams, days: i64) -> i64 {
    // chrono is built without its clock: the server's one clock is `crate::now_ms`.
    let today = chrono::DateTime::from_timestamp_millis(crate::now_ms())
        .unwrap_or_default()
        .date_naive();
    let ymd = |d: chrono::NaiveDate| date_time_ymd(d.year(), d.month() as u8, d.day() as u8);
    let from = today - Days::days(1);
    let to = today + Days::days(days);
    params.not_before = ymd(from);
    params.not_after = ymd(to);
    to.and_hms_opt(0, 0, 0)
        .map_or(i64::MAX, |t| t.and_utc().timestamp_millis())
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
        set_validity(&mut params, CA_DAYS);
        let key = KeyPair::generate().map_err(|e| pki_error("ca key", e))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| pki_error("self-signing the ca", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by [`Self::cert_pem`] and [`Self::key_pem`] (`wattline pki init`).
    ///
    /// The issuer is rebuilt from the certificate's common name and the key: rcgen encodes the
    /// same name the same way and derives the authority key id from the key, so certificates
    /// it signs chain to the stored CA certificate (checked by the tests).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, MqttError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| pki_error("reading the ca certificate", e))?;
        let name = crate::broker::common_name(der.as_ref())
            .map_err(|e| pki_error("ca certificate name", e))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| pki_error("reading the ca key", e))?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("ca", e))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
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
        set_validity(&mut params, SERVER_CERT_DAYS);
        self.sign(params, "server certificate")
    }

    /// Issues a meter's client certificate: common name = the meter id.
    pub fn issue_meter(&self, meter: &MeterId) -> Result<IssuedCert, MqttError> {
        self.issue_client(meter.as_str())
    }

    /// Issues a meter's client certificate valid for `days`; returns it with its expiry,
    /// Unix ms.
    pub fn issue_meter_for(
        &self,
        meter: &MeterId,
        days: i64,
    ) -> Result<(IssuedCert, i64), MqttError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("client", e))?;
        params
            .distinguished_name
            .push(DnType::CommonName, meter.as_str());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after_ms = set_validity(&mut params, days);
        Ok((self.sign(params, "meter certificate")?, not_after_ms))
    }

    /// Issues a client certificate with common name `name`: a meter, or a server instance
    /// that consumes from an external broker (whose ACL grants that name read access).
    pub fn issue_client(&self, name: &str) -> Result<IssuedCert, MqttError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_error("client", e))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, METER_CERT_DAYS);
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
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        assert_eq!(crate::broker::common_name(der.as_ref()).unwrap(), "house-7");
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_stored_one() {
        let ca = CertificateAuthority::generate("reload ca").unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let meter = MeterId::parse("m-2").unwrap();
        let (issued, not_after_ms) = again.issue_meter_for(&meter, 30).unwrap();
        let days = (not_after_ms - crate::now_ms()) / 86_400_000;
        assert!((29..=30).contains(&days), "{days}");
        // Verified by rustls (webpki) against the ORIGINAL CA certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
            .unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            provider,
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        verifier
            .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
            .expect("chains to the stored CA");
        let serial = issued.serial_hex().unwrap();
        assert!(serial.len() >= 2 && serial.chars().all(|c| c.is_ascii_hexdigit()));
        let other = again.issue_meter(&meter).unwrap();
        assert_ne!(
            other.serial_hex().unwrap(),
            serial,
            "a serial per certificate"
        );
        assert!(CertificateAuthority::from_pem(ca.cert_pem(), "not a key").is_err());
    }
}
