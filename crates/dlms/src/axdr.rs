//! A-XDR `Data` (IEC 62056-6-2 / Blue Book 4.1.5): the values every COSEM attribute carries.
//!
//! Decoding is bounded: nesting stops at [`MAX_DEPTH`], and every element count or length is
//! checked against the bytes actually present before anything is allocated, so a hostile
//! `01 84 FF FF FF FF` (an array claiming four billion elements) costs nothing.

use alloc::string::String;
use alloc::vec::Vec;

use crate::cursor::{Reader, put_length};
use crate::error::{Error, ErrorKind, Result};

/// Deepest array/structure nesting the decoder accepts.
pub const MAX_DEPTH: usize = 16;

/// A-XDR type tags (Blue Book, `Data` CHOICE).
pub mod tag {
    pub const NULL: u8 = 0;
    pub const ARRAY: u8 = 1;
    pub const STRUCTURE: u8 = 2;
    pub const BOOLEAN: u8 = 3;
    pub const BIT_STRING: u8 = 4;
    pub const DOUBLE_LONG: u8 = 5;
    pub const DOUBLE_LONG_UNSIGNED: u8 = 6;
    pub const OCTET_STRING: u8 = 9;
    pub const VISIBLE_STRING: u8 = 10;
    pub const UTF8_STRING: u8 = 12;
    pub const BCD: u8 = 13;
    pub const INTEGER: u8 = 15;
    pub const LONG: u8 = 16;
    pub const UNSIGNED: u8 = 17;
    pub const LONG_UNSIGNED: u8 = 18;
    pub const COMPACT_ARRAY: u8 = 19;
    pub const LONG64: u8 = 20;
    pub const LONG64_UNSIGNED: u8 = 21;
    pub const ENUM: u8 = 22;
    pub const FLOAT32: u8 = 23;
    pub const FLOAT64: u8 = 24;
    pub const DATE_TIME: u8 = 25;
    pub const DATE: u8 = 26;
    pub const TIME: u8 = 27;
    pub const DONT_CARE: u8 = 255;
}

/// A bit-string: `bits` significant bits, most significant bit of `bytes[0]` first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BitString {
    bits: usize,
    bytes: Vec<u8>,
}

impl BitString {
    /// A bit-string of `bits` bits taken from `bytes`; unused trailing bits are cleared.
    pub fn new(bits: usize, bytes: &[u8]) -> Result<Self> {
        let need = bits.div_ceil(8);
        if bytes.len() != need {
            return Err(Error::new(
                ErrorKind::LengthOutOfRange {
                    length: bytes.len(),
                    max: need,
                },
                "a-xdr bit-string",
            ));
        }
        let mut bytes = bytes.to_vec();
        if !bits.is_multiple_of(8) {
            let keep = 0xffu8 << (8 - bits % 8);
            if let Some(last) = bytes.last_mut() {
                *last &= keep;
            }
        }
        Ok(BitString { bits, bytes })
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.bits
    }

    /// True for a zero-length bit-string.
    pub fn is_empty(&self) -> bool {
        self.bits == 0
    }

    /// Bit `i`, counting from the first (most significant) bit.
    pub fn get(&self, i: usize) -> Option<bool> {
        (i < self.bits).then(|| self.bytes[i / 8] & (0x80 >> (i % 8)) != 0)
    }

    /// The packed bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// How the `deviation` of a date-time relates local time to UTC.
///
/// The Blue Book (4.1.6.1, date-time) defines deviation as the minutes to add to local time to
/// get UTC, so UTC+1 is sent as -60. Many meters send the opposite sign; which one a meter uses
/// is a per-meter setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviationConvention {
    /// deviation = UTC - local (Blue Book): CET is -60.
    #[default]
    UtcMinusLocal,
    /// deviation = local - UTC (common in deployed meters): CET is +60.
    LocalMinusUtc,
}

impl DeviationConvention {
    /// The wire deviation for a UTC offset of `offset_min` minutes (local = UTC + offset).
    pub fn to_wire(self, offset_min: i16) -> i16 {
        match self {
            DeviationConvention::UtcMinusLocal => -offset_min,
            DeviationConvention::LocalMinusUtc => offset_min,
        }
    }

    /// The UTC offset (local = UTC + offset) a wire deviation means.
    pub fn offset_min(self, deviation: i16) -> i16 {
        self.to_wire(deviation)
    }
}

/// The 12-byte COSEM date-time (Blue Book 4.1.6.1). Fields keep their "not specified" codes
/// (0xFF, year 0xFFFF, deviation 0x8000) so values round-trip exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub day_of_week: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub hundredths: u8,
    /// Minutes between local time and UTC; sign per [`DeviationConvention`]; 0x8000 = unknown.
    pub deviation_min: i16,
    pub clock_status: u8,
}

impl DateTime {
    /// Deviation value meaning "not specified".
    pub const DEVIATION_UNSPECIFIED: i16 = i16::MIN;

    /// Decodes the 12 bytes.
    pub fn from_bytes(b: &[u8; 12]) -> Self {
        DateTime {
            year: u16::from_be_bytes([b[0], b[1]]),
            month: b[2],
            day: b[3],
            day_of_week: b[4],
            hour: b[5],
            minute: b[6],
            second: b[7],
            hundredths: b[8],
            deviation_min: i16::from_be_bytes([b[9], b[10]]),
            clock_status: b[11],
        }
    }

    /// Encodes the 12 bytes.
    pub fn to_bytes(&self) -> [u8; 12] {
        let y = self.year.to_be_bytes();
        let d = self.deviation_min.to_be_bytes();
        [
            y[0],
            y[1],
            self.month,
            self.day,
            self.day_of_week,
            self.hour,
            self.minute,
            self.second,
            self.hundredths,
            d[0],
            d[1],
            self.clock_status,
        ]
    }

    /// A fully specified date-time from Unix seconds (UTC) shown in local time `offset_min`.
    pub fn from_unix(unix_s: i64, offset_min: i16, convention: DeviationConvention) -> Self {
        let local = unix_s + offset_min as i64 * 60;
        let days = local.div_euclid(86_400);
        let secs = local.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday; COSEM counts Monday = 1 .. Sunday = 7.
        let day_of_week = ((days + 3).rem_euclid(7) + 1) as u8;
        DateTime {
            year: year as u16,
            month,
            day,
            day_of_week,
            hour: (secs / 3600) as u8,
            minute: (secs % 3600 / 60) as u8,
            second: (secs % 60) as u8,
            hundredths: 0,
            deviation_min: convention.to_wire(offset_min),
            clock_status: 0,
        }
    }

    /// Unix seconds (UTC), if every field is specified and in range.
    pub fn to_unix(&self, convention: DeviationConvention) -> Option<i64> {
        if self.year == 0xffff
            || !(1..=12).contains(&self.month)
            || !(1..=31).contains(&self.day)
            || self.hour > 23
            || self.minute > 59
            || self.second > 59
        {
            return None;
        }
        let days = days_from_civil(self.year as i64, self.month, self.day);
        let local =
            days * 86_400 + self.hour as i64 * 3600 + self.minute as i64 * 60 + self.second as i64;
        let offset = if self.deviation_min == Self::DEVIATION_UNSPECIFIED {
            0
        } else {
            convention.offset_min(self.deviation_min)
        };
        Some(local - offset as i64 * 60)
    }
}

// Howard Hinnant's civil-date algorithms (http://howardhinnant.github.io/date_algorithms.html).
fn civil_from_days(z: i64) -> (i64, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The element type of a compact-array (Blue Book 4.1.5, `TypeDescription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeDescription {
    /// A simple type: one of the [`tag`] codes that is neither array nor structure.
    Simple(u8),
    /// `array` of `count` elements of one type.
    Array {
        count: u16,
        element: alloc::boxed::Box<TypeDescription>,
    },
    /// `structure` of the listed member types.
    Structure(Vec<TypeDescription>),
}

/// An A-XDR value.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Null,
    Array(Vec<Data>),
    Structure(Vec<Data>),
    Boolean(bool),
    BitString(BitString),
    DoubleLong(i32),
    DoubleLongUnsigned(u32),
    OctetString(Vec<u8>),
    VisibleString(Vec<u8>),
    Utf8String(String),
    Bcd(i8),
    Integer(i8),
    Long(i16),
    Unsigned(u8),
    LongUnsigned(u16),
    /// A compact-array: the element description and the decoded elements.
    CompactArray {
        description: TypeDescription,
        elements: Vec<Data>,
    },
    Long64(i64),
    Long64Unsigned(u64),
    Enum(u8),
    Float32(f32),
    Float64(f64),
    DateTime(DateTime),
    Date([u8; 5]),
    Time([u8; 4]),
    DontCare,
}

const CTX: &str = "a-xdr data";

impl Data {
    /// Decodes exactly one value; trailing bytes are an error.
    pub fn parse(buf: &[u8]) -> Result<Data> {
        let mut r = Reader::new(buf);
        let d = Data::read(&mut r, 0)?;
        r.finish(CTX)?;
        Ok(d)
    }

    /// Decodes one value from the front of `buf`, returning it and the bytes it used.
    /// Real meters sometimes append bytes after a value; the caller decides what to do with them.
    pub fn parse_prefix(buf: &[u8]) -> Result<(Data, usize)> {
        let mut r = Reader::new(buf);
        let d = Data::read(&mut r, 0)?;
        Ok((d, r.position()))
    }

    pub(crate) fn read(r: &mut Reader<'_>, depth: usize) -> Result<Data> {
        let t = r.u8(CTX)?;
        Data::read_body(r, t, depth)
    }

    fn read_body(r: &mut Reader<'_>, t: u8, depth: usize) -> Result<Data> {
        Ok(match t {
            tag::NULL => Data::Null,
            tag::ARRAY | tag::STRUCTURE => {
                if depth >= MAX_DEPTH {
                    return Err(Error::new(ErrorKind::DepthExceeded { max: MAX_DEPTH }, CTX));
                }
                let n = r.length(CTX)?;
                // Every element takes at least one byte: refuse counts the input cannot hold.
                if n > r.remaining() {
                    return Err(Error::truncated(n - r.remaining(), "a-xdr array/structure"));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(Data::read(r, depth + 1)?);
                }
                if t == tag::ARRAY {
                    Data::Array(v)
                } else {
                    Data::Structure(v)
                }
            }
            tag::BOOLEAN => Data::Boolean(r.u8(CTX)? != 0),
            tag::BIT_STRING => {
                let bits = r.length("a-xdr bit-string")?;
                let bytes = r.take(bits.div_ceil(8), "a-xdr bit-string")?;
                Data::BitString(BitString::new(bits, bytes)?)
            }
            tag::DOUBLE_LONG => Data::DoubleLong(r.u32(CTX)? as i32),
            tag::DOUBLE_LONG_UNSIGNED => Data::DoubleLongUnsigned(r.u32(CTX)?),
            tag::OCTET_STRING => {
                let n = r.bounded_length("a-xdr octet-string")?;
                Data::OctetString(r.take(n, CTX)?.to_vec())
            }
            tag::VISIBLE_STRING => {
                let n = r.bounded_length("a-xdr visible-string")?;
                Data::VisibleString(r.take(n, CTX)?.to_vec())
            }
            tag::UTF8_STRING => {
                let n = r.bounded_length("a-xdr utf8-string")?;
                let s = core::str::from_utf8(r.take(n, CTX)?)
                    .map_err(|_| Error::malformed("invalid utf-8", "a-xdr utf8-string"))?;
                Data::Utf8String(String::from(s))
            }
            tag::BCD => Data::Bcd(r.u8(CTX)? as i8),
            tag::INTEGER => Data::Integer(r.u8(CTX)? as i8),
            tag::LONG => Data::Long(r.u16(CTX)? as i16),
            tag::UNSIGNED => Data::Unsigned(r.u8(CTX)?),
            tag::LONG_UNSIGNED => Data::LongUnsigned(r.u16(CTX)?),
            tag::COMPACT_ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(Error::new(ErrorKind::DepthExceeded { max: MAX_DEPTH }, CTX));
                }
                let description = TypeDescription::read(r, depth + 1)?;
                let n = r.bounded_length("a-xdr compact-array contents")?;
                let mut contents = Reader::new(r.take(n, CTX)?);
                let mut elements = Vec::new();
                while !contents.is_empty() {
                    let before = contents.remaining();
                    elements.push(description.read_value(&mut contents, depth + 1)?);
                    // Zero-size element types (null, empty structure) would loop forever.
                    if contents.remaining() == before {
                        return Err(Error::malformed(
                            "zero-size elements with contents",
                            "a-xdr compact-array",
                        ));
                    }
                }
                Data::CompactArray {
                    description,
                    elements,
                }
            }
            tag::LONG64 => Data::Long64(r.u64(CTX)? as i64),
            tag::LONG64_UNSIGNED => Data::Long64Unsigned(r.u64(CTX)?),
            tag::ENUM => Data::Enum(r.u8(CTX)?),
            tag::FLOAT32 => Data::Float32(f32::from_bits(r.u32(CTX)?)),
            tag::FLOAT64 => Data::Float64(f64::from_bits(r.u64(CTX)?)),
            tag::DATE_TIME => Data::DateTime(DateTime::from_bytes(&r.array("a-xdr date-time")?)),
            tag::DATE => Data::Date(r.array("a-xdr date")?),
            tag::TIME => Data::Time(r.array("a-xdr time")?),
            tag::DONT_CARE => Data::DontCare,
            other => return Err(Error::tag(other, CTX)),
        })
    }

    /// The A-XDR tag of this value.
    pub fn tag(&self) -> u8 {
        match self {
            Data::Null => tag::NULL,
            Data::Array(_) => tag::ARRAY,
            Data::Structure(_) => tag::STRUCTURE,
            Data::Boolean(_) => tag::BOOLEAN,
            Data::BitString(_) => tag::BIT_STRING,
            Data::DoubleLong(_) => tag::DOUBLE_LONG,
            Data::DoubleLongUnsigned(_) => tag::DOUBLE_LONG_UNSIGNED,
            Data::OctetString(_) => tag::OCTET_STRING,
            Data::VisibleString(_) => tag::VISIBLE_STRING,
            Data::Utf8String(_) => tag::UTF8_STRING,
            Data::Bcd(_) => tag::BCD,
            Data::Integer(_) => tag::INTEGER,
            Data::Long(_) => tag::LONG,
            Data::Unsigned(_) => tag::UNSIGNED,
            Data::LongUnsigned(_) => tag::LONG_UNSIGNED,
            Data::CompactArray { .. } => tag::COMPACT_ARRAY,
            Data::Long64(_) => tag::LONG64,
            Data::Long64Unsigned(_) => tag::LONG64_UNSIGNED,
            Data::Enum(_) => tag::ENUM,
            Data::Float32(_) => tag::FLOAT32,
            Data::Float64(_) => tag::FLOAT64,
            Data::DateTime(_) => tag::DATE_TIME,
            Data::Date(_) => tag::DATE,
            Data::Time(_) => tag::TIME,
            Data::DontCare => tag::DONT_CARE,
        }
    }

    /// Encodes the value with its tag.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.tag());
        self.emit_body(out);
    }

    /// Encodes into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.buffer_len());
        self.emit(&mut v);
        v
    }

    /// Bytes [`Data::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        let mut v = Vec::new();
        self.emit_body(&mut v);
        1 + v.len()
    }

    fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Data::Null | Data::DontCare => {}
            Data::Array(v) | Data::Structure(v) => {
                put_length(out, v.len());
                for d in v {
                    d.emit(out);
                }
            }
            Data::Boolean(b) => out.push(*b as u8),
            Data::BitString(b) => {
                put_length(out, b.bits);
                out.extend_from_slice(&b.bytes);
            }
            Data::DoubleLong(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::DoubleLongUnsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::OctetString(v) | Data::VisibleString(v) => {
                put_length(out, v.len());
                out.extend_from_slice(v);
            }
            Data::Utf8String(s) => {
                put_length(out, s.len());
                out.extend_from_slice(s.as_bytes());
            }
            Data::Bcd(v) | Data::Integer(v) => out.push(*v as u8),
            Data::Long(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Unsigned(v) | Data::Enum(v) => out.push(*v),
            Data::LongUnsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::CompactArray {
                description,
                elements,
            } => {
                description.emit(out);
                let mut contents = Vec::new();
                for e in elements {
                    e.emit_compact(&mut contents);
                }
                put_length(out, contents.len());
                out.extend_from_slice(&contents);
            }
            Data::Long64(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Long64Unsigned(v) => out.extend_from_slice(&v.to_be_bytes()),
            Data::Float32(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            Data::Float64(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
            Data::DateTime(dt) => out.extend_from_slice(&dt.to_bytes()),
            Data::Date(b) => out.extend_from_slice(b),
            Data::Time(b) => out.extend_from_slice(b),
        }
    }

    /// Inside a compact-array, values carry neither tags nor structure/array counts.
    fn emit_compact(&self, out: &mut Vec<u8>) {
        match self {
            Data::Array(v) | Data::Structure(v) => v.iter().for_each(|d| d.emit_compact(out)),
            other => other.emit_body(out),
        }
    }

    /// The value as a signed integer, for any integer type (registers and scalers).
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Data::DoubleLong(v) => v as i128,
            Data::DoubleLongUnsigned(v) => v as i128,
            Data::Integer(v) => v as i128,
            Data::Long(v) => v as i128,
            Data::Unsigned(v) | Data::Enum(v) => v as i128,
            Data::LongUnsigned(v) => v as i128,
            Data::Long64(v) => v as i128,
            Data::Long64Unsigned(v) => v as i128,
            _ => return None,
        })
    }

    /// The value as a float, for integers and floats.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Data::Float32(v) => Some(v as f64),
            Data::Float64(v) => Some(v),
            _ => self.as_i128().map(|v| v as f64),
        }
    }

    /// The members of an array or structure.
    pub fn as_list(&self) -> Option<&[Data]> {
        match self {
            Data::Array(v) | Data::Structure(v) => Some(v),
            _ => None,
        }
    }

    /// The bytes of an octet-string or visible-string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Data::OctetString(v) | Data::VisibleString(v) => Some(v),
            Data::Utf8String(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

impl TypeDescription {
    fn read(r: &mut Reader<'_>, depth: usize) -> Result<Self> {
        if depth >= MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::DepthExceeded { max: MAX_DEPTH },
                "a-xdr type-description",
            ));
        }
        let t = r.u8("a-xdr type-description")?;
        Ok(match t {
            tag::ARRAY => {
                let count = r.u16("a-xdr type-description")?;
                TypeDescription::Array {
                    count,
                    element: alloc::boxed::Box::new(TypeDescription::read(r, depth + 1)?),
                }
            }
            tag::STRUCTURE => {
                let n = r.length("a-xdr type-description")?;
                if n > r.remaining() {
                    return Err(Error::truncated(
                        n - r.remaining(),
                        "a-xdr type-description",
                    ));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(TypeDescription::read(r, depth + 1)?);
                }
                TypeDescription::Structure(v)
            }
            tag::COMPACT_ARRAY => return Err(Error::tag(t, "a-xdr type-description")),
            tag::NULL..=tag::TIME | tag::DONT_CARE if !matches!(t, 7 | 8 | 11 | 14) => {
                TypeDescription::Simple(t)
            }
            _ => return Err(Error::tag(t, "a-xdr type-description")),
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            TypeDescription::Simple(t) => out.push(*t),
            TypeDescription::Array { count, element } => {
                out.push(tag::ARRAY);
                out.extend_from_slice(&count.to_be_bytes());
                element.emit(out);
            }
            TypeDescription::Structure(v) => {
                out.push(tag::STRUCTURE);
                put_length(out, v.len());
                for d in v {
                    d.emit(out);
                }
            }
        }
    }

    /// Reads one element described by `self` (no tags inside a compact-array).
    fn read_value(&self, r: &mut Reader<'_>, depth: usize) -> Result<Data> {
        if depth >= MAX_DEPTH {
            return Err(Error::new(ErrorKind::DepthExceeded { max: MAX_DEPTH }, CTX));
        }
        match self {
            TypeDescription::Simple(t) => Data::read_body(r, *t, depth),
            TypeDescription::Array { count, element } => {
                if *count as usize > r.remaining() {
                    return Err(Error::truncated(
                        *count as usize - r.remaining(),
                        "a-xdr compact-array",
                    ));
                }
                let mut v = Vec::with_capacity(*count as usize);
                for _ in 0..*count {
                    v.push(element.read_value(r, depth + 1)?);
                }
                Ok(Data::Array(v))
            }
            TypeDescription::Structure(members) => {
                let mut v = Vec::with_capacity(members.len());
                for m in members {
                    v.push(m.read_value(r, depth + 1)?);
                }
                Ok(Data::Structure(v))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn hex(s: &str) -> Vec<u8> {
        crate::testutil::hex(s)
    }

    #[test]
    fn decodes_real_register_values() {
        // A register value attribute and a scaler_unit structure {-3 (scaler), 30 (Wh)}, as
        // Gurux and meters send them.
        assert_eq!(
            Data::parse(&hex("06 00 01 E2 40")).unwrap(),
            Data::DoubleLongUnsigned(123_456)
        );
        assert_eq!(
            Data::parse(&hex("02 02 0F FD 16 1E")).unwrap(),
            Data::Structure(vec![Data::Integer(-3), Data::Enum(30)])
        );
        assert_eq!(
            Data::parse(&hex("09 06 01 00 01 08 00 FF")).unwrap(),
            Data::OctetString(hex("0100010800FF"))
        );
    }

    #[test]
    fn every_type_round_trips() {
        let dt = DateTime::from_unix(1_700_000_000, 60, DeviationConvention::UtcMinusLocal);
        let values = vec![
            Data::Null,
            Data::Boolean(true),
            Data::BitString(BitString::new(12, &[0xab, 0xc0]).unwrap()),
            Data::DoubleLong(-5),
            Data::DoubleLongUnsigned(7),
            Data::OctetString(vec![1; 300]),
            Data::VisibleString(b"abc".to_vec()),
            Data::Utf8String("zähler".into()),
            Data::Bcd(9),
            Data::Integer(-1),
            Data::Long(-300),
            Data::Unsigned(200),
            Data::LongUnsigned(60000),
            Data::Long64(-1 << 40),
            Data::Long64Unsigned(1 << 60),
            Data::Enum(30),
            Data::Float32(1.5),
            Data::Float64(-2.25),
            Data::DateTime(dt),
            Data::Date([0x07, 0xE6, 1, 2, 3]),
            Data::Time([1, 2, 3, 4]),
            Data::DontCare,
            Data::CompactArray {
                description: TypeDescription::Structure(vec![
                    TypeDescription::Simple(tag::LONG_UNSIGNED),
                    TypeDescription::Simple(tag::OCTET_STRING),
                ]),
                elements: vec![
                    Data::Structure(vec![Data::LongUnsigned(1), Data::OctetString(vec![9])]),
                    Data::Structure(vec![Data::LongUnsigned(2), Data::OctetString(vec![])]),
                ],
            },
        ];
        let all = Data::Array(vec![Data::Structure(values.clone())]);
        for v in values.iter().chain([&all]) {
            let bytes = v.to_vec();
            assert_eq!(bytes.len(), v.buffer_len());
            assert_eq!(&Data::parse(&bytes).unwrap(), v, "{bytes:02x?}");
        }
    }

    #[test]
    fn compact_array_matches_blue_book_layout() {
        // compact-array of long-unsigned: description 12, contents length 4, two raw values.
        let bytes = hex("13 12 04 00 01 00 02");
        assert_eq!(
            Data::parse(&bytes).unwrap(),
            Data::CompactArray {
                description: TypeDescription::Simple(tag::LONG_UNSIGNED),
                elements: vec![Data::LongUnsigned(1), Data::LongUnsigned(2)],
            }
        );
        // Contents that end inside an element are rejected.
        assert!(Data::parse(&hex("13 12 03 00 01 00")).is_err());
        // Zero-size element types with contents would never finish: rejected.
        assert!(Data::parse(&hex("13 00 02 AA BB")).is_err());
        assert!(Data::parse(&hex("13 02 00 02 AA BB")).is_err());
    }

    #[test]
    fn impossible_lengths_and_counts_are_rejected_before_allocation() {
        let e = Data::parse(&hex("01 84 FF FF FF FF 00")).unwrap_err();
        assert!(e.needed().unwrap() > 1_000_000, "{e}");
        assert_eq!(
            Data::parse(&hex("09 05 01 02")).unwrap_err().needed(),
            Some(3)
        );
        assert_eq!(Data::parse(&hex("06 00 01")).unwrap_err().needed(), Some(2));
        assert_eq!(
            Data::parse(&hex("07")).unwrap_err().kind(),
            &ErrorKind::InvalidTag { tag: 7 }
        );
        assert_eq!(Data::parse(&hex("")).unwrap_err().needed(), Some(1));
        assert!(Data::parse(&hex("0C 02 C3 28")).is_err(), "invalid utf-8");
    }

    #[test]
    fn nesting_is_bounded() {
        let mut deep = vec![];
        for _ in 0..(MAX_DEPTH + 1) {
            deep.extend_from_slice(&[0x01, 0x01]);
        }
        deep.push(0x00);
        assert_eq!(
            Data::parse(&deep).unwrap_err().kind(),
            &ErrorKind::DepthExceeded { max: MAX_DEPTH }
        );
        let ok: Vec<u8> = [0x01, 0x01]
            .repeat(MAX_DEPTH)
            .into_iter()
            .chain([0x00])
            .collect();
        assert!(Data::parse(&ok).is_ok());
    }

    #[test]
    fn trailing_bytes_are_reported_not_dropped() {
        let bytes = hex("11 05 00 00");
        assert_eq!(
            Data::parse(&bytes).unwrap_err().kind(),
            &ErrorKind::TrailingBytes { count: 2 }
        );
        assert_eq!(Data::parse_prefix(&bytes).unwrap(), (Data::Unsigned(5), 2));
    }

    #[test]
    fn date_time_conversions_follow_the_deviation_setting() {
        // 2023-11-14 22:13:20 UTC; shown in CET (UTC+1).
        let unix = 1_700_000_000;
        let bb = DateTime::from_unix(unix, 60, DeviationConvention::UtcMinusLocal);
        assert_eq!(
            (bb.year, bb.month, bb.day, bb.hour, bb.minute, bb.second),
            (2023, 11, 14, 23, 13, 20)
        );
        assert_eq!(bb.day_of_week, 2, "a Tuesday");
        assert_eq!(bb.deviation_min, -60);
        assert_eq!(bb.to_unix(DeviationConvention::UtcMinusLocal), Some(unix));
        let other = DateTime::from_unix(unix, 60, DeviationConvention::LocalMinusUtc);
        assert_eq!(other.deviation_min, 60);
        assert_eq!(
            other.to_unix(DeviationConvention::LocalMinusUtc),
            Some(unix)
        );
        // Reading with the wrong setting is off by twice the offset: why it is a setting.
        assert_eq!(
            other.to_unix(DeviationConvention::UtcMinusLocal),
            Some(unix + 7200)
        );
        let bytes = bb.to_bytes();
        assert_eq!(DateTime::from_bytes(&bytes), bb);
    }
}
