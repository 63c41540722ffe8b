//! TikTok's post options end to end: the creator's privacy choice and the interaction and
//! disclosure settings reach the platform exactly as sent, once; an option the account no
//! longer allows stops the job before any attempt.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::common::{TestApp, platform_user_id};

async fn create(app: &TestApp, body: &Value) -> String {
    let (status, job) = app.post("/v1/publish-jobs", body).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// The sandbox's one post with `caption`, as many as there are.
async fn posts_with_caption(app: &TestApp, caption: &str) -> Vec<Value> {
    app.sandbox_posts().await.into_iter().filter(|p| p["caption"] == caption).collect()
}

/// Sets what the TikTok creator behind `token` offers (`creator_info`).
async fn set_creator(app: &TestApp, token: &str, settings: Value) {
    let mut body = settings;
    body["open_id"] = json!(platform_user_id("tiktok", token));
    let response = app.http.post(format!("{}/_sandbox/tiktok/creators", app.sandbox)).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_videos_publish_once_with_each_privacy_level_and_the_settings_sent() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "tt-options").await;
    let mp4 = app.media_url("sample.mp4");
    let publish_at = Utc::now() + chrono::Duration::seconds(3);
    let cases = [
        json!({ "privacy_level": "PUBLIC_TO_EVERYONE", "brand_content_toggle": true, "brand_organic_toggle": true,
                "video_cover_timestamp_ms": 1500 }),
        json!({ "privacy_level": "MUTUAL_FOLLOW_FRIENDS", "disable_comment": true, "disable_duet": true, "disable_stitch": true }),
        json!({ "privacy_level": "FOLLOWER_OF_CREATOR", "brand_organic_toggle": true, "is_aigc": true }),
        json!({ "privacy_level": "SELF_ONLY" }),
    ];
    let mut jobs = Vec::new();
    for (i, options) in cases.iter().enumerate() {
        let caption = format!("privacy case {i}");
        let mut sent = options.clone();
        sent["channel"] = json!("tiktok");
        let body = json!({ "account_id": account, "publish_at": publish_at, "caption": caption,
                           "media": [{ "url": mp4, "kind": "video" }], "options": sent });
        let id = create(&app, &body).await;
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        assert_eq!(job["options"]["privacy_level"], options["privacy_level"], "the job shows its options: {job}");
        jobs.push((id, caption, options));
    }
    for (id, caption, options) in jobs {
        app.wait_for_status(&id, "published", Duration::from_secs(60)).await;
        let posts = posts_with_caption(&app, &caption).await;
        assert_eq!(posts.len(), 1, "exactly one post for {caption}: {posts:?}");
        // Every setting the adapter sends, with what the creator left unset at its default.
        let mut expected = json!({ "disable_comment": false, "disable_duet": false, "disable_stitch": false,
                                   "brand_content_toggle": false, "brand_organic_toggle": false, "is_aigc": false });
        for (name, value) in options.as_object().unwrap() {
            expected[name] = value.clone();
        }
        assert_eq!(posts[0]["options"], expected, "{caption} went out with exactly the options sent");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tiktok_photo_post_publishes_with_its_cover_title_and_music() {
    let app = TestApp::spawn().await;
    let account = app.link_account("tiktok", "tt-photo-options").await;
    let jpg = app.media_url("sample.jpg");
    let caption = "three photos, the last one on the cover";
    let body = json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::seconds(2), "caption": caption,
                       "media": [{ "url": jpg, "kind": "image" }, { "url": jpg, "kind": "image" }, { "url": jpg, "kind": "image" }],
                       "options": { "channel": "tiktok", "privacy_level": "FOLLOWER_OF_CREATOR", "photo_cover_index": 2,
                                    "title": "Cover last", "auto_add_music": true, "disable_comment": true } });
    let id = create(&app, &body).await;
    app.wait_for_status(&id, "published", Duration::from_secs(60)).await;
    let posts = posts_with_caption(&app, caption).await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(
        posts[0]["options"],
        json!({ "privacy_level": "FOLLOWER_OF_CREATOR", "photo_cover_index": 2, "title": "Cover last", "auto_add_music": true,
                "disable_comment": true, "brand_content_toggle": false, "brand_organic_toggle": false })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_privacy_level_the_creator_no_longer_offers_needs_attention_without_an_attempt() {
    let app = TestApp::spawn().await;
    let token = "tt-private-now";
    let account = app.link_account("tiktok", token).await;
    let mp4 = app.media_url("sample.mp4");
    let body = json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::seconds(3), "caption": "public once",
                       "media": [{ "url": mp4, "kind": "video" }],
                       "options": { "channel": "tiktok", "privacy_level": "PUBLIC_TO_EVERYONE" } });
    // The account went private after the post was planned: TikTok offers it fewer levels.
    set_creator(&app, token, json!({ "privacy_level_options": ["FOLLOWER_OF_CREATOR", "SELF_ONLY"] })).await;
    let id = create(&app, &body).await;
    let job = app.wait_for_status(&id, "needs_attention", Duration::from_secs(60)).await;
    assert_eq!(job["last_error"]["code"], "preflight.privacy_level_not_offered", "{job}");
    let message = job["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("PUBLIC_TO_EVERYONE") && message.contains("FOLLOWER_OF_CREATOR, SELF_ONLY"), "{message}");
    assert_eq!(job["attempt_count"], 0, "{job}");
    assert!(app.attempts(&id).await.is_empty(), "no attempt was made");
    assert_eq!(app.sandbox_calls("tiktok.video_init").await, 0, "nothing was sent to TikTok");
    assert!(posts_with_caption(&app, "public once").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_allowing_comments_the_creator_disabled_needs_attention_naming_the_setting() {
    let app = TestApp::spawn().await;
    let token = "tt-no-comments";
    let account = app.link_account("tiktok", token).await;
    set_creator(&app, token, json!({ "privacy_level_options": ["PUBLIC_TO_EVERYONE", "SELF_ONLY"], "comment_disabled": true })).await;
    let mp4 = app.media_url("sample.mp4");
    let body = |caption: &str, disable_comment: bool| {
        json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::seconds(3), "caption": caption,
                "media": [{ "url": mp4, "kind": "video" }],
                "options": { "channel": "tiktok", "privacy_level": "SELF_ONLY", "disable_comment": disable_comment } })
    };
    let refused = create(&app, &body("comments on", false)).await;
    let accepted = create(&app, &body("comments off", true)).await;
    let job = app.wait_for_status(&refused, "needs_attention", Duration::from_secs(60)).await;
    assert_eq!(job["last_error"]["code"], "preflight.interaction_disabled", "{job}");
    assert!(job["last_error"]["message"].as_str().unwrap().contains("disable_comment"), "{job}");
    app.wait_for_status(&accepted, "published", Duration::from_secs(60)).await;
    assert!(posts_with_caption(&app, "comments on").await.is_empty());
    assert_eq!(posts_with_caption(&app, "comments off").await.len(), 1);
}
