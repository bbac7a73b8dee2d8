//! The COSEM server's transport (IEC 62056-47 TCP wrapper) and the load profile capture task.
//!
//! Each connection runs the sans-IO [`dlms::Server`] on its own OS thread: an object access may
//! wait for the pipeline (a relay operation), which must not block the async runtime. The
//! accept loop and the capture task are tokio tasks that end with the agent's shutdown signal.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dlms::wrapper::StreamDecoder;
use dlms::{Env, Server, ServerConfig};
use tokio::sync::{mpsc, watch};

use super::{AgentObjects, CosemConfig, CosemRequest, CosemShared, FileCounterStore, ProfileRow};

/// A connection with no request for this long is closed (a head-end that vanished).
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often a connection thread looks at the shutdown flag while waiting for bytes.
const POLL: Duration = Duration::from_millis(500);

/// The running COSEM server.
#[derive(Debug)]
pub struct CosemServer {
    /// Where it listens (the configured address, with the actual port when 0 was asked).
    pub addr: SocketAddr,
}

/// Binds the listener and starts the accept loop and the load profile capture task.
pub async fn start(
    config: &CosemConfig,
    data_dir: &Path,
    shared: Arc<CosemShared>,
    requests: mpsc::Sender<CosemRequest>,
    shutdown: watch::Receiver<bool>,
) -> Result<CosemServer, String> {
    let server_config = config.server_config()?;
    let counters =
        FileCounterStore::open(&data_dir.join("cosem").join("invocation_counters.json"))?;
    let counters = Arc::new(Mutex::new(counters));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("COSEM server cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("COSEM listener address: {e}"))?;
    tracing::info!(%addr, "COSEM server (TCP wrapper) listening");
    let stop = Arc::new(AtomicBool::new(false));
    let objects = AgentObjects::new(shared.clone(), requests, config.capture_period_s);
    tokio::spawn(accept_loop(
        listener,
        server_config,
        objects,
        counters,
        stop,
        shutdown.clone(),
    ));
    tokio::spawn(capture_loop(shared, config.capture_period_s, shutdown));
    Ok(CosemServer { addr })
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    objects: AgentObjects,
    counters: Arc<Mutex<FileCounterStore>>,
    stop: Arc<AtomicBool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let stream = match stream.into_std().and_then(|s| s.set_nonblocking(false).map(|_| s)) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(%peer, error = %e, "COSEM connection setup failed");
                            continue;
                        }
                    };
                    tracing::debug!(%peer, "COSEM connection");
                    let (config, objects, counters, stop) =
                        (config.clone(), objects.clone(), counters.clone(), stop.clone());
                    let spawned = std::thread::Builder::new()
                        .name("cosem-conn".into())
                        .spawn(move || serve(stream, peer, config, objects, counters, stop));
                    if let Err(e) = spawned {
                        tracing::warn!(%peer, error = %e, "cannot start a COSEM connection thread");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "COSEM accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
}

/// Unpredictable bytes for HLS challenges from the ring CSPRNG rustls already links.
fn fill_random(buf: &mut [u8]) {
    let rng = rustls::crypto::ring::default_provider().secure_random;
    if rng.fill(buf).is_err() {
        // Fall back to the kernel directly; a failing OS RNG is logged loudly.
        let ok = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(buf));
        if ok.is_err() {
            tracing::error!("no random source for the HLS challenge");
        }
    }
}

fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    config: ServerConfig,
    mut objects: AgentObjects,
    counters: Arc<Mutex<FileCounterStore>>,
    stop: Arc<AtomicBool>,
) {
    if stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut server = Server::new(config);
    let mut decoder = StreamDecoder::new(4096);
    let mut buf = [0u8; 4096];
    let mut last_activity = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last_activity.elapsed() > IDLE_TIMEOUT {
                    tracing::debug!(%peer, "COSEM connection idle; closed");
                    break;
                }
                continue;
            }
            Err(_) => break,
        };
        last_activity = Instant::now();
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "COSEM: corrupt TCP wrapper stream; connection closed");
                    return;
                }
            };
            let reply = {
                let mut counters = counters.lock().unwrap_or_else(|e| e.into_inner());
                let mut random = fill_random;
                let mut env = Env {
                    objects: &mut objects,
                    counters: &mut *counters,
                    random: &mut random,
                };
                server.handle_wrapper_frame(&frame, &mut env)
            };
            if let Some(bytes) = reply
                && stream.write_all(&bytes).is_err()
            {
                return;
            }
        }
    }
    let stats = server.stats();
    if stats.authentication_failures > 0 || stats.replays_rejected > 0 {
        tracing::warn!(%peer, ?stats, "COSEM connection closed with refusals");
    }
}

/// Captures the load profile at each multiple of the capture period of the meter clock.
async fn capture_loop(
    shared: Arc<CosemShared>,
    period_s: u32,
    mut shutdown: watch::Receiver<bool>,
) {
    let period_ms = i64::from(period_s.max(1)) * 1000;
    loop {
        let offset = shared.lock_live().clock_offset_ms;
        let now_ms = crate::pipeline::unix_now_ms() + offset;
        let next = (now_ms.div_euclid(period_ms) + 1) * period_ms;
        let wait = Duration::from_millis((next - now_ms).max(0) as u64);
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let counters = shared.lock_live().counters;
        let row = ProfileRow {
            unix_s: next / 1000,
            counters,
        };
        let result = shared.lock_profile().capture(row);
        if let Err(e) = result {
            tracing::error!(error = %e, "load profile capture not persisted");
        }
    }
}
