//! Issue 16, part 4: SIGTERM stops the API and the worker gracefully, within
//! `AUTOPOST_SHUTDOWN_GRACE`, losing and duplicating nothing; the worker answers an
//! orchestrator's probes.

use std::time::{Duration, Instant};

use crate::common::{Options, TestApp, link_body};
use chrono::Utc;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};
use tokio::process::Child;

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn sigterm(child: &Child) {
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_api_finish_the_request_in_flight_refuse_new_connections_and_exit_0() {
    let app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    let (mut api, url) = app.spawn_api_process().await;
    // Linking asks the platform whom the token belongs to: make it take 3 s.
    app.sandbox_fault(json!({ "endpoint": "instagram.user", "times": 1, "delay_ms": 3000 })).await;
    let link = {
        let (http, url) = (app.http.clone(), url.clone());
        tokio::spawn(async move { http.post(format!("{url}/v1/accounts")).json(&link_body("instagram", "token-sigterm")).send().await })
    };
    app.wait_for_calls("instagram.user", 1).await;
    sigterm(&api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(reqwest::get(format!("{url}/healthz")).await.is_err(), "a stopping API accepts no new connection");

    let response = link.await.unwrap().expect("the request in flight is answered");
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let status = tokio::time::timeout(Duration::from_secs(20), api.wait()).await.expect("the API exits").unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_publish_lets_it_finish_then_the_worker_exits_0_and_the_post_is_made_once() {
    let mut app = TestApp::spawn_with(Options { worker: false, ..Options::default() }).await;
    let mut worker = app.spawn_worker_process();
    let account = app.link_account("instagram", "token-sigterm-publish").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 4000 })).await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(2), "sigterm", image(&app)).await;
    app.wait_for_calls("instagram.media_publish", 1).await;
    sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await.expect("the worker exits").unwrap();
    assert!(status.success(), "exit status {status}\n{}", app.worker_log());
    // The attempt finished before the worker left: the post is made. The workflow records it
    // once a worker polls again.
    assert_eq!(app.sandbox_posts().await.len(), 1, "{}", app.worker_log());
    app.start_worker();
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1);
    app.kill_worker().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_longer_than_the_shutdown_grace_is_taken_over_and_posted_once() {
    // The grace ends while the publish call is in flight: the SDK cancels the attempt, the
    // worker exits 0, and another worker runs the attempt again, which must find the post the
    // first one made rather than make a second.
    let mut app = TestApp::spawn_with(Options { worker: false, shutdown_grace: "1s", heartbeat_timeout: "2s", ..Options::default() }).await;
    let mut worker = app.spawn_worker_process();
    let account = app.link_account("instagram", "token-sigterm-long").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 6000, "after_accept": true })).await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(2), "long publish", image(&app)).await;
    app.wait_for_calls("instagram.media_publish", 1).await;
    sigterm(&worker);
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait()).await.expect("the worker exits").unwrap();
    assert!(status.success(), "exit status {status}\n{}", app.worker_log());
    app.start_worker();
    let id = job["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let settled = loop {
        let (_, read) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        if ["published", "needs_attention"].contains(&read["status"].as_str().unwrap_or_default()) {
            break read;
        }
        assert!(Instant::now() < deadline, "not settled: {read}\n{}", app.worker_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Never a second post: published (found), or needs_attention saying it cannot tell.
    assert_eq!(app.sandbox_posts().await.len(), 1, "{settled}");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1, "{settled}");
    if settled["status"] == "needs_attention" {
        assert_eq!(settled["last_error"]["code"], "instagram.publish_outcome_unknown", "{settled}");
    }
    app.kill_worker().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_is_ready_when_it_polls_and_answers_liveness_on_its_metrics_listener() {
    let app = TestApp::spawn().await;
    let metrics = app.worker_metrics_url().await;
    let base = metrics.trim_end_matches("/metrics");
    let live: Value = reqwest::get(format!("{base}/healthz")).await.unwrap().json().await.unwrap();
    assert_eq!(live["status"], "ok");
    // Ready once Temporal lists this worker among the task queue's pollers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((&ready["polling"]["ok"], &ready["postgres"]["ok"], &ready["temporal"]["ok"]), (&json!(true), &json!(true), &json!(true)));
    assert!(ready["clock"]["offset_ms"].as_i64().is_some_and(|ms| ms.abs() < 2000), "{ready}");
}
