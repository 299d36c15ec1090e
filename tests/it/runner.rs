//! The runner end to end: triggers become calls through the simulator, its
//! signed events come back over HTTPS, post-call automations run; calling
//! rules (lines, windows, schedules, do-not-call) and failure handling.

use std::time::Duration;

use callgate::clock::ManualClock;
use serde_json::{Value, json};

use crate::support::{TestApp, count_status, demo_body};

pub const SIM_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A fast, always-answering simulator with a known signing secret.
pub fn fast_simulator(extra: &str) -> String {
    format!(
        "[providers.simulator]\ntype = \"simulator\"\nseed = 1\nring_time = \"10ms\"\nanswer_rate = 1.0\n\
         min_duration = \"30ms\"\nmax_duration = \"60ms\"\noutcomes = {{ interested = 1.0 }}\n\
         callback_secret = \"{SIM_SECRET}\"\n{extra}\n"
    )
}

/// The demo agent without a calling window (tests run at any hour).
pub const ANYTIME_AGENT: &str = "[agents.demo-agent]\nname = \"Demo Agent\"\nprovider = \"simulator\"\n\
    from_number = \"+15550009999\"\nmax_concurrent_calls = 3\ncalling_window = { enabled = false }\n";

/// Polls `check` until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    app.get(key, path).await.json().await.unwrap()
}

pub async fn accept(app: &TestApp, trigger: &str, body: &Value) -> String {
    let r = app.trigger(app.key("zapier"), trigger, body).await;
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trigger_places_a_call_whose_events_come_back_and_start_the_post_call_automation() {
    call_round_trip(TestApp::builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres_a_trigger_places_a_call_whose_events_come_back_and_start_the_post_call_automation()
 {
    let url = crate::pg_url_or_skip!(
        "on_postgres_a_trigger_places_a_call_whose_events_come_back_and_start_the_post_call_automation"
    );
    call_round_trip(TestApp::builder().postgres(&url)).await;
}

/// A trigger's job dials, the simulator's signed events complete the call,
/// and `call.completed` starts the subscribed automation: the whole path
/// through the store, on the engine `builder` configures.
async fn call_round_trip(builder: crate::support::Builder) {
    let automations = "[automations.after-call]\non = \"call.completed\"\nfilter = { outcomes = [\"interested\"] }\n\
        [[automations.after-call.steps]]\ntype = \"branch\"\ncases = { interested = \"end\" }\ndefault = \"fail\"\n";
    let app = builder
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .file("automations.toml", automations)
        .file("triggers.toml", "[triggers.demo-call]\nschema = \"schemas/demo-call.json\"\naction = { type = \"start_call\", agent = \"demo-agent\" }\n")
        .key("zapier", &["triggers:run", "jobs:read"])
        .start()
        .await;
    let key = app.key("zapier").to_owned();
    let job_id = accept(&app, "demo-call", &demo_body()).await;
    assert_eq!(app.run_pending().await, 1);

    let job = get_json(&app, &key, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let call_id = job["result"]["call_ids"][0].as_str().unwrap().to_owned();
    assert_eq!(job["calls"][0]["call_id"], call_id);
    let statuses: Vec<&str> = job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["queued", "running", "succeeded"]);

    // The simulator reports through the signed events endpoint.
    let call = eventually(Duration::from_secs(10), "the call to complete", || async {
        let c = get_json(&app, &key, &format!("/v1/calls/{call_id}")).await;
        (c["status"] == "completed").then_some(c)
    })
    .await;
    assert_eq!(call["to"], "+15550121234");
    assert_eq!(call["from"], "+15550009999");
    assert_eq!(call["outcome"], "interested");
    assert!(call["duration_seconds"].is_number());
    assert!(call["answered_at"].is_string() && call["ended_at"].is_string());
    assert_eq!(call["variables"], json!({"plan": "enterprise"}));

    // call.completed started the subscribed automation, which ran with the call.
    app.run_pending().await;
    let started: Vec<String> = app
        .all_jobs()
        .await
        .into_iter()
        .filter(|j| j.action["name"] == "after-call" && j.action["call_id"] == call_id.as_str())
        .map(|j| j.id.into_string())
        .collect();
    assert_eq!(
        started.len(),
        1,
        "one after-call job for the call: {started:?}"
    );
    let auto_job = &started[0];
    let auto = get_json(&app, &key, &format!("/v1/jobs/{auto_job}")).await;
    assert_eq!(auto["status"], "succeeded", "{auto}");
    assert_eq!(auto["input"]["call"]["id"], call_id);
    assert_eq!(auto["steps"][0]["result"], "interested -> end");
    assert!(auto["trigger_id"].is_null());
    // Exactly one dial for one job.
    assert_eq!(
        app.dial_log()
            .iter()
            .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
            .count(),
        1
    );
}

/// How many `waiting` events each job of `app` logged, by job.
async fn waiting_events(app: &TestApp) -> Vec<i64> {
    let mut counts = Vec::new();
    for job in app.all_jobs().await {
        let events = app.store().job_events(&job.id).await.unwrap();
        counts.push(
            events
                .iter()
                .filter(|e| e.status == callgate::store::JobStatus::Waiting)
                .count() as i64,
        );
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_triggers_never_have_more_than_three_calls_in_progress() {
    let sim = "[providers.simulator]\ntype = \"simulator\"\nring_time = \"20ms\"\nanswer_rate = 1.0\n\
        min_duration = \"80ms\"\nmax_duration = \"150ms\"\n";
    let app = TestApp::builder()
        .file("providers.toml", sim)
        .file("agents.toml", ANYTIME_AGENT)
        .main("[runner]\nworkers = 16\nline_retry = \"50ms\"\npoll_interval = \"50ms\"")
        .key("zapier", &["triggers:run", "jobs:read"])
        .background_runner()
        .start()
        .await;
    let mut sends = Vec::new();
    for i in 0..50 {
        let (client, url, key) = (
            app.client.clone(),
            app.url("/v1/triggers/demo-call"),
            app.key("zapier").to_owned(),
        );
        sends.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .json(&json!({"phone_number": format!("+1555020{i:04}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }));
    }
    for s in sends {
        s.await.unwrap();
    }
    eventually(Duration::from_secs(60), "50 completed calls", || async {
        let done = count_status(app.store(), "calls", Some("completed")).await;
        (done == 50).then_some(())
    })
    .await;
    // The phone network's own record: dial and hang-up times.
    let log = app.dial_log();
    let mut edges = Vec::new();
    for e in &log {
        match e {
            callgate::calls::simulator::LogEntry::Dial { at_ms, .. } => edges.push((*at_ms, 1)),
            callgate::calls::simulator::LogEntry::End { at_ms, .. } => edges.push((*at_ms, -1)),
        }
    }
    edges.sort();
    let (mut now, mut peak) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    assert!(peak <= 3, "{peak} calls were in progress at once");
    assert_eq!(peak, 3, "the three lines were all used");
    let dials = log
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count();
    assert_eq!(dials, 50, "each job dialed exactly once");
    let waited = waiting_events(&app)
        .await
        .iter()
        .filter(|n| **n > 0)
        .count();
    assert!(
        waited > 0,
        "jobs waited for a free line rather than failing"
    );
    let all = count_status(app.store(), "jobs", None).await;
    let succeeded = count_status(app.store(), "jobs", Some("succeeded")).await;
    assert_eq!(all - succeeded, 0, "jobs not succeeded");
}

#[tokio::test]
async fn schedule_at_holds_a_job_back_until_its_time() {
    let clock = ManualClock::new(1_800_000_000_000);
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .clock(clock.clone())
        .start()
        .await;
    let at = callgate::clock::rfc3339(1_800_000_000_000 + 3_600_000);
    let r = app
        .trigger(
            app.key("zapier"),
            "demo-call",
            &json!({"phone_number": "+15550121234", "schedule_at": at}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "scheduled");
    assert_eq!(app.run_pending().await, 0, "not due yet");
    clock.advance_ms(3_600_000);
    assert_eq!(app.run_pending().await, 1);
    let job = get_json(
        &app,
        app.key("zapier"),
        body["links"]["self"].as_str().unwrap(),
    )
    .await;
    assert_eq!(job["status"], "succeeded");

    let r = app
        .trigger(
            app.key("zapier"),
            "demo-call",
            &json!({"phone_number": "+15550121234", "not_before": "tomorrow"}),
        )
        .await;
    let problem = crate::support::problem(r, 422).await;
    assert_eq!(problem["errors"][0]["pointer"], "/not_before");
}

#[tokio::test]
async fn numbers_on_the_do_not_call_list_are_rejected_without_dialing() {
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .file("do_not_call.txt", "# opted out\n+15550121234\n")
        .key("zapier", &["triggers:run"])
        .start()
        .await;
    let job_id = accept(
        &app,
        "demo-call",
        &json!({"phone_number": "+1 (555) 012-1234"}),
    )
    .await;
    app.run_pending().await;
    let job = get_json(&app, app.key("zapier"), &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "rejected");
    assert!(
        job["status_reason"]
            .as_str()
            .unwrap()
            .contains("do-not-call")
    );
    assert!(job["calls"].as_array().unwrap().is_empty());
    assert!(app.dial_log().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_automation_branches_on_the_outcome_and_waits_for_each_call() {
    let app = TestApp::builder()
        .file(
            "providers.toml",
            &fast_simulator("").replace("interested = 1.0", "voicemail = 1.0"),
        )
        .file("agents.toml", ANYTIME_AGENT)
        .key("zapier", &["triggers:run"])
        .background_runner()
        .start()
        .await;
    let key = app.key("zapier").to_owned();
    let job_id = accept(&app, "demo-automation", &demo_body()).await;
    let job = eventually(
        Duration::from_secs(20),
        "the automation to finish",
        || async {
            let j = get_json(&app, &key, &format!("/v1/jobs/{job_id}")).await;
            (j["status"] == "succeeded" || j["status"] == "failed").then_some(j)
        },
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let steps: Vec<String> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}:{}",
                s["type"].as_str().unwrap(),
                s["result"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            "start_call:placed",
            "wait_for_call:completed",
            "branch:voicemail -> second",
            "start_call:placed",
            "wait_for_call:completed"
        ]
    );
    assert_eq!(job["calls"].as_array().unwrap().len(), 2);
    assert!(
        job["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "waiting"),
        "it waited for the calls"
    );
    let second: Value = get_json(
        &app,
        &key,
        job["calls"][1]["links"]["self"].as_str().unwrap(),
    )
    .await;
    assert_eq!(second["variables"]["attempt"], 2);
    assert_eq!(
        second["variables"]["previous_call"],
        job["calls"][0]["call_id"]
    );
}

/// Runs `jobs` triggers against one agent with three lines and returns the
/// most `waiting` events any one job wrote, and their total.
async fn line_waiting_events(jobs: usize) -> (i64, i64) {
    // The backstop is an hour: every job that ran was woken by a freed line.
    let app = TestApp::builder()
        .file("providers.toml", &fast_simulator(""))
        .file("agents.toml", ANYTIME_AGENT)
        .main("[runner]\nworkers = 16\nline_retry = \"1h\"\npoll_interval = \"50ms\"")
        .key("zapier", &["triggers:run", "jobs:read"])
        .background_runner()
        .start()
        .await;
    for i in 0..jobs {
        let body = json!({"phone_number": format!("+1555030{i:04}")});
        assert_eq!(
            app.trigger(app.key("zapier"), "demo-call", &body)
                .await
                .status(),
            202
        );
    }
    eventually(
        Duration::from_secs(120),
        "every job to place its call",
        || async {
            let done = count_status(app.store(), "jobs", Some("succeeded")).await;
            (done == jobs as i64).then_some(())
        },
    )
    .await;
    let dials = app
        .dial_log()
        .iter()
        .filter(|e| matches!(e, callgate::calls::simulator::LogEntry::Dial { .. }))
        .count();
    assert_eq!(dials, jobs, "one dial per job");
    let per_job = waiting_events(&app).await;
    let most = per_job.iter().copied().max().unwrap_or(0);
    let total = per_job.iter().sum();
    (most, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_freed_line_wakes_one_waiter_and_waiting_events_grow_linearly() {
    // Before: every freed line woke every waiter, and each wrote a
    // `waiting` event on finding the lines taken again (40 per job at 100
    // jobs, 148 at 400). Now a job waits once, however long the queue.
    for jobs in [30, 90] {
        let (most, total) = line_waiting_events(jobs).await;
        assert!(
            most <= 1,
            "{jobs} jobs: one job wrote {most} waiting events"
        );
        assert!(
            total <= jobs as i64,
            "{jobs} jobs wrote {total} waiting events"
        );
        assert!(total > 0, "{jobs} jobs on three lines: some had to wait");
    }
}
