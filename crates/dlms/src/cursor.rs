//! A bounds-checked reader and a growing writer shared by all wire formats.

use alloc::vec::Vec;

use crate::error::{Error, ErrorKind, Result};

/// Reads big-endian fields from a byte slice; every read is length-checked first.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize, context: &'static str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::truncated(n - self.remaining(), context));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self, context: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, context)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, context: &'static str) -> Result<u8> {
        Ok(self.take(1, context)?[0])
    }

    pub(crate) fn peek(&self, context: &'static str) -> Result<u8> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Error::truncated(1, context))
    }

    pub(crate) fn u16(&mut self, context: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(context)?))
    }

    pub(crate) fn u32(&mut self, context: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(context)?))
    }

    pub(crate) fn u64(&mut self, context: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(context)?))
    }

    pub(crate) fn bool(&mut self, context: &'static str) -> Result<bool> {
        Ok(self.u8(context)? != 0)
    }

    /// An A-XDR / BER definite length: one byte below 0x80, else 0x8N followed by N bytes.
    pub(crate) fn length(&mut self, context: &'static str) -> Result<usize> {
        let first = self.u8(context)?;
        if first < 0x80 {
            return Ok(first as usize);
        }
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return Err(Error::tag(first, context));
        }
        let mut len: usize = 0;
        for &b in self.take(n, context)? {
            len = (len << 8) | b as usize;
        }
        Ok(len)
    }

    /// A length that must fit into what is left of the input (checked before anything is allocated).
    pub(crate) fn bounded_length(&mut self, context: &'static str) -> Result<usize> {
        let len = self.length(context)?;
        if len > self.remaining() {
            return Err(Error::truncated(len - self.remaining(), context));
        }
        Ok(len)
    }

    /// Fails if any bytes are left.
    pub(crate) fn finish(&self, context: &'static str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::TrailingBytes {
                    count: self.remaining(),
                },
                context,
            ))
        }
    }
}

/// Number of bytes an A-XDR length takes on the wire.
pub(crate) const fn length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else if len <= 0xff {
        2
    } else if len <= 0xffff {
        3
    } else if len <= 0xff_ffff {
        4
    } else {
        5
    }
}

/// Appends an A-XDR / BER definite length.
pub(crate) fn put_length(out: &mut Vec<u8>, len: usize) {
    let n = length_len(len);
    if n == 1 {
        out.push(len as u8);
    } else {
        out.push(0x80 | (n as u8 - 1));
        for i in (0..n - 1).rev() {
            out.push((len >> (8 * i)) as u8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip_at_every_width() {
        for len in [
            0usize, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x1_0000, 0xff_ffff, 0x100_0000,
        ] {
            let mut out = Vec::new();
            put_length(&mut out, len);
            assert_eq!(out.len(), length_len(len));
            assert_eq!(Reader::new(&out).length("t").unwrap(), len);
        }
    }

    #[test]
    fn impossible_lengths_are_errors() {
        assert_eq!(
            Reader::new(&[0x80]).length("t").unwrap_err().kind(),
            &ErrorKind::InvalidTag { tag: 0x80 }
        );
        assert_eq!(
            Reader::new(&[0x85, 1, 2, 3, 4, 5])
                .length("t")
                .unwrap_err()
                .kind(),
            &ErrorKind::InvalidTag { tag: 0x85 }
        );
        assert_eq!(
            Reader::new(&[0x82, 1]).length("t").unwrap_err().needed(),
            Some(1)
        );
        assert_eq!(
            Reader::new(&[0x05, 1, 2])
                .bounded_length("t")
                .unwrap_err()
                .needed(),
            Some(3)
        );
    }
}
