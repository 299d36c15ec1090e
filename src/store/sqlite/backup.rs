//! Online backup of the SQLite file: `VACUUM INTO` on a read-only
//! connection of its own, next to a running gateway.
//!
//! Why `VACUUM INTO` and not the online-backup API (rusqlite's `backup`
//! feature): the database is in WAL mode, so a reader never blocks the
//! writer; `VACUUM INTO` runs as one read transaction and writes a
//! consistent snapshot of the moment it started, whatever the gateway
//! commits meanwhile. The backup API copies pages in steps and restarts from
//! the beginning whenever another connection writes between two steps, so on
//! a busy gateway it either never finishes or must copy everything in one
//! step (one read transaction: the same cost without the compaction). The
//! copy `VACUUM INTO` makes is also compact (no free pages) and needs no
//! extra feature. Its one cost to the gateway: while the read transaction is
//! open, checkpoints cannot reset the WAL, which grows until the backup ends.
//!
//! SQLite does not fsync the file `VACUUM INTO` writes; the caller
//! (`store::backup`) does, before it gives the file its final name.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::store::BackupError;

/// Writes a snapshot of the database at `src` into `dest` (which must not
/// exist or be empty), checks the copy and returns how many jobs it holds.
pub(crate) fn vacuum_into(
    src: &Path,
    dest: &Path,
    busy_timeout: Duration,
) -> Result<u64, BackupError> {
    let failed = |what: &str, e: rusqlite::Error| BackupError::Failed(format!("{what}: {e}"));
    if !src.is_file() {
        return Err(BackupError::NoDatabase(src.to_path_buf()));
    }
    let dest_str = dest
        .to_str()
        .ok_or_else(|| BackupError::Failed(format!("{} is not a UTF-8 path", dest.display())))?;
    let conn = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| failed(&format!("opening {}", src.display()), e))?;
    conn.busy_timeout(busy_timeout)
        .map_err(|e| failed("setting busy_timeout", e))?;
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| failed(&format!("reading {}", src.display()), e))?;
    if tables == 0 {
        return Err(BackupError::NoDatabase(src.to_path_buf()));
    }
    conn.execute("VACUUM INTO ?1", [dest_str])
        .map_err(|e| failed(&format!("copying {}", src.display()), e))?;
    conn.close()
        .map_err(|(_, e)| failed("closing the source", e))?;
    verify(dest)
        .map_err(|e| BackupError::Failed(format!("checking the copy {}: {e}", dest.display())))
}

/// Opens the copy on its own and checks it: `quick_check` says `ok`, and
/// its jobs can be counted.
fn verify(path: &Path) -> Result<u64, String> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| e.to_string())?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if check != "ok" {
        return Err(format!("quick_check: {check}"));
    }
    let jobs: i64 = conn
        .query_row("SELECT count(*) FROM jobs", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    conn.close().map_err(|(_, e)| e.to_string())?;
    Ok(jobs.max(0).unsigned_abs())
}
