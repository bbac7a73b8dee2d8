//! The MQTT side against real brokers: our embedded broker (mutual TLS, ACL, PUBACK after the
//! commit) and the external-broker source on the local Mosquitto and on a TLS Mosquitto the
//! tests start.

mod broker;
mod external;
pub(crate) mod support;
