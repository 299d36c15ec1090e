//! `callgate backup`: the real binary copies the database of a gateway
//! that is serving and taking triggers; the copy holds every job accepted
//! before the backup began and opens as a gateway's database. It never
//! overwrites a file without `--force`, never the live database, and sends
//! PostgreSQL users to `pg_dump`.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::durability::{Accepted, Gateway, config_dir, spawn_load};
use crate::support::{self, JWT_SECRET};

fn backup(config: &Path, data: &Path, to: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("backup")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .arg("--to")
        .arg(to)
        .args(extra)
        .env("TEST_JWT_SECRET", JWT_SECRET)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files in `dir` (names), to show nothing partial was left behind.
fn names(dir: &Path) -> HashSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_serving_holds_every_job_accepted_before_it() {
    let (config, key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let gw = Gateway::start(config.path(), data.path());
    let client = gw.client(data.path());

    // Triggers keep arriving before, during and after the backup.
    let accepted: Accepted = Arc::default();
    let reached = Arc::new(tokio::sync::Notify::new());
    let url = gw.url("/v1/triggers/demo-call");
    let workers = spawn_load(&client, &url, &key, 8, &accepted, 300, &reached);
    tokio::time::timeout(Duration::from_secs(60), reached.notified())
        .await
        .unwrap();
    let before: Vec<String> = accepted.lock().unwrap().clone();

    let target = out.path().join("callgate-backup.db");
    let (cfg, dat, tgt) = (
        config.path().to_owned(),
        data.path().to_owned(),
        target.clone(),
    );
    let started = Instant::now();
    let result = tokio::task::spawn_blocking(move || backup(&cfg, &dat, &tgt, &[]))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(result.status.success(), "{}", stderr(&result));
    let during = accepted.lock().unwrap().len() - before.len();
    // The gateway still accepts after the backup: its writer was not stuck.
    let target_count = accepted.lock().unwrap().len() + 50;
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.lock().unwrap().len() < target_count {
        assert!(
            Instant::now() < deadline,
            "accepting stalled after the backup"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for w in &workers {
        w.abort();
    }
    eprintln!(
        "backup of {} accepted jobs took {took:?} ({during} more accepted meanwhile): {}",
        before.len(),
        stderr(&result).trim()
    );
    assert_eq!(
        names(out.path()),
        HashSet::from(["callgate-backup.db".to_owned()]),
        "only the backup, nothing partial"
    );

    // A second gateway on a copy of the backup has every job accepted
    // before the backup began.
    let restored = tempfile::tempdir().unwrap();
    std::fs::copy(&target, restored.path().join("callgate.db")).unwrap();
    let gw2 = Gateway::start(config.path(), restored.path());
    let client2 = gw2.client(restored.path());
    for id in &before {
        let r = client2
            .get(gw2.url(&format!("/v1/jobs/{id}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "job {id}, accepted before the backup, missing"
        );
    }
    let mut gw2 = gw2;
    gw2.signal("TERM");
    assert!(gw2.child.wait().unwrap().success());

    // And the copy is the whole snapshot, not a prefix: its job count is
    // between what was accepted before and what was accepted by the end.
    let store = support::open_store(restored.path()).await;
    let in_backup = support::all_jobs(&*store).await.len();
    store.close().await;
    let total = accepted.lock().unwrap().len();
    assert!(
        (before.len()..=total).contains(&in_backup),
        "{in_backup} jobs in the backup, {} accepted before it, {total} in all",
        before.len()
    );
    let mut gw = gw;
    gw.signal("TERM");
    assert!(gw.child.wait().unwrap().success());
}

#[tokio::test]
async fn backup_refuses_to_overwrite_a_file_without_force_and_never_the_live_database() {
    let (config, _key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let store = support::open_store(data.path()).await;
    store.close().await;
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("nightly.db");
    std::fs::write(&target, "yesterday's backup").unwrap();

    let refused = backup(config.path(), data.path(), &target, &[]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(std::fs::read(&target).unwrap(), b"yesterday's backup");
    assert_eq!(names(out.path()), HashSet::from(["nightly.db".to_owned()]));

    let forced = backup(config.path(), data.path(), &target, &["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(
        std::fs::read(&target)
            .unwrap()
            .starts_with(b"SQLite format 3\0")
    );
    assert_eq!(names(out.path()), HashSet::from(["nightly.db".to_owned()]));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "the backup is readable by others: {mode:o}"
        );
    }

    let live = data.path().join("callgate.db");
    let before = std::fs::read(&live).unwrap();
    let onto_itself = backup(config.path(), data.path(), &live, &["--force"]);
    assert_eq!(
        onto_itself.status.code(),
        Some(2),
        "{}",
        stderr(&onto_itself)
    );
    assert!(stderr(&onto_itself).contains("live database"));
    assert_eq!(std::fs::read(&live).unwrap(), before);
}

#[test]
fn backup_with_no_database_fails_and_writes_nothing() {
    let (config, _key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = backup(config.path(), data.path(), &out.path().join("b.db"), &[]);
    assert_eq!(r.status.code(), Some(1), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("no callgate database"),
        "{}",
        stderr(&r)
    );
    assert!(names(out.path()).is_empty());
    assert!(names(data.path()).is_empty(), "backup created a database");
}

#[test]
fn backup_of_a_postgres_store_points_to_pg_dump_without_showing_the_password() {
    let (config, _key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let r = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("backup")
        .arg("--config")
        .arg(config.path())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--to")
        .arg(out.path().join("b.db"))
        .env("TEST_JWT_SECRET", JWT_SECRET)
        .env(
            "CALLGATE_STORAGE__URL",
            "postgres://callgate:hunter2-secret@db.internal:5432/callgate",
        )
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let err = stderr(&r);
    assert!(err.contains("pg_dump"), "{err}");
    assert!(err.contains("pg_restore"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password reached the terminal: {err}"
    );
    assert!(names(out.path()).is_empty());
}

#[test]
fn backup_needs_only_the_storage_settings_to_be_valid() {
    // A secret elsewhere in callgate.toml that this shell does not export
    // does not stop a backup (serve and check would refuse it).
    let (config, _key) = config_dir();
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        support::open_store(data.path()).await.close().await;
    });
    let r = Command::new(env!("CARGO_BIN_EXE_callgate"))
        .arg("backup")
        .arg("--config")
        .arg(config.path())
        .arg("--data-dir")
        .arg(data.path())
        .arg("--to")
        .arg(out.path().join("b.db"))
        .env_remove("TEST_JWT_SECRET")
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", stderr(&r));
    // While a broken [storage] does.
    std::fs::write(
        config.path().join("callgate.toml"),
        "[storage]\nurl = \"${UNSET_STORAGE_URL_42}\"\n",
    )
    .unwrap();
    let r = backup(config.path(), data.path(), &out.path().join("c.db"), &[]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    assert!(
        stderr(&r).contains("storage.url: environment variable `UNSET_STORAGE_URL_42` is not set"),
        "{}",
        stderr(&r)
    );
}
