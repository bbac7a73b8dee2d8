//! OBIS codes (IEC 62056-6-1): the six-byte logical names of COSEM objects.

use core::fmt;
use core::str::FromStr;

use crate::error::Error;

/// A logical name such as `1-0:1.8.0.255` (active energy import, total).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Obis(pub [u8; 6]);

impl Obis {
    /// Builds `a-b:c.d.e.f`.
    pub const fn new(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8) -> Self {
        Obis([a, b, c, d, e, f])
    }

    /// Association LN, current association (Blue Book 4.4.4).
    pub const CURRENT_ASSOCIATION: Obis = Obis::new(0, 0, 40, 0, 0, 255);
    /// Clock.
    pub const CLOCK: Obis = Obis::new(0, 0, 1, 0, 0, 255);
    /// Security setup of the management association.
    pub const SECURITY_SETUP: Obis = Obis::new(0, 0, 43, 0, 0, 255);
    /// Invocation counter the server expects from the management client.
    pub const INVOCATION_COUNTER: Obis = Obis::new(0, 0, 43, 1, 0, 255);
    /// COSEM logical device name.
    pub const LOGICAL_DEVICE_NAME: Obis = Obis::new(0, 0, 42, 0, 0, 255);
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a}-{b}:{c}.{d}.{e}.{g}")
    }
}

impl FromStr for Obis {
    type Err = Error;

    /// Parses `a-b:c.d.e.f`, also with `*f` or only dots as separators.
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(['-', ':', '.', '*']) {
            if n == 6 {
                return Err(Error::malformed("more than six groups", "obis code"));
            }
            out[n] = part
                .trim()
                .parse()
                .map_err(|_| Error::malformed("group is not 0..=255", "obis code"))?;
            n += 1;
        }
        if n != 6 {
            return Err(Error::malformed("fewer than six groups", "obis code"));
        }
        Ok(Obis(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn obis_text_round_trips() {
        let o: Obis = "1-0:1.8.0.255".parse().unwrap();
        assert_eq!(o, Obis::new(1, 0, 1, 8, 0, 255));
        assert_eq!(o.to_string(), "1-0:1.8.0.255");
        assert_eq!(
            "0.0.43.1.0.255".parse::<Obis>().unwrap(),
            Obis::INVOCATION_COUNTER
        );
        assert!("1-0:1.8.0".parse::<Obis>().is_err());
        assert!("1-0:1.8.0.256".parse::<Obis>().is_err());
        assert!("1-0:1.8.0.255.1".parse::<Obis>().is_err());
    }
}
