//! Meter identity: the validated meter id that names topics, certificates and records.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ErrorKind};

/// Longest meter id: one leading character plus up to 62 more (DESIGN §3.3).
pub const MAX_METER_ID_LEN: usize = 63;

/// A meter id, `[a-z0-9][a-z0-9-]{0,62}`: safe as an MQTT topic level, a certificate common
/// name, a file name and a URL path segment without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MeterId(String);

impl MeterId {
    /// Validates `id`.
    ///
    /// ```
    /// use schema::MeterId;
    /// assert!(MeterId::parse("house-7").is_ok());
    /// assert!(MeterId::parse("-house").is_err());
    /// assert!(MeterId::parse("House").is_err());
    /// ```
    pub fn parse(id: &str) -> Result<Self, Error> {
        let bytes = id.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= MAX_METER_ID_LEN
            && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
            && bytes
                .iter()
                .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(id.to_owned()))
        } else {
            // Cap what we echo back: the id may be attacker-controlled and huge.
            let shown: String = id.chars().take(80).collect();
            Err(Error::new(ErrorKind::InvalidMeterId(shown)))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MeterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MeterId({})", self.0)
    }
}

impl std::str::FromStr for MeterId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl Serialize for MeterId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MeterId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["a", "0", "m-1", "abc-def-123", &"a".repeat(63)] {
            assert!(MeterId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a/b",
            "a+",
            "a#",
            "é",
            "a b",
            &"a".repeat(64),
        ] {
            let err = MeterId::parse(bad).unwrap_err();
            assert!(matches!(err.kind(), ErrorKind::InvalidMeterId(_)), "{bad}");
        }
    }
}
