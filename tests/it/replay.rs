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
use temporalio_client::{WorkflowCancelOptions, WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// The paths through `PublishPostWorkflow` that the corpus must cover, as `record_histories`
/// names them.
const PATHS: [&str; 8] = [
    "published-first-try",
    "published-after-retries",
    "needs-attention-after-retries",
    "preflight-failed",
    "cancelled",
    "rescheduled",
    "publish-now",
    "operator-cancelled",
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
    let version = std::env::var("AUTOPOST_HISTORY_VERSION").unwrap_or_else(|_| "v0".into());
    let app = TestApp::spawn_with(Options { publish_now: true, ..Options::default() }).await;
    let token = "recording-token";
    let account = app.link_account("instagram", token).await;
    let image = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let missing = json!([{ "url": app.media_url("missing.jpg"), "kind": "image" }]);
    let soon = || Utc::now() + chrono::Duration::seconds(2);
    let later = || Utc::now() + chrono::Duration::hours(1);
    let id = |job: &serde_json::Value| job["id"].as_str().unwrap().to_owned();
    let mut recorded = Vec::new();

    let job = app.schedule(&account, soon(), "first try", image.clone()).await;
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("published-first-try", job));

    // Two failed attempts, then success: retry timers and the `failed` transitions.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "retried", image.clone()).await;
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("published-after-retries", job));

    // Every attempt fails: the retry budget runs out and the job waits for the creator.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 4, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "down", image.clone()).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    recorded.push(("needs-attention-after-retries", job));

    let job = app.schedule(&account, soon(), "no media", missing).await;
    app.wait_for_status(&id(&job), "needs_attention", WAIT).await;
    recorded.push(("preflight-failed", job));

    let job = app.schedule(&account, later(), "dropped", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/cancel", id(&job)), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    recorded.push(("cancelled", job));

    let job = app.schedule(&account, later(), "moved", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/reschedule", id(&job)), &json!({ "publish_at": soon() })).await;
    assert_eq!(status, 200, "{body}");
    app.wait_for_status(&id(&job), "published", WAIT).await;
    recorded.push(("rescheduled", job));

    let job = app.schedule(&account, later(), "right now", image.clone()).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{}/publish-now", id(&job)), &json!({})).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("published")), "{body}");
    recorded.push(("publish-now", job));

    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    // An operator's cancel in the Temporal Web UI or CLI.
    let job = app.schedule(&account, later(), "operator", image.clone()).await;
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.cancel(WorkflowCancelOptions::builder().reason("recording").build()).await.unwrap();
    app.wait_for_status(&id(&job), "cancelled", WAIT).await;
    recorded.push(("operator-cancelled", job));

    std::fs::create_dir_all(histories_dir()).unwrap();
    // Let each workflow take its last step after its last mirror write.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (scenario, job) in recorded {
        let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
        let bytes = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await.unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(token), "a token reached the workflow history");
        let path = histories_dir().join(format!("{version}-{scenario}.json"));
        std::fs::write(&path, bytes).unwrap();
        println!("recorded {}", path.display());
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
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_autopost"))
            .arg("replay")
            .args(args)
            .env("TEMPORAL_ADDRESS", &app.config.temporal.temporal_address)
            .output()
            .unwrap();
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
    let text = std::fs::read_to_string(&file).unwrap().replacen("\"preflight\"", "\"renamed\"", 1);
    let tampered = saved.join("tampered.json");
    std::fs::write(&tampered, text).unwrap();
    let (ok, out) = run(vec![tampered.display().to_string()]);
    assert!(!ok && out.starts_with("nondeterministic") && out.contains("at event"), "{out}");
    std::fs::remove_dir_all(saved).unwrap();
}
