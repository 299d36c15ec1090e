//! The dial log: every dial appended and fsync'd before it is acknowledged
//! (`<data dir>/simulator/<name>/dials.jsonl`), the "phone network's" own
//! record that answers `lookup` after a crash and lets tests count dials.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One line of the dial log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogEntry {
    Dial {
        call_id: String,
        provider_call_id: String,
        to: String,
        agent: String,
        at_ms: i64,
    },
    End {
        call_id: String,
        status: String,
        at_ms: i64,
    },
}

pub(super) struct DialLog {
    pub(super) path: PathBuf,
    file: Mutex<File>,
    pub(super) dialed: Mutex<HashMap<String, (i64, String)>>,
}

impl DialLog {
    pub(super) fn open(path: &Path) -> anyhow::Result<(Self, Vec<LogEntry>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut entries = Vec::new();
        if let Ok(f) = File::open(path) {
            for line in BufReader::new(f).lines() {
                // A torn last line (crash mid-write) is not a dial that was acknowledged.
                if let Ok(entry) = serde_json::from_str::<LogEntry>(&line?) {
                    entries.push(entry);
                }
            }
        }
        let dialed = entries
            .iter()
            .filter_map(|e| match e {
                LogEntry::Dial {
                    call_id,
                    provider_call_id,
                    at_ms,
                    ..
                } => Some((call_id.clone(), (*at_ms, provider_call_id.clone()))),
                LogEntry::End { .. } => None,
            })
            .collect();
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok((
            Self {
                path: path.to_owned(),
                file: Mutex::new(file),
                dialed: Mutex::new(dialed),
            },
            entries,
        ))
    }

    pub(super) fn append(&self, entry: &LogEntry, sync: bool) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&line)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Reads a dial log (tests count dials and measure concurrency with it).
pub fn read_log(path: &Path) -> std::io::Result<Vec<LogEntry>> {
    let f = File::open(path)?;
    Ok(BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect())
}

/// Where a simulator keeps its dial log.
pub fn log_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("simulator").join(name).join("dials.jsonl")
}
