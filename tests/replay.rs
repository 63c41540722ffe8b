//! Workflow compatibility: every history recorded from an earlier version of the workflow must
//! replay against the current code. A change that would break running workflows fails here, and
//! must be guarded with `ctx.patched(..)`.
//!
//! Record new histories (after a workflow change, keep the old files and add new ones) with
//! `cargo nextest run --test replay --run-ignored only` while Temporal runs (`temporal-dev/test`
//! starts one).

mod common;

use std::{path::PathBuf, time::Duration};

use autopost_workflows::PublishPostWorkflow;
use chrono::Utc;
use common::TestApp;
use serde_json::json;
use temporalio_client::{WorkflowFetchHistoryOptions, WorkflowHistory};
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

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
    assert!(!files.is_empty(), "no recorded histories in {}", histories_dir().display());
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

/// Runs one scenario per path through the workflow and saves each history.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "records histories into tests/histories; run by hand after a workflow change"]
async fn record_histories() {
    let version = std::env::var("AUTOPOST_HISTORY_VERSION").unwrap_or_else(|_| "v1".into());
    let app = TestApp::spawn().await;
    let token = "recording-token";
    let account = app.link_account("instagram", "17841400000000077", token).await;
    let image = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let missing = json!([{ "url": app.media_url("missing.jpg"), "kind": "image" }]);

    // Two failed attempts, then success: covers retry timers and the failed transitions.
    app.http
        .post(format!("{}/_sandbox/faults", app.sandbox))
        .json(&json!({ "endpoint": "instagram.media", "times": 2, "status": 500 }))
        .send()
        .await
        .unwrap();
    let soon = || Utc::now() + chrono::Duration::seconds(2);
    let scenarios = [
        ("published-after-retries", app.schedule(&account, soon(), "retried", image.clone()).await, "published"),
        ("preflight-failed", app.schedule(&account, soon(), "no media", missing).await, "needs_attention"),
    ];
    // Commands: a job rescheduled to sooner, and one cancelled while it sleeps.
    let rescheduled = app.schedule(&account, Utc::now() + chrono::Duration::hours(1), "moved", image.clone()).await;
    let moved = app.post(&format!("/v1/publish-jobs/{}/reschedule", rescheduled["id"].as_str().unwrap()), &json!({ "publish_at": soon() })).await;
    assert_eq!(moved.0, 200, "{}", moved.1);
    let cancelled = app.schedule(&account, Utc::now() + chrono::Duration::hours(1), "dropped", image.clone()).await;
    let dropped = app.post(&format!("/v1/publish-jobs/{}/cancel", cancelled["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!(dropped.0, 200, "{}", dropped.1);
    let scenarios = scenarios.into_iter().chain([("rescheduled", rescheduled, "published"), ("cancelled", cancelled, "cancelled")]);

    let temporal = autopost::connect_temporal(&app.config).await.unwrap();
    for (scenario, job, status) in scenarios {
        let id = job["id"].as_str().unwrap();
        app.wait_for_status(id, status, Duration::from_secs(60)).await;
        // Let the workflow complete after its last mirror write.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
        let bytes = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await.unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(token), "a token reached the workflow history");
        let path = histories_dir().join(format!("{version}-{scenario}.json"));
        std::fs::write(&path, bytes).unwrap();
        println!("recorded {}", path.display());
    }
}
