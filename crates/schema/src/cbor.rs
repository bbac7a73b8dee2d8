//! Thin CBOR helpers: one encoder and one strict decoder (no trailing bytes) for the whole crate.

use ciborium::Value;
use serde::{Serialize, de::DeserializeOwned};

use crate::Error;

/// Encodes `value` as CBOR. Our own types always encode; a failure here is a bug, reported as
/// an error rather than a panic.
pub(crate) fn to_vec<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| Error::malformed(what, e))?;
    Ok(out)
}

/// Decodes exactly one CBOR item filling all of `bytes`.
pub(crate) fn value_from_slice(what: &str, bytes: &[u8]) -> Result<Value, Error> {
    let mut rest = bytes;
    let value: Value = ciborium::from_reader(&mut rest).map_err(|e| Error::malformed(what, e))?;
    if !rest.is_empty() {
        return Err(Error::malformed(
            what,
            format_args!("{} trailing bytes after the cbor item", rest.len()),
        ));
    }
    Ok(value)
}

/// Converts a decoded value into a typed struct, naming `what` in the error.
pub(crate) fn from_value<T: DeserializeOwned>(what: &str, value: &Value) -> Result<T, Error> {
    value.deserialized().map_err(|e| Error::malformed(what, e))
}

/// Looks up a text key in a CBOR map.
pub(crate) fn map_get<'a>(map: &'a [(Value, Value)], key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Text(t) if t == key))
        .map(|(_, v)| v)
}

/// Reads an unsigned integer field of a CBOR map.
pub(crate) fn map_u64(what: &str, map: &[(Value, Value)], key: &str) -> Result<u64, Error> {
    match map_get(map, key) {
        Some(Value::Integer(i)) => u64::try_from(*i)
            .map_err(|_| Error::malformed(what, format_args!("field {key} out of range"))),
        Some(_) => Err(Error::malformed(
            what,
            format_args!("field {key} is not an unsigned integer"),
        )),
        None => Err(Error::malformed(what, format_args!("missing field {key}"))),
    }
}

/// Reads a signed integer field of a CBOR map.
pub(crate) fn map_i64(what: &str, map: &[(Value, Value)], key: &str) -> Result<i64, Error> {
    match map_get(map, key) {
        Some(Value::Integer(i)) => i64::try_from(*i)
            .map_err(|_| Error::malformed(what, format_args!("field {key} out of range"))),
        Some(_) => Err(Error::malformed(
            what,
            format_args!("field {key} is not an integer"),
        )),
        None => Err(Error::malformed(what, format_args!("missing field {key}"))),
    }
}

/// Reads a text field of a CBOR map.
pub(crate) fn map_text<'a>(
    what: &str,
    map: &'a [(Value, Value)],
    key: &str,
) -> Result<&'a str, Error> {
    match map_get(map, key) {
        Some(Value::Text(t)) => Ok(t),
        Some(_) => Err(Error::malformed(
            what,
            format_args!("field {key} is not text"),
        )),
        None => Err(Error::malformed(what, format_args!("missing field {key}"))),
    }
}

/// Reads a byte-string field of a CBOR map.
pub(crate) fn map_bytes<'a>(
    what: &str,
    map: &'a [(Value, Value)],
    key: &str,
) -> Result<&'a [u8], Error> {
    match map_get(map, key) {
        Some(Value::Bytes(b)) => Ok(b),
        Some(_) => Err(Error::malformed(
            what,
            format_args!("field {key} is not bytes"),
        )),
        None => Err(Error::malformed(what, format_args!("missing field {key}"))),
    }
}
