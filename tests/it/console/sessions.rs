//! Session lifetime on the server's injectable clock: idle expiry, absolute
//! expiry however busy, and `last_seen_at` written at most once a minute.

use std::sync::Arc;

use callgate::clock::ManualClock;

use super::Console;
use crate::support::TestApp;

const T0: i64 = 1_800_000_000_000;
const MINUTE: i64 = 60_000;

async fn app(clock: &Arc<ManualClock>) -> TestApp {
    TestApp::builder()
        .main("[console]\nidle_timeout = \"10m\"\nabsolute_timeout = \"30m\"")
        .key("ops", &["console", "jobs:read"])
        .clock(clock.clone())
        .start()
        .await
}

async fn last_seen(app: &TestApp, console: &Console) -> Option<i64> {
    app.store()
        .console_session(&console.id_hash())
        .await
        .unwrap()
        .map(|s| s.last_seen_at_ms)
}

#[tokio::test]
async fn an_idle_session_ends_and_the_next_page_is_the_login() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let console = Console::login(&app, "ops").await;
    clock.advance_ms(9 * MINUTE);
    assert_eq!(console.get("/console/jobs").await.status(), 200);
    // Nine minutes after that use, still alive; ten, gone.
    clock.advance_ms(9 * MINUTE);
    assert_eq!(console.get("/console/jobs").await.status(), 200);
    clock.advance_ms(10 * MINUTE);
    let r = console.get("/console/jobs").await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    assert_eq!(last_seen(&app, &console).await, None, "deleted when met");
}

#[tokio::test]
async fn a_busy_session_still_ends_at_its_absolute_expiry() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let console = Console::login(&app, "ops").await;
    for _ in 0..5 {
        clock.advance_ms(5 * MINUTE);
        assert_eq!(console.get("/console/jobs").await.status(), 200);
    }
    clock.advance_ms(5 * MINUTE);
    assert_eq!(console.get("/console/jobs").await.status(), 303);
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_a_minute() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let console = Console::login(&app, "ops").await;
    assert_eq!(last_seen(&app, &console).await, Some(T0));
    clock.advance_ms(30_000);
    console.html("/console/jobs").await;
    assert_eq!(
        last_seen(&app, &console).await,
        Some(T0),
        "not within the minute"
    );
    clock.advance_ms(31_000);
    console.html("/console/jobs").await;
    assert_eq!(last_seen(&app, &console).await, Some(T0 + 61_000));
}

#[tokio::test]
async fn disabling_the_key_ends_its_sessions() {
    let clock = ManualClock::new(T0);
    let app = app(&clock).await;
    let console = Console::login(&app, "ops").await;
    let path = app.config_dir.path().join("keys.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{text}disabled = true\n")).unwrap();
    // The server re-reads the key file within its reload interval (100 ms
    // in tests): wait for the page to turn into the login.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = console.get("/console/jobs").await;
        if r.status() == 303 {
            assert_eq!(r.headers()["location"], "/console/login");
            break;
        }
        assert_eq!(r.status(), 200);
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last_seen(&app, &console).await, None, "deleted");
}

/// Two instances on one PostgreSQL database (one key file): a session made
/// through one is a session on the other, and a logout through the other
/// ends it on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_session_made_through_one_instance_works_on_another() {
    let url =
        crate::pg_url_or_skip!("on_postgres_a_session_made_through_one_instance_works_on_another");
    let a = TestApp::builder()
        .key("ops", &["console", "jobs:read"])
        .postgres(&url)
        .start()
        .await;
    let keys = std::fs::read_to_string(a.config_dir.path().join("keys.toml")).unwrap();
    let shared = a.pg.as_ref().unwrap().url.clone();
    let b = TestApp::builder()
        .file("keys.toml", &keys)
        .storage_url(&shared)
        .start()
        .await;
    let on_a = Console::login(&a, "ops").await;
    let on_b = Console {
        client: super::client(&b),
        base: b.base.clone(),
        token: on_a.token.clone(),
        csrf: on_a.csrf.clone(),
    };
    assert_eq!(on_b.get("/console/jobs").await.status(), 200);
    let r = on_b.post("/console/logout", &[("csrf", &on_b.csrf)]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(on_a.get("/console/jobs").await.status(), 303);
}
