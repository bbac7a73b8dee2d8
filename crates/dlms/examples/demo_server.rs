//! A demo COSEM meter on 127.0.0.1:4059 (TCP wrapper) — point any DLMS client at it.
//!
//! ```text
//! cargo run -p dlms --example demo_server [PORT] [--hdlc]
//! ```
//! Associations (wattline convention): client SAP 16 public (no authentication), SAP 17
//! reader with LLS password `demo-lls`, SAP 1 management with HLS-GMAC + suite 0 using the
//! Green Book example keys (EK 000102…0F, AK D0D1…DF), client system title 4D4D4D0000000001,
//! server system title 4D4D4D0000BC614E. Demo credentials only: real meters get per-meter keys.

// The demo meter and TCP glue are shared with the integration tests; the example uses part.
#[allow(dead_code)]
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};

use dlms::{Keys, MemoryCounterStore, ServerConfig};
use support::demo_meter::{DemoMeter, now_unix};
use support::tcp::{Framing, TestServer};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let port: u16 = args
        .iter()
        .find_map(|a| a.parse().ok())
        .unwrap_or(dlms::wrapper::PORT);
    let framing = if args.iter().any(|a| a == "--hdlc") {
        Framing::Hdlc
    } else {
        Framing::Wrapper
    };
    let config = ServerConfig::wattline(
        [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0xBC, 0x61, 0x4E],
        b"demo-lls",
        Keys::GREEN_BOOK_EXAMPLE,
        [0x4D, 0x4D, 0x4D, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    let meter = Arc::new(Mutex::new(DemoMeter::new(now_unix(), 1500.0)));
    let counters = Arc::new(Mutex::new(MemoryCounterStore::new(1)));
    let server = match TestServer::spawn_on(("127.0.0.1", port), framing, config, meter, counters) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "demo COSEM meter on {} ({framing:?}); Ctrl-C to stop",
        server.addr
    );
    loop {
        std::thread::park();
    }
}
