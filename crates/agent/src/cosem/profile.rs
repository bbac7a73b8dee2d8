//! The load profile (class 7, 1.0.99.1.0.255) rows on disk: one text line per capture,
//! appended and flushed, so the profile survives a restart. A torn last line (a crash while
//! writing) is dropped and reported; the file is compacted when it holds twice its capacity.

use std::io::Write;
use std::path::{Path, PathBuf};

use schema::EnergyCounters;

/// One captured row: meter time and the six energy registers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileRow {
    pub unix_s: i64,
    pub counters: EnergyCounters,
}

impl ProfileRow {
    fn to_line(self) -> String {
        let c = self.counters;
        format!(
            "{},{},{},{},{},{},{}\n",
            self.unix_s, c.import_wh, c.export_wh, c.q1_varh, c.q2_varh, c.q3_varh, c.q4_varh
        )
    }

    fn parse(line: &str) -> Option<ProfileRow> {
        let mut it = line.split(',');
        let unix_s = it.next()?.parse().ok()?;
        let mut v = [0f64; 6];
        for x in &mut v {
            *x = it.next()?.parse().ok()?;
        }
        if it.next().is_some() || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        Some(ProfileRow {
            unix_s,
            counters: EnergyCounters {
                import_wh: v[0],
                export_wh: v[1],
                q1_varh: v[2],
                q2_varh: v[3],
                q3_varh: v[4],
                q4_varh: v[5],
            },
        })
    }
}

/// The persisted load profile: rows oldest first, at most `capacity`.
#[derive(Debug)]
pub struct LoadProfileStore {
    path: PathBuf,
    capacity: usize,
    rows: Vec<ProfileRow>,
    lines_in_file: usize,
    /// Lines skipped as damaged when the file was opened.
    pub damaged_lines: usize,
}

impl LoadProfileStore {
    pub fn open(path: &Path, capacity: usize) -> Result<LoadProfileStore, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut rows = Vec::new();
        let mut damaged = 0;
        let mut lines = 0;
        for line in text.lines() {
            lines += 1;
            match ProfileRow::parse(line) {
                // Rows are time-ordered: a row not after the previous one (clock moved back)
                // is kept out so range selection stays a simple ordered scan.
                Some(r) if rows.last().is_none_or(|p: &ProfileRow| r.unix_s > p.unix_s) => {
                    rows.push(r)
                }
                Some(_) => {}
                None => damaged += 1,
            }
        }
        if damaged > 0 {
            tracing::warn!(path = %path.display(), damaged, "load profile: damaged lines skipped");
        }
        let drop = rows.len().saturating_sub(capacity);
        rows.drain(..drop);
        let mut store = LoadProfileStore {
            path: path.to_path_buf(),
            capacity,
            rows,
            lines_in_file: lines,
            damaged_lines: damaged,
        };
        if damaged > 0 || !text.is_empty() && !text.ends_with('\n') {
            store.compact()?;
        }
        Ok(store)
    }

    pub fn rows(&self) -> &[ProfileRow] {
        &self.rows
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends a row (ignored when not after the newest one) and writes it to disk.
    pub fn capture(&mut self, row: ProfileRow) -> Result<(), String> {
        if self.rows.last().is_some_and(|p| row.unix_s <= p.unix_s) {
            return Ok(());
        }
        if self.rows.len() >= self.capacity {
            self.rows.remove(0);
        }
        self.rows.push(row);
        if self.lines_in_file + 1 > 2 * self.capacity {
            return self.compact();
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        f.write_all(row.to_line().as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("cannot append to {}: {e}", self.path.display()))?;
        self.lines_in_file += 1;
        Ok(())
    }

    /// Rewrites the file with the kept rows (temporary file, sync, rename).
    fn compact(&mut self) -> Result<(), String> {
        let tmp = self.path.with_extension("tmp");
        let text: String = self.rows.iter().map(|r| r.to_line()).collect();
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
            .and_then(|_| std::fs::rename(&tmp, &self.path))
            .map_err(|e| format!("cannot rewrite {}: {e}", self.path.display()))?;
        self.lines_in_file = self.rows.len();
        Ok(())
    }
}
