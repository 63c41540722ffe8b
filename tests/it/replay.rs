//! Workflow compatibility: every history in `tests/histories/` must replay against the current
//! code. See the README's "Changing the workflow": until `v1.0.0` a workflow change re-records
//! the corpus; from that tag on, a change that would break a recorded history fails here and
//! must be guarded with `ctx.patched(..)` (or become a new workflow type).
//!
//! Record with `AUTOPOST_RECORD_HISTORIES=1 cargo nextest run --test it replay::record_histories
//! --run-ignored only` while Temporal runs (`temporal-dev/test` starts one).

use std::{path::PathBuf, time::Duration};

use crate::common::{Options, TestApp};
use autopost_workflows::PublishPostWorkflow;
use chrono::Utc;
use serde_json::json;
use temporalio_client::{WorkflowCancelOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// The paths through `PublishPostWorkflow` that the corpus must cover, as `record_histories`
/// names them.
const PATHS: [&str; 20] = [
    "published-first-try",
    "published-after-retries",
    "needs-attention-after-retries",
    "needs-attention-then-retried",
    "preflight-failed",
    "cancelled",
    "rescheduled",
    "publish-now",
    "operator-cancelled",
    "outcome-unknown",
    "reconciled-after-loss",
    "continued-as-new",
    "published-after-continue-as-new",
    "restarted-by-a-command-after-closing",
    "armed-after-sleeping",
    "cancelled-while-armed",
    "cancel-refused-after-fire",
    "operator-cancelled-while-armed",
    "published-with-first-comment",
    "waited-for-the-quota",
];

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/histories")
}

fn replayer() -> WorkflowReplayer {
    WorkflowReplayer::new(WorkflowReplayerOptions::new().register_workflow::<PublishPostWorkflow>().unwrap().build()).unwrap()
}

fn recorded() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(histories_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn recorded_histories_replay_against_the_current_workflow() {
    let files = recorded();
    // Every path through the workflow is in the corpus, so none can break unnoticed.
    for path in PATHS {
        assert!(
            files.iter().any(|(name, _)| name.ends_with(&format!("-{path}.json"))),
            "no recorded history of `{path}` in {}",
            histories_dir().display()
        );
    }
    let replayer = replayer();
    for (name, bytes) in files {
        let history = WorkflowHistory::from_json(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        replayer.replay_workflow(history).await.unwrap_or_else(|e| panic!("{name} no longer replays: {e}"));
    }
}

#[tokio::test]
async fn a_history_that_disagrees_with_the_code_fails_to_replay() {
    // The replay test above is only worth something if a mismatch is caught: rename the first
    // activity the workflow scheduled, as a code change that calls another activity would.
    let (name, bytes) = recorded().into_iter().find(|(n, _)| n.contains("published")).expect("a published history");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("\"preflight\""), "{name} schedules preflight");
    let tampered = text.replacen("\"preflight\"", "\"preflight_v0\"", 1);
    let history = WorkflowHistory::from_json(tampered.as_bytes()).unwrap();
    assert!(replayer().replay_workflow(history).await.is_err(), "a renamed activity must not replay");
}

/// Runs one scenario per path through the workflow, one after the other (the sandbox's faults
/// are per endpoint, not per job), and saves each history.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "records histories into tests/histories; run by hand after a workflow change"]
async fn record_histories() {
    let version = std::env::var("AUTOPOST_HISTORY_VERSION").unwrap_or_else(|_| "v1".into());
    // Short waits, so that every recorded run ends: a `needs_attention` job closes after 3 s,
    // and a run continues as new after two commands.
    let app = TestApp::spawn_with(Options {
        publish_now: true,
        attention_ttl: "3s",
        commands_per_run: 2,
        outcome_wait: "2s",
        // A lead short enough for a job to sleep, then arm, within a recording.
        arm_lead: "4s",
        arm_spread: "1s",
        ..Options::default()
    })
    .await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let token = "recording-token";
    let account = app.link_account("instagram", token).await;
    let image = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let missing = json!([{ "url": app.media_url("missing.jpg"), "kind": "image" }]);
    let soon = || Utc::now() + chrono::Duration::seconds(2);
    let later = || Utc::now() + chrono::Duration::hours(1);
    let id = |job: &serde_json::Value| job["id"].as_str().unwrap().to_owned();
    // (scenario, workflow id, run: `None` for the latest)
    let mut recorded: Vec<(&str, serde_json::Value, Option<String>)> = Vec::new();

    let job = app.schedule(&account, soon(), "first try", image.clone()).await;
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("published-first-try", job, None));

    // Two failed attempts, then success: retry timers and the `failed` transitions.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "retried", image.clone()).await;
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("published-after-retries", job, None));

    // Every attempt fails: the retry budget runs out and the job waits for the creator.
    // Five: the container made at arm time, then each of the four attempts.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 5, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "down", image.clone()).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    recorded.push(("needs-attention-after-retries", job, None));

    // Needs attention, then the creator's retry (within the attention TTL) publishes it.
    // Five: the container made at arm time, then each of the four attempts.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 5, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "down then retried", image.clone()).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/retry", id(&job)), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("needs-attention-then-retried", job, None));

    let job = app.schedule(&account, soon(), "no media", missing).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    recorded.push(("preflight-failed", job, None));

    let job = app.schedule(&account, later(), "dropped", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/cancel", id(&job)), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    recorded.push(("cancelled", job, None));

    let job = app.schedule(&account, later(), "moved", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/reschedule", id(&job)), &json!({ "publish_at": soon() })).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("rescheduled", job, None));

    let job = app.schedule(&account, later(), "right now", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/publish-now", id(&job)), &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("published")), "{body}");
    recorded.push(("publish-now", job, None));

    // An operator's cancel in the Temporal Web UI or CLI.
    let job = app.schedule(&account, later(), "operator", image.clone()).await;
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.cancel(WorkflowCancelOptions::builder().reason("recording").build()).await.unwrap();
    app.wait_for_status(&id(&job), "cancelled", WAIT).await;
    recorded.push(("operator-cancelled", job, None));

    // Sleeps until its arming time, then arms and fires at the instant.
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(8), "armed later", image.clone()).await;
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("armed-after-sleeping", job, None));

    // Armed (its container made), then cancelled before the instant: the command took the fence.
    let containers = app.sandbox_calls("instagram.media").await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(3), "armed then dropped", image.clone()).await;
    app.wait_for_calls("instagram.media", containers + 1).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/cancel", id(&job)), &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    recorded.push(("cancelled-while-armed", job, None));

    // The publish took the fence first: a cancel during its call is refused.
    let publishes = app.sandbox_calls("instagram.media_publish").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 2000 })).await;
    let job = app.schedule(&account, soon(), "too late to drop", image.clone()).await;
    app.wait_for_calls("instagram.media_publish", publishes + 1).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/cancel", id(&job)), &json!({})).await;
    assert_eq!(status, 409, "{body}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("cancel-refused-after-fire", job, None));

    // An operator's cancel while the job is armed claims the fence for the cancel.
    let containers = app.sandbox_calls("instagram.media").await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(3), "armed, operator", image.clone()).await;
    app.wait_for_calls("instagram.media", containers + 1).await;
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.cancel(WorkflowCancelOptions::builder().reason("recording").build()).await.unwrap();
    app.wait_for_status(&id(&job), "cancelled", WAIT).await;
    recorded.push(("operator-cancelled-while-armed", job, None));

    // Instagram published, its answer was lost and its status reads lag: the job cannot tell.
    let lag = |ms: u64| {
        let app = &app;
        async move {
            let response =
                app.http.post(format!("{}/_sandbox/consistency", app.sandbox)).json(&json!({ "instagram_status_lag_ms": ms })).send().await;
            assert!(response.unwrap().status().is_success());
        }
    };
    lag(30_000).await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 7000, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "lost answer", image.clone()).await;
    let unknown = app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    assert_eq!(unknown["last_error"]["code"], "instagram.publish_outcome_unknown", "{unknown}");
    lag(0).await;
    recorded.push(("outcome-unknown", job, None));

    // A workflow terminated outside Autopost: the reconciler's replacement surfaces the job.
    let job = app.schedule(&account, soon(), "lost run", json!([{ "url": app.media_url("missing.jpg"), "kind": "image" }])).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.terminate(temporalio_client::WorkflowTerminateOptions::builder().reason("recording").build()).await.unwrap();
    wait_for_error(&app, &id(&job), "reconcile.workflow_lost").await;
    recorded.push(("reconciled-after-loss", job, None));

    // Two commands end a run: the next one carries the job on and publishes it.
    let job = app.schedule(&account, later(), "moved twice", image.clone()).await;
    for publish_at in [later() + chrono::Duration::minutes(30), soon()] {
        let (status, body) = app.post(&format!("/v1/publish-jobs/{}/reschedule", id(&job)), &json!({ "publish_at": publish_at })).await;
        assert_eq!(status, 200, "{body}");
    }
    let first = run_ids(&temporal, job["workflow_id"].as_str().unwrap(), 2).await[0].clone();
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("continued-as-new", job.clone(), Some(first)));
    recorded.push(("published-after-continue-as-new", job, None));

    // The preflight-failed job's run closed unattended: a retry starts the next run
    // (update-with-start), which fails preflight again and closes in turn.
    let (_, closed_job, _) = recorded.iter().find(|(s, ..)| *s == "preflight-failed").unwrap().clone();
    wait_until_closed(&temporal, closed_job["workflow_id"].as_str().unwrap()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/retry", id(&closed_job)), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(run_ids(&temporal, closed_job["workflow_id"].as_str().unwrap(), 2).await.len(), 2);
    recorded.push(("restarted-by-a-command-after-closing", closed_job.clone(), None));
    let first = run_ids(&temporal, closed_job["workflow_id"].as_str().unwrap(), 2).await[0].clone();
    for entry in recorded.iter_mut().filter(|(s, ..)| *s == "preflight-failed") {
        entry.2 = Some(first.clone());
    }

    // A first comment: an activity of its own after the `published` mirror.
    let body = json!({ "account_id": account, "publish_at": soon(), "caption": "with a comment", "media": image,
                       "options": { "channel": "instagram", "first_comment": "first!" } });
    let (status, job) = app.post("/v1/publish-jobs", &body).await;
    assert_eq!(status, 201, "{job}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("published-with-first-comment", job, None));

    // The publishing quota is used up: the job waits for the window without spending a retry,
    // and the creator's retry publishes it once the window has room again.
    app.sandbox_instagram_quota(token, 0).await;
    let job = app.schedule(&account, soon(), "over the quota", image.clone()).await;
    let waiting = app.wait_for_status(&id(&job), "failed", WAIT).await;
    assert_eq!(waiting["last_error"]["code"], "instagram.quota_exhausted", "{waiting}");
    app.sandbox_instagram_quota(token, 1_000_000).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/retry", id(&job)), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("waited-for-the-quota", job, None));

    std::fs::create_dir_all(histories_dir()).unwrap();
    for (scenario, job, run) in recorded {
        let workflow_id = job["workflow_id"].as_str().unwrap();
        // Every recorded run ends (published, cancelled, closed unattended or continued).
        wait_until_closed(&temporal, workflow_id).await;
        let history = autopost_app::replay::fetch(&temporal, workflow_id, run.as_deref()).await.unwrap();
        let bytes = serde_json::to_vec(&history).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(token), "a token reached the workflow history");
        let path = histories_dir().join(format!("{version}-{scenario}.json"));
        std::fs::write(&path, &bytes).unwrap();
        println!("recorded {}", path.display());
        if scenario == "published-first-try" {
            let path = histories_dir().join(format!("formats/protobuf-{version}-{scenario}.pb"));
            std::fs::write(&path, autopost_app::replay::to_protobuf(&history)).unwrap();
            println!("recorded {}", path.display());
        }
    }
}

/// The job's workflow runs, oldest first, once visibility shows at least `at_least`.
async fn run_ids(temporal: &temporalio_client::Client, workflow_id: &str, at_least: usize) -> Vec<String> {
    use futures::TryStreamExt;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut runs: Vec<(Option<std::time::SystemTime>, String)> = temporal
            .list_workflows(format!("WorkflowId = '{workflow_id}'"), Default::default())
            .map_ok(|w| (w.start_time(), w.run_id().to_owned()))
            .try_collect()
            .await
            .unwrap();
        runs.sort();
        if runs.len() >= at_least || std::time::Instant::now() > deadline {
            return runs.into_iter().map(|(_, run)| run).collect();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_until_closed(temporal: &temporalio_client::Client, workflow_id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(workflow_id);
    while handle.describe(Default::default()).await.unwrap().status() == temporalio_client::WorkflowExecutionStatus::Running {
        assert!(std::time::Instant::now() < deadline, "{workflow_id} still runs");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_for_error(app: &TestApp, job_id: &str, code: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{job_id}")).await;
        if job["last_error"]["code"] == code {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no {code}: {job}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const WAIT: Duration = Duration::from_secs(60);

/// Histories exported by tools other than the SDK, replayed through `autopost replay`'s decoder.
fn other_formats() -> Vec<(String, Vec<u8>)> {
    let dir = histories_dir().join("formats");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn a_history_exported_by_the_temporal_cli_replays_and_a_tampered_one_names_the_nondeterminism() {
    use autopost_app::replay::{self, Format, Verdict};
    let files = other_formats();
    let (name, bytes) = files.iter().find(|(name, _)| name.starts_with("cli-")).expect("a Temporal CLI export in tests/histories/formats");
    let (format, history) = replay::decode(bytes).unwrap();
    assert_eq!(format, Format::Proto3Json, "{name}");
    // The SDK's own reader cannot read it: this is what the proto3 decoder is for.
    assert!(WorkflowHistory::from_json(bytes).is_err());
    let outcomes = replay::replay(vec![replay::Input { source: name.clone(), format: Some(format), history }]).await.unwrap();
    assert_eq!(outcomes[0].result, Verdict::Ok, "{}", outcomes[0]);
    // Every other export replays too: the server's HTTP API (what the Web UI reads), whose
    // payloads are shorthand (decoded JSON values instead of {metadata, data}).
    for (name, bytes) in &files {
        let (format, history) = replay::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let outcomes = replay::replay(vec![replay::Input { source: name.clone(), format: Some(format), history }]).await.unwrap();
        assert_eq!(outcomes[0].result, Verdict::Ok, "{}", outcomes[0]);
    }
    assert!(files.iter().any(|(name, _)| name.starts_with("http-api-shorthand")), "a shorthand export is in the corpus");
    let (pb_name, pb_bytes) = files.iter().find(|(name, _)| name.ends_with(".pb")).expect("a binary protobuf history in the corpus");
    assert_eq!(replay::decode(pb_bytes).unwrap().0, Format::Protobuf, "{pb_name}");

    // The same history with its first activity renamed no longer matches the code.
    let mut tampered: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let scheduled =
        tampered["events"].as_array_mut().unwrap().iter_mut().find_map(|e| e.get_mut("activityTaskScheduledEventAttributes")).unwrap();
    scheduled["activityType"]["name"] = json!("not-an-activity");
    let (_, history) = replay::decode(&serde_json::to_vec(&tampered).unwrap()).unwrap();
    let outcomes = replay::replay(vec![replay::Input { source: "tampered".into(), format: None, history }]).await.unwrap();
    let scheduled_id: i64 = tampered["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e.get("activityTaskScheduledEventAttributes").is_some())
        .and_then(|e| e["eventId"].as_str()?.parse().ok())
        .unwrap();
    match &outcomes[0].result {
        Verdict::Nondeterministic { message, event_id, event_type } => {
            assert!(message.contains("not-an-activity") && message.contains("preflight"), "the history's and the code's: {message}");
            assert_eq!(*event_id, Some(scheduled_id), "the event is named");
            assert_eq!(event_type.as_deref(), Some("EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"));
        }
        other => panic!("expected a nondeterminism, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn autopost_replay_fetches_by_workflow_id_and_by_query_saves_and_replays_the_files() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "replay-cli.token").await;
    let job = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::seconds(2),
            "replay me",
            json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]),
        )
        .await;
    let workflow_id = job["workflow_id"].as_str().unwrap().to_owned();
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;
    let saved = std::env::temp_dir().join(format!("autopost-replay-{}", uuid::Uuid::new_v4().simple()));
    let run = |args: Vec<String>| {
        let output =
            std::process::Command::new(env!("CARGO_BIN_EXE_autopost")).arg("replay").args(args).envs(temporal_env(&app)).output().unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let (ok, out) = run(vec!["--json".into(), "--workflow-id".into(), workflow_id.clone(), "--save".into(), saved.display().to_string()]);
    assert!(ok, "{out}");
    let line: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!((line["workflow_id"].as_str(), line["result"]["status"].as_str()), (Some(workflow_id.as_str()), Some("ok")), "{out}");
    // A query replays each matched run by its run id; a run id that does not exist fails.
    let query = format!("WorkflowId = '{workflow_id}' AND PublishStatus = 'published'");
    let (ok, out) = run(vec!["--query".into(), query, "--limit".into(), "5".into()]);
    assert!(ok && out.starts_with("ok"), "{out}");
    let (ok, _) = run(vec!["--workflow-id".into(), workflow_id.clone(), "--run-id".into(), uuid::Uuid::new_v4().to_string()]);
    assert!(!ok, "an unknown run is not replaced by the latest one");
    // The saved file replays, and a tampered copy fails with a non-zero exit.
    let file = std::fs::read_dir(&saved).unwrap().next().unwrap().unwrap().path();
    let (ok, out) = run(vec![file.display().to_string()]);
    assert!(ok, "{out}");
    let text = std::fs::read_to_string(&file).unwrap().replacen("\"arm\"", "\"renamed\"", 1);
    let tampered = saved.join("tampered.json");
    std::fs::write(&tampered, text).unwrap();
    let (ok, out) = run(vec![tampered.display().to_string()]);
    assert!(!ok && out.starts_with("nondeterministic") && out.contains("at event"), "{out}");
    std::fs::remove_dir_all(saved).unwrap();
}

#[tokio::test]
async fn a_run_fetched_before_its_first_workflow_task_replays_without_waiting_forever() {
    use autopost_app::replay::{self, Verdict};
    // What `--workflow-id` fetches from a run that was just started: no decision yet.
    let (name, bytes) = recorded().into_iter().find(|(n, _)| n.ends_with("-published-first-try.json")).unwrap();
    let (_, mut history) = replay::decode(&bytes).unwrap();
    history.events.truncate(2);
    let replayed =
        tokio::time::timeout(Duration::from_secs(20), replay::replay(vec![replay::Input { source: name, format: None, history }]))
            .await
            .expect("the replay ends")
            .unwrap();
    assert_eq!(replayed[0].result, Verdict::Ok, "{}", replayed[0]);
}

#[tokio::test]
async fn the_worked_example_a_behaviour_gated_on_an_input_field_keeps_old_runs_replaying() {
    // docs/workflow-changes.md: continue-as-new is gated on `commands_per_run`, which runs
    // started before it existed lack. Their histories replay; the same history with the field
    // set (what an ungated change would amount to) continues as new where the history armed
    // its timer, and is caught.
    use autopost_app::replay::{self, Verdict};
    use base64::{Engine, engine::general_purpose::STANDARD};
    let (name, bytes) = recorded().into_iter().find(|(n, _)| n == "v0-rescheduled.json").expect("the v0 corpus");
    let mut history: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let data = &mut history["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]["input"]["payloads"][0]["data"];
    let mut input: serde_json::Value = serde_json::from_slice(&STANDARD.decode(data.as_str().unwrap()).unwrap()).unwrap();
    assert!(input.get("commands_per_run").is_none(), "{name} predates the field");
    let (_, old) = replay::decode(&bytes).unwrap();
    let outcomes = replay::replay(vec![replay::Input { source: name.clone(), format: None, history: old }]).await.unwrap();
    assert_eq!(outcomes[0].result, Verdict::Ok, "{}", outcomes[0]);

    input["commands_per_run"] = json!(1);
    *data = json!(STANDARD.encode(serde_json::to_vec(&input).unwrap()));
    let (_, ungated) = replay::decode(&serde_json::to_vec(&history).unwrap()).unwrap();
    let outcomes = replay::replay(vec![replay::Input { source: name, format: None, history: ungated }]).await.unwrap();
    match &outcomes[0].result {
        Verdict::Nondeterministic { event_type, .. } => assert_eq!(event_type.as_deref(), Some("TimerStarted"), "{}", outcomes[0]),
        other => panic!("an ungated continue-as-new must not replay: {other:?}"),
    }
}

/// A build of `PublishPostWorkflow` that decides differently from this one (a timer first,
/// where this code checks readiness): what a server's history looks like to a developer who is
/// about to deploy an incompatible change.
#[temporalio_macros::workflow]
pub struct IncompatibleBuild;

#[temporalio_macros::workflow_methods]
impl IncompatibleBuild {
    #[init]
    pub fn new(_ctx: &temporalio_sdk::WorkflowContextView, _input: autopost_workflows::PublishJobInput) -> Self {
        IncompatibleBuild
    }

    #[run(name = "PublishPostWorkflow")]
    pub async fn run(ctx: &mut temporalio_sdk::WorkflowContext<Self>) -> temporalio_sdk::WorkflowResult<()> {
        ctx.timer(Duration::from_millis(10)).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn autopost_replay_of_a_server_history_the_code_disagrees_with_fails_and_names_the_event() {
    use temporalio_client::{WorkflowGetResultOptions, WorkflowStartOptions};
    let app = TestApp::spawn_api_only().await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let task_queue = format!("incompatible-{}", uuid::Uuid::new_v4().simple());
    let workflow_id = format!("publish-job:{}", uuid::Uuid::new_v4());
    let runtime = temporalio_sdk::Runtime::from_current_tokio(temporalio_sdk::runtime::RuntimeOptions::builder().build().unwrap()).unwrap();
    let options = temporalio_sdk::WorkerOptions::new(task_queue.clone()).register_workflow::<IncompatibleBuild>().unwrap().build();
    let mut worker = temporalio_sdk::Worker::new(&runtime, temporal.clone(), options).unwrap();
    let stop = worker.shutdown_handle();
    let input = app.config.schedule.run_settings().input(
        uuid::Uuid::new_v4(),
        "creator-1".into(),
        autopost_workflows::Channel::Instagram,
        Utc::now() + chrono::Duration::hours(1),
        None,
    );
    let start = WorkflowStartOptions::new(task_queue, workflow_id.clone()).build();
    let handle = temporal.start_workflow(IncompatibleBuild::run, input, start).await.unwrap();
    let (ran, finished) = futures::join!(worker.run(), async {
        let result = tokio::time::timeout(Duration::from_secs(30), handle.get_result(WorkflowGetResultOptions::default())).await;
        stop();
        result
    });
    ran.unwrap();
    finished.expect("the incompatible build's run ended").unwrap();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_autopost"))
        .args(["replay", "--workflow-id", &workflow_id])
        .envs(temporal_env(&app))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{out}");
    assert!(out.starts_with("nondeterministic") && out.contains("at event 5 (TimerStarted)"), "the event is named: {out}");
}

/// The app's Temporal settings, as the environment of an `autopost` process.
fn temporal_env(app: &TestApp) -> autopost_app::config::Env {
    let mut env = Vec::new();
    app.config.temporal.to_env(&mut env);
    env
}
