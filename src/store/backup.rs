//! `callgate backup`: a consistent copy of the database while the gateway
//! runs, for the SQLite engine (PostgreSQL has `pg_dump`).
//!
//! Policy: the copy is written under a temporary name beside the target
//! (mode 0600: it holds callers' inputs), checked, fsync'd, and only then
//! given its final name, so the target is either absent, the old file or
//! the complete new copy, never a partial one. An existing target is kept
//! unless `force`; with `force` it is replaced atomically (rename). The
//! live database itself is never a target. The gateway's writer is not
//! blocked: the copy is read on a connection of its own (see
//! `sqlite/backup.rs`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::StorageConfig;

/// Why a backup was not made.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// `storage.url` is a PostgreSQL URL (not shown: it may hold a password).
    #[error(
        "storage.url points to PostgreSQL; `callgate backup` copies SQLite databases only. \
         Back PostgreSQL up with its own tools: `pg_dump -Fc --file callgate.dump \"$DATABASE_URL\"`, \
         restore with `pg_restore --no-owner --dbname \"$DATABASE_URL\" callgate.dump` \
         (README: Deployment, Backups)"
    )]
    UsePgDump,
    /// A URL of no known engine.
    #[error("storage.url `{0}`: unsupported engine (expected `sqlite:<path>` or `postgres://…`)")]
    UnsupportedUrl(String),
    /// The target exists and `force` was not given.
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    /// The target is the live database.
    #[error("{0} is the live database; write the backup somewhere else")]
    IsSource(PathBuf),
    /// No callgate database at the configured path.
    #[error(
        "no callgate database at {0} (check --data-dir and storage.url; the gateway creates it on first start)"
    )]
    NoDatabase(PathBuf),
    /// Reading, writing or checking failed (message for the operator).
    #[error("{0}")]
    Failed(String),
}

impl BackupError {
    /// A usage or configuration problem (exit 2) rather than a failure
    /// while copying (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::UsePgDump | Self::UnsupportedUrl(_) | Self::Exists(_) | Self::IsSource(_)
        )
    }
}

/// A backup that was written.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The database that was copied.
    pub source: PathBuf,
    /// The copy.
    pub path: PathBuf,
    /// Jobs in the copy.
    pub jobs: u64,
    /// Size of the copy.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Copies the database `cfg.url` names (relative SQLite paths are inside
/// `data_dir`) to `to`. Blocking: call it off the async runtime.
pub fn backup(
    cfg: &StorageConfig,
    data_dir: &Path,
    to: &Path,
    force: bool,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let url = cfg.url.as_str();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::UsePgDump);
    }
    let source = super::sqlite_path(url, data_dir)
        .ok_or_else(|| BackupError::UnsupportedUrl(url.to_owned()))?;
    let target_exists = fs::symlink_metadata(to).is_ok();
    if target_exists && same_file(&source, to) {
        return Err(BackupError::IsSource(to.to_path_buf()));
    }
    if target_exists && !force {
        return Err(BackupError::Exists(to.to_path_buf()));
    }
    let file_name = to
        .file_name()
        .ok_or_else(|| BackupError::Failed(format!("{} names no file", to.display())))?;
    let dir = match to.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = Partial::create(dir.join(format!(
        ".{}.partial-{}",
        file_name.to_string_lossy(),
        std::process::id()
    )))?;
    let jobs = super::sqlite::backup::vacuum_into(&source, &tmp.0, cfg.busy_timeout)?;
    let io_err = |what: &str, e: io::Error| BackupError::Failed(format!("{what}: {e}"));
    File::open(&tmp.0)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err(&format!("flushing {}", tmp.0.display()), e))?;
    if force {
        fs::rename(&tmp.0, to).map_err(|e| io_err(&format!("renaming to {}", to.display()), e))?;
    } else {
        // A hard link fails if the target appeared meanwhile: no overwrite
        // even in a race. Where the filesystem has no hard links, fall back
        // to a rename after one more look.
        match fs::hard_link(&tmp.0, to) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(BackupError::Exists(to.to_path_buf()));
            }
            Err(_) if fs::symlink_metadata(to).is_ok() => {
                return Err(BackupError::Exists(to.to_path_buf()));
            }
            Err(_) => fs::rename(&tmp.0, to)
                .map_err(|e| io_err(&format!("renaming to {}", to.display()), e))?,
        }
    }
    drop(tmp);
    // The new name is durable once the directory is.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(&format!("flushing directory {}", dir.display()), e))?;
    let bytes = fs::metadata(to)
        .map_err(|e| io_err(&format!("reading {}", to.display()), e))?
        .len();
    Ok(BackupReport {
        source,
        path: to.to_path_buf(),
        jobs,
        bytes,
        elapsed: started.elapsed(),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The temporary copy: created empty and owner-only (SQLite keeps the mode
/// of a file it opens), removed with its side files unless it was renamed.
struct Partial(PathBuf);

impl Partial {
    fn create(path: PathBuf) -> Result<Self, BackupError> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .map_err(|e| BackupError::Failed(format!("creating {}: {e}", path.display())))?;
        Ok(Self(path))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = fs::remove_file(p);
        }
    }
}
