//! Exactly once under faults that used to break it: a slow platform, a frozen worker whose
//! attempt was taken over, a lost Instagram publish answer, an operator's cancel in Temporal,
//! commands during preflight, and the reconciler meeting a job that just finished.

use std::time::{Duration, Instant};

use autopost_workflows::PublishPostWorkflow;
use chrono::Utc;
use nix::sys::signal::{Signal, kill};
use serde_json::{Value, json};
use temporalio_client::{WorkflowCancelOptions, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowFetchHistoryOptions};

use crate::common::{Options, TestApp};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn in_secs(seconds: i64) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

async fn workflow_status(app: &TestApp, job: &Value) -> WorkflowExecutionStatus {
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.describe(WorkflowDescribeOptions::default()).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_creation_slower_than_the_heartbeat_timeout_makes_exactly_one_post() {
    // The attempt heartbeats from a ticker, so a platform call longer than the heartbeat
    // timeout does not get the live execution timed out and a second one started beside it.
    let app = TestApp::spawn_with(Options { heartbeat_timeout: "2s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-slow-create").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 1, "delay_ms": 4500 })).await;
    let job = app.schedule(&account, in_secs(2), "slow container", image(&app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1, "exactly one post");
    assert_eq!(app.sandbox_calls("instagram.media").await, 1, "one container, from one execution");
    assert_eq!(app.attempts(job["id"].as_str().unwrap()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_worker_whose_attempt_was_taken_over_makes_no_call_when_it_wakes() {
    // A worker frozen (SIGSTOP) while its container creation is in flight misses its heartbeats:
    // Temporal times the execution out and a second worker runs the attempt again. When the
    // first wakes, its container arrives, and the job's fence refuses its publish.
    // The container's answer comes after 8 s, well within the request timeout, and waits in the
    // frozen worker's socket until it wakes.
    let mut app = TestApp::spawn_with(Options { heartbeat_timeout: "2s", request_timeout: "30s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-frozen").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 1, "delay_ms": 8000 })).await;
    let job = app.schedule(&account, in_secs(2), "frozen", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_calls("instagram.media", 1).await;
    let frozen = app.worker_pid();
    kill(frozen, Signal::SIGSTOP).unwrap();
    let _second = app.spawn_worker_process();
    app.wait_for_status(id, "published", WAIT).await;
    // Past the container's answer: it is waiting for the frozen worker.
    tokio::time::sleep(Duration::from_secs(8)).await;
    kill(frozen, Signal::SIGCONT).unwrap();
    // Time for the woken worker to receive its container and try to go on.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1, "the woken worker did not publish its container");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1, "one publish call in all");
    assert_eq!(app.sandbox_calls("instagram.media").await, 2, "the takeover made its own container");
    app.kill_worker().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instagram_publish_whose_answer_was_lost_is_never_sent_again() {
    // Instagram publishes, the answer never arrives (our 5 s request timeout), and its status
    // reads lag behind: the container still reads FINISHED. Without the "publish requested"
    // mark the retry would publish it again; with it, the job says it cannot tell.
    let app = TestApp::spawn_with(Options { outcome_wait: "2s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-lost").await;
    let lag = app
        .http
        .post(format!("{}/_sandbox/consistency", app.sandbox))
        .json(&json!({ "instagram_status_lag_ms": 30000 }))
        .send()
        .await
        .unwrap();
    assert!(lag.status().is_success());
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 7000, "after_accept": true })).await;
    let job = app.schedule(&account, in_secs(2), "lost answer", image(&app)).await;
    let job = app.wait_for_status(job["id"].as_str().unwrap(), "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "instagram.publish_outcome_unknown", "{job}");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1, "never published again");
    assert_eq!(app.sandbox_calls("instagram.media").await, 1, "never a new container");
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instagram_publish_whose_answer_was_lost_is_confirmed_when_the_status_catches_up() {
    let app = TestApp::spawn_with(Options { outcome_wait: "6s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-lost-ok").await;
    let lag = app
        .http
        .post(format!("{}/_sandbox/consistency", app.sandbox))
        .json(&json!({ "instagram_status_lag_ms": 2000 }))
        .send()
        .await
        .unwrap();
    assert!(lag.status().is_success());
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 7000, "after_accept": true })).await;
    let job = app.schedule(&account, in_secs(2), "lost then found", image(&app)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temporal_cancel_of_a_sleeping_job_ends_it_cancelled_with_an_idle_worker() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-op-cancel").await;
    let job = app.schedule(&account, in_secs(3600), "operator cancel", image(&app)).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    // As the Web UI's and the CLI's cancel do.
    handle.cancel(WorkflowCancelOptions::builder().reason("operator").build()).await.unwrap();
    let cancelled = app.wait_for_status(job["id"].as_str().unwrap(), "cancelled", Duration::from_secs(20)).await;
    assert!(cancelled["published_at"].is_null());
    let deadline = Instant::now() + Duration::from_secs(10);
    while workflow_status(&app, &job).await == WorkflowExecutionStatus::Running {
        assert!(Instant::now() < deadline, "the workflow never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(workflow_status(&app, &job).await, WorkflowExecutionStatus::Canceled);
    // A spinning run loop would keep failing or never finish its workflow task: the history is
    // short and ends in the cancellation.
    let history = handle.fetch_history(WorkflowFetchHistoryOptions::default()).to_json().await.unwrap();
    let events: Value = serde_json::from_slice(&history).unwrap();
    let count = events["events"].as_array().unwrap().len();
    assert!(count < 40, "{count} events");
    assert_eq!(app.sandbox_calls("instagram.media").await, 0);
    assert!(app.sandbox_posts().await.is_empty());
    // The worker is still healthy: another job publishes.
    let next = app.schedule(&account, in_secs(2), "after the cancel", image(&app)).await;
    app.wait_for_status(next["id"].as_str().unwrap(), "published", WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_temporal_cancel_during_a_publish_call_lets_the_publish_win() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-op-race").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 3000 })).await;
    let job = app.schedule(&account, in_secs(2), "publish wins", image(&app)).await;
    app.wait_for_calls("instagram.media_publish", 1).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job["workflow_id"].as_str().unwrap());
    handle.cancel(WorkflowCancelOptions::builder().reason("operator").build()).await.unwrap();
    let published = app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    assert!(published["platform_post_id"].is_string());
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_is_taken_while_preflight_runs_and_nothing_reaches_the_platform() {
    // Preflight runs as its own step where nothing was armed: publish-now, a creator's retry.
    let app = TestApp::spawn_with(Options { publish_now: true, ..Options::default() }).await;
    let account = app.link_account("instagram", "token-pre-cancel").await;
    let job = app.schedule(&account, in_secs(86_400), "cancelled in preflight", image(&app)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    // Once creation's readiness check is done, the token probe of the publish is made slow.
    let deadline = Instant::now() + WAIT;
    while app.get(&format!("/v1/publish-jobs/{id}")).await.1["readiness"].is_null() {
        assert!(Instant::now() < deadline, "readiness was never checked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.sandbox_fault(json!({ "endpoint": "instagram.me", "times": 1, "delay_ms": 4000 })).await;
    let publish_now = {
        let (http, url) = (app.http.clone(), format!("{}/v1/publish-jobs/{id}/publish-now", app.api));
        tokio::spawn(async move { http.post(url).json(&json!({})).send().await.unwrap().status().as_u16() })
    };
    app.wait_for_status(&id, "publishing", WAIT).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    publish_now.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox_calls("instagram.media").await, 0, "no container was made");
    assert!(app.sandbox_posts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_is_taken_while_the_armed_preflight_runs_and_nothing_reaches_the_platform() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-armed-pre-cancel").await;
    // Inside the lead the job arms at once; its preflight's token probe is slow.
    app.sandbox_fault(json!({ "endpoint": "instagram.me", "times": 1, "delay_ms": 4000 })).await;
    let probes = app.sandbox_calls("instagram.me").await;
    let job = app.schedule(&account, in_secs(8), "cancelled while arming", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_calls("instagram.me", probes + 1).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(app.sandbox_calls("instagram.media").await, 0, "no container was made");
    assert!(app.sandbox_posts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reconciler_never_revives_a_job_that_finished() {
    // The reconciler read the row while the job was still open, and the job completed before it
    // asked Temporal: it must not start a new run from that stale row.
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-reconcile").await;
    let job = app.schedule(&account, in_secs(2), "finished", image(&app)).await;
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    app.wait_for_status(&id.to_string(), "published", WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The stale read, made permanent: the row says `scheduled`, the workflow has completed.
    sqlx::query("UPDATE publish_jobs SET status = 'scheduled', published_at = NULL, platform_post_id = NULL, created_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    // The app's own worker reconciles every second and may hold the lock: pass until one runs.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report = autopost_app::reconcile::reconcile_once(&app.db, &temporal, &reconcile_settings(&app)).await.unwrap();
        if report.ran || Instant::now() >= deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(report.ran);
    assert!(report.restarted.is_empty() && report.surfaced.is_empty(), "{report:?}");
    assert_eq!(workflow_status(&app, &job).await, WorkflowExecutionStatus::Completed, "no new run");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_reconciler_runs_at_a_time_and_stuck_jobs_are_reported() {
    let app = TestApp::spawn_with(Options { worker: false, stuck_after: "1s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-stuck").await;
    // No worker: the workflow runs (it was started) but nothing moves the job on.
    let job = app.schedule(&account, in_secs(1), "stuck", image(&app)).await;
    let id: uuid::Uuid = job["id"].as_str().unwrap().parse().unwrap();
    sqlx::query("UPDATE publish_jobs SET created_at = now() - interval '1 hour' WHERE id = $1").bind(id).execute(&app.db).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let settings = autopost_app::reconcile::ReconcileSettings { stuck_after: Duration::from_secs(1), ..reconcile_settings(&app) };

    let mut holder = app.db.acquire().await.unwrap();
    let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(x'6175746f706f7374'::bigint)").fetch_one(&mut *holder).await.unwrap();
    assert!(held);
    let report = autopost_app::reconcile::reconcile_once(&app.db, &temporal, &settings).await.unwrap();
    assert!(!report.ran, "another reconciler holds the lock: {report:?}");
    let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock(x'6175746f706f7374'::bigint)").fetch_one(&mut *holder).await.unwrap();

    // The visibility store may lag a moment behind the start.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = autopost_app::reconcile::reconcile_once(&app.db, &temporal, &settings).await.unwrap();
        assert!(report.ran && report.restarted.is_empty(), "{report:?}");
        if report.stuck == [id] {
            break;
        }
        assert!(Instant::now() < deadline, "never reported stuck: {report:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["stuck_jobs"]["count"], 1, "{ready}");
    assert_eq!(ready["stuck_jobs"]["oldest"][0], id.to_string(), "{ready}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_without_a_worker_answers_pending_in_time_and_a_keyed_retry_applies_it_once() {
    let mut app = TestApp::spawn_with(Options { worker: false, command_timeout: "2s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-pending").await;
    let job = app.schedule(&account, in_secs(3600), "pending", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let url = format!("{}/v1/publish-jobs/{id}/reschedule", app.api);
    let body = json!({ "publish_at": in_secs(7200) });
    let http = app.http.clone();
    let send = || http.post(&url).header("Idempotency-Key", "move-1").json(&body).send();

    let started = Instant::now();
    let response = send().await.unwrap();
    assert_eq!(response.status(), 202);
    let pending: Value = response.json().await.unwrap();
    assert_eq!((pending["status"].as_str(), pending["command"].as_str()), (Some("pending"), Some("reschedule")), "{pending}");
    assert!(started.elapsed() < Duration::from_secs(8), "bounded by the command timeout: {:?}", started.elapsed());

    app.start_worker();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let deadline = Instant::now() + WAIT;
        loop {
            let response = send().await.unwrap();
            if response.status() == 200 {
                answers.push(response.json::<Value>().await.unwrap());
                break;
            }
            assert_eq!(response.status(), 202);
            assert!(Instant::now() < deadline, "the reschedule never applied");
        }
    }
    assert_eq!(answers[0]["publish_at"], answers[1]["publish_at"]);
    assert_eq!(answers[0]["updated_at"], answers[1]["updated_at"], "the repeated request changed nothing");
    let history =
        sqlx::query_scalar::<_, i64>("SELECT version FROM publish_jobs WHERE id = $1::uuid").bind(id).fetch_one(&app.db).await.unwrap();
    // Nothing is mirrored before the reschedule (readiness is not a transition): it is version 1.
    assert_eq!(history, 1, "the reschedule was mirrored once");
}

fn reconcile_settings(app: &TestApp) -> autopost_app::reconcile::ReconcileSettings {
    autopost_app::reconcile::ReconcileSettings {
        task_queue: app.config.temporal.task_queue.clone(),
        schedule: app.config.schedule.clone(),
        grace: Duration::from_secs(3),
        stuck_after: Duration::from_secs(600),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preflight_that_runs_out_of_time_needs_attention_without_an_attempt() {
    let app = TestApp::spawn_with(Options { preflight_deadline: "2s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-slow-media").await;
    // The media host answers, but only after 4 s: within the request timeout, past the deadline.
    app.sandbox_fault(json!({ "endpoint": "media", "times": 10, "delay_ms": 4000 })).await;
    let job = app.schedule(&account, in_secs(3), "slow media host", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let job = app.wait_for_status(id, "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "preflight.timeout", "{job}");
    assert_eq!(job["attempt_count"], 0);
    assert_eq!(job["readiness"]["checks"][0]["name"], "preflight", "{job}");
    assert!(app.attempts(id).await.is_empty());
    assert_eq!(app.sandbox_calls("instagram.media").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn media_items_are_checked_concurrently_within_the_preflight_deadline() {
    // Three slow photos one after the other would take 3.6 s, past the 3 s deadline.
    let app = TestApp::spawn_with(Options { preflight_deadline: "3s", ..Options::default() }).await;
    let account = app.link_account("tiktok", "token-photos").await;
    app.sandbox_fault(json!({ "endpoint": "media", "times": 6, "delay_ms": 1200 })).await;
    let photos: Vec<Value> = (0..3).map(|_| json!({ "url": app.media_url("sample.jpg"), "kind": "image" })).collect();
    let job = app.schedule(&account, in_secs(4), "three photos", Value::Array(photos)).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_the_readiness_check_does_not_hold_the_job_for_the_activitys_whole_timeout() {
    // Found by the fault suite (seed 20074): the readiness check did not heartbeat, so a killed
    // worker's check was retried only after its 2-minute timeout, and the job published late.
    let mut app = TestApp::spawn_with(Options { heartbeat_timeout: "2s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-kill-readiness").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.me", "times": 1, "delay_ms": 8000 })).await;
    let publish_at = in_secs(4);
    let job = app.schedule(&account, publish_at, "readiness interrupted", image(&app)).await;
    app.wait_for_calls("instagram.me", 1).await;
    app.kill_worker().await;
    app.start_worker();
    let published = app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    let at: chrono::DateTime<Utc> = published["published_at"].as_str().unwrap().parse().unwrap();
    assert!(at - publish_at < chrono::Duration::seconds(30), "published {}s late", (at - publish_at).num_seconds());
    assert_eq!(app.sandbox_posts().await.len(), 1);
}
