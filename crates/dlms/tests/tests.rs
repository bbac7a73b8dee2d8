//! Integration tests of the `dlms` crate: our client against our server over real TCP, the
//! Gurux DLMS library (Python, PyPI `gurux-dlms`) against our server and our client against a
//! Gurux server, and property tests of the codecs.

mod interop;
mod loopback;
mod properties;
mod support;
