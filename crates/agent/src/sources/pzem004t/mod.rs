//! The `pzem004t` source: a Peacefair PZEM-004T v3 over Modbus-RTU or Modbus-TCP.
//!
//! The source polls the ten measurement registers ([`registers`]) every `poll_ms` and yields
//! them as a [`DeviceMeasurement`](crate::sources::DeviceMeasurement): the PZEM computes RMS
//! values, power and energy itself, so no waveform goes through metrology. A failed poll is
//! returned as an error and the connection is reopened at the next poll, so a loose RS-485
//! wire or a rebooting gateway costs readings, never the agent.

mod config;
pub mod registers;

pub use config::{Pzem004tConfig, Transport};
pub use registers::PzemReading;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::Slave;

use super::{Error, NextOutput, Source, SourceOutput};

/// The PZEM-004T as a [`Source`].
pub struct Pzem004tSource {
    config: Pzem004tConfig,
    ctx: Option<Context>,
    started: Option<Instant>,
    next_poll: Option<Instant>,
}

impl Pzem004tSource {
    /// Check the configuration; the connection is opened at the first poll.
    pub fn new(config: Pzem004tConfig) -> Result<Pzem004tSource, Error> {
        if !(1..=247).contains(&config.address) && config.address != registers::GENERAL_ADDRESS {
            return Err(Error::config(format!(
                "pzem004t.address must be 1..=247 or 248 (the general address), got {}",
                config.address
            )));
        }
        if config.poll_ms < 100 {
            return Err(Error::config(format!(
                "pzem004t.poll_ms must be at least 100 (the device updates about once a second), got {}",
                config.poll_ms
            )));
        }
        if config.timeout_ms == 0 {
            return Err(Error::config("pzem004t.timeout_ms must be positive"));
        }
        match &config.transport {
            Transport::Tcp { address } | Transport::RtuOverTcp { address } => {
                parse_address(address)?;
            }
            Transport::Rtu { baud, .. } if *baud == 0 => {
                return Err(Error::config("pzem004t.transport.baud must be positive"));
            }
            Transport::Rtu { .. } => {}
        }
        Ok(Pzem004tSource {
            config,
            ctx: None,
            started: None,
            next_poll: None,
        })
    }
}

impl std::fmt::Debug for Pzem004tSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pzem004tSource")
            .field("config", &self.config)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

async fn connect(config: &Pzem004tConfig) -> Result<Context, Error> {
    let slave = Slave(config.address);
    match &config.transport {
        Transport::Rtu { port, baud } => {
            let builder = tokio_serial::new(port.to_string_lossy(), *baud)
                .data_bits(tokio_serial::DataBits::Eight)
                .parity(tokio_serial::Parity::None)
                .stop_bits(tokio_serial::StopBits::One);
            let stream = tokio_serial::SerialStream::open(&builder).map_err(|e| {
                Error::device(format!("cannot open serial port {}: {e}", port.display()))
            })?;
            Ok(tokio_modbus::client::rtu::attach_slave(stream, slave))
        }
        Transport::Tcp { address } => {
            let addr = parse_address(address)?;
            tokio_modbus::client::tcp::connect_slave(addr, slave)
                .await
                .map_err(|e| Error::io(format!("cannot connect to modbus-tcp {address}"), e))
        }
        Transport::RtuOverTcp { address } => {
            let addr = parse_address(address)?;
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| Error::io(format!("cannot connect to rtu-over-tcp {address}"), e))?;
            Ok(tokio_modbus::client::rtu::attach_slave(stream, slave))
        }
    }
}

impl Pzem004tSource {
    /// One poll: connect if needed, read the measurement block, decode it.
    pub async fn read(&mut self) -> Result<PzemReading, Error> {
        let timeout = Duration::from_millis(self.config.timeout_ms);
        if self.ctx.is_none() {
            let ctx = tokio::time::timeout(timeout, connect(&self.config))
                .await
                .map_err(|_| {
                    Error::device(format!(
                        "pzem004t: no connection within {} ms",
                        self.config.timeout_ms
                    ))
                })??;
            self.ctx = Some(ctx);
        }
        let ctx = self
            .ctx
            .as_mut()
            .ok_or_else(|| Error::device("pzem004t: not connected"))?;
        let answer = tokio::time::timeout(
            timeout,
            ctx.read_input_registers(registers::MEASUREMENT_START, registers::MEASUREMENT_COUNT),
        )
        .await;
        let result = match answer {
            Err(_) => Err(Error::device(format!(
                "pzem004t at address {} did not answer within {} ms",
                self.config.address, self.config.timeout_ms
            ))),
            Ok(Err(e)) => Err(Error::device(format!("pzem004t read failed: {e}"))),
            Ok(Ok(Err(exception))) => Err(Error::device(format!(
                "pzem004t answered with exception {exception}"
            ))),
            Ok(Ok(Ok(regs))) => PzemReading::decode(&regs),
        };
        if result.is_err() {
            // Start from a clean connection: a half-read RTU frame would desynchronise the
            // next answer.
            self.ctx = None;
        }
        result
    }
}

fn parse_address(address: &str) -> Result<SocketAddr, Error> {
    address.parse().map_err(|_| {
        Error::config(format!(
            "pzem004t.transport.address {address:?} is not an ip:port address"
        ))
    })
}

impl Source for Pzem004tSource {
    fn name(&self) -> &'static str {
        "pzem004t"
    }

    fn next(&mut self) -> NextOutput<'_> {
        Box::pin(async move {
            let now = Instant::now();
            let started = *self.started.get_or_insert(now);
            let due = *self.next_poll.get_or_insert(now);
            tokio::time::sleep_until(due).await;
            // Schedule from the plan, not from when the read finished, so polls do not drift;
            // after a long stall, skip the missed slots instead of bursting.
            let period = Duration::from_millis(self.config.poll_ms);
            let mut next = due + period;
            let now = Instant::now();
            while next <= now {
                next += period;
            }
            self.next_poll = Some(next);
            let t_s = (due - started).as_secs_f64();
            let reading = self.read().await?;
            Ok(Some(SourceOutput::Measured(reading.to_measurement(t_s))))
        })
    }
}
