//! Property tests: `parse(emit(x)) == x` for A-XDR values and APDUs, and no panics on noise.

use dlms::apdu::{
    AttributeDescriptor, DataAccessResult, GetDataResult, GetRequest, GetResponse, InvokeId,
    SelectiveAccess, SetRequest,
};
use dlms::axdr::BitString;
use dlms::{Apdu, Data, DateTime, Obis};
use proptest::prelude::*;

fn leaf() -> impl Strategy<Value = Data> {
    prop_oneof![
        Just(Data::Null),
        any::<bool>().prop_map(Data::Boolean),
        any::<i32>().prop_map(Data::DoubleLong),
        any::<u32>().prop_map(Data::DoubleLongUnsigned),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Data::OctetString),
        proptest::collection::vec(0x20u8..0x7f, 0..20).prop_map(Data::VisibleString),
        "[a-zäöü]{0,12}".prop_map(Data::Utf8String),
        any::<i8>().prop_map(Data::Integer),
        any::<i16>().prop_map(Data::Long),
        any::<u8>().prop_map(Data::Unsigned),
        any::<u16>().prop_map(Data::LongUnsigned),
        any::<i64>().prop_map(Data::Long64),
        any::<u64>().prop_map(Data::Long64Unsigned),
        any::<u8>().prop_map(Data::Enum),
        (-1e30f32..1e30).prop_map(Data::Float32),
        (-1e300f64..1e300).prop_map(Data::Float64),
        (0i64..4_000_000_000, -720i16..720).prop_map(|(t, o)| Data::DateTime(DateTime::from_unix(
            t,
            o,
            dlms::DeviationConvention::UtcMinusLocal
        ))),
        (0usize..40).prop_flat_map(
            |bits| proptest::collection::vec(any::<u8>(), bits.div_ceil(8))
                .prop_map(move |b| Data::BitString(BitString::new(bits, &b).unwrap()))
        ),
    ]
}

fn data() -> impl Strategy<Value = Data> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Data::Array),
            proptest::collection::vec(inner, 0..8).prop_map(Data::Structure),
        ]
    })
}

fn attribute() -> impl Strategy<Value = AttributeDescriptor> {
    (any::<u16>(), any::<[u8; 6]>(), any::<i8>()).prop_map(|(c, o, a)| AttributeDescriptor {
        class_id: c,
        instance: Obis(o),
        attribute_id: a,
    })
}

fn apdu() -> impl Strategy<Value = Apdu> {
    prop_oneof![
        (
            any::<u8>(),
            attribute(),
            proptest::option::of((any::<u8>(), data()))
        )
            .prop_map(|(i, a, s)| Apdu::GetRequest(GetRequest::Normal {
                invoke_id: InvokeId(i),
                attribute: a,
                access: s.map(|(selector, parameters)| SelectiveAccess {
                    selector,
                    parameters
                }),
            })),
        (any::<u8>(), any::<u32>()).prop_map(|(i, b)| Apdu::GetRequest(GetRequest::Next {
            invoke_id: InvokeId(i),
            block_number: b
        })),
        (any::<u8>(), data()).prop_map(|(i, d)| Apdu::GetResponse(GetResponse::Normal {
            invoke_id: InvokeId(i),
            result: GetDataResult::Data(d)
        })),
        (any::<u8>(), any::<u8>()).prop_map(|(i, e)| Apdu::GetResponse(GetResponse::Normal {
            invoke_id: InvokeId(i),
            result: GetDataResult::Error(DataAccessResult::from(e)),
        })),
        (
            any::<u8>(),
            any::<bool>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..400)
        )
            .prop_map(|(i, l, b, r)| {
                Apdu::GetResponse(GetResponse::WithDataBlock {
                    invoke_id: InvokeId(i),
                    last_block: l,
                    block_number: b,
                    raw: Ok(r),
                })
            }),
        (any::<u8>(), attribute(), data()).prop_map(|(i, a, v)| Apdu::SetRequest(
            SetRequest::Normal {
                invoke_id: InvokeId(i),
                attribute: a,
                access: None,
                value: v
            }
        )),
    ]
}

proptest! {
    #[test]
    fn axdr_round_trips(d in data()) {
        let bytes = d.to_vec();
        prop_assert_eq!(bytes.len(), d.buffer_len());
        prop_assert_eq!(Data::parse(&bytes).unwrap(), d);
    }

    #[test]
    fn apdus_round_trip(a in apdu()) {
        let bytes = a.to_vec();
        prop_assert_eq!(Apdu::parse(&bytes).unwrap(), a);
    }

    #[test]
    fn decoders_never_panic_on_noise(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Data::parse(&bytes);
        let _ = Apdu::parse(&bytes);
        let mut d = dlms::wrapper::StreamDecoder::new(1024);
        d.push(&bytes);
        let _ = d.next_frame();
    }
}
