//! The MCP3008/MCP3208 SPI conversion frames (Microchip DS21295 / DS21298, section 6.1 "Using
//! the MCP3x08 with microcontroller SPI ports"): one single-ended conversion is a 3-byte
//! full-duplex transfer in SPI mode 0.
//!
//! ```text
//! MCP3008  MOSI: 0000_0001  S D2 D1 D0 xxxx  xxxx_xxxx      S = 1 (single-ended)
//!          MISO: ????_????  ???? ?0 B9 B8    B7 .. B0       0 = null bit
//! MCP3208  MOSI: 0000_01 S D2  D1 D0 xx_xxxx  xxxx_xxxx
//!          MISO: ????_????  ??? 0 B11..B8    B7 .. B0
//! ```
//!
//! The bits marked `?` are not driven by the chip. The null bit must read 0: a MISO line that
//! is disconnected or stuck high reads 1 there, which [`Chip::decode`] reports instead of
//! returning a full-scale sample.

use super::config::Chip;
use crate::sources::Error;

/// Bytes per conversion.
pub const CONVERSION_BYTES: usize = 3;
/// SPI clocks per conversion.
pub const CONVERSION_CLOCKS: u32 = 24;

impl Chip {
    /// The MOSI bytes that start a single-ended conversion of `channel` (0..=7).
    pub fn command(self, channel: u8) -> [u8; 3] {
        let ch = channel & 0x07;
        match self {
            // Start bit in byte 0 bit 0; SGL/DIFF = 1 and D2..D0 in byte 1 bits 7..4.
            Chip::Mcp3008 => [0x01, 0x80 | ch << 4, 0x00],
            // Start bit in byte 0 bit 2, SGL/DIFF = 1 in bit 1, D2 in bit 0; D1 D0 in byte 1
            // bits 7..6.
            Chip::Mcp3208 => [0x06 | ch >> 2, (ch & 0x03) << 6, 0x00],
        }
    }

    /// The conversion result in the MISO bytes of one transfer.
    pub fn decode(self, miso: [u8; 3]) -> Result<u16, Error> {
        let (null_mask, data_mask) = match self {
            Chip::Mcp3008 => (0x04, 0x03),
            Chip::Mcp3208 => (0x10, 0x0F),
        };
        if miso[1] & null_mask != 0 {
            return Err(Error::device(format!(
                "{self:?} conversion {:02X} {:02X} {:02X} has no null bit: is MISO connected?",
                miso[0], miso[1], miso[2]
            )));
        }
        Ok(u16::from(miso[1] & data_mask) << 8 | u16::from(miso[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_follow_the_datasheet_bit_layout() {
        assert_eq!(Chip::Mcp3008.command(0), [0x01, 0x80, 0x00]);
        assert_eq!(Chip::Mcp3008.command(5), [0x01, 0xD0, 0x00]);
        assert_eq!(Chip::Mcp3008.command(7), [0x01, 0xF0, 0x00]);
        assert_eq!(Chip::Mcp3208.command(0), [0x06, 0x00, 0x00]);
        assert_eq!(Chip::Mcp3208.command(1), [0x06, 0x40, 0x00]);
        assert_eq!(Chip::Mcp3208.command(5), [0x07, 0x40, 0x00]);
        assert_eq!(Chip::Mcp3208.command(7), [0x07, 0xC0, 0x00]);
    }

    #[test]
    fn decoding_masks_undriven_bits_and_checks_the_null_bit() {
        assert_eq!(Chip::Mcp3008.decode([0xFF, 0xFB, 0xFF]).unwrap(), 1023);
        assert_eq!(Chip::Mcp3008.decode([0x00, 0x01, 0x02]).unwrap(), 258);
        assert_eq!(Chip::Mcp3208.decode([0xFF, 0xEF, 0xFF]).unwrap(), 4095);
        assert_eq!(Chip::Mcp3208.decode([0xFF, 0xE8, 0x00]).unwrap(), 2048);
        let err = Chip::Mcp3208
            .decode([0xFF, 0xFF, 0xFF])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no null bit"), "{err}");
        assert!(Chip::Mcp3008.decode([0xFF, 0xFF, 0xFF]).is_err());
    }
}
