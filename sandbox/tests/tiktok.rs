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
    assert_eq!(body["scope"], "video.publish,video.list");
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

    // A creator who did not grant video.list (see `no_video_list_tokens_lack_the_scope`).
    let form = [
        ("client_key", "key"),
        ("client_secret", "secret"),
        ("grant_type", "refresh_token"),
        ("refresh_token", "carol-no-video-list.rt-0"),
    ];
    let reply = sandbox.send(sandbox.client.post(&url).form(&form)).await;
    assert_eq!(reply.body["scope"], "video.publish");
}

// --- Display API: List Videos -------------------------------------------------

/// `POST /v2/video/list/?fields={fields}` with a JSON body.
async fn list_videos(sandbox: &common::Running, token: &str, fields: &str, body: Value) -> common::Reply {
    sandbox.tiktok(token, &format!("/v2/video/list/?fields={fields}"), body).await
}

/// A video publish with its own caption and privacy level; returns the publish id.
async fn post_video(sandbox: &common::Running, token: &str, caption: &str, privacy: &str) -> String {
    let mut init = video_init(&sandbox.media("sample.mp4"), privacy);
    init["post_info"]["title"] = json!(caption);
    let reply = sandbox.tiktok(token, "/v2/post/publish/video/init/", init).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"]["publish_id"].as_str().expect("publish_id").to_owned()
}

/// Posts a video and waits for PUBLISH_COMPLETE; returns its public post id.
async fn posted_video(sandbox: &common::Running, token: &str, caption: &str, privacy: &str) -> String {
    let publish_id = post_video(sandbox, token, caption, privacy).await;
    let data = sandbox.tt_wait(token, &publish_id).await;
    assert_eq!(data["status"], "PUBLISH_COMPLETE", "{data}");
    data["publicaly_available_post_id"][0].as_u64().expect("post id").to_string()
}

fn captions(reply: &common::Reply) -> Vec<String> {
    let videos = reply.body["data"]["videos"].as_array().expect("videos");
    videos.iter().map(|video| video["title"].as_str().expect("title").to_owned()).collect()
}

#[tokio::test]
async fn video_list_shows_only_completed_public_videos_with_the_requested_fields() {
    let sandbox = start(quick()).await;
    let before = chrono::Utc::now().timestamp();
    let public_id = post_video(&sandbox, TOKEN, "Public clip #fun", "PUBLIC_TO_EVERYONE").await;
    // Still processing: not listed yet.
    let early = list_videos(&sandbox, TOKEN, "id,title", json!({ "max_count": 20 })).await;
    assert_eq!(early.status, StatusCode::OK, "{:?}", early.body);
    assert_eq!(early.body["data"]["videos"], json!([]), "{:?}", early.body);
    assert_eq!(early.body["data"]["has_more"], false);

    let private_id = post_video(&sandbox, TOKEN, "Private clip", "SELF_ONLY").await;
    for privacy in ["MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR"] {
        post_video(&sandbox, TOKEN, privacy, privacy).await;
    }
    let mut photo = photo_init(vec![sandbox.media("sample.jpg")], "Public photo", "Public photo");
    photo["post_info"]["privacy_level"] = json!("PUBLIC_TO_EVERYONE");
    let photo_init = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", photo).await;
    let photo_id = photo_init.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    // Another creator's public video is not this creator's.
    let bob = post_video(&sandbox, "bob", "Bob's clip", "PUBLIC_TO_EVERYONE").await;

    let data = sandbox.tt_wait(TOKEN, &public_id).await;
    let post_id = data["publicaly_available_post_id"][0].as_u64().expect("post id").to_string();
    assert_eq!(sandbox.tt_wait(TOKEN, &private_id).await["status"], "PUBLISH_COMPLETE");
    assert_eq!(sandbox.tt_wait(TOKEN, &photo_id).await["status"], "PUBLISH_COMPLETE");
    assert_eq!(sandbox.tt_wait("bob", &bob).await["status"], "PUBLISH_COMPLETE");
    let after = chrono::Utc::now().timestamp();

    let reply = list_videos(&sandbox, TOKEN, "id,title,create_time,share_url", json!({ "max_count": 20 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "ok");
    assert_eq!(reply.body["error"]["message"], "");
    let log_id = reply.body["error"]["log_id"].as_str().expect("log_id");
    assert_eq!(reply.headers["x-tt-logid"].to_str().ok(), Some(log_id));
    let data = &reply.body["data"];
    let videos = data["videos"].as_array().expect("videos");
    assert_eq!(videos.len(), 1, "{data}");
    let video = videos[0].as_object().expect("video object");
    let mut keys: Vec<&str> = video.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["create_time", "id", "share_url", "title"]);
    assert_eq!(video["id"], post_id, "the id is the post id status/fetch reports");
    assert_eq!(video["title"], "Public clip #fun");
    let created = video["create_time"].as_i64().expect("create_time");
    assert!((before..=after).contains(&created), "{created} not in {before}..={after}");
    let share_url = video["share_url"].as_str().expect("share_url");
    assert!(share_url.starts_with("https://") && share_url.contains(&post_id), "{share_url}");
    assert_eq!(data["has_more"], false);
    assert_eq!(data["cursor"].as_i64().map(|cursor| cursor / 1000), Some(created));

    // Only `id` asked for: only `id` answered.
    let ids_only = list_videos(&sandbox, TOKEN, "id", json!({})).await;
    assert_eq!(ids_only.body["data"]["videos"], json!([{ "id": post_id }]));
    // `id` is answered even when not asked for.
    let titles_only = list_videos(&sandbox, TOKEN, "title", json!({})).await;
    assert_eq!(titles_only.body["data"]["videos"], json!([{ "id": post_id, "title": "Public clip #fun" }]));
    let bobs = list_videos(&sandbox, "bob", "title", json!({})).await;
    assert_eq!(captions(&bobs), ["Bob's clip"]);
    assert_eq!(sandbox.calls("tiktok.video_list").await, 5);
}

#[tokio::test]
async fn video_list_pages_newest_first_by_cursor() {
    let sandbox = start(SandboxOptions::instant()).await;
    let mut ids = Vec::new();
    for caption in ["first", "second", "third"] {
        ids.push(posted_video(&sandbox, TOKEN, caption, "PUBLIC_TO_EVERYONE").await);
    }

    let mut cursor = None;
    let mut seen = Vec::new();
    for expected_more in [true, true, false] {
        let mut body = json!({ "max_count": 1 });
        if let Some(cursor) = cursor {
            body["cursor"] = json!(cursor);
        }
        let page = list_videos(&sandbox, TOKEN, "id,title,create_time", body).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        let data = &page.body["data"];
        assert_eq!(data["videos"].as_array().map(Vec::len), Some(1), "{data}");
        assert_eq!(data["has_more"], expected_more, "{data}");
        let next = data["cursor"].as_i64().expect("cursor");
        assert!(cursor.is_none_or(|previous| next < previous), "the cursor moves back in time");
        cursor = Some(next);
        seen.push(data["videos"][0].clone());
    }
    let titles: Vec<&str> = seen.iter().map(|video| video["title"].as_str().expect("title")).collect();
    assert_eq!(titles, ["third", "second", "first"]);
    let listed_ids: Vec<&str> = seen.iter().map(|video| video["id"].as_str().expect("id")).collect();
    assert_eq!(listed_ids, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    let times: Vec<i64> = seen.iter().map(|video| video["create_time"].as_i64().expect("create_time")).collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "{times:?}");

    // Past the oldest video: an empty last page.
    let end = list_videos(&sandbox, TOKEN, "id", json!({ "max_count": 1, "cursor": cursor })).await;
    assert_eq!(end.body["data"]["videos"], json!([]));
    assert_eq!(end.body["data"]["has_more"], false);
    // No max_count: the default page size (10) holds them all.
    let all = list_videos(&sandbox, TOKEN, "title", json!({})).await;
    assert_eq!(captions(&all), ["third", "second", "first"]);
    assert_eq!(all.body["data"]["has_more"], false);
    // Two per page.
    let two = list_videos(&sandbox, TOKEN, "title", json!({ "max_count": 2 })).await;
    assert_eq!(captions(&two), ["third", "second"]);
    assert_eq!(two.body["data"]["has_more"], true);
}

#[tokio::test]
async fn video_list_rejects_invalid_params() {
    let sandbox = start(SandboxOptions::instant()).await;
    posted_video(&sandbox, TOKEN, "clip", "PUBLIC_TO_EVERYONE").await;
    for body in [json!({ "max_count": 21 }), json!({ "max_count": 0 }), json!({ "cursor": -1 }), json!({ "max_count": "ten" })] {
        let reply = list_videos(&sandbox, TOKEN, "id,title", body.clone()).await;
        tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_params");
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    }
    let max = list_videos(&sandbox, TOKEN, "id", json!({ "max_count": 20 })).await;
    assert_eq!(max.status, StatusCode::OK, "{:?}", max.body);

    let no_fields = sandbox.tiktok(TOKEN, "/v2/video/list/", json!({})).await;
    tt_error(&no_fields, StatusCode::BAD_REQUEST, "invalid_params");
    let unknown_field = list_videos(&sandbox, TOKEN, "id,likes", json!({})).await;
    tt_error(&unknown_field, StatusCode::BAD_REQUEST, "invalid_params");
}

/// The sandbox grants `video.list` to every token except those containing
/// `no-video-list`: they get TikTok's 401 `scope_not_authorized`.
#[tokio::test]
async fn no_video_list_tokens_lack_the_scope() {
    let sandbox = start(SandboxOptions::instant()).await;
    let token = "carol-no-video-list.at-1";
    let reply = list_videos(&sandbox, token, "id,title", json!({ "max_count": 10 })).await;
    tt_error(&reply, StatusCode::UNAUTHORIZED, "scope_not_authorized");
    assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    // The token is otherwise fine.
    let info = sandbox.tiktok(token, "/v2/post/publish/creator_info/query/", json!({})).await;
    assert_eq!(info.status, StatusCode::OK);

    // Token errors come first, as on the other endpoints.
    let anonymous = sandbox.send(sandbox.client.post(sandbox.tt("/v2/video/list/?fields=id")).json(&json!({}))).await;
    tt_error(&anonymous, StatusCode::UNAUTHORIZED, "access_token_invalid");
    sandbox.revoke(TOKEN).await;
    let revoked = list_videos(&sandbox, TOKEN, "id", json!({})).await;
    tt_error(&revoked, StatusCode::UNAUTHORIZED, "access_token_invalid");
}

#[tokio::test]
async fn video_list_is_counted_and_faultable() {
    let sandbox = start(SandboxOptions::instant()).await;
    sandbox.fault(json!({ "endpoint": "tiktok.video_list", "status": 429 })).await;
    let limited = list_videos(&sandbox, TOKEN, "id", json!({})).await;
    tt_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    let fine = list_videos(&sandbox, TOKEN, "id", json!({})).await;
    assert_eq!(fine.status, StatusCode::OK, "{:?}", fine.body);
    assert_eq!(fine.body["data"], json!({ "videos": [], "cursor": 0, "has_more": false }));
    assert_eq!(sandbox.calls("tiktok.video_list").await, 2);
}

#[tokio::test]
async fn the_creators_settings_decide_what_a_post_may_choose() {
    let sandbox = start(SandboxOptions::instant()).await;
    let settings = json!({ "open_id": tiktok_open_id(TOKEN), "privacy_level_options": ["FOLLOWER_OF_CREATOR", "SELF_ONLY"],
                           "comment_disabled": true, "duet_disabled": true });
    let response = sandbox.client.post(sandbox.url("/_sandbox/tiktok/creators")).json(&settings).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let info = sandbox.tiktok(TOKEN, "/v2/post/publish/creator_info/query/", json!({})).await;
    assert_eq!(info.body["data"]["privacy_level_options"], json!(["FOLLOWER_OF_CREATOR", "SELF_ONLY"]));
    assert_eq!((info.body["data"]["comment_disabled"].clone(), info.body["data"]["duet_disabled"].clone()), (json!(true), json!(true)));
    let init = |privacy: &str, post_info: Value| {
        let mut body = video_init(&sandbox.media("sample.mp4"), privacy);
        for (name, value) in post_info.as_object().unwrap() {
            body["post_info"][name] = value.clone();
        }
        sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", body)
    };
    let allowed = json!({ "disable_comment": true, "disable_duet": true });
    // A level TikTok knows but this creator no longer offers.
    tt_error(&init("PUBLIC_TO_EVERYONE", allowed.clone()).await, StatusCode::FORBIDDEN, "privacy_level_option_mismatch");
    tt_error(&init("SELF_ONLY", json!({ "disable_duet": true })).await, StatusCode::BAD_REQUEST, "invalid_param");
    tt_error(&init("SELF_ONLY", json!({ "disable_comment": true })).await, StatusCode::BAD_REQUEST, "invalid_param");
    let branded = json!({ "disable_comment": true, "disable_duet": true, "brand_content_toggle": true });
    tt_error(&init("SELF_ONLY", branded.clone()).await, StatusCode::BAD_REQUEST, "invalid_param");
    tt_error(
        &init("SELF_ONLY", json!({ "disable_comment": true, "disable_duet": true, "auto_add_music": true })).await,
        StatusCode::BAD_REQUEST,
        "invalid_param",
    );
    assert!(sandbox.posts().await.is_empty(), "nothing refused was posted");

    let reply = init("FOLLOWER_OF_CREATOR", branded).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    sandbox.tt_wait(TOKEN, reply.body["data"]["publish_id"].as_str().unwrap()).await;
    let posts = sandbox.posts().await;
    assert_eq!(
        posts[0]["options"],
        json!({ "privacy_level": "FOLLOWER_OF_CREATOR", "disable_comment": true, "disable_duet": true, "brand_content_toggle": true })
    );
}

// --- FILE_UPLOAD and verified domains -----------------------------------------

const MB: usize = 1024 * 1024;

/// The built-in 3 s sample, padded with a `free` box to `size` bytes: still a valid MP4.
fn padded_mp4(size: usize) -> Vec<u8> {
    let mut video = include_bytes!("../assets/sample.mp4").to_vec();
    let padding = size - video.len();
    video.extend_from_slice(&u32::try_from(padding).unwrap().to_be_bytes());
    video.extend_from_slice(b"free");
    video.resize(size, 0);
    video
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn upload_init(video_size: usize, chunk_size: usize, total_chunk_count: usize) -> Value {
    json!({
        "post_info": { "title": "Uploaded clip", "privacy_level": "SELF_ONLY", "disable_comment": true },
        "source_info": { "source": "FILE_UPLOAD", "video_size": video_size, "chunk_size": chunk_size,
                         "total_chunk_count": total_chunk_count },
    })
}

/// Inits an upload; returns the publish id and the upload URL.
async fn start_upload(sandbox: &common::Running, video_size: usize, chunk_size: usize, chunks: usize) -> (String, String) {
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", upload_init(video_size, chunk_size, chunks)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let data = &reply.body["data"];
    (data["publish_id"].as_str().expect("publish_id").to_owned(), data["upload_url"].as_str().expect("upload_url").to_owned())
}

/// `PUT upload_url` of `video[first..=last]`, announced as `range` (`bytes F-L/T`).
async fn put_chunk(sandbox: &common::Running, upload_url: &str, video: &[u8], first: usize, last: usize, range: &str) -> common::Reply {
    let request = sandbox
        .client
        .put(upload_url)
        .header("Content-Type", "video/mp4")
        .header("Content-Range", range)
        .body(video[first..=last].to_vec());
    sandbox.send(request).await
}

async fn put_exact(sandbox: &common::Running, upload_url: &str, video: &[u8], first: usize, last: usize) -> common::Reply {
    put_chunk(sandbox, upload_url, video, first, last, &format!("bytes {first}-{last}/{}", video.len())).await
}

async fn status(sandbox: &common::Running, publish_id: &str) -> Value {
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/status/fetch/", json!({ "publish_id": publish_id })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].clone()
}

/// Polls an upload's publish until it leaves PROCESSING_UPLOAD.
async fn upload_wait(sandbox: &common::Running, publish_id: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let data = status(sandbox, publish_id).await;
        if data["status"] != "PROCESSING_UPLOAD" {
            return data;
        }
        assert!(std::time::Instant::now() < deadline, "the upload never finished processing: {data}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Sets what the sandbox counts as verified domains; returns the control API's answer.
async fn verify_domains(sandbox: &common::Running, domains: Value) -> common::Reply {
    sandbox.post_json(&sandbox.url("/_sandbox/tiktok/verified-domains"), json!({ "domains": domains })).await
}

#[tokio::test]
async fn a_video_uploaded_in_chunks_publishes_once_with_its_bytes() {
    let sandbox = start(quick()).await;
    // Three chunks of 5 MB, the last with the 7 trailing bytes.
    let video = padded_mp4(15 * MB + 7);
    let (publish_id, upload_url) = start_upload(&sandbox, video.len(), 5 * MB, 3).await;
    assert!(publish_id.starts_with("v_pub_file~v2-1."), "{publish_id}");
    assert!(upload_url.starts_with(&format!("{}/tiktok/upload/?upload_id=", sandbox.base)), "{upload_url}");
    assert!(upload_url.contains("&upload_token="), "{upload_url}");
    let before = status(&sandbox, &publish_id).await;
    assert_eq!((before["status"].clone(), before["uploaded_bytes"].clone()), (json!("PROCESSING_UPLOAD"), json!(0)));

    let first = put_exact(&sandbox, &upload_url, &video, 0, 5 * MB - 1).await;
    assert_eq!(first.status, StatusCode::PARTIAL_CONTENT, "{:?}", first.body);
    assert_eq!(status(&sandbox, &publish_id).await["uploaded_bytes"], 5 * MB);
    // Sent again (its answer lost): answered as before, not taken twice.
    assert_eq!(put_exact(&sandbox, &upload_url, &video, 0, 5 * MB - 1).await.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(status(&sandbox, &publish_id).await["uploaded_bytes"], 5 * MB);

    // Out of order, a chunk of the wrong size, the wrong total, a range the body does not fill,
    // no video type: each refused, naming what is wrong.
    let last = video.len() - 1;
    let refusals = [
        (put_exact(&sandbox, &upload_url, &video, 10 * MB, last).await, "not the next chunk"),
        (put_exact(&sandbox, &upload_url, &video, 5 * MB, 9 * MB).await, "not the next chunk"),
        (
            put_chunk(&sandbox, &upload_url, &video, 5 * MB, 10 * MB - 1, &format!("bytes {}-{}/{}", 5 * MB, 10 * MB - 1, last)).await,
            "total",
        ),
        (
            put_chunk(&sandbox, &upload_url, &video, 5 * MB, 10 * MB - 2, &format!("bytes {}-{}/{}", 5 * MB, 10 * MB - 1, video.len()))
                .await,
            "Content-Length",
        ),
        (put_chunk(&sandbox, &upload_url, &video, 5 * MB, 10 * MB - 1, "5242880-10485759").await, "Content-Range"),
    ];
    for (reply, named) in refusals {
        tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{named}: {message}");
    }
    let untyped = sandbox.client.put(&upload_url).header("Content-Range", format!("bytes {}-{}/{}", 5 * MB, 10 * MB - 1, video.len()));
    let untyped = sandbox.send(untyped.body(video[5 * MB..10 * MB].to_vec())).await;
    tt_error(&untyped, StatusCode::BAD_REQUEST, "invalid_param");
    assert!(untyped.body["error"]["message"].as_str().unwrap().contains("Content-Type"));
    let forged = upload_url.replace("upload_token=", "upload_token=x");
    tt_error(&put_exact(&sandbox, &forged, &video, 5 * MB, 10 * MB - 1).await, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(status(&sandbox, &publish_id).await["uploaded_bytes"], 5 * MB, "nothing refused was taken");

    assert_eq!(put_exact(&sandbox, &upload_url, &video, 5 * MB, 10 * MB - 1).await.status, StatusCode::PARTIAL_CONTENT);
    let final_chunk = put_exact(&sandbox, &upload_url, &video, 10 * MB, last).await;
    assert_eq!(final_chunk.status, StatusCode::CREATED, "{:?}", final_chunk.body);
    assert_eq!(put_exact(&sandbox, &upload_url, &video, 10 * MB, last).await.status, StatusCode::CREATED, "the final chunk again");
    let processing = status(&sandbox, &publish_id).await;
    assert_eq!((processing["status"].clone(), processing["uploaded_bytes"].clone()), (json!("PROCESSING_UPLOAD"), json!(video.len())));
    assert!(sandbox.posts().await.is_empty(), "not posted while processing");

    let done = upload_wait(&sandbox, &publish_id).await;
    assert_eq!(done["status"], "PUBLISH_COMPLETE", "{done}");
    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0]["caption"], "Uploaded clip");
    assert_eq!(posts[0]["media"], json!([format!("upload:{:016x}:{}", fnv1a64(&video), video.len())]));
    assert_eq!(posts[0]["options"], json!({ "privacy_level": "SELF_ONLY", "disable_comment": true }));
    assert_eq!(posts[0]["platform_post_id"], done["publicaly_available_post_id"][0].to_string());
    assert_eq!(sandbox.calls("tiktok.upload").await, 12);
}

#[tokio::test]
async fn a_small_video_is_uploaded_whole_and_the_init_enforces_the_chunk_rules() {
    let sandbox = start(SandboxOptions::instant()).await;
    let video = include_bytes!("../assets/sample.mp4");
    let (publish_id, upload_url) = start_upload(&sandbox, video.len(), video.len(), 1).await;
    assert_eq!(put_exact(&sandbox, &upload_url, video, 0, video.len() - 1).await.status, StatusCode::CREATED);
    assert_eq!(upload_wait(&sandbox, &publish_id).await["status"], "PUBLISH_COMPLETE");

    let cases = [
        (json!({ "source": "FILE_UPLOAD", "chunk_size": 1000, "total_chunk_count": 1 }), "video_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": -5, "chunk_size": 1000, "total_chunk_count": 1 }), "video_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 4097 * MB, "chunk_size": 64 * MB, "total_chunk_count": 64 }), "video_size"),
        // Under 5 MB: whole, in one chunk.
        (json!({ "source": "FILE_UPLOAD", "video_size": 1000, "chunk_size": 500, "total_chunk_count": 2 }), "chunk_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 1000, "chunk_size": 1000, "total_chunk_count": 2 }), "total_chunk_count"),
        // Chunks are 5 to 64 MB, counted rounding down; over 64 MB takes several.
        (json!({ "source": "FILE_UPLOAD", "video_size": 20 * MB, "chunk_size": 4 * MB, "total_chunk_count": 5 }), "chunk_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 200 * MB, "chunk_size": 65 * MB, "total_chunk_count": 3 }), "chunk_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 20 * MB + 1, "chunk_size": 5 * MB, "total_chunk_count": 5 }), "total_chunk_count"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 100 * MB, "chunk_size": 64 * MB, "total_chunk_count": 1 }), "chunk_size"),
        (json!({ "source": "FILE_UPLOAD", "video_size": 6 * MB, "chunk_size": 7 * MB, "total_chunk_count": 1 }), "chunk_size"),
        (json!({ "source": "SOMETHING_ELSE" }), "source"),
    ];
    for (source, field) in cases {
        let mut body = upload_init(0, 0, 0);
        body["source_info"] = source.clone();
        let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", body).await;
        tt_error(&reply, StatusCode::BAD_REQUEST, "invalid_param");
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("source_info.{field}")), "{source}: {message}");
    }
    // Within the rules: 20 MB + 1 in four 5 MB chunks (the last one byte longer), 200 MB in
    // three of 64 MB (the last 72 MB), a 6 MB video whole.
    for (size, chunk, count) in [(20 * MB + 1, 5 * MB, 4), (200 * MB, 64 * MB, 3), (6 * MB, 6 * MB, 1)] {
        start_upload(&sandbox, size, chunk, count).await;
    }
    // Photos are pulled, never uploaded.
    let mut photo = photo_init(vec![sandbox.media("sample.jpg")], "t", "d");
    photo["source_info"]["source"] = json!("FILE_UPLOAD");
    tt_error(&sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", photo).await, StatusCode::BAD_REQUEST, "invalid_param");
}

#[tokio::test]
async fn videos_over_the_creators_duration_or_not_videos_fail_their_checks() {
    let sandbox = start(SandboxOptions::instant()).await;
    let settings = json!({ "open_id": tiktok_open_id(TOKEN), "privacy_level_options": ["SELF_ONLY"], "max_video_post_duration_sec": 2 });
    assert_eq!(sandbox.post_json(&sandbox.url("/_sandbox/tiktok/creators"), settings).await.status, StatusCode::OK);
    let info = sandbox.tiktok(TOKEN, "/v2/post/publish/creator_info/query/", json!({})).await;
    assert_eq!(info.body["data"]["max_video_post_duration_sec"], 2);

    // The 3 s sample is too long for this creator, pulled or uploaded.
    let pulled = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", video_init(&sandbox.media("sample.mp4"), "SELF_ONLY")).await;
    let pulled = pulled.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    let pulled = sandbox.tt_wait(TOKEN, &pulled).await;
    assert_eq!((pulled["status"].clone(), pulled["fail_reason"].clone()), (json!("FAILED"), json!("duration_check_failed")));
    let video = include_bytes!("../assets/sample.mp4");
    let (publish_id, upload_url) = start_upload(&sandbox, video.len(), video.len(), 1).await;
    assert_eq!(put_exact(&sandbox, &upload_url, video, 0, video.len() - 1).await.status, StatusCode::CREATED);
    assert_eq!(upload_wait(&sandbox, &publish_id).await["fail_reason"], "duration_check_failed");
    // An "MP4" without a movie header, and bytes that are no video at all.
    let truncated = &video[..200];
    let garbage = vec![7u8; 4000];
    for bytes in [truncated, garbage.as_slice()] {
        let (publish_id, upload_url) = start_upload(&sandbox, bytes.len(), bytes.len(), 1).await;
        assert_eq!(put_exact(&sandbox, &upload_url, bytes, 0, bytes.len() - 1).await.status, StatusCode::CREATED);
        assert_eq!(upload_wait(&sandbox, &publish_id).await["fail_reason"], "file_format_check_failed");
    }
    assert!(sandbox.posts().await.is_empty());

    let zero = json!({ "open_id": tiktok_open_id(TOKEN), "privacy_level_options": ["SELF_ONLY"], "max_video_post_duration_sec": 0 });
    assert_eq!(sandbox.post_json(&sandbox.url("/_sandbox/tiktok/creators"), zero).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pull_from_url_needs_a_verified_domain_once_the_domains_are_set() {
    let sandbox = start(SandboxOptions::instant()).await;
    let init = |url: String| sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", video_init(&url, "SELF_ONLY"));
    // By default every domain counts as verified, the sandbox's own included.
    assert_eq!(init(sandbox.media("sample.mp4")).await.status, StatusCode::OK);

    assert_eq!(verify_domains(&sandbox, json!(["Example.com", ".media.example.org"])).await.status, StatusCode::OK);
    let refused = init(sandbox.media("sample.mp4")).await;
    tt_error(&refused, StatusCode::FORBIDDEN, "url_ownership_unverified");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("source_info.video_url"));
    for url in ["https://notexample.com/v.mp4", "https://example.com.evil.net/v.mp4", "https://example.org/v.mp4"] {
        tt_error(&init(url.to_owned()).await, StatusCode::FORBIDDEN, "url_ownership_unverified");
    }
    for url in ["https://example.com/v.mp4", "https://cdn.EXAMPLE.com/v.mp4", "https://a.media.example.org/v.mp4"] {
        assert_eq!(init(url.to_owned()).await.status, StatusCode::OK, "{url}");
    }
    let photo = photo_init(vec!["https://cdn.example.com/a.jpg".to_owned(), sandbox.media("sample.jpg")], "t", "d");
    let photo = sandbox.tiktok(TOKEN, "/v2/post/publish/content/init/", photo).await;
    tt_error(&photo, StatusCode::FORBIDDEN, "url_ownership_unverified");
    // What TikTok does not pull still goes: an upload.
    let video = include_bytes!("../assets/sample.mp4");
    let (publish_id, upload_url) = start_upload(&sandbox, video.len(), video.len(), 1).await;
    assert_eq!(put_exact(&sandbox, &upload_url, video, 0, video.len() - 1).await.status, StatusCode::CREATED);
    assert_eq!(upload_wait(&sandbox, &publish_id).await["status"], "PUBLISH_COMPLETE");

    for bad in [json!(["https://example.com"]), json!(["example.com:443"]), json!(["example.com/videos"]), json!([""])] {
        let reply = verify_domains(&sandbox, bad.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(reply.body["error"].as_str().unwrap().starts_with("domains[0]"), "{:?}", reply.body);
    }
    // `null` restores the default.
    assert_eq!(verify_domains(&sandbox, Value::Null).await.status, StatusCode::OK);
    assert_eq!(init(sandbox.media("sample.mp4")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_chunk_refused_by_a_fault_or_whose_answer_was_lost_is_sent_again() {
    let sandbox = start(SandboxOptions::instant()).await;
    let video = padded_mp4(10 * MB + 3);
    let (publish_id, upload_url) = start_upload(&sandbox, video.len(), 5 * MB, 2).await;
    sandbox.fault(json!({ "endpoint": "tiktok.upload", "status": 503 })).await;
    let faulted = put_exact(&sandbox, &upload_url, &video, 0, 5 * MB - 1).await;
    tt_error(&faulted, StatusCode::SERVICE_UNAVAILABLE, "internal_error");
    assert_eq!(status(&sandbox, &publish_id).await["uploaded_bytes"], 0, "a refused chunk is not taken");
    // Taken, but the answer is lost.
    sandbox.fault(json!({ "endpoint": "tiktok.upload", "status": 500, "after_accept": true })).await;
    tt_error(&put_exact(&sandbox, &upload_url, &video, 0, 5 * MB - 1).await, StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    assert_eq!(status(&sandbox, &publish_id).await["uploaded_bytes"], 5 * MB);
    assert_eq!(put_exact(&sandbox, &upload_url, &video, 0, 5 * MB - 1).await.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(put_exact(&sandbox, &upload_url, &video, 5 * MB, video.len() - 1).await.status, StatusCode::CREATED);
    assert_eq!(upload_wait(&sandbox, &publish_id).await["status"], "PUBLISH_COMPLETE");
    assert_eq!(sandbox.posts().await.len(), 1);
    assert_eq!(sandbox.calls("tiktok.upload").await, 4);
}
