//! Issue 5: what operators see. One JSON log line per attempt, Prometheus metrics, search
//! attributes in Temporal's visibility, and the reconciler finding lost workflows.

use std::time::{Duration, Instant};

use crate::common::TestApp;
use autopost_workflows::PublishPostWorkflow;
use chrono::Utc;
use futures::TryStreamExt;
use serde_json::{Value, json};
use temporalio_client::{WorkflowListOptions, WorkflowTerminateOptions};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn soon() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(2)
}

/// Schedules with an `x-request-id`, as the web UI's proxy would send it.
async fn schedule_with_request_id(app: &TestApp, account: &str, caption: &str, request_id: &str) -> Value {
    let response = app
        .http
        .post(format!("{}/v1/publish-jobs", app.api))
        .header("x-request-id", request_id)
        .json(&json!({ "account_id": account, "publish_at": soon(), "caption": caption, "media": image(app) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], request_id, "the request id is echoed");
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_attempt_logs_one_json_line_with_everything_needed_to_follow_it() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "secret-token-logs").await;
    // Two failures: the container made at arm time, and again by the attempt at the instant.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let job = schedule_with_request_id(&app, &account, "logged", "req-logs-1").await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_status(id, "published", WAIT).await;

    let attempts: Vec<Value> = app.worker_events("publish attempt").into_iter().filter(|e| e["job_id"] == id).collect();
    assert_eq!(attempts.len(), 2, "one line per attempt: {attempts:#?}");
    for (n, event) in attempts.iter().enumerate() {
        assert_eq!(event["attempt"], n as u64 + 1);
        assert_eq!(event["request_id"], "req-logs-1");
        assert_eq!(event["workflow_id"], job["workflow_id"]);
        assert!(event["run_id"].as_str().is_some_and(|r| !r.is_empty()), "{event}");
        assert_eq!(event["channel"], "instagram");
        assert!(event["platform_request_id"].as_str().is_some_and(|r| !r.is_empty()), "{event}");
        assert!(event["duration_ms"].is_u64(), "{event}");
    }
    assert_eq!((&attempts[0]["status"], &attempts[0]["error_code"]), (&json!("failed"), &json!("instagram.1")));
    assert_eq!(attempts[1]["status"], "published");
    assert!(!app.worker_log().contains("secret-token-logs"), "tokens never reach the logs");
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_move_after_a_publish_and_a_failure() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-metrics").await;
    let scrape = |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let worker_metrics = app.worker_metrics_url().await;

    let bad = app.schedule(&account, soon(), "no media", json!([{ "url": app.media_url("gone.jpg"), "kind": "image" }])).await;
    // Two failures: the container made at arm time, and again by the attempt at the instant.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let good = app.schedule(&account, soon(), "metered", image(&app)).await;
    app.wait_for_status(bad["id"].as_str().unwrap(), "needs_attention", WAIT).await;
    app.wait_for_status(good["id"].as_str().unwrap(), "published", WAIT).await;

    let text = scrape(worker_metrics).await;
    assert_eq!(metric(&text, "autopost_publish_attempts_total", &[("outcome", "published"), ("channel", "instagram")]), 1.0, "{text}");
    assert_eq!(metric(&text, "autopost_publish_attempts_total", &[("outcome", "failed"), ("error_code", "instagram.1")]), 1.0);
    assert!(metric(&text, "autopost_preflight_failures_total", &[("reason", "preflight.media_missing")]) >= 1.0);
    assert_eq!(metric(&text, "autopost_publish_lag_seconds_count", &[("channel", "instagram")]), 1.0);
    assert!(text.contains("temporal_"), "the Temporal SDK's worker metrics are there too");

    let api = scrape(app.api_metrics.clone()).await;
    assert!(
        metric(&api, "autopost_http_request_duration_seconds_count", &[("route", "/v1/publish-jobs"), ("status", "201")]) >= 2.0,
        "{api}"
    );
    assert_eq!(metric(&api, "autopost_jobs", &[("status", "published")]), 1.0, "{api}");
    assert_eq!(metric(&api, "autopost_jobs", &[("status", "needs_attention")]), 1.0);
    // Job counts are not served on the public listener.
    assert_eq!(reqwest::get(format!("{}/metrics", app.api)).await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_find_jobs_by_status_in_temporal_visibility() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-visible").await;
    let job = app.schedule(&account, soon(), "visible", image(&app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let workflow_id = job["workflow_id"].as_str().unwrap();
    let query = format!(
        "PublishStatus = \"published\" AND Channel = \"instagram\" AND CreatorId = \"creator-1\" AND WorkflowId = \"{workflow_id}\""
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<String> = temporal
            .list_workflows(query.clone(), WorkflowListOptions::default())
            .map_ok(|w| w.id().to_owned())
            .try_collect()
            .await
            .unwrap();
        if found == [workflow_id] {
            break;
        }
        assert!(Instant::now() < deadline, "not visible with {query}: {found:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn terminate(app: &TestApp, workflow_id: &str) {
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(workflow_id);
    handle.terminate(WorkflowTerminateOptions::builder().reason("operator test").build()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sleeping_job_whose_workflow_was_terminated_is_restored_and_publishes() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-term").await;
    // Well ahead: a job whose time has passed when the reconciler finds it is surfaced instead
    // (`reconcile.workflow_lost`), and under a loaded CI machine 8 s was once not enough.
    let publish_at = Utc::now() + chrono::Duration::seconds(20);
    let job = app.schedule(&account, publish_at, "restored", image(&app)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    terminate(&app, job["workflow_id"].as_str().unwrap()).await;

    let job = app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    assert!(job["published_at"].as_str().unwrap().parse::<chrono::DateTime<Utc>>().unwrap() >= publish_at);
    assert_eq!(app.sandbox_posts().await.len(), 1);
    assert!(!app.worker_events("lost workflow replaced").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_job_whose_workflow_was_terminated_is_surfaced_and_can_be_retried() {
    let app = TestApp::spawn_with(crate::common::Options { retry_backoff: "1h", ..Default::default() }).await;
    let account = app.link_account("instagram", "token-lost").await;
    // Two failures: the container made at arm time, and again by the attempt at the instant.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "lost", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_status(id, "failed", WAIT).await;
    terminate(&app, job["workflow_id"].as_str().unwrap()).await;

    let surfaced = app.wait_for_status(id, "needs_attention", WAIT).await;
    assert_eq!(surfaced["last_error"]["code"], "reconcile.workflow_lost", "{surfaced}");
    assert_eq!(surfaced["attempt_count"], 1, "the job's history is kept");
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/retry"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(job["attempt_count"], 2);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_workflow_start_failed_is_started_later() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-nostart").await;
    // The API wrote the row and died before starting the workflow.
    let id = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO publish_jobs (id, creator_id, account_id, channel, publish_at, caption, media, workflow_id, created_at)
         VALUES ($1, 'creator-1', $2::uuid, 'instagram', now() + interval '4 seconds', 'orphan', $3, $4, now() - interval '1 minute')",
    )
    .bind(id)
    .bind(&account)
    .bind(image(&app))
    .bind(autopost_workflows::workflow_id(id))
    .execute(&app.db)
    .await
    .unwrap();
    app.wait_for_status(&id.to_string(), "published", WAIT).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_reports_a_worker_polling_the_task_queue() {
    let app = TestApp::spawn().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["worker"]["task_queue"], app.config.temporal.task_queue.as_str());
        if body["worker"]["polling"] == true {
            assert!(body["worker"]["pollers"].as_u64().unwrap() >= 1);
            break;
        }
        assert!(Instant::now() < deadline, "no worker seen polling: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
