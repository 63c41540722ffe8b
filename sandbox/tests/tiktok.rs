//! TikTok Content Posting API emulation, end to end over HTTP.

mod common;

use autopost_sandbox::{SandboxOptions, tiktok_open_id};
use common::{quick, start, tt_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TOKEN: &str = "alice.at-1";

fn video_init(video_url: &str, privacy: &str) -> Value {
    json!({
        "post_info": { "title": "My clip #fun", "privacy_level": privacy, "disable_comment": false },
        "source_info": { "source": "PULL_FROM_URL", "video_url": video_url },
    })
}

fn photo_init(images: Vec<String>, title: &str, description: &str) -> Value {
    json!({
        "post_info": { "title": title, "description": description, "privacy_level": "SELF_ONLY" },
        "source_info": { "source": "PULL_FROM_URL", "photo_cover_index": 0, "photo_images": images },
        "post_mode": "DIRECT_POST",
        "media_type": "PHOTO",
    })
}

#[tokio::test]
async fn creator_info_has_the_real_envelope() {
    let sandbox = start(quick()).await;
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/creator_info/query/", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["error"]["code"], "ok");
    assert_eq!(reply.body["error"]["message"], "");
    let log_id = reply.body["error"]["log_id"].as_str().expect("log_id");
    assert_eq!(reply.headers["x-tt-logid"].to_str().ok(), Some(log_id));
    let data = &reply.body["data"];
    assert_eq!(data["privacy_level_options"], json!(["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]));
    assert_eq!(data["max_video_post_duration_sec"], 600);
    assert_eq!(data["comment_disabled"], false);
    assert!(data["creator_username"].as_str().is_some_and(|name| !name.is_empty()));
}

#[tokio::test]
async fn video_flow_reaches_publish_complete_and_is_listed() {
    let sandbox = start(quick()).await;
    let video = sandbox.media("sample.mp4");
    let init = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", video_init(&video, "SELF_ONLY")).await;
    assert_eq!(init.status, StatusCode::OK, "{:?}", init.body);
    let publish_id = init.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    assert!(publish_id.starts_with("v_pub_url~v2-1."), "{publish_id}");

    let first = sandbox.tiktok(TOKEN, "/v2/post/publish/status/fetch/", json!({ "publish_id": publish_id })).await;
    assert_eq!(first.body["data"]["status"], "PROCESSING_DOWNLOAD");
    // Not listed until processing completes.
    assert!(sandbox.posts().await.is_empty());

    let data = sandbox.tt_wait(TOKEN, &publish_id).await;
    assert_eq!(data["status"], "PUBLISH_COMPLETE", "{data}");
    let post_id = data["publicaly_available_post_id"][0].as_u64().expect("post id");
    assert!(data.get("fail_reason").is_none());

    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0]["channel"], "tiktok");
    assert_eq!(posts[0]["platform_user_id"], tiktok_open_id(TOKEN));
    assert_eq!(posts[0]["caption"], "My clip #fun");
    assert_eq!(posts[0]["media"], json!([video]));
    assert_eq!(posts[0]["platform_post_id"], post_id.to_string());

    // Another creator cannot see this publish.
    let other = sandbox.tiktok("bob", "/v2/post/publish/status/fetch/", json!({ "publish_id": publish_id })).await;
    tt_error(&other, StatusCode::BAD_REQUEST, "invalid_param");
    let unknown = sandbox.tiktok(TOKEN, "/v2/post/publish/status/fetch/", json!({ "publish_id": "v_pub_url~v2-1.1" })).await;
    tt_error(&unknown, StatusCode::BAD_REQUEST, "invalid_param");
}

#[tokio::test]
async fn bad_own_media_fails_after_processing() {
    let sandbox = start(SandboxOptions::instant()).await;
    for (url, reason) in [(sandbox.media("missing.mp4"), "video_pull_failed"), (sandbox.media("sample.png"), "file_format_check_failed")] {
        let init = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", video_init(&url, "SELF_ONLY")).await;
        assert_eq!(init.status, StatusCode::OK);
        let publish_id = init.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
        let data = sandbox.tt_wait(TOKEN, &publish_id).await;
        assert_eq!(data["status"], "FAILED");
        assert_eq!(data["fail_reason"], reason);
    }
    let photo = photo_init(vec![sandbox.media("sample.png")], "t", "d");
    let init = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", photo).await;
    let publish_id = init.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    assert_eq!(sandbox.tt_wait(TOKEN, &publish_id).await["fail_reason"], "file_format_check_failed");
    assert!(sandbox.posts().await.is_empty());
}

#[tokio::test]
async fn photo_flow_and_validation() {
    let sandbox = start(SandboxOptions::instant()).await;
    let images = vec![sandbox.media("sample.jpg"), "https://cdn.example.com/b.webp".to_owned()];
    let init = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", photo_init(images.clone(), "Title", "Long description")).await;
    assert_eq!(init.status, StatusCode::OK, "{:?}", init.body);
    let publish_id = init.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    assert!(publish_id.starts_with("p_pub_url~v2."), "{publish_id}");
    assert_eq!(sandbox.tt_wait(TOKEN, &publish_id).await["status"], "PUBLISH_COMPLETE");
    let posts = sandbox.posts().await;
    assert_eq!(posts[0]["caption"], "Long description");
    assert_eq!(posts[0]["media"], json!(images));

    let too_many = photo_init(vec![sandbox.media("sample.jpg"); 36], "t", "d");
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", too_many).await;
    tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");
    let long_title = photo_init(vec![sandbox.media("sample.jpg")], &"t".repeat(91), "d");
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", long_title).await;
    tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");
    let long_description = photo_init(vec![sandbox.media("sample.jpg")], "t", &"d".repeat(4001));
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", long_description).await;
    tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");

    let private = video_init(&sandbox.media("sample.mp4"), "EVERYONE_AND_MORE");
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", private).await;
    tt_error(&reply, StatusCode::FORBIDDEN, "privacy_level_option_mismatch");
    let mut upload = video_init(&sandbox.media("sample.mp4"), "SELF_ONLY");
    upload["source_info"] = json!({ "source": "FILE_UPLOAD", "video_size": 10 });
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", upload).await;
    tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");
    let garbage = sandbox.send(sandbox.client.post(sandbox.tt("/v2/post/publish/video/init/")).bearer_auth(TOKEN).body("{")).await;
    tt_error(&garbage, StatusCode::BAD_REQUEST, "invalid_param");
    assert_eq!(sandbox.posts().await.len(), 1);
}

#[tokio::test]
async fn token_errors_use_the_real_envelope() {
    let sandbox = start(quick()).await;
    let anonymous = sandbox.send(sandbox.client.post(sandbox.tt("/v2/post/publish/creator_info/query/")).json(&json!({}))).await;
    tt_error(&anonymous, StatusCode::UNAUTHORIZED, "access_token_invalid");

    sandbox.revoke(TOKEN).await;
    let revoked = sandbox.tiktok(TOKEN, "/v2/post/publish/creator_info/query/", json!({})).await;
    tt_error(&revoked, StatusCode::UNAUTHORIZED, "access_token_invalid");
    assert_eq!(revoked.body["error"]["message"], "The access token is invalid or not found in the request.");
    let init = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", video_init(&sandbox.media("sample.mp4"), "SELF_ONLY")).await;
    tt_error(&init, StatusCode::UNAUTHORIZED, "access_token_invalid");
}

#[tokio::test]
async fn refresh_keeps_the_open_id_and_revoked_refresh_tokens_fail() {
    let sandbox = start(SandboxOptions::instant()).await;
    let form = [("client_key", "key"), ("client_secret", "secret"), ("grant_type", "refresh_token"), ("refresh_token", "alice.rt-0")];
    let url = sandbox.tt("/v2/oauth/token/");
    let reply = sandbox.send(sandbox.client.post(&url).form(&form)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(reply.headers.contains_key("x-tt-logid"));
    let body = &reply.body;
    assert_eq!(body["open_id"], tiktok_open_id(TOKEN));
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 86400);
    assert_eq!(body["refresh_expires_in"], 31536000);
    assert_eq!(body["scope"], "video.publish");
    let access = body["access_token"].as_str().expect("access_token").to_owned();
    assert_eq!(tiktok_open_id(&access), tiktok_open_id(TOKEN));
    assert!(body["refresh_token"].as_str().is_some_and(|t| t != "alice.rt-0"));

    let info = sandbox.tiktok(&access, "/v2/post/publish/creator_info/query/", json!({})).await;
    assert_eq!(info.status, StatusCode::OK);

    sandbox.revoke("alice.rt-0").await;
    let refused = sandbox.send(sandbox.client.post(&url).form(&form)).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error"], "invalid_grant");
    assert!(refused.body["error_description"].is_string());
    assert!(refused.body["log_id"].is_string());
}
