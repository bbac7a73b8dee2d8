//! A Mosquitto broker started by the test: TLS on a free loopback port, client certificates
//! required, the certificate's common name as the user name, and a per-meter topic ACL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::pki::Pki;

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Writes the config and starts the broker.
    pub fn start(dir: &Path, pki: &Pki, port: u16) -> Broker {
        let server = pki.server();
        let acl = dir.join("acl");
        // Each meter may publish only under its own id and read only its own `down`;
        // `ingest` reads every `up`/`relay`/`status` and writes every `down` (DESIGN §3.3).
        std::fs::write(
            &acl,
            "pattern write wattline/v1/m/%u/up\n\
             pattern write wattline/v1/m/%u/relay\n\
             pattern write wattline/v1/m/%u/status\n\
             pattern read wattline/v1/m/%u/down\n\
             user ingest\n\
             topic read wattline/v1/m/+/up\n\
             topic read wattline/v1/m/+/relay\n\
             topic read wattline/v1/m/+/status\n\
             topic write wattline/v1/m/+/down\n",
        )
        .unwrap();
        let persistence = dir.join("mosquitto-db");
        std::fs::create_dir_all(&persistence).unwrap();
        let conf = dir.join("mosquitto.conf");
        let user = if is_root() { "user root\n" } else { "" };
        std::fs::write(
            &conf,
            format!(
                "{user}per_listener_settings false\n\
                 allow_anonymous false\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 max_queued_messages 100000\n\
                 log_dest stderr\n\
                 log_type error\nlog_type warning\nlog_type notice\n\
                 acl_file {}\n\
                 listener {port} 127.0.0.1\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n\
                 require_certificate true\n\
                 use_identity_as_username true\n",
                persistence.display(),
                acl.display(),
                pki.ca_file.display(),
                server.cert.display(),
                server.key.display(),
            ),
        )
        .unwrap();
        let mut broker = Broker {
            port,
            conf,
            log: dir.join("mosquitto.log"),
            child: None,
        };
        broker.restart();
        broker
    }

    /// (Re)starts the broker process with the same config and port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/mosquitto (Debian package mosquitto)");
        self.child = Some(child);
        let port = self.port;
        super::wait_for("mosquitto to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        // The listener must be this broker, not another test's that took the port meanwhile.
        std::thread::sleep(Duration::from_millis(100));
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        assert!(
            exited.is_none(),
            "mosquitto on port {port} exited ({exited:?}): {}",
            self.log()
        );
    }

    /// Stops the broker with SIGTERM (it saves its persistence file) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
