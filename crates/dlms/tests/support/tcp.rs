//! A small std TCP server around the sans-IO [`dlms::Server`] (one thread per connection), and a
//! blocking driver for [`dlms::Client`]. Test and example plumbing only.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dlms::hdlc::{self, HdlcServerLink, LinkEvent};
use dlms::wrapper::{self, StreamDecoder};
use dlms::{Client, Env, Event, MemoryCounterStore, ObjectAccess, Server, ServerConfig};

/// Random bytes for HLS challenges from the std hasher's per-process random keys: adequate for
/// a test server, not for a meter (which uses a CSPRNG).
pub fn fill_random(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(chunk.as_ptr() as usize);
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// How APDUs are framed on the TCP stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// IEC 62056-47 TCP wrapper (port 4059 convention).
    Wrapper,
    /// IEC 62056-46 HDLC carried over TCP, as with a serial-to-TCP converter.
    Hdlc,
}

pub struct TestServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `meter` on a free loopback port.
    pub fn spawn<M: ObjectAccess + Send + 'static>(
        config: ServerConfig,
        meter: Arc<Mutex<M>>,
        counters: Arc<Mutex<MemoryCounterStore>>,
    ) -> TestServer {
        Self::spawn_with(Framing::Wrapper, config, meter, counters)
    }

    pub fn spawn_with<M: ObjectAccess + Send + 'static>(
        framing: Framing,
        config: ServerConfig,
        meter: Arc<Mutex<M>>,
        counters: Arc<Mutex<MemoryCounterStore>>,
    ) -> TestServer {
        Self::spawn_on(("127.0.0.1", 0), framing, config, meter, counters).expect("bind loopback")
    }

    /// Serves on `addr` (port 0: a free port).
    pub fn spawn_on<M: ObjectAccess + Send + 'static>(
        addr: impl std::net::ToSocketAddrs,
        framing: Framing,
        config: ServerConfig,
        meter: Arc<Mutex<M>>,
        counters: Arc<Mutex<MemoryCounterStore>>,
    ) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (config, meter, counters) =
                            (config.clone(), meter.clone(), counters.clone());
                        std::thread::spawn(move || match framing {
                            Framing::Wrapper => serve(stream, config, meter, counters),
                            Framing::Hdlc => serve_hdlc(stream, config, meter, counters),
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(TestServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<M: ObjectAccess>(
    mut stream: TcpStream,
    config: ServerConfig,
    meter: Arc<Mutex<M>>,
    counters: Arc<Mutex<MemoryCounterStore>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut server = Server::new(config);
    let mut decoder = StreamDecoder::new(4096);
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(_) => return, // corrupt stream: close it
            };
            let reply = {
                let mut meter = meter.lock().expect("meter lock");
                let mut counters = counters.lock().expect("counter lock");
                let mut random = fill_random;
                let mut env = Env {
                    objects: &mut *meter,
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
}

fn serve_hdlc<M: ObjectAccess>(
    mut stream: TcpStream,
    config: ServerConfig,
    meter: Arc<Mutex<M>>,
    counters: Arc<Mutex<MemoryCounterStore>>,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut link = HdlcServerLink::new(config.logical_device, 512);
    let mut server = Server::new(config);
    let mut decoder = hdlc::StreamDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                // A corrupt frame is dropped; the client repeats it after its timeout.
                Err(_) => continue,
            };
            let out = match link.receive(&frame) {
                LinkEvent::None => continue,
                LinkEvent::Send(bytes) => Some(bytes),
                LinkEvent::Apdu { client, apdu } => {
                    let reply = {
                        let mut meter = meter.lock().expect("meter lock");
                        let mut counters = counters.lock().expect("counter lock");
                        let mut random = fill_random;
                        let mut env = Env {
                            objects: &mut *meter,
                            counters: &mut *counters,
                            random: &mut random,
                        };
                        server.handle_apdu(client as u16, &apdu, &mut env)
                    };
                    reply.and_then(|r| link.send_apdu(&r).ok())
                }
            };
            if !link.is_connected() {
                server.reset();
            }
            if let Some(bytes) = out
                && stream.write_all(&bytes).is_err()
            {
                return;
            }
        }
    }
}

/// Our client over a TCP wrapper connection.
pub struct ClientConn {
    stream: TcpStream,
    decoder: StreamDecoder,
    pub client: Client,
    pub counters: MemoryCounterStore,
}

impl ClientConn {
    pub fn connect(
        addr: SocketAddr,
        client: Client,
        counters: MemoryCounterStore,
    ) -> std::io::Result<ClientConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(ClientConn {
            stream,
            decoder: StreamDecoder::new(65_535),
            client,
            counters,
        })
    }

    /// Sends raw APDU bytes and returns the raw APDU answered.
    pub fn raw(&mut self, apdu: &[u8]) -> Result<Vec<u8>, String> {
        let cfg = self.client.config().clone();
        let frame = wrapper::frame(cfg.client_sap, cfg.server_logical_device, apdu)
            .map_err(|e| e.to_string())?;
        self.stream.write_all(&frame).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                // DLMS_TRACE=1 prints both directions, for debugging interop failures.
                if std::env::var_os("DLMS_TRACE").is_some() {
                    eprintln!("-> {}\n<- {}", hex(apdu), hex(&f.apdu));
                }
                return Ok(f.apdu);
            }
            let n = self.stream.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends `apdu` and follows `Event::Send` continuations until a final event.
    pub fn exchange(&mut self, mut apdu: Vec<u8>) -> Result<Event, String> {
        loop {
            let reply = self.raw(&apdu)?;
            match self
                .client
                .handle(&reply, &mut self.counters)
                .map_err(|e| e.to_string())?
            {
                Event::Send(next) => apdu = next,
                other => return Ok(other),
            }
        }
    }

    pub fn associate(&mut self) -> Result<Event, String> {
        let aarq = self
            .client
            .associate(&mut self.counters)
            .map_err(|e| e.to_string())?;
        self.exchange(aarq)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// Our client over HDLC carried on a TCP stream (as through a serial-to-TCP converter).
pub struct HdlcClientConn {
    stream: TcpStream,
    decoder: hdlc::StreamDecoder,
    link: hdlc::HdlcClientLink,
    pub client: Client,
    pub counters: MemoryCounterStore,
}

impl HdlcClientConn {
    /// Connects and opens the HDLC link (SNRM/UA) with the given maximum information sizes.
    pub fn connect(
        addr: SocketAddr,
        client: Client,
        counters: MemoryCounterStore,
        max_info: u16,
    ) -> Result<HdlcClientConn, String> {
        let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let cfg = client.config().clone();
        let params = hdlc::LinkParameters {
            max_info_tx: max_info,
            max_info_rx: max_info,
            ..Default::default()
        };
        let server = hdlc::Address::Two {
            upper: cfg.server_logical_device as u8,
            lower: 0x11,
        };
        let link = hdlc::HdlcClientLink::new(cfg.client_sap as u8, server, params);
        let mut conn = HdlcClientConn {
            stream,
            decoder: hdlc::StreamDecoder::new(),
            link,
            client,
            counters,
        };
        let snrm = conn.link.snrm().map_err(|e| e.to_string())?;
        match conn.link_exchange(snrm)? {
            hdlc::ClientLinkEvent::Connected(_) => Ok(conn),
            other => Err(format!("snrm answered with {other:?}")),
        }
    }

    fn next_event(&mut self) -> Result<hdlc::ClientLinkEvent, String> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(|e| e.to_string())? {
                return self.link.receive(&frame).map_err(|e| e.to_string());
            }
            let n = self.stream.read(&mut buf).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.decoder.push(&buf[..n]);
        }
    }

    /// Sends a frame and runs the link until it yields something other than a link-level Send.
    fn link_exchange(&mut self, mut frame: Vec<u8>) -> Result<hdlc::ClientLinkEvent, String> {
        loop {
            self.stream.write_all(&frame).map_err(|e| e.to_string())?;
            loop {
                match self.next_event()? {
                    hdlc::ClientLinkEvent::Send(next) => {
                        frame = next;
                        break;
                    }
                    hdlc::ClientLinkEvent::None => continue,
                    other => return Ok(other),
                }
            }
        }
    }

    /// Sends `apdu` and follows `Event::Send` continuations until a final event.
    pub fn exchange(&mut self, mut apdu: Vec<u8>) -> Result<Event, String> {
        loop {
            let first = self.link.send_apdu(&apdu).map_err(|e| e.to_string())?;
            let reply = match self.link_exchange(first)? {
                hdlc::ClientLinkEvent::Apdu(a) => a,
                other => return Err(format!("expected an apdu, got {other:?}")),
            };
            match self
                .client
                .handle(&reply, &mut self.counters)
                .map_err(|e| e.to_string())?
            {
                Event::Send(next) => apdu = next,
                other => return Ok(other),
            }
        }
    }

    pub fn associate(&mut self) -> Result<Event, String> {
        let aarq = self
            .client
            .associate(&mut self.counters)
            .map_err(|e| e.to_string())?;
        self.exchange(aarq)
    }

    /// Releases the association and closes the link.
    pub fn close(&mut self) -> Result<(), String> {
        let rlrq = self.client.release().map_err(|e| e.to_string())?;
        self.exchange(rlrq)?;
        let disc = self.link.disc().map_err(|e| e.to_string())?;
        match self.link_exchange(disc)? {
            hdlc::ClientLinkEvent::Disconnected => Ok(()),
            other => Err(format!("disc answered with {other:?}")),
        }
    }
}
