//! Instagram's post types and options end to end: feed images with alt text and tags, carousels,
//! stories, reels with their cover, and the first comment. Each reaches the sandbox exactly as
//! sent, once; a carousel item Instagram cannot process fails the job naming the item.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crate::common::{Options, TestApp};

const PUBLISHED_WITHIN: Duration = Duration::from_secs(60);

/// Schedules `media` with `options` (an Instagram options object without its `channel`) two
/// seconds from now and returns the job's id.
async fn schedule(app: &TestApp, account: &str, caption: &str, media: Value, options: Value) -> String {
    let mut options = options;
    options["channel"] = json!("instagram");
    let body = json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::seconds(2), "caption": caption,
                       "media": media, "options": options });
    let (status, job) = app.post("/v1/publish-jobs", &body).await;
    assert_eq!(status, 201, "{job}");
    job["id"].as_str().unwrap().to_owned()
}

/// The one sandbox post published for `job`, found by the platform post id the job shows.
async fn the_post(app: &TestApp, job: &Value) -> Value {
    let id = job["platform_post_id"].as_str().expect("a published job has a post id");
    let posts: Vec<Value> = app.sandbox_posts().await.into_iter().filter(|p| p["platform_post_id"] == id).collect();
    assert_eq!(posts.len(), 1, "one post with id {id}: {posts:?}");
    posts[0].clone()
}

async fn posts_with_caption(app: &TestApp, caption: &str) -> usize {
    app.sandbox_posts().await.iter().filter(|p| p["caption"] == caption).count()
}

/// Usernames Instagram knows: tags and collaborators must name real accounts.
async fn known_users(app: &TestApp, usernames: &[&str]) {
    let response =
        app.http.post(format!("{}/_sandbox/instagram/users", app.sandbox)).json(&json!({ "usernames": usernames })).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_image_publishes_once_with_its_alt_text_tags_collaborators_and_location() {
    let app = TestApp::spawn().await;
    known_users(&app, &["ann.photo", "bob_b"]).await;
    let account = app.link_account("instagram", "ig-feed-options").await;
    let caption = "a feed image with everything";
    let options = json!({ "post_type": "feed", "alt_text": ["A red kite over the beach"], "collaborators": ["bob_b"],
                          "location_id": "110843418940484",
                          "user_tags": [{ "username": "ann.photo", "x": 0.25, "y": 0.75 }] });
    let id = schedule(&app, &account, caption, json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]), options).await;
    let job = app.wait_for_status(&id, "published", PUBLISHED_WITHIN).await;
    assert_eq!(job["options"]["alt_text"][0], "A red kite over the beach", "the job shows its options: {job}");
    let post = the_post(&app, &job).await;
    assert_eq!(posts_with_caption(&app, caption).await, 1);
    let sent = &post["options"];
    assert_eq!(sent["media_type"], "IMAGE", "{post}");
    assert_eq!(sent["alt_text"], "A red kite over the beach");
    assert_eq!(sent["user_tags"], json!([{ "username": "ann.photo", "x": 0.25, "y": 0.75 }]));
    assert_eq!(sent["collaborators"], json!(["bob_b"]));
    assert_eq!(sent["location_id"], "110843418940484");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_carousel_of_an_image_a_video_and_an_image_is_one_post_with_its_items_in_order() {
    let app = TestApp::spawn().await;
    known_users(&app, &["cy"]).await;
    let account = app.link_account("instagram", "ig-carousel").await;
    let (jpg, mp4) = (app.media_url("sample.jpg"), app.media_url("sample.mp4"));
    let caption = "three in one";
    let media =
        json!([{ "url": jpg, "kind": "image" }, { "url": mp4, "kind": "video" }, { "url": format!("{jpg}?third"), "kind": "image" }]);
    // No post_type: several items are a carousel.
    let options =
        json!({ "alt_text": [null, null, "the third"], "user_tags": [{ "username": "cy", "media_index": 2, "x": 0.5, "y": 0.5 }] });
    let id = schedule(&app, &account, caption, media, options).await;
    let job = app.wait_for_status(&id, "published", PUBLISHED_WITHIN).await;
    let post = the_post(&app, &job).await;
    assert_eq!(posts_with_caption(&app, caption).await, 1, "one post, not one per item");
    assert_eq!(post["media"], json!([jpg, mp4, format!("{jpg}?third")]), "{post}");
    assert_eq!(post["options"]["media_type"], "CAROUSEL");
    let children = post["options"]["children"].as_array().expect("the carousel's items");
    let types: Vec<&str> = children.iter().map(|c| c["media_type"].as_str().unwrap()).collect();
    assert_eq!(types, ["IMAGE", "VIDEO", "IMAGE"]);
    assert_eq!(children[2]["alt_text"], "the third");
    assert_eq!(children[2]["user_tags"], json!([{ "username": "cy", "x": 0.5, "y": 0.5 }]));
    assert!(children[0].get("alt_text").is_none_or(Value::is_null), "{children:?}");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1, "one media_publish for the carousel");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_story_and_a_reel_with_its_cover_publish_as_their_types() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-story-reel").await;
    let (jpg, mp4) = (app.media_url("sample.jpg"), app.media_url("sample.mp4"));
    let story = schedule(&app, &account, "", json!([{ "url": jpg, "kind": "image" }]), json!({ "post_type": "story" })).await;
    let reel_options = json!({ "share_to_feed": false, "cover_url": jpg, "audio_name": "Original audio" });
    let reel = schedule(&app, &account, "a reel with a cover", json!([{ "url": mp4, "kind": "video" }]), reel_options).await;

    let story = app.wait_for_status(&story, "published", PUBLISHED_WITHIN).await;
    let post = the_post(&app, &story).await;
    assert_eq!(post["options"]["media_type"], "STORIES", "{post}");
    assert_eq!(post["media"], json!([jpg]));

    let reel = app.wait_for_status(&reel, "published", PUBLISHED_WITHIN).await;
    let post = the_post(&app, &reel).await;
    let sent = &post["options"];
    assert_eq!(sent["media_type"], "REELS", "{post}");
    assert_eq!(sent["share_to_feed"], false);
    assert_eq!(sent["cover_url"], jpg);
    assert_eq!(sent["audio_name"], "Original audio");
    assert_eq!(posts_with_caption(&app, "a reel with a cover").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_comment_is_posted_once_after_the_publish_and_a_failed_one_is_a_warning() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-first-comment").await;
    let jpg = app.media_url("sample.jpg");
    let comment = "Link in bio! #launch";
    let id =
        schedule(&app, &account, "with a first comment", json!([{ "url": jpg, "kind": "image" }]), json!({ "first_comment": comment }))
            .await;
    app.wait_for_status(&id, "published", PUBLISHED_WITHIN).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        if !job["first_comment_id"].is_null() {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "the first comment was never recorded: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["warnings"], json!([]), "{job}");
    let post = the_post(&app, &job).await;
    let comments = post["comments"].as_array().expect("the post's comments");
    assert_eq!(comments.len(), 1, "posted once: {comments:?}");
    assert_eq!(comments[0]["text"], comment);
    assert_eq!(comments[0]["id"], job["first_comment_id"]);

    // Instagram refuses every comment now: the job is published all the same, with a warning.
    app.sandbox_fault(json!({ "endpoint": "instagram.comment_create", "status": 400, "times": 100,
        "body": { "error": { "message": "(#100) Invalid parameter", "type": "OAuthException", "code": 100, "fbtrace_id": "f" } } }))
        .await;
    let id =
        schedule(&app, &account, "comment refused", json!([{ "url": jpg, "kind": "image" }]), json!({ "first_comment": comment })).await;
    app.wait_for_status(&id, "published", PUBLISHED_WITHIN).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let job = loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        if job["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "no warning for the refused comment: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "published");
    assert_eq!(job["warnings"][0]["code"], "instagram.first_comment_failed", "{job}");
    assert!(job["first_comment_id"].is_null());
    let metrics = reqwest::get(app.worker_metrics_url().await).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"autopost_first_comments_total{outcome="failed"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"autopost_first_comments_total{outcome="posted"} 1"#), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_carousel_whose_item_fails_processing_names_the_item_and_publishes_nothing() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "ig-carousel-error").await;
    let jpg = app.media_url("sample.jpg");
    let response = app
        .http
        .post(format!("{}/_sandbox/instagram/processing-errors", app.sandbox))
        .json(&json!({ "media_url_contains": "broken-item" }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
    let media = json!([{ "url": jpg, "kind": "image" }, { "url": format!("{jpg}?broken-item"), "kind": "image" },
                       { "url": jpg, "kind": "image" }]);
    let id = schedule(&app, &account, "one bad item", media, json!({})).await;
    let job = app.wait_for_status(&id, "needs_attention", PUBLISHED_WITHIN).await;
    assert_eq!(job["last_error"]["code"], "instagram.carousel_item_error", "{job}");
    let message = job["last_error"]["message"].as_str().unwrap();
    assert!(message.contains("carousel item 2 of 3 (media[1])"), "the item is named: {message}");
    assert_eq!(posts_with_caption(&app, "one bad item").await, 0);
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn instagram_options_that_do_not_fit_the_post_are_refused_naming_the_field() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("instagram", "ig-options-refused").await;
    let (jpg, mp4) = (app.media_url("sample.jpg"), app.media_url("sample.mp4"));
    let at = Utc::now() + chrono::Duration::hours(1);
    let cases = [
        (json!([{ "url": mp4, "kind": "video" }]), json!({ "post_type": "feed" }), "", "post_type_media_mismatch", "options.post_type"),
        (json!([{ "url": jpg, "kind": "image" }]), json!({ "post_type": "story" }), "a caption", "option_not_applicable", "caption"),
        (json!([{ "url": jpg, "kind": "image" }]), json!({ "share_to_feed": true }), "c", "option_not_applicable", "options.share_to_feed"),
        (
            json!([{ "url": jpg, "kind": "image" }]),
            json!({ "collaborators": ["a", "b", "c", "d"] }),
            "c",
            "too_many_collaborators",
            "options.collaborators",
        ),
        (
            json!([{ "url": mp4, "kind": "video" }]),
            json!({ "cover_url": "http://169.254.169.254/x.jpg" }),
            "c",
            "media_url_not_https",
            "options.cover_url",
        ),
        (
            json!([{ "url": jpg, "kind": "image" }]),
            json!({ "user_tags": [{ "username": "ann" }] }),
            "c",
            "tag_position_required",
            "options.user_tags[0].x",
        ),
    ];
    for (media, mut options, caption, code, field) in cases {
        options["channel"] = json!("instagram");
        let body = json!({ "account_id": account, "publish_at": at, "caption": caption, "media": media, "options": options });
        let (status, error) = app.post("/v1/publish-jobs", &body).await;
        assert_eq!(status, 422, "{options}: {error}");
        assert_eq!((error["error"]["code"].as_str(), error["error"]["field"].as_str()), (Some(code), Some(field)), "{options}: {error}");
    }
    let (_, page) = app.get("/v1/publish-jobs").await;
    assert_eq!(page["jobs"], json!([]), "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_used_up_publishing_quota_makes_the_job_wait_for_the_window_without_a_retry_or_a_container() {
    let app = TestApp::spawn().await;
    let token = "ig-quota";
    let account = app.link_account("instagram", token).await;
    app.sandbox_instagram_quota(token, 1).await;
    let jpg = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let first = schedule(&app, &account, "uses the quota", jpg.clone(), json!({})).await;
    app.wait_for_status(&first, "published", PUBLISHED_WITHIN).await;
    let containers = app.sandbox_calls("instagram.media").await;

    let second = schedule(&app, &account, "waits for the window", jpg, json!({})).await;
    let job = app.wait_for_status(&second, "failed", PUBLISHED_WITHIN).await;
    assert_eq!(job["last_error"]["code"], "instagram.quota_exhausted", "{job}");
    let next: chrono::DateTime<Utc> = job["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(next > Utc::now() + chrono::Duration::minutes(50), "the window, not the 1 s retry backoff: {job}");
    assert_eq!(app.sandbox_calls("instagram.media").await, containers, "no container is made while nothing can be published");
    assert_eq!(app.sandbox_calls("instagram.media_publish").await, 1);

    // The window reopens (the creator need not wait for the hour): the retry publishes it once.
    app.sandbox_instagram_quota(token, 10).await;
    let (status, body) = app.post(&format!("/v1/publish-jobs/{second}/retry"), &json!({})).await;
    assert_eq!(status / 100, 2, "{body}");
    app.wait_for_status(&second, "published", PUBLISHED_WITHIN).await;
    assert_eq!(posts_with_caption(&app, "waits for the window").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_waits_do_not_use_up_the_retries_and_the_job_publishes_once_the_window_has_room() {
    // One retry, and a quota looked at again every second.
    let app = TestApp::spawn_with(Options { retry_backoff: "1s", instagram_quota_recheck: "1s", ..Options::default() }).await;
    let token = "ig-quota-waits";
    let account = app.link_account("instagram", token).await;
    app.sandbox_instagram_quota(token, 0).await;
    let id =
        schedule(&app, &account, "waits out the window", json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]), json!({})).await;
    // Four attempts met the used-up quota: more than the one retry the job has, and it still waits.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, job) = app.get(&format!("/v1/publish-jobs/{id}")).await;
        assert_ne!(job["status"], "needs_attention", "a quota wait spent the retries: {job}");
        if job["attempt_count"].as_i64().unwrap_or(0) >= 4 && job["status"] == "failed" {
            assert_eq!(job["last_error"]["code"], "instagram.quota_exhausted", "{job}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the job did not look at the quota again: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.sandbox_calls("instagram.media").await, 0, "no container while nothing can be published");
    app.sandbox_instagram_quota(token, 10).await;
    app.wait_for_status(&id, "published", PUBLISHED_WITHIN).await;
    assert_eq!(posts_with_caption(&app, "waits out the window").await, 1);
}
