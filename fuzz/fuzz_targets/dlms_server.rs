//! Fuzz target: the COSEM server state machine, fed a sequence of arbitrary APDUs from
//! arbitrary client SAPs, must always answer or stay silent, never panic.
#![no_main]

use dlms::apdu::{AttributeDescriptor, DataAccessResult, MethodDescriptor, SelectiveAccess};
use dlms::{AccessContext, Data, Env, Keys, MemoryCounterStore, ObjectAccess, ObjectInfo, Server, ServerConfig};
use libfuzzer_sys::fuzz_target;

struct Meter;

impl ObjectAccess for Meter {
    fn objects(&self) -> Vec<ObjectInfo> {
        vec![ObjectInfo {
            class_id: 3,
            version: 0,
            logical_name: dlms::Obis::new(1, 0, 1, 8, 0, 255),
            attribute_count: 3,
            writable_attributes: 1 << 2,
            method_count: 1,
            public: true,
        }]
    }
    fn get(&mut self, _: &AccessContext, _: &AttributeDescriptor, _: Option<&SelectiveAccess>) -> Result<Data, DataAccessResult> {
        Ok(Data::OctetString(vec![7; 3000]))
    }
    fn set(&mut self, _: &AccessContext, _: &AttributeDescriptor, _: Option<&SelectiveAccess>, _: &Data) -> Result<(), DataAccessResult> {
        Ok(())
    }
    fn action(&mut self, _: &AccessContext, _: &MethodDescriptor, p: Option<&Data>) -> Result<Option<Data>, DataAccessResult> {
        Ok(p.cloned())
    }
}

fuzz_target!(|data: &[u8]| {
    let config = ServerConfig::wattline([0x4D; 8], b"demo-lls", Keys::GREEN_BOOK_EXAMPLE, [0x4D, 0x4D, 0x4D, 0, 0, 0, 0, 1]);
    let mut server = Server::new(config);
    let mut counters = MemoryCounterStore::new(1);
    let mut meter = Meter;
    let mut random = |b: &mut [u8]| b.fill(0x5A);
    // Records: [sap, len, bytes...].
    let mut rest = data;
    while let [sap, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (apdu, next) = tail.split_at(n);
        let mut env = Env { objects: &mut meter, counters: &mut counters, random: &mut random };
        let _ = server.handle_apdu(u16::from(*sap % 20), apdu, &mut env);
        rest = next;
    }
});
