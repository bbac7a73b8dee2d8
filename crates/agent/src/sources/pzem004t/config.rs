//! Configuration of the `pzem004t` source.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[source] type = "pzem004t"`: a Peacefair PZEM-004T v3 read over Modbus.
///
/// ```toml
/// [source]
/// type = "pzem004t"
/// transport = { type = "rtu", port = "/dev/ttyUSB0" }
/// # or { type = "tcp", address = "127.0.0.1:502" } or { type = "rtu_over_tcp", address = "…" }
/// address = 1
/// poll_ms = 1000
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pzem004tConfig {
    /// How the device is reached.
    pub transport: Transport,
    /// Modbus slave address (1..=247; the device's factory default is 1, 0xF8 is its
    /// "general address" that any single device on the bus answers).
    #[serde(default = "default_address")]
    pub address: u8,
    /// Interval between readings in milliseconds; the device updates about once a second.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// How long to wait for an answer in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

const fn default_address() -> u8 {
    1
}
const fn default_poll_ms() -> u64 {
    1000
}
const fn default_timeout_ms() -> u64 {
    500
}

/// The Modbus transport.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Transport {
    /// Modbus-RTU on a serial port (the device's native interface: 9600 baud, 8N1).
    Rtu {
        /// Serial device path.
        port: PathBuf,
        /// Baud rate.
        #[serde(default = "default_baud")]
        baud: u32,
    },
    /// Modbus-TCP, through a gateway that translates to RTU on its serial side.
    Tcp {
        /// `host:port` of the gateway.
        address: String,
    },
    /// Modbus-RTU frames carried unchanged over a TCP connection, as transparent serial
    /// device servers (RS-485 to Ethernet converters) do.
    RtuOverTcp {
        /// `host:port` of the serial device server.
        address: String,
    },
}

const fn default_baud() -> u32 {
    9600
}
