//! Issue 12: a job arms before its instant (preflight, the container prepared) and its armed
//! activity makes the publishing call itself at `publish_at`. A command racing the instant
//! claims the job's fence in Postgres first: the first claim wins, and the API tells the truth.

use std::time::Duration;

use crate::common::{Options, TestApp};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn in_secs(seconds: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

async fn sleep_until(at: DateTime<Utc>) {
    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default()).await;
}

/// When the platform received each post (the sandbox's ground truth), by caption.
async fn received_at(app: &TestApp, caption: &str) -> DateTime<Utc> {
    let posts = app.sandbox_posts().await;
    let matching: Vec<&Value> = posts.iter().filter(|p| p["caption"] == caption).collect();
    assert_eq!(matching.len(), 1, "exactly one post with caption {caption:?}: {posts:?}");
    matching[0]["received_at"].as_str().unwrap().parse().unwrap()
}

async fn fence_holders(app: &TestApp, job_id: &str) -> Vec<String> {
    sqlx::query_scalar::<_, String>("SELECT claimed_by FROM publish_fences WHERE job_id = $1::uuid ORDER BY version")
        .bind(job_id)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_armed_job_prepares_its_container_before_the_instant_and_publishes_at_it() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-armed").await;
    let publish_at = in_secs(6);
    let job = app.schedule(&account, publish_at, "armed and on time", image(&app)).await;
    // Inside the lead the job arms at once: its container exists long before the instant.
    app.wait_for_calls("instagram.media", 1).await;
    assert!(Utc::now() < publish_at - chrono::Duration::seconds(2), "the container was made early");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 0, "nothing is published before the instant");
    let (_, before) = app.get(&format!("/v1/publish-jobs/{}", job["id"].as_str().unwrap())).await;
    assert_eq!(before["status"], "scheduled", "{before}");
    assert!(before["readiness"]["ok"] == true, "arming stored readiness: {before}");

    let published = app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    let lag = received_at(&app, "armed and on time").await - publish_at;
    assert!(lag >= chrono::Duration::zero(), "never before the instant: {lag}");
    assert!(lag < chrono::Duration::seconds(1), "the platform got the post {}ms after the instant", lag.num_milliseconds());
    assert_eq!(published["attempt_count"], 1, "{published}");
    assert_eq!(app.sandbox_calls("instagram.media").await, 1, "one container");
    assert_eq!(fence_holders(&app, job["id"].as_str().unwrap()).await, ["publish"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_one_second_before_the_instant_of_an_armed_job_wins_and_nothing_posts() {
    for channel in ["instagram", "tiktok"] {
        let app = TestApp::spawn().await;
        let account = app.link_account(channel, &format!("token-cancel-armed-{channel}")).await;
        let media = match channel {
            "instagram" => image(&app),
            _ => json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }]),
        };
        let publish_at = in_secs(6);
        let job = app.schedule(&account, publish_at, "cancelled while armed", media).await;
        let id = job["id"].as_str().unwrap();
        // Armed and prepared: the container (Instagram) or the creator info (TikTok) is in.
        let prepared = if channel == "instagram" { "instagram.media" } else { "tiktok.creator_info" };
        app.wait_for_calls(prepared, 1).await;
        sleep_until(publish_at - chrono::Duration::seconds(1)).await;
        let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
        assert_eq!((status, &body["status"]), (200, &json!("cancelled")), "{channel}: {body}");

        sleep_until(publish_at + chrono::Duration::seconds(2)).await;
        assert!(app.sandbox_posts().await.is_empty(), "{channel}: a cancelled job never posts");
        assert_eq!(app.sandbox_calls("instagram.media_publish").await + app.sandbox_calls("tiktok.video_init").await, 0);
        assert_eq!(fence_holders(&app, id).await, ["command"], "{channel}: the command took the fence");
        let (_, read) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        assert_eq!(read["status"], "cancelled", "{channel}: {read}");
        assert_eq!(read["attempt_count"], 0, "{channel}: no attempt was made: {read}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_after_the_publish_took_the_fence_is_refused_with_409_and_the_post_is_published_once() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-late-cancel").await;
    // The publishing call is slow: the cancel arrives while it is at the platform.
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 3000 })).await;
    let job = app.schedule(&account, in_secs(4), "the publish won", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_calls("instagram.media_publish", 1).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state", "{body}");
    assert!(matches!(body["error"]["status"].as_str(), Some("publishing" | "published")), "{body}");

    let published = app.wait_for_status(id, "published", WAIT).await;
    assert!(published["platform_post_id"].is_string(), "{published}");
    assert_eq!(app.sandbox_posts().await.len(), 1);
    assert_eq!(fence_holders(&app, id).await, ["publish"]);
    // Once published, the refusal says so.
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert_eq!((status, &body["error"]["status"]), (409, &json!("published")), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reschedule_of_an_armed_job_disarms_it_and_it_publishes_once_at_the_new_time() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-rearm").await;
    let first = in_secs(5);
    let job = app.schedule(&account, first, "moved while armed", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    app.wait_for_calls("instagram.media", 1).await;
    let later = in_secs(9);
    let (status, body) = app.post(&format!("/v1/publish-jobs/{id}/reschedule"), &json!({ "publish_at": later })).await;
    assert_eq!((status, &body["status"]), (200, &json!("scheduled")), "{body}");
    sleep_until(first + chrono::Duration::seconds(1)).await;
    assert!(app.sandbox_posts().await.is_empty(), "nothing at the old time");

    app.wait_for_status(id, "published", WAIT).await;
    let lag = received_at(&app, "moved while armed").await - later;
    assert!(
        lag >= chrono::Duration::zero() && lag < chrono::Duration::seconds(2),
        "published {}ms after the new time",
        lag.num_milliseconds()
    );
    assert_eq!(fence_holders(&app, id).await, ["command", "publish"], "the first arming was disarmed, the second fired");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_armed_on_a_killed_worker_publish_once_within_the_heartbeat_timeout_of_the_kill() {
    // Heartbeat timeout 3 s: a killed worker's armed activities are run again on another worker
    // within it. The one due soon after the kill publishes at most 3 s + 5 s after the kill; the
    // one due later than that publishes on time.
    let mut app = TestApp::spawn_with(Options { heartbeat_timeout: "3s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-armed-kill").await;
    let soon = in_secs(5);
    let later = in_secs(16);
    let first = app.schedule(&account, soon, "due soon after the kill", image(&app)).await;
    let second = app.schedule(&account, later, "due long after the kill", image(&app)).await;
    app.wait_for_calls("instagram.media", 2).await;
    sleep_until(soon - chrono::Duration::seconds(2)).await;
    let killed_at = Utc::now();
    app.kill_worker().await;
    app.start_worker();

    app.wait_for_status(first["id"].as_str().unwrap(), "published", WAIT).await;
    app.wait_for_status(second["id"].as_str().unwrap(), "published", WAIT).await;
    let soon_at = received_at(&app, "due soon after the kill").await;
    assert!(soon_at >= soon, "never before the instant");
    assert!(
        soon_at - killed_at <= chrono::Duration::seconds(3 + 5),
        "published {}ms after the kill",
        (soon_at - killed_at).num_milliseconds()
    );
    let later_lag = received_at(&app, "due long after the kill").await - later;
    assert!(
        later_lag >= chrono::Duration::zero() && later_lag < chrono::Duration::seconds(1),
        "re-armed in time, published {}ms after its instant",
        later_lag.num_milliseconds()
    );
    assert_eq!(app.sandbox_posts().await.len(), 2, "each exactly once");
}
