//! The default [`OpenRecording`]: CSV and WAV files read by the `waveform` crate, the same
//! readers `wattline analyze` and the fuzz targets run.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use waveform::{Layout, ReadOptions, Waveform};

use super::{OpenRecording, ReplayConfig, WaveformReader};
use crate::sources::{Error, FrameLayout};

/// Opens recordings from the file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordingFiles;

struct FileRecording {
    path: String,
    inner: Waveform<BufReader<File>>,
    layout: FrameLayout,
}

impl OpenRecording for RecordingFiles {
    fn open(&self, path: &Path, config: &ReplayConfig) -> Result<Box<dyn WaveformReader>, Error> {
        let shown = path.display().to_string();
        let file = File::open(path)
            .map_err(|e| Error::recording(format!("cannot open recording {shown}: {e}")))?;
        let options = ReadOptions {
            rate_hz: config.rate_hz,
            v_scale: config.v_scale,
            i_scale: config.i_scale,
        };
        let inner = Waveform::open(BufReader::with_capacity(1 << 16, file), &options)
            .map_err(|e| Error::recording(format!("{shown}: {e}")))?;
        let layout = match inner.layout() {
            Layout::SinglePhase => FrameLayout::SinglePhase,
            Layout::ThreePhaseFourWire {
                neutral_measured: false,
            } => FrameLayout::ThreePhase,
            Layout::ThreePhaseFourWire {
                neutral_measured: true,
            } => FrameLayout::ThreePhaseWithNeutral,
        };
        Ok(Box::new(FileRecording {
            path: shown,
            inner,
            layout,
        }))
    }
}

impl WaveformReader for FileRecording {
    fn layout(&self) -> FrameLayout {
        self.layout
    }

    fn sample_rate_hz(&self) -> f64 {
        self.inner.sample_rate_hz()
    }

    fn read_frames(&mut self, out: &mut Vec<f64>, max_frames: usize) -> Result<usize, Error> {
        self.inner
            .read_frames(out, max_frames)
            .map_err(|e| Error::recording(format!("{}: {e}", self.path)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(path: &Path) -> ReplayConfig {
        toml::from_str(&format!(
            "path = {:?}\nrate_hz = 8000.0",
            path.display().to_string()
        ))
        .unwrap()
    }

    #[test]
    fn reads_a_csv_recording_in_volts_and_amperes() {
        let dir = std::env::temp_dir().join(format!("agent-replay-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.csv");
        std::fs::write(&path, "v,i\n1.5,0.25\n-3,0.5\n").unwrap();
        let mut rec = RecordingFiles.open(&path, &config(&path)).unwrap();
        assert_eq!(rec.layout(), FrameLayout::SinglePhase);
        assert_eq!(rec.sample_rate_hz(), 8000.0);
        let mut out = Vec::new();
        assert_eq!(rec.read_frames(&mut out, 10).unwrap(), 2);
        assert_eq!(out, [1.5, 0.25, -3.0, 0.5]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn errors_name_the_file_and_the_line() {
        let dir = std::env::temp_dir().join(format!("agent-replay-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.csv");
        std::fs::write(&path, "v,i\n1,2\nx,3\n").unwrap();
        // The reader looks ahead while opening, so the bad cell may be reported by `open`.
        let err = match RecordingFiles.open(&path, &config(&path)) {
            Err(e) => e.to_string(),
            Ok(mut rec) => {
                let mut out = Vec::new();
                loop {
                    match rec.read_frames(&mut out, 1) {
                        Ok(0) => panic!("the bad cell was not reported"),
                        Ok(_) => {}
                        Err(e) => break e.to_string(),
                    }
                }
            }
        };
        assert!(err.contains("bad.csv") && err.contains("line 3"), "{err}");
        let missing = RecordingFiles
            .open(&dir.join("none.csv"), &config(&dir.join("none.csv")))
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("none.csv"), "{missing}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
