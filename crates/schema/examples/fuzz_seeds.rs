//! Writes the seed corpus of the `schema_envelope` fuzz target (`fuzz/seeds/schema_envelope/`):
//! sealed `up` and `down` envelopes under the target's key and meter, and the plaintext encodings
//! behind them, so the fuzzer starts from valid wire data instead of finding CBOR and the header
//! layout by chance. Run from the repository root:
//! `cargo run -p schema --example fuzz_seeds` (envelopes carry a fresh random nonce each run).

use schema::{
    Action, Batch, Body, Command, EnergyCounters, Event, EventClass, Heartbeat, MeterId, MeterKey,
    Phase, PhaseReading, Reading, Record, TotalReading, encode_commands, seal_batch, seal_commands,
};

fn reading() -> Reading {
    let phase = |phase| PhaseReading {
        phase,
        v_rms: 230.1,
        i_rms: 4.7,
        p_w: 864.0,
        q_var: Some(648.0),
        s_va: 1080.0,
        pf: 0.8,
        v_thd_pct: Some(1.2),
        i_thd_pct: None,
    };
    Reading {
        interval_s: 60.0,
        freq_hz: 50.0,
        phases: vec![phase(Phase::A), phase(Phase::B), phase(Phase::C)],
        total: TotalReading {
            p_w: 2592.0,
            q_var: Some(1944.0),
            s_va: 3240.0,
            pf: 0.8,
        },
        counters: EnergyCounters {
            import_wh: 123_456.789,
            export_wh: 0.5,
            q1_varh: 1.0,
            q2_varh: 2.0,
            q3_varh: 3.0,
            q4_varh: 4.0,
        },
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The fuzz target's key and meter (fuzz/fuzz_targets/schema_envelope.rs).
    let key = MeterKey::from_bytes([7; 32]);
    let meter = MeterId::parse("fuzz-meter")?;
    let dir = std::path::Path::new("fuzz/seeds/schema_envelope");
    std::fs::create_dir_all(dir)?;
    let batch = Batch {
        meter: meter.clone(),
        boot_id: 1,
        records: vec![
            Record {
                seq: 1,
                t_ms: 1_780_000_000_000,
                body: Body::Reading(reading()),
            },
            Record {
                seq: 2,
                t_ms: 1_780_000_000_500,
                body: Body::Event(Event {
                    class: EventClass::Tamper,
                    code: "magnetic_field".into(),
                    active: Some(true),
                    value: Some(85.0),
                    detail: Some("strong field".into()),
                }),
            },
            Record {
                seq: 3,
                t_ms: 1_780_000_001_000,
                body: Body::Heartbeat(Heartbeat {
                    uptime_s: 3600,
                    outbox_records: 0,
                }),
            },
        ],
    };
    let commands = vec![
        Command {
            id: "c-1".into(),
            issued_ms: 1_780_000_000_000,
            expires_ms: 1_780_000_600_000,
            action: Action::RelayDisconnect,
        },
        Command {
            id: "c-2".into(),
            issued_ms: 1_780_000_000_000,
            expires_ms: 1_780_000_600_000,
            action: Action::LimiterSet {
                threshold_w: 3000.0,
                duration_s: 30.0,
            },
        },
    ];
    let seeds: [(&str, Vec<u8>); 5] = [
        ("up_envelope", seal_batch(&key, &batch)?),
        (
            "down_envelope",
            seal_commands(&key, &meter, 1, 1, &commands)?,
        ),
        ("records_plaintext", batch.encode_records()?),
        ("commands_plaintext", encode_commands(&commands)?),
        ("record_cbor", batch.records[0].to_cbor()?),
    ];
    for (name, bytes) in seeds {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        println!("{}", path.display());
    }
    Ok(())
}
