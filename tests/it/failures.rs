//! Issue 3: preflight (IV2), retries with backoff (IV3), permanent errors, and never a duplicate
//! post, each on the real Temporal and Postgres with the sandbox's faults.

use std::{collections::HashSet, time::Duration};

use crate::common::{Options, TestApp};
use chrono::Utc;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn soon() -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(2)
}

async fn link(app: &TestApp, channel: &str, token: &str, expires_in: chrono::Duration, refresh_token: Option<&str>) -> String {
    let user = crate::common::platform_user_id(channel, token);
    let (status, body) = app
        .post(
            "/v1/accounts",
            &json!({
                "channel": channel, "platform_user_id": user,
                "access_token": token, "token_expires_at": Utc::now() + expires_in, "refresh_token": refresh_token,
            }),
        )
        .await;
    assert!(status == 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The job ended in `needs_attention` with `code`, made no attempt and no publish call.
async fn assert_needs_attention_without_attempts(app: &TestApp, job_id: &str, code: &str) -> Value {
    let job = app.wait_for_status(job_id, "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], code, "{job}");
    assert!(job["last_error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(job["attempt_count"], 0, "{job}");
    assert!(job["next_attempt_at"].is_null());
    assert!(app.attempts(job_id).await.is_empty(), "no attempt rows");
    assert!(app.sandbox_posts().await.is_empty(), "no posts");
    for endpoint in ["instagram.media", "instagram.media_publish", "tiktok.video_init", "tiktok.content_init"] {
        assert_eq!(app.sandbox_calls(endpoint).await, 0, "no {endpoint} call");
    }
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_token_needs_attention_without_attempts_and_readiness_says_so_early() {
    // A short lead: the job sleeps (its readiness checked at creation) before it arms.
    let app = TestApp::spawn_with(Options { arm_lead: "3s", arm_spread: "1s", ..Options::default() }).await;
    let account = link(&app, "instagram", "expiring-token", chrono::Duration::seconds(3), None).await;
    let job = app.schedule(&account, Utc::now() + chrono::Duration::seconds(8), "late", image(&app)).await;
    let id = job["id"].as_str().unwrap();

    // Readiness is visible before the publish time, while the job stays scheduled.
    let ready = wait_for_readiness(&app, id).await;
    assert_eq!(ready["status"], "scheduled");
    assert_eq!(ready["readiness"]["ok"], false, "{ready}");
    let token_check = ready["readiness"]["checks"].as_array().unwrap().iter().find(|c| c["name"] == "token").unwrap().clone();
    assert_eq!(token_check["ok"], false, "{token_check}");

    assert_needs_attention_without_attempts(&app, id, "preflight.token_expired").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_the_platform_rejects_needs_attention_without_attempts() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "revoked-token").await;
    app.sandbox_revoke("revoked-token").await;
    let job = app.schedule(&account, soon(), "never", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    assert_needs_attention_without_attempts(&app, job["id"].as_str().unwrap(), "preflight.token_rejected").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_unsupported_media_needs_attention_without_attempts() {
    let app = TestApp::spawn().await;
    let instagram = app.link_account("instagram", "token-media").await;
    let missing = app.schedule(&instagram, soon(), "gone", json!([{ "url": app.media_url("deleted.jpg"), "kind": "image" }])).await;
    let tiktok = app.link_account("tiktok", "token-media-2").await;
    let png = app.schedule(&tiktok, soon(), "png", json!([{ "url": app.media_url("sample.png"), "kind": "image" }])).await;
    assert_needs_attention_without_attempts(&app, missing["id"].as_str().unwrap(), "preflight.media_missing").await;
    assert_needs_attention_without_attempts(&app, png["id"].as_str().unwrap(), "preflight.media_unsupported").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_tiktok_token_with_a_refresh_token_is_refreshed_and_the_post_publishes() {
    let app = TestApp::spawn().await;
    let account = link(&app, "tiktok", "alice.at-0", chrono::Duration::seconds(3), Some("alice.rt-0")).await;
    let job = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::seconds(5),
            "fresh token",
            json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }]),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let early = wait_for_readiness(&app, id).await;
    assert_eq!(early["readiness"]["ok"], true, "a refreshable token is ready: {early}");

    app.wait_for_status(id, "published", WAIT).await;
    let (_, linked) = app.get(&format!("/v1/accounts/{account}")).await;
    let expires: chrono::DateTime<Utc> = linked["token_expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires > Utc::now() + chrono::Duration::hours(1), "the new token's expiry was stored: {linked}");
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_failing_every_call_gets_four_attempts_then_needs_attention() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-down").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 100, "status": 500 })).await;
    let job = app.schedule(&account, soon(), "down", image(&app)).await;
    let id = job["id"].as_str().unwrap();

    // Between attempts the job is `failed` with the attempt count, error and next attempt time.
    let mut seen_waiting = HashSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    let finished = loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        if job["status"] == "failed" {
            assert!(job["next_attempt_at"].is_string() && job["last_error"]["code"] == "instagram.1", "{job}");
            seen_waiting.insert(job["attempt_count"].as_i64().unwrap());
        }
        if job["status"] == "needs_attention" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "still {job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen_waiting, HashSet::from([1, 2, 3]), "failed + next_attempt_at after attempts 1-3");
    assert_eq!(finished["attempt_count"], 4);
    assert_eq!(finished["last_error"]["code"], "instagram.1", "the last error is surfaced");
    assert!(finished["next_attempt_at"].is_null());
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 4);
    for attempt in &attempts {
        assert_eq!(
            (&attempt["outcome"], &attempt["retryable"], &attempt["error_code"]),
            (&json!("failed"), &json!(true), &json!("instagram.1"))
        );
        assert!(attempt["finished_at"].is_string() && attempt["platform_request_id"].is_string(), "{attempt}");
    }
    assert!(app.sandbox_posts().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_failing_twice_then_succeeding_publishes_on_the_third_attempt() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-flaky").await;
    // Armed jobs make their container at arm time, and again at the instant when that failed:
    // three failures fail the first two attempts.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 3, "status": 503 })).await;
    let job = app.schedule(&account, soon(), "flaky", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let published = app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(published["attempt_count"], 3);
    assert!(published["last_error"].is_null() && published["next_attempt_at"].is_null(), "{published}");
    let outcomes: Vec<Value> = app.attempts(id).await.iter().map(|a| a["outcome"].clone()).collect();
    assert_eq!(outcomes, [json!("failed"), json!("failed"), json!("success")]);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_needs_attention_after_one_attempt() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-perm").await;
    let unsupported = json!({ "error": { "message": "The image format is not supported.", "type": "OAuthException",
        "code": 36001, "error_subcode": 2207005, "is_transient": false, "fbtrace_id": "AbCdEf" } });
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 1, "status": 400, "body": unsupported })).await;
    let job = app.schedule(&account, soon(), "bad image", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let job = app.wait_for_status(id, "needs_attention", WAIT).await;
    assert_eq!(job["attempt_count"], 1);
    assert_eq!(job["last_error"]["code"], "instagram.36001.2207005");
    let attempts = app.attempts(id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!((&attempts[0]["retryable"], &attempts[0]["platform_request_id"]), (&json!(false), &json!("AbCdEf")));
}

/// The job ends `published` with exactly one post and one media_publish that went through.
async fn assert_published_once(app: &TestApp, job_id: &str, timeout: Duration) {
    let job = app.wait_for_status(job_id, "published", timeout).await;
    let posts = app.sandbox_posts().await;
    assert_eq!(posts.len(), 1, "exactly one post: {posts:?}");
    assert!(job["platform_post_id"].is_string(), "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_the_platform_accepted_but_answered_with_a_500_is_not_posted_again() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-500").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "status": 500, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "accepted", image(&app)).await;
    assert_published_once(&app, job["id"].as_str().unwrap(), WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_the_platform_accepted_but_answered_after_our_timeout_is_not_posted_again() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-slow").await;
    // The test worker gives up on a platform request after 5 s.
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 7000, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "slow", image(&app)).await;
    assert_published_once(&app, job["id"].as_str().unwrap(), WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_while_the_publish_call_is_in_flight_does_not_post_twice() {
    let mut app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-kill").await;
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 60000, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "crash", image(&app)).await;
    let id = job["id"].as_str().unwrap();

    app.wait_for_calls("instagram.media_publish", 1).await;
    app.kill_worker().await;
    app.start_worker();
    // Temporal notices the dead attempt by its missed heartbeat, then runs it again.
    assert_published_once(&app, id, Duration::from_secs(90)).await;
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1, "the post was never published again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_post_whose_acceptance_is_unknown_is_never_sent_twice() {
    let app = TestApp::spawn().await;
    // Without the `video.list` scope TikTok cannot be asked at all.
    let account = app.link_account("tiktok", "token-no-video-list").await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.video_init", "times": 1, "status": 500, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "maybe", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    let id = job["id"].as_str().unwrap();
    let job = app.wait_for_status(id, "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "tiktok.publish_outcome_unknown", "{job}");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1, "init was not sent again");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1, "TikTok published it once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_video_whose_acceptance_is_unknown_is_found_in_the_creators_video_list() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "token-found").await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.video_init", "times": 1, "status": 500, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "found later", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    let job = app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    let posts = app.sandbox_posts().await;
    assert_eq!(posts.len(), 1);
    assert_eq!(job["platform_post_id"], posts[0]["platform_post_id"], "the id TikTok lists: {job}");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1, "init was not sent again");
    assert!(app.sandbox_calls("tiktok.video_list").await >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_init_answered_with_a_bare_429_after_tiktok_acted_is_not_sent_again() {
    // Found by the fault suite (seed 1043): a 429 without TikTok's error envelope was taken as
    // proof that nothing was posted, and the retry posted a second time.
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "token-bare-429").await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.video_init", "times": 1, "status": 429, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "bare 429", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", WAIT).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1, "one post");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1, "init was not sent again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_photo_post_whose_acceptance_is_unknown_needs_attention_since_photos_are_not_listed() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "token-photo-unknown").await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.content_init", "times": 1, "status": 500, "after_accept": true })).await;
    let job = app.schedule(&account, soon(), "photo maybe", json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])).await;
    let job = app.wait_for_status(job["id"].as_str().unwrap(), "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "tiktok.publish_outcome_unknown", "{job}");
    assert_eq!(app.sandbox_calls("tiktok.content_init").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_post_accepted_before_its_token_failed_is_not_reported_as_a_token_error() {
    // TikTok accepted the post; asking about it then fails with a token error. The post goes live
    // all the same, so the job must say its outcome is unknown, not blame the token as if
    // nothing had been posted (found by the fault suite).
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "token-after").await;
    let invalid =
        json!({ "data": {}, "error": { "code": "access_token_invalid", "message": "The access token is invalid.", "log_id": "x" } });
    app.sandbox_fault(json!({ "endpoint": "tiktok.status_fetch", "times": 100, "status": 401, "body": invalid })).await;
    let job = app.schedule(&account, soon(), "accepted then token", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    let job = app.wait_for_status(job["id"].as_str().unwrap(), "needs_attention", WAIT).await;
    assert_eq!(job["last_error"]["code"], "tiktok.publish_outcome_unknown", "{job}");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

async fn wait_for_readiness(app: &TestApp, job_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{job_id}")).await;
        if job["readiness"].is_object() {
            return job;
        }
        assert!(std::time::Instant::now() < deadline, "no readiness: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
