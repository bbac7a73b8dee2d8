//! The `pzem004t` source against real Modbus servers speaking the PZEM-004T v3 register map:
//! tokio-modbus servers on loopback (Modbus-TCP and RTU over TCP) and on a pseudo-terminal pair
//! made by `socat` (Modbus-RTU on a serial port, as the device is wired in seed 003).

use std::future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent::sources::pzem004t::{Pzem004tConfig, Pzem004tSource, PzemReading, Transport};
use agent::sources::{Source, SourceOutput};
use tokio::net::TcpListener;
use tokio_modbus::prelude::*;
use tokio_modbus::server::Service;

/// A PZEM-004T as a Modbus service: answers its own address (and the general address 0xF8),
/// stays silent for others like a device on a shared RS-485 bus, and raises Modbus exceptions
/// for registers or functions it does not have.
#[derive(Clone)]
struct PzemDevice {
    address: u8,
    input: Arc<Mutex<[u16; 10]>>,
    alarm_threshold_w: u16,
}

impl PzemDevice {
    fn new(address: u8, reading: PzemReading) -> PzemDevice {
        PzemDevice {
            address,
            input: Arc::new(Mutex::new(reading.encode())),
            alarm_threshold_w: 2300,
        }
    }
}

impl Service for PzemDevice {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        if req.slave != self.address && req.slave != 0xF8 {
            return future::ready(Ok(None));
        }
        let answer = match req.request {
            Request::ReadInputRegisters(addr, count) => {
                let regs = *self.input.lock().unwrap();
                let (a, n) = (usize::from(addr), usize::from(count));
                if n == 0 || a + n > regs.len() {
                    Err(ExceptionCode::IllegalDataAddress)
                } else {
                    Ok(Some(Response::ReadInputRegisters(regs[a..a + n].to_vec())))
                }
            }
            Request::ReadHoldingRegisters(1, 2) => Ok(Some(Response::ReadHoldingRegisters(vec![
                self.alarm_threshold_w,
                u16::from(self.address),
            ]))),
            Request::ReadHoldingRegisters(..) => Err(ExceptionCode::IllegalDataAddress),
            _ => Err(ExceptionCode::IllegalFunction),
        };
        future::ready(answer)
    }
}

fn reading() -> PzemReading {
    PzemReading {
        voltage_v: 229.7,
        current_a: 4.696,
        power_w: 864.3,
        energy_wh: 70_123,
        frequency_hz: 50.1,
        power_factor: 0.8,
        alarm: false,
    }
}

async fn serve_tcp(device: PzemDevice) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio_modbus::server::tcp::Server::new(listener);
    let task = tokio::spawn(async move {
        let new_service = move |_addr| Ok(Some(device.clone()));
        let on_connected = |stream, addr| {
            let new_service = new_service.clone();
            async move { tokio_modbus::server::tcp::accept_tcp_connection(stream, addr, new_service) }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    (addr, task)
}

async fn serve_rtu_over_tcp(device: PzemDevice) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    let task = tokio::spawn(async move {
        let new_service = move |_addr| Ok(Some(device.clone()));
        let on_connected = |stream, addr| {
            let new_service = new_service.clone();
            async move {
                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, addr, new_service)
            }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    (addr, task)
}

fn config(transport: Transport, address: u8) -> Pzem004tConfig {
    Pzem004tConfig {
        transport,
        address,
        poll_ms: 100,
        timeout_ms: 300,
    }
}

fn assert_reading(out: Option<SourceOutput>) {
    let Some(SourceOutput::Measured(m)) = out else {
        panic!("expected a measurement, got {out:?}")
    };
    let p = m.phases[0];
    assert!((p.v_rms - 229.7).abs() < 1e-9, "{p:?}");
    assert!((p.i_rms - 4.696).abs() < 1e-9);
    assert!((p.p_w - 864.3).abs() < 1e-9);
    assert_eq!(p.pf, Some(0.8));
    assert_eq!(m.freq_hz, Some(50.1));
    assert_eq!(m.device_import_wh, Some(70_123.0));
    assert_eq!(m.alarm, Some(false));
}

#[tokio::test]
async fn reads_the_register_map_over_modbus_tcp_and_follows_changes() {
    let device = PzemDevice::new(1, reading());
    let (addr, server) = serve_tcp(device.clone()).await;
    let mut source = Pzem004tSource::new(config(
        Transport::Tcp {
            address: addr.to_string(),
        },
        1,
    ))
    .unwrap();
    assert_reading(source.next().await.unwrap());

    // The device's values change between polls; the energy counter grows.
    let mut changed = reading();
    changed.energy_wh = 70_200;
    changed.alarm = true;
    *device.input.lock().unwrap() = changed.encode();
    let started = std::time::Instant::now();
    let Some(SourceOutput::Measured(m)) = source.next().await.unwrap() else {
        panic!()
    };
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "polls are paced by poll_ms"
    );
    assert_eq!(m.device_import_wh, Some(70_200.0));
    assert_eq!(m.alarm, Some(true));
    assert!((m.t_s - 0.1).abs() < 0.05, "source time {}", m.t_s);
    server.abort();
}

#[tokio::test]
async fn reads_the_register_map_as_rtu_frames_over_tcp() {
    let (addr, server) = serve_rtu_over_tcp(PzemDevice::new(7, reading())).await;
    let mut source = Pzem004tSource::new(config(
        Transport::RtuOverTcp {
            address: addr.to_string(),
        },
        7,
    ))
    .unwrap();
    assert_reading(source.next().await.unwrap());
    assert_reading(source.next().await.unwrap());
    server.abort();
}

#[tokio::test]
async fn a_silent_address_a_bad_answer_and_a_dead_server_are_errors_and_the_source_recovers() {
    let device = PzemDevice::new(1, reading());
    let (addr, server) = serve_rtu_over_tcp(device.clone()).await;

    // Nobody answers address 2 on the bus: a timeout naming the address.
    let mut wrong = Pzem004tSource::new(config(
        Transport::RtuOverTcp {
            address: addr.to_string(),
        },
        2,
    ))
    .unwrap();
    let err = wrong.next().await.unwrap_err().to_string();
    assert!(
        err.contains("address 2 did not answer within 300 ms"),
        "{err}"
    );

    // A register image the device cannot produce is rejected, then the next poll succeeds.
    let mut source = Pzem004tSource::new(config(
        Transport::RtuOverTcp {
            address: addr.to_string(),
        },
        1,
    ))
    .unwrap();
    device.input.lock().unwrap()[9] = 0x0101;
    let err = source.next().await.unwrap_err().to_string();
    assert!(err.contains("alarm register 0x0009 is 0x0101"), "{err}");
    *device.input.lock().unwrap() = reading().encode();
    assert_reading(source.next().await.unwrap());

    // The server goes away: an error, not a hang; it comes back on the same port: recovered.
    server.abort();
    let _ = server.await;
    let err = source.next().await.unwrap_err().to_string();
    assert!(
        err.contains("pzem004t") || err.contains("rtu-over-tcp"),
        "{err}"
    );
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
    let again = tokio::spawn(async move {
        let new_service = move |_addr| Ok(Some(device.clone()));
        let on_connected = |stream, addr| {
            let new_service = new_service.clone();
            async move {
                tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(stream, addr, new_service)
            }
        };
        let _ = server.serve(&on_connected, |_err| {}).await;
    });
    let mut recovered = false;
    for _ in 0..5 {
        if let Ok(out) = source.next().await {
            assert_reading(out);
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the source reconnects after the server restarts");
    again.abort();
}

#[test]
fn bad_configs_are_rejected_with_the_field_named() {
    let tcp = |a: &str| Transport::Tcp {
        address: a.to_string(),
    };
    let err = Pzem004tSource::new(config(tcp("127.0.0.1:502"), 0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("pzem004t.address"), "{err}");
    let err = Pzem004tSource::new(config(tcp("localhost"), 1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"localhost\" is not an ip:port"), "{err}");
    let mut c = config(tcp("127.0.0.1:502"), 1);
    c.poll_ms = 10;
    assert!(
        Pzem004tSource::new(c)
            .unwrap_err()
            .to_string()
            .contains("poll_ms")
    );
    let parsed: Result<Pzem004tConfig, _> =
        toml::from_str("transport = { type = \"rtu\", port = \"/dev/ttyUSB0\" }\nbaud = 9600\n");
    assert!(
        parsed
            .unwrap_err()
            .to_string()
            .contains("unknown field `baud`")
    );
}

/// A pseudo-terminal pair from `socat`, killed on drop.
struct PtyPair {
    child: Child,
    dir: PathBuf,
}

impl PtyPair {
    fn new() -> PtyPair {
        let dir = std::env::temp_dir().join(format!("wattline-pzem-pty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("meter"), dir.join("agent"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "this test needs `socat` (Debian package socat) to make a pseudo-terminal pair",
            );
        for _ in 0..100 {
            if a.exists() && b.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            a.exists() && b.exists(),
            "socat did not create the pty pair"
        );
        PtyPair { child, dir }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn reads_the_register_map_over_modbus_rtu_on_a_serial_port() {
    let pty = PtyPair::new();
    let server =
        tokio_modbus::server::rtu::Server::new_from_path(pty.dir.join("meter"), 9600).unwrap();
    let task = tokio::spawn(server.serve_forever(PzemDevice::new(1, reading())));
    let mut source = Pzem004tSource::new(Pzem004tConfig {
        transport: Transport::Rtu {
            port: pty.dir.join("agent"),
            baud: 9600,
        },
        address: 1,
        poll_ms: 100,
        timeout_ms: 1000,
    })
    .unwrap();
    assert_reading(source.next().await.unwrap());
    assert_reading(source.next().await.unwrap());
    task.abort();
}
