//! The `replay` source: recorded waveforms (DESIGN §3.2 CSV/WAV), once or looped.
//!
//! The source plays any [`WaveformReader`] that an [`OpenRecording`] opens: by default
//! [`RecordingFiles`], the `waveform` crate's CSV/WAV readers (the same code `wattline analyze`
//! and the fuzz targets run); tests and the agent's own captures use [`MemoryRecording`]. Looping reopens the recording and flags the first
//! chunk of each pass as a discontinuity, so the analyser restarts its windows instead of
//! splicing the end of the file to its start.

mod config;
mod files;

pub use config::ReplayConfig;
pub use files::RecordingFiles;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::simulator::Pace;
use super::{Error, FrameLayout, NextOutput, SampleChunk, Source, SourceOutput};

/// A recording being read: frames in [`FrameLayout`] order, in volts and amperes.
pub trait WaveformReader: Send {
    /// The channel layout of the frames.
    fn layout(&self) -> FrameLayout;
    /// Frames per second.
    fn sample_rate_hz(&self) -> f64;
    /// Append up to `max_frames` frames to `out`; `Ok(0)` at the end. Errors name the file and
    /// line or offset.
    fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error>;
}

/// Opens recordings by path (with the `rate_hz`, `v_scale` and `i_scale` of the config).
pub trait OpenRecording: Send + Sync {
    /// Open `path` from the start.
    fn open(&self, path: &Path, config: &ReplayConfig) -> Result<Box<dyn WaveformReader>, Error>;
}

/// A recording held in memory.
#[derive(Clone, Debug)]
pub struct MemoryRecording {
    layout: FrameLayout,
    sample_rate_hz: f64,
    frames: Arc<Vec<f64>>,
    at: usize,
}

impl MemoryRecording {
    /// A recording of interleaved `frames` in `layout` at `sample_rate_hz`.
    pub fn new(
        layout: FrameLayout,
        sample_rate_hz: f64,
        frames: Vec<f64>,
    ) -> Result<MemoryRecording, Error> {
        if !frames.len().is_multiple_of(layout.channels()) {
            return Err(Error::recording(format!(
                "{} values are not whole frames of {} channels",
                frames.len(),
                layout.channels()
            )));
        }
        if !(sample_rate_hz.is_finite() && sample_rate_hz > 0.0) {
            return Err(Error::recording(format!(
                "sample rate {sample_rate_hz} is not positive"
            )));
        }
        Ok(MemoryRecording {
            layout,
            sample_rate_hz,
            frames: Arc::new(frames),
            at: 0,
        })
    }
}

impl WaveformReader for MemoryRecording {
    fn layout(&self) -> FrameLayout {
        self.layout
    }

    fn sample_rate_hz(&self) -> f64 {
        self.sample_rate_hz
    }

    fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error> {
        let c = self.layout.channels();
        let n = max_frames.min((self.frames.len() - self.at) / c);
        out.extend_from_slice(&self.frames[self.at..self.at + n * c]);
        self.at += n * c;
        Ok(n)
    }
}

impl OpenRecording for MemoryRecording {
    fn open(&self, _path: &Path, _config: &ReplayConfig) -> Result<Box<dyn WaveformReader>, Error> {
        let mut fresh = self.clone();
        fresh.at = 0;
        Ok(Box::new(fresh))
    }
}

/// The replay as a [`Source`].
pub struct ReplaySource {
    config: ReplayConfig,
    opener: Arc<dyn OpenRecording>,
    reader: Option<Box<dyn WaveformReader>>,
    /// Frames handed out in total (source time runs on across loops).
    frames_out: u64,
    sample_rate_hz: f64,
    layout: FrameLayout,
    new_pass: bool,
    started: Option<Instant>,
    pending: Option<(Option<Instant>, SampleChunk)>,
    ended: bool,
}

impl std::fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplaySource")
            .field("config", &self.config)
            .field("frames_out", &self.frames_out)
            .finish()
    }
}

impl ReplaySource {
    /// Open the recording of `config` through `opener` (reading its header now, so a bad file
    /// is reported at start-up).
    pub fn new(
        config: ReplayConfig,
        opener: Arc<dyn OpenRecording>,
    ) -> Result<ReplaySource, Error> {
        if config.chunk_frames == 0 {
            return Err(Error::config("replay.chunk_frames must be positive"));
        }
        for (what, x) in [
            ("replay.v_scale", config.v_scale),
            ("replay.i_scale", config.i_scale),
        ] {
            if !(x.is_finite() && x != 0.0) {
                return Err(Error::config(format!(
                    "{what} must be a non-zero number, got {x}"
                )));
            }
        }
        let reader = opener.open(&config.path, &config)?;
        let (sample_rate_hz, layout) = (reader.sample_rate_hz(), reader.layout());
        Ok(ReplaySource {
            config,
            opener,
            reader: Some(reader),
            frames_out: 0,
            sample_rate_hz,
            layout,
            new_pass: false,
            started: None,
            pending: None,
            ended: false,
        })
    }

    fn read_chunk(&mut self) -> Result<Option<SampleChunk>, Error> {
        let mut samples = Vec::with_capacity(self.config.chunk_frames * self.layout.channels());
        let mut reopened = false;
        loop {
            let reader = match &mut self.reader {
                Some(r) => r,
                None => return Ok(None),
            };
            let n = reader.read_frames(&mut samples, self.config.chunk_frames)?;
            if n > 0 {
                break;
            }
            if !self.config.looped || reopened {
                // The end (or an empty recording, which looping cannot fix).
                self.reader = None;
                return Ok(None);
            }
            let again = self.opener.open(&self.config.path, &self.config)?;
            if again.layout() != self.layout || again.sample_rate_hz() != self.sample_rate_hz {
                return Err(Error::recording(format!(
                    "{} changed its layout or sample rate while being replayed",
                    self.config.path.display()
                )));
            }
            self.reader = Some(again);
            self.new_pass = true;
            reopened = true;
        }
        let chunk = SampleChunk {
            t0_s: self.frames_out as f64 / self.sample_rate_hz,
            sample_rate_hz: self.sample_rate_hz,
            layout: self.layout,
            samples,
            discontinuity: std::mem::take(&mut self.new_pass),
        };
        self.frames_out += chunk.frames() as u64;
        Ok(Some(chunk))
    }
}

impl Source for ReplaySource {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn next(&mut self) -> NextOutput<'_> {
        Box::pin(async move {
            if self.pending.is_none() && !self.ended {
                match self.read_chunk()? {
                    Some(chunk) => {
                        let due = match self.config.pace {
                            Pace::RealTime => {
                                let started = *self.started.get_or_insert_with(Instant::now);
                                let end_s = self.frames_out as f64 / self.sample_rate_hz;
                                Some(started + Duration::from_secs_f64(end_s))
                            }
                            Pace::AsFastAsPossible => None,
                        };
                        self.pending = Some((due, chunk));
                    }
                    None => self.ended = true,
                }
            }
            let Some((due, _)) = &self.pending else {
                return Ok(None);
            };
            if let Some(due) = *due {
                tokio::time::sleep_until(due).await;
            }
            Ok(self.pending.take().map(|(_, c)| SourceOutput::Samples(c)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(frames: usize) -> MemoryRecording {
        let samples: Vec<f64> = (0..frames).flat_map(|k| [k as f64, -(k as f64)]).collect();
        MemoryRecording::new(FrameLayout::SinglePhase, 1000.0, samples).unwrap()
    }

    fn config(looped: bool, pace: Pace) -> ReplayConfig {
        ReplayConfig {
            path: "mem".into(),
            rate_hz: None,
            v_scale: 1.0,
            i_scale: 1.0,
            looped,
            pace,
            chunk_frames: 400,
        }
    }

    #[tokio::test]
    async fn plays_once_then_ends() {
        let mut src = ReplaySource::new(
            config(false, Pace::AsFastAsPossible),
            Arc::new(recording(1000)),
        )
        .unwrap();
        let mut sizes = Vec::new();
        while let Some(SourceOutput::Samples(c)) = src.next().await.unwrap() {
            assert!(!c.discontinuity);
            sizes.push((c.t0_s, c.frames()));
        }
        assert_eq!(sizes, [(0.0, 400), (0.4, 400), (0.8, 200)]);
        assert_eq!(src.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn loops_with_a_discontinuity_at_each_restart_and_time_running_on() {
        let mut src = ReplaySource::new(
            config(true, Pace::AsFastAsPossible),
            Arc::new(recording(600)),
        )
        .unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let Some(SourceOutput::Samples(c)) = src.next().await.unwrap() else {
                panic!()
            };
            seen.push((c.t0_s, c.frames(), c.discontinuity, c.samples[0]));
        }
        assert_eq!(
            seen,
            [
                (0.0, 400, false, 0.0),
                (0.4, 200, false, 400.0),
                (0.6, 400, true, 0.0),
                (1.0, 200, false, 400.0),
                (1.2, 400, true, 0.0)
            ]
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn real_time_pace_releases_each_chunk_at_its_end() {
        let mut src =
            ReplaySource::new(config(false, Pace::RealTime), Arc::new(recording(1000))).unwrap();
        let start = Instant::now();
        let mut at = Vec::new();
        while src.next().await.unwrap().is_some() {
            at.push((start.elapsed().as_secs_f64() * 1000.0).round());
        }
        assert_eq!(at, [400.0, 800.0, 1000.0]);
    }

    #[tokio::test]
    async fn an_empty_looped_recording_ends_instead_of_spinning() {
        let empty = MemoryRecording::new(FrameLayout::SinglePhase, 1000.0, Vec::new()).unwrap();
        let mut src =
            ReplaySource::new(config(true, Pace::AsFastAsPossible), Arc::new(empty)).unwrap();
        assert_eq!(src.next().await.unwrap(), None);
    }

    #[test]
    fn bad_recordings_and_configs_are_errors() {
        let err = MemoryRecording::new(FrameLayout::ThreePhase, 1000.0, vec![0.0; 7]).unwrap_err();
        assert!(err.to_string().contains("not whole frames of 6"));
        let mut c = config(false, Pace::AsFastAsPossible);
        c.v_scale = 0.0;
        let err = ReplaySource::new(c, Arc::new(recording(1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("replay.v_scale"), "{err}");
    }
}
