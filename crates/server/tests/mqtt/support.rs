//! Helpers of the MQTT tests: a throwaway PKI, meter clients over TLS, an embedded broker with a
//! collecting consumer, and a TLS Mosquitto on a free loopback port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, EventLoop, MqttOptions, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use server::broker::{self, BrokerConfig, BrokerHandle};
use server::pki::{CertificateAuthority, IssuedCert};
use server::source::Delivery;
use tokio::sync::mpsc;

pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The CA, the broker certificate, and a helper to issue meter certificates.
pub struct TestPki {
    pub ca: CertificateAuthority,
    pub broker: IssuedCert,
}

impl TestPki {
    pub fn new(name: &str) -> Self {
        let ca = CertificateAuthority::generate(name).unwrap();
        let broker = ca
            .issue_server(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .unwrap();
        Self { ca, broker }
    }

    pub fn client(&self, name: &str) -> IssuedCert {
        self.ca.issue_client(name).unwrap()
    }
}

/// A rustls client config trusting `ca_pem`, presenting `identity` when given.
pub fn client_tls(ca_pem: &str, identity: Option<&IssuedCert>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    })
}

/// An MQTT client over TLS to 127.0.0.1:`port`.
pub fn mqtt_client(
    client_id: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    tweak: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, EventLoop) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    if let Some(tls) = tls {
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    tweak(&mut opts);
    AsyncClient::new(opts, 1024)
}

/// The embedded broker on a free port with TLS from `pki`, and the channel ingest would read.
pub async fn embedded(pki: &TestPki) -> (BrokerHandle, mpsc::Receiver<Delivery>) {
    install_ring();
    let tls = broker::server_config(pki.ca.cert_pem(), &pki.broker.cert_pem, &pki.broker.key_pem)
        .unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let config = BrokerConfig::tls(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), tls);
    (broker::start(config, tx).await.unwrap(), rx)
}

/// Polls `cond` until it holds or `timeout` passes.
pub async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            server::now_ms()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Mosquitto 2 with TLS on a free loopback port: client certificates required, the
/// certificate name as user name, meters confined to their own topics, `ingest` reading all.
pub struct TlsMosquitto {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl TlsMosquitto {
    pub fn start(dir: &Path, pki: &TestPki) -> Self {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = write("ca.pem", pki.ca.cert_pem());
        let cert = write("broker.pem", &pki.broker.cert_pem);
        let key = write("broker.key", &pki.broker.key_pem);
        let acl = write(
            "acl",
            "pattern write wattline/v1/m/%u/up\n\
             pattern write wattline/v1/m/%u/relay\n\
             pattern write wattline/v1/m/%u/status\n\
             pattern read wattline/v1/m/%u/down\n\
             user ingest\n\
             topic read wattline/v1/m/+/up\n\
             topic read wattline/v1/m/+/relay\n\
             topic read wattline/v1/m/+/status\n\
             topic write wattline/v1/m/+/down\n",
        );
        let port = free_port();
        let user = if is_root() { "user root\n" } else { "" };
        let conf = write(
            "mosquitto.conf",
            &format!(
                "{user}per_listener_settings false\nallow_anonymous false\npersistence false\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 acl_file {}\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\nuse_identity_as_username true\n",
                acl.display(),
                ca.display(),
                cert.display(),
                key.display()
            ),
        );
        let log = dir.join("mosquitto.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("/usr/sbin/mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start /usr/sbin/mosquitto (Debian package mosquitto)");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { port, child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TlsMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// What a test client's event loop saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub connacks: usize,
    pub pubacks: usize,
    pub subacks: Vec<Vec<rumqttc::SubscribeReasonCode>>,
    pub publishes: Vec<(String, bytes::Bytes)>,
    /// The first connection error (the client stops there).
    pub error: Option<String>,
}

/// Drives `eventloop` in a task until its first error; returns what it saw so far, live.
pub fn drive(mut eventloop: EventLoop) -> Arc<std::sync::Mutex<Seen>> {
    use rumqttc::{Event, Packet};
    let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let ev = eventloop.poll().await;
            let mut seen = s.lock().unwrap();
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => seen.connacks += 1,
                Ok(Event::Incoming(Packet::PubAck(_))) => seen.pubacks += 1,
                Ok(Event::Incoming(Packet::SubAck(a))) => seen.subacks.push(a.return_codes),
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    seen.publishes.push((p.topic, p.payload))
                }
                Ok(_) => {}
                Err(e) => {
                    seen.error = Some(e.to_string());
                    return;
                }
            }
        }
    });
    seen
}
