//! The byte transport under the `spi_adc` source: Linux spidev, or a recorded MISO stream.

use std::io;

#[cfg(feature = "spidev")]
use std::path::Path;

/// Carries conversion frames to the converter and back.
///
/// `tx` holds whole frames of `bytes_per_frame` bytes, each a run of 3-byte conversions; the
/// transport releases chip select between conversions (the MCP3x08 starts a conversion on each
/// falling CS edge) and spaces frames `frame_period_us` apart as well as it can, then fills
/// `rx` (same length) with the MISO bytes. `ErrorKind::UnexpectedEof` means the transport has
/// no more data (the end of a recording).
pub trait SpiTransfer: Send {
    /// Perform the transfers of `tx`, writing what came back into `rx`.
    fn transfer(
        &mut self,
        tx: &[u8],
        rx: &mut [u8],
        bytes_per_frame: usize,
        frame_period_us: u32,
    ) -> io::Result<()>;
}

/// A recorded MISO byte stream, served in order; also keeps the MOSI bytes it was sent, so a
/// test can check the commands.
#[derive(Debug, Clone)]
pub struct RecordedSpi {
    miso: Vec<u8>,
    at: usize,
    mosi: Vec<u8>,
}

impl RecordedSpi {
    /// Serve `miso` in order.
    pub fn new(miso: Vec<u8>) -> RecordedSpi {
        RecordedSpi {
            miso,
            at: 0,
            mosi: Vec::new(),
        }
    }

    /// The MOSI bytes sent so far.
    pub fn mosi(&self) -> &[u8] {
        &self.mosi
    }
}

impl SpiTransfer for RecordedSpi {
    fn transfer(
        &mut self,
        tx: &[u8],
        rx: &mut [u8],
        _bytes_per_frame: usize,
        _period: u32,
    ) -> io::Result<()> {
        let left = self.miso.len() - self.at;
        if left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "end of the recorded spi stream",
            ));
        }
        // A recording that ends mid-frame is not silently padded: only whole transfers count.
        if left < tx.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "recorded spi stream ends with {left} bytes, {} needed",
                    tx.len()
                ),
            ));
        }
        rx.copy_from_slice(&self.miso[self.at..self.at + tx.len()]);
        self.at += tx.len();
        self.mosi.extend_from_slice(tx);
        Ok(())
    }
}

/// A Linux spidev device (`/dev/spidevB.C`), mode 0, 8-bit words.
#[cfg(feature = "spidev")]
pub struct Spidev {
    dev: spidev::Spidev,
    spi_hz: u32,
}

#[cfg(feature = "spidev")]
impl Spidev {
    /// Open and configure the device.
    pub fn open(path: &Path, spi_hz: u32) -> io::Result<Spidev> {
        use spidev::{SpiModeFlags, SpidevOptions};
        let mut dev = spidev::Spidev::open(path)?;
        let options = SpidevOptions::new()
            .bits_per_word(8)
            .max_speed_hz(spi_hz)
            .mode(SpiModeFlags::SPI_MODE_0)
            .build();
        dev.configure(&options)?;
        Ok(Spidev { dev, spi_hz })
    }
}

#[cfg(feature = "spidev")]
impl SpiTransfer for Spidev {
    fn transfer(
        &mut self,
        tx: &[u8],
        rx: &mut [u8],
        bytes_per_frame: usize,
        frame_period_us: u32,
    ) -> io::Result<()> {
        use spidev::SpidevTransfer;
        // The kernel limits one message to `bufsiz` bytes (4096 by default), so send whole
        // frames in batches below it.
        const BUFSIZ: usize = 4096;
        let frames_per_batch = (BUFSIZ / bytes_per_frame).max(1);
        let frame_us = (bytes_per_frame as u64 * 8 * 1_000_000 / u64::from(self.spi_hz)) as u32;
        // The delay after each frame's last conversion paces the frames; user-space timing is
        // only approximate (the kernel schedules the message), which the source documents.
        let gap_us = frame_period_us
            .saturating_sub(frame_us)
            .min(u32::from(u16::MAX)) as u16;
        for (tx_batch, rx_batch) in tx
            .chunks(frames_per_batch * bytes_per_frame)
            .zip(rx.chunks_mut(frames_per_batch * bytes_per_frame))
        {
            let last = tx_batch.len() / 3 - 1;
            let mut transfers: Vec<SpidevTransfer<'_, '_>> = tx_batch
                .chunks(3)
                .zip(rx_batch.chunks_mut(3))
                .enumerate()
                .map(|(n, (t, r))| {
                    let mut x = SpidevTransfer::read_write(t, r);
                    x.speed_hz = self.spi_hz;
                    // Release CS after each conversion (for the message's last transfer the
                    // kernel releases it anyway; cs_change there would keep it asserted).
                    x.cs_change = u8::from(n != last);
                    if (n + 1) * 3 % bytes_per_frame == 0 {
                        x.delay_usecs = gap_us;
                    }
                    x
                })
                .collect();
            self.dev.transfer_multiple(&mut transfers)?;
        }
        Ok(())
    }
}
