//! The PKI files in a data directory, as `wattline pki init` writes them:
//!
//! ```text
//! DIR/master.key        server master key (sealing keys at rest), 0600
//! DIR/pki/ca.pem        the CA certificate: meters and the broker trust it
//! DIR/pki/ca.key        the CA private key, 0600
//! DIR/pki/broker.pem    the MQTT broker's server certificate (SANs from --hosts)
//! DIR/pki/broker.key    its key, 0600
//! DIR/pki/https.pem     the web's HTTPS certificate (same SANs)
//! DIR/pki/https.key     its key, 0600
//! ```
//!
//! Every private key is created with mode 0600 and refused at load when group or others may
//! read it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::CertificateAuthority;
use crate::keystore::{MasterKey, check_owner_only, master_key_path, write_secret_file};
use crate::{Error, ErrorKind};

/// The paths of the PKI files of one data directory.
#[derive(Debug, Clone)]
pub struct PkiFiles {
    data_dir: PathBuf,
}

fn io_error(what: String) -> Error {
    Error::new(ErrorKind::Unavailable(what))
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Created these files.
    Created(Vec<PathBuf>),
    /// Everything existed already; nothing was changed.
    AlreadyInitialised,
}

impl PkiFiles {
    /// The files under `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// `DIR/pki`.
    pub fn dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir().join("ca.pem")
    }
    /// The CA key.
    pub fn ca_key(&self) -> PathBuf {
        self.dir().join("ca.key")
    }
    /// The broker certificate.
    pub fn broker_cert(&self) -> PathBuf {
        self.dir().join("broker.pem")
    }
    /// The broker key.
    pub fn broker_key(&self) -> PathBuf {
        self.dir().join("broker.key")
    }
    /// The HTTPS certificate.
    pub fn https_cert(&self) -> PathBuf {
        self.dir().join("https.pem")
    }
    /// The HTTPS key.
    pub fn https_key(&self) -> PathBuf {
        self.dir().join("https.key")
    }
    /// The master key.
    pub fn master_key(&self) -> PathBuf {
        master_key_path(&self.data_dir)
    }

    fn all(&self) -> [PathBuf; 7] {
        [
            self.ca_cert(),
            self.ca_key(),
            self.broker_cert(),
            self.broker_key(),
            self.https_cert(),
            self.https_key(),
            self.master_key(),
        ]
    }

    /// Creates the CA, the broker and HTTPS certificates for `hosts` (DNS names or IP
    /// addresses) and the master key. A complete existing set is left alone
    /// ([`InitOutcome::AlreadyInitialised`]); a partial one is an error naming what is missing,
    /// so a half-written directory is never silently completed with a second CA.
    pub fn init(&self, ca_name: &str, hosts: &[String]) -> Result<InitOutcome, Error> {
        let present: Vec<PathBuf> = self.all().into_iter().filter(|p| p.exists()).collect();
        if present.len() == self.all().len() {
            // Refuse to go on with keys others can read, even when nothing is created.
            for key in [
                self.ca_key(),
                self.broker_key(),
                self.https_key(),
                self.master_key(),
            ] {
                check_owner_only(&key)?;
            }
            return Ok(InitOutcome::AlreadyInitialised);
        }
        if !present.is_empty() {
            let missing: Vec<String> = self
                .all()
                .into_iter()
                .filter(|p| !p.exists())
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::invalid(format!(
                "{} is partly initialised ({} missing); refusing to create a second CA over it — \
                 move the directory away or restore the missing files",
                self.data_dir.display(),
                missing.join(", ")
            )));
        }
        if hosts.is_empty() {
            return Err(Error::invalid(
                "at least one host name or address is needed",
            ));
        }
        let mut dns: Vec<&str> = Vec::new();
        let mut ips: Vec<IpAddr> = Vec::new();
        for h in hosts {
            let h = h.trim();
            match h.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) if is_dns_name(h) => dns.push(h),
                Err(_) => {
                    return Err(Error::invalid(format!(
                        "{h:?} is neither an IP address nor a DNS name"
                    )));
                }
            }
        }
        std::fs::create_dir_all(self.dir())
            .map_err(|e| io_error(format!("cannot create {}: {e}", self.dir().display())))?;
        let cert_error = |e: crate::broker::MqttError| io_error(e.to_string());
        let ca = CertificateAuthority::generate(ca_name).map_err(cert_error)?;
        let broker = ca.issue_server(&dns, &ips).map_err(cert_error)?;
        let https = ca.issue_server(&dns, &ips).map_err(cert_error)?;
        // Secrets first: if anything fails later, no certificate exists without its key.
        write_secret_file(&self.ca_key(), &ca.key_pem())?;
        write_secret_file(&self.broker_key(), &broker.key_pem)?;
        write_secret_file(&self.https_key(), &https.key_pem)?;
        write_public(&self.ca_cert(), ca.cert_pem())?;
        write_public(&self.broker_cert(), &broker.cert_pem)?;
        write_public(&self.https_cert(), &https.cert_pem)?;
        MasterKey::create(&self.master_key())?;
        Ok(InitOutcome::Created(self.all().to_vec()))
    }

    /// The stored CA (to sign meter certificates); refuses a CA key others may read.
    pub fn load_ca(&self) -> Result<CertificateAuthority, Error> {
        let cert = read_text(&self.ca_cert())?;
        let key = read_secret(&self.ca_key())?;
        CertificateAuthority::from_pem(&cert, &key)
            .map_err(|e| io_error(format!("CA in {}: {e}", self.dir().display())))
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> Result<String, Error> {
        read_text(&self.ca_cert())
    }

    /// The master key.
    pub fn load_master_key(&self) -> Result<MasterKey, Error> {
        MasterKey::load(&self.master_key())
    }

    /// The broker's TLS config: its certificate, client certificates from the stored CA
    /// required.
    pub fn broker_tls(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        crate::broker::server_config(
            &self.ca_cert_pem()?,
            &read_text(&self.broker_cert())?,
            &read_secret(&self.broker_key())?,
        )
        .map_err(|e| io_error(format!("broker tls from {}: {e}", self.dir().display())))
    }

    /// The HTTPS config from the `pki init` certificate (see [`super::https::server_config`]
    /// for a configured one).
    pub fn https_tls(&self) -> Result<Arc<rustls::ServerConfig>, Error> {
        super::https::server_config_from_files(&self.https_cert(), &self.https_key())
    }
}

fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn write_public(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text)
        .map_err(|e| io_error(format!("cannot write {}: {e}", path.display())))
}

pub(crate) fn read_text(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| io_error(format!("cannot read {}: {e}", path.display())))
}

/// Reads a private key file after checking that only its owner may read it.
pub(crate) fn read_secret(path: &Path) -> Result<String, Error> {
    check_owner_only(path)?;
    read_text(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_creates_everything_once_and_refuses_partial_or_exposed_sets() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("wattline-pki-{}-{nanos}", std::process::id()));
        let files = PkiFiles::new(&dir);
        let hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        assert!(files.init("t", &["bad host!".to_owned()]).is_err());
        match files.init("test ca", &hosts).unwrap() {
            InitOutcome::Created(paths) => assert_eq!(paths.len(), 7),
            other => panic!("{other:?}"),
        }
        let ca_before = std::fs::read_to_string(files.ca_cert()).unwrap();
        assert_eq!(
            files.init("test ca", &hosts).unwrap(),
            InitOutcome::AlreadyInitialised
        );
        assert_eq!(std::fs::read_to_string(files.ca_cert()).unwrap(), ca_before);
        files.load_ca().unwrap();
        files.load_master_key().unwrap();
        files.broker_tls().unwrap();
        files.https_tls().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for key in [
                files.ca_key(),
                files.broker_key(),
                files.https_key(),
                files.master_key(),
            ] {
                let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
            std::fs::set_permissions(files.ca_key(), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            let err = files.load_ca().unwrap_err().to_string();
            assert!(err.contains("owner only"), "{err}");
            assert!(files.init("test ca", &hosts).is_err());
            std::fs::set_permissions(files.ca_key(), std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
        std::fs::remove_file(files.https_key()).unwrap();
        let err = files.init("test ca", &hosts).unwrap_err().to_string();
        assert!(
            err.contains("partly initialised") && err.contains("https.key"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
