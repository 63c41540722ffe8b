//! IV1: a scheduled post publishes at its time through the real Temporal and Postgres, for
//! every kind of post, exactly once; and sleeping jobs survive a worker restart.

use std::time::Duration;

use crate::common::TestApp;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap_or_else(|| panic!("not a time: {value}")).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_post_publishes_once_after_its_publish_time() {
    let app = TestApp::spawn().await;
    let instagram = app.link_account("instagram", "ig-token").await;
    let tiktok = app.link_account("tiktok", "tt-token").await;
    let (jpg, mp4) = (app.media_url("sample.jpg"), app.media_url("sample.mp4"));

    let publish_at = Utc::now() + chrono::Duration::seconds(4);
    let cases = [
        (&instagram, "instagram", "An image post #sunrise", json!([{ "url": jpg, "kind": "image" }])),
        (&instagram, "instagram", "A reel", json!([{ "url": mp4, "kind": "video" }])),
        (&tiktok, "tiktok", "A TikTok video", json!([{ "url": mp4, "kind": "video" }])),
        (&tiktok, "tiktok", "A TikTok photo post", json!([{ "url": jpg, "kind": "image" }, { "url": jpg, "kind": "image" }])),
    ];
    let mut jobs = Vec::new();
    for (account, channel, caption, media) in &cases {
        let job = app.schedule(account, publish_at, caption, media.clone()).await;
        assert_eq!(job["status"], "scheduled");
        assert_eq!(job["channel"], *channel);
        jobs.push(job);
    }

    let mut lags = Vec::new();
    for ((_, channel, caption, media), created) in cases.iter().zip(&jobs) {
        let id = created["id"].as_str().unwrap();
        let job = app.wait_for_status(id, "published", Duration::from_secs(60)).await;
        assert!(at(&job["published_at"]) >= publish_at, "published before its time: {job}");
        assert_eq!(job["attempt_count"], 1);
        assert!(job["last_error"].is_null() && job["next_attempt_at"].is_null(), "{job}");
        let platform_post_id = job["platform_post_id"].as_str().expect("a platform post id");

        let posts: Vec<Value> = app.sandbox_posts().await.into_iter().filter(|p| p["platform_post_id"] == platform_post_id).collect();
        assert_eq!(posts.len(), 1, "exactly one post for {caption}: {posts:?}");
        let post = &posts[0];
        assert_eq!(post["channel"], *channel);
        assert_eq!(post["caption"], *caption);
        let urls: Vec<&Value> = media.as_array().unwrap().iter().map(|m| &m["url"]).collect();
        assert_eq!(post["media"].as_array().unwrap().iter().collect::<Vec<_>>(), urls);
        let received_at = at(&post["received_at"]);
        assert!(received_at >= publish_at, "the platform received {caption} before its time");
        lags.push((caption, received_at - publish_at));

        let (status, attempts) = app.get(&format!("/v1/publish-jobs/{id}/attempts")).await;
        assert_eq!(status, 200);
        let attempts = attempts["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{attempts:?}");
        assert_eq!(attempts[0]["outcome"], "success");
        assert_eq!(attempts[0]["attempt_number"], 1);
        assert!(attempts[0]["platform_reference"].is_string(), "the attempt records the platform's reference");
    }
    assert_eq!(app.sandbox_posts().await.len(), cases.len(), "no other posts");
    for (caption, lag) in lags {
        println!("publish lag for {caption:?}: {} ms", lag.num_milliseconds());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeping_jobs_publish_after_the_worker_is_stopped_and_started_again() {
    let mut app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-token-2").await;
    let publish_at = Utc::now() + chrono::Duration::seconds(3);
    let job =
        app.schedule(&account, publish_at, "survives restarts", json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])).await;
    let id = job["id"].as_str().unwrap();

    app.stop_worker().await;
    // Past the publish time with no worker: nothing can publish, and nothing is lost.
    tokio::time::sleep_until(tokio::time::Instant::now() + (publish_at - Utc::now()).to_std().unwrap() + Duration::from_secs(2)).await;
    let (_, waiting) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!(waiting["status"], "scheduled");
    assert!(app.sandbox_posts().await.is_empty());

    app.start_worker();
    let job = app.wait_for_status(id, "published", Duration::from_secs(60)).await;
    assert_eq!(job["attempt_count"], 1);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}
