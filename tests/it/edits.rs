//! `PATCH /v1/publish-jobs/{id}`: a scheduled post's content changes, even a second before its
//! time, and the platform gets the new content once; what was prepared for the old is dropped.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use crate::common::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn a_caption_edited_one_second_before_the_due_time_is_published_once_with_the_new_caption() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-edit").await;
    let publish_at = Utc::now() + chrono::Duration::seconds(6);
    let job = app.schedule(&account, publish_at, "the old caption", json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }])).await;
    let id = job["id"].as_str().unwrap();
    // Armed at once (inside the lead): its container for the old caption is made now.
    app.wait_for_calls("instagram.media", 1).await;
    let wait = (publish_at - chrono::Duration::seconds(1) - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;

    let response =
        app.http.patch(format!("{}/v1/publish-jobs/{id}", app.api)).json(&json!({ "caption": "the new caption" })).send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["caption"], "the new caption");
    assert_eq!(body["status"], "scheduled");
    assert_eq!(body["publish_at"], job["publish_at"], "an edit keeps the time");

    let job = app.wait_for_status(id, "published", Duration::from_secs(60)).await;
    let posts = app.sandbox_posts().await;
    assert_eq!(posts.iter().filter(|p| p["caption"] == "the new caption").count(), 1, "{posts:?}");
    assert_eq!(posts.iter().filter(|p| p["caption"] == "the old caption").count(), 0, "the old container was discarded: {posts:?}");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1);
    let published_at: chrono::DateTime<Utc> = job["published_at"].as_str().unwrap().parse().unwrap();
    assert!(published_at >= publish_at, "not before its time: {job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edit_is_validated_like_a_create_and_refused_once_the_job_is_published() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "tt-edit").await;
    let job = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::hours(1),
            "video",
            json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }]),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let patch = |body: serde_json::Value| {
        let request = app.http.patch(format!("{}/v1/publish-jobs/{id}", app.api)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = patch(json!({ "options": null })).await;
    assert_eq!((status, &body["error"]["code"]), (422, &json!("privacy_level_required")), "{body}");
    let (status, body) = patch(json!({ "caption": "x".repeat(2201) })).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("caption")), "{body}");
    let (_, unchanged) = app.get(&format!("/v1/publish-jobs/{id}")).await;
    assert_eq!(unchanged["caption"], "video", "a refused edit writes nothing");

    let (status, body) = patch(json!({ "options": { "channel": "tiktok", "privacy_level": "SELF_ONLY" }, "caption": "new" })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["caption"].as_str(), body["options"]["privacy_level"].as_str()), (Some("new"), Some("SELF_ONLY")));

    let (status, _) = app.post(&format!("/v1/publish-jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = patch(json!({ "caption": "too late" })).await;
    assert_eq!((status, &body["error"]["code"]), (409, &json!("invalid_state")), "{body}");
}
