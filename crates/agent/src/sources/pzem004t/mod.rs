//! The `pzem004t` source: a Peacefair PZEM-004T v3 over Modbus-RTU or Modbus-TCP.

mod config;

pub use config::{Pzem004tConfig, Transport};
