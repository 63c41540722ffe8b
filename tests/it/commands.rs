//! Issue 4: retry, reschedule, cancel and publish-now, each allowed only where the job's state
//! allows it, delivered as updates to the job's one workflow; and idempotent creation.

use std::time::Duration;

use crate::common::{Options, TestApp};
use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn image(app: &TestApp) -> Value {
    json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])
}

fn in_secs(seconds: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

async fn command(app: &TestApp, job_id: &str, name: &str, body: Value) -> (u16, Value) {
    app.post(&format!("/v1/publish-jobs/{job_id}/{name}"), &body).await
}

/// A 409 that names the job's current status.
fn assert_refused(response: &(u16, Value), status: &str) {
    assert_eq!(response.0, 409, "{}", response.1);
    assert_eq!(response.1["error"]["code"], "invalid_state", "{}", response.1);
    assert_eq!(response.1["error"]["status"], status, "{}", response.1);
    assert!(response.1["error"]["message"].as_str().is_some_and(|m| m.contains(status)), "{}", response.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_now_with_the_flag_on_publishes_a_job_scheduled_for_tomorrow_at_once() {
    let app = TestApp::spawn_with(Options { publish_now: true, ..Options::default() }).await;
    let account = app.link_account("tiktok", "token-now").await;
    let job = app.schedule(&account, in_secs(86_400), "right now", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = command(&app, id, "publish-now", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "published", "the response reports the outcome: {body}");
    assert!(body["last_error"].is_null());
    assert_eq!(app.sandbox_posts().await.len(), 1);
    // A published job still answers reads, and refuses further commands.
    assert_refused(&command(&app, id, "publish-now", json!({})).await, "published");
    assert_refused(&command(&app, id, "cancel", json!({})).await, "published");
    assert_refused(&command(&app, id, "reschedule", json!({ "publish_at": in_secs(3600) })).await, "published");
    assert_refused(&command(&app, id, "retry", json!({})).await, "published");
    let (status, read) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!((status, &read["status"]), (200, &json!("published")));
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_now_with_the_flag_off_is_refused_and_nothing_publishes() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-off").await;
    let job = app.schedule(&account, in_secs(86_400), "not now", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = command(&app, id, "publish-now", json!({})).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("feature_disabled")), "{body}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(app.sandbox_posts().await.is_empty());
    let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!(job["status"], "scheduled");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_during_the_sleep_means_no_post_ever() {
    // A short lead, so the job sleeps before it arms: inside the lead it would arm at once and
    // prepare its container (left to expire when cancelled) before the cancel arrives.
    let app = TestApp::spawn_with(Options { arm_lead: "2s", arm_spread: "1s", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-cancel").await;
    let publish_at = in_secs(5);
    let job = app.schedule(&account, publish_at, "cancelled", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let (status, body) = command(&app, id, "cancel", json!({})).await;
    assert_eq!((status, &body["status"]), (200, &json!("cancelled")), "{body}");

    tokio::time::sleep((publish_at - Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(2)).await;
    assert!(app.sandbox_posts().await.is_empty(), "a cancelled job never publishes");
    assert_eq!(app.sandbox_calls("instagram.media").await, 0);
    let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!(job["status"], "cancelled");
    assert_refused(&command(&app, id, "cancel", json!({})).await, "cancelled");
    assert_refused(&command(&app, id, "retry", json!({})).await, "cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn reschedule_to_earlier_publishes_once_at_the_new_time() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-earlier").await;
    let job = app.schedule(&account, in_secs(3600), "sooner", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let new_time = in_secs(3);
    let (status, body) = command(&app, id, "reschedule", json!({ "publish_at": new_time })).await;
    assert_eq!((status, &body["status"]), (200, &json!("scheduled")), "{body}");
    assert_eq!(at(&body["publish_at"]), new_time.trunc_subsecs(6));

    let job = app.wait_for_status(id, "published", WAIT).await;
    assert!(at(&job["published_at"]) >= new_time);
    assert_eq!(job["attempt_count"], 1);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reschedule_to_later_publishes_once_at_the_new_time() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-later").await;
    let old_time = in_secs(2);
    let job = app.schedule(&account, old_time, "later", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let new_time = in_secs(8);
    let (status, body) = command(&app, id, "reschedule", json!({ "publish_at": new_time })).await;
    assert_eq!(status, 200, "{body}");

    // Look between the two times, however long the command took on a busy machine.
    let between = old_time + chrono::Duration::milliseconds(2500);
    tokio::time::sleep((between - Utc::now()).to_std().unwrap_or_default()).await;
    assert!(Utc::now() < new_time, "the machine was too slow to look between the two times");
    assert!(app.sandbox_posts().await.is_empty(), "nothing at the old time");
    let job = app.wait_for_status(id, "published", WAIT).await;
    assert!(at(&job["published_at"]) >= new_time);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_now_after_the_creator_fixed_the_token_publishes() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "fixer.old-token").await;
    app.sandbox_revoke("fixer.old-token").await;
    let job = app.schedule(&account, in_secs(2), "fixed", json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }])).await;
    let id = job["id"].as_str().unwrap();
    let stuck = app.wait_for_status(id, "needs_attention", WAIT).await;
    assert_eq!(stuck["last_error"]["code"], "preflight.token_rejected");

    // The creator reconnects the account, then asks to retry.
    // Same subject, same sandbox user: a new token for the same account.
    let relinked = app.link_account_status("tiktok", "fixer.new-token").await;
    assert_eq!(relinked, 200);
    let (status, body) = command(&app, id, "retry", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_status(id, "published", WAIT).await;
    assert_eq!(job["attempt_count"], 1);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_now_on_a_failed_job_skips_the_rest_of_the_wait() {
    let app = TestApp::spawn_with(Options { retry_backoff: "1h", ..Options::default() }).await;
    let account = app.link_account("instagram", "token-wait").await;
    // Two failures: the container made at arm time, and again by the attempt at the instant.
    app.sandbox_fault(json!({ "endpoint": "instagram.media", "times": 2, "status": 500 })).await;
    let job = app.schedule(&account, in_secs(2), "impatient", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let failed = app.wait_for_status(id, "failed", WAIT).await;
    assert!(at(&failed["next_attempt_at"]) > Utc::now() + chrono::Duration::minutes(50), "{failed}");

    let (status, body) = command(&app, id, "retry", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let job = app.wait_for_status(id, "published", Duration::from_secs(30)).await;
    assert_eq!(job["attempt_count"], 2);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_refused_in_states_that_do_not_allow_them() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-states").await;
    let job = app.schedule(&account, in_secs(3600), "waiting", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    // A scheduled job has nothing to retry.
    assert_refused(&command(&app, id, "retry", json!({})).await, "scheduled");

    // No command can cut into an attempt that is talking to the platform.
    app.sandbox_fault(json!({ "endpoint": "instagram.media_publish", "times": 1, "delay_ms": 4000 })).await;
    let busy = app.schedule(&account, in_secs(2), "busy", image(&app)).await;
    let busy_id = busy["id"].as_str().unwrap();
    app.wait_for_calls("instagram.media_publish", 1).await;
    assert_refused(&command(&app, busy_id, "cancel", json!({})).await, "publishing");
    assert_refused(&command(&app, busy_id, "reschedule", json!({ "publish_at": in_secs(3600) })).await, "publishing");
    app.wait_for_status(busy_id, "published", WAIT).await;
    assert_eq!(app.sandbox_posts().await.len(), 1);

    // Bad input and unknown jobs.
    let (status, body) = command(&app, id, "reschedule", json!({ "publish_at": in_secs(-60) })).await;
    assert_eq!((status, body["error"]["field"].as_str()), (422, Some("publish_at")), "{body}");
    let (status, body) = command(&app, id, "reschedule", json!({ "when": "later" })).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = command(&app, &uuid::Uuid::new_v4().to_string(), "cancel", json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_racing_publish_now_ends_consistently() {
    let app = TestApp::spawn_with(Options { publish_now: true, ..Options::default() }).await;
    let account = app.link_account("instagram", "token-race").await;
    for round in 0..3 {
        let job = app.schedule(&account, in_secs(86_400), &format!("race {round}"), image(&app)).await;
        let id = job["id"].as_str().unwrap();
        let (cancel, publish) = tokio::join!(command(&app, id, "cancel", json!({})), command(&app, id, "publish-now", json!({})));
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        let posts = app.sandbox_posts().await.into_iter().filter(|p| p["caption"] == format!("race {round}")).count();
        match (cancel.0, publish.0) {
            (200, 409) => assert_eq!((job["status"].as_str(), posts), (Some("cancelled"), 0), "{job}"),
            (409, 200) => {
                app.wait_for_status(id, "published", WAIT).await;
                let posts = app.sandbox_posts().await.into_iter().filter(|p| p["caption"] == format!("race {round}")).count();
                assert_eq!(posts, 1);
            }
            // Publish-now was taken first, and the cancel while its preflight ran (a cancel is
            // taken then, by design): the job ends cancelled, with nothing posted.
            (200, 200) => assert_eq!((job["status"].as_str(), posts), (Some("cancelled"), 0), "{job}"),
            other => panic!("the commands must end consistently: {other:?} {cancel:?} {publish:?}"),
        }
    }
    // Whatever won, no job posted twice.
    let posts = app.sandbox_posts().await;
    let captions: std::collections::HashSet<_> = posts.iter().map(|p| p["caption"].clone()).collect();
    assert_eq!(captions.len(), posts.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_reschedules_end_consistently() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-two").await;
    let job = app.schedule(&account, in_secs(3600), "two times", image(&app)).await;
    let id = job["id"].as_str().unwrap();
    let (first_at, second_at) = (in_secs(4), in_secs(6));
    let (first, second) = tokio::join!(
        command(&app, id, "reschedule", json!({ "publish_at": first_at })),
        command(&app, id, "reschedule", json!({ "publish_at": second_at }))
    );
    let winners: Vec<DateTime<Utc>> =
        [(first.0, first_at), (second.0, second_at)].into_iter().filter(|(s, _)| *s == 200).map(|(_, t)| t).collect();
    for (status, body) in [&first, &second] {
        assert!(*status == 200 || (*status == 409 && body["error"]["code"] == "invalid_state"), "{body}");
    }
    assert!(!winners.is_empty(), "at least one reschedule wins: {first:?} {second:?}");
    let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    let final_time = at(&job["publish_at"]);
    assert!(winners.iter().any(|w| w.trunc_subsecs(6) == final_time), "the job keeps a time a winner set: {job}");

    let job = app.wait_for_status(id, "published", WAIT).await;
    assert!(at(&job["published_at"]) >= final_time);
    assert_eq!(app.sandbox_posts().await.len(), 1, "one post, at the final time");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_returns_the_same_job_and_refuses_another_body() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "token-idem").await;
    let body = json!({ "account_id": account, "publish_at": in_secs(3600), "caption": "once", "media": image(&app) });
    let post = |body: Value, key: &'static str| {
        let app = &app;
        async move {
            let response =
                app.http.post(format!("{}/v1/publish-jobs", app.api)).header("Idempotency-Key", key).json(&body).send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let (first, second) = tokio::join!(post(body.clone(), "key-1"), post(body.clone(), "key-1"));
    assert!([first.0, second.0].contains(&201), "{first:?} {second:?}");
    assert_eq!(first.1["id"], second.1["id"], "the same job");
    let (third_status, third) = post(body.clone(), "key-1").await;
    assert_eq!((third_status, &third["id"]), (200, &first.1["id"]));

    let mut other = body.clone();
    other["caption"] = json!("another");
    let (status, refused) = post(other, "key-1").await;
    assert_eq!((status, &refused["error"]["code"]), (422, &json!("idempotency_key_reused")), "{refused}");

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM publish_jobs").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 1, "never a second job");
}
