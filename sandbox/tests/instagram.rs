//! Instagram Graph API emulation, end to end over HTTP.

mod common;

use autopost_sandbox::{SandboxOptions, instagram_user_id};
use common::{ig_error, quick, start};
use reqwest::StatusCode;
use serde_json::json;

const TOKEN: &str = "igtoken1";
const USER: &str = "17841400000000001";

#[tokio::test]
async fn image_flow_create_poll_publish_listed_once() {
    let sandbox = start(quick()).await;
    let image = sandbox.media("sample.jpg");

    let created = sandbox.ig_container(TOKEN, USER, &image, "Hello #sandbox").await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);
    assert!(created.headers.contains_key("x-fb-trace-id"));
    let container = created.body["id"].as_str().expect("container id").to_owned();

    // Only `id` comes back unless fields are asked for, as on the Graph API.
    let bare = sandbox.get(&sandbox.ig(&format!("/{container}?access_token={TOKEN}"))).await;
    assert_eq!(bare.body, json!({ "id": container }));

    let status = sandbox.get(&sandbox.ig(&format!("/{container}?fields=status_code,status&access_token={TOKEN}"))).await;
    assert_eq!(status.body["status_code"], "IN_PROGRESS");
    assert!(status.body["status"].as_str().is_some_and(|s| s.starts_with("In Progress")));

    let early = sandbox.ig_publish(TOKEN, USER, &container).await;
    ig_error(&early, 9007, Some(2207027));
    assert_eq!(sandbox.posts().await.len(), 0);

    sandbox.ig_wait_finished(TOKEN, &container).await;
    let published = sandbox.ig_publish(TOKEN, USER, &container).await;
    assert_eq!(published.status, StatusCode::OK, "{:?}", published.body);
    let media_id = published.body["id"].as_str().expect("media id").to_owned();
    assert_ne!(media_id, container);
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "PUBLISHED");

    let again = sandbox.ig_publish(TOKEN, USER, &container).await;
    ig_error(&again, 100, None);

    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    let post = &posts[0];
    assert_eq!(post["channel"], "instagram");
    assert_eq!(post["platform_user_id"], USER);
    assert_eq!(post["caption"], "Hello #sandbox");
    assert_eq!(post["media"], json!([image]));
    assert_eq!(post["platform_post_id"], media_id.as_str());
    let received_at = post["received_at"].as_str().expect("received_at");
    assert!(chrono::DateTime::parse_from_rfc3339(received_at).is_ok());
    assert_eq!(received_at.len(), "2026-01-01T00:00:00.000Z".len(), "{received_at}");

    let limit = sandbox.get(&sandbox.ig(&format!("/{USER}/content_publishing_limit?fields=quota_usage,config&access_token={TOKEN}"))).await;
    assert_eq!(limit.body, json!({"data":[{"quota_usage":1,"config":{"quota_total":50,"quota_duration":86400}}]}));
}

#[tokio::test]
async fn concurrent_publishes_of_one_container_make_one_post() {
    let sandbox = start(SandboxOptions::instant()).await;
    let created = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", "once").await;
    let container = created.body["id"].as_str().expect("id").to_owned();
    // Five clients race to publish the same container.
    let url = sandbox.ig(&format!("/{USER}/media_publish?creation_id={container}&access_token={TOKEN}"));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let request = sandbox.client.post(&url);
            tokio::spawn(async move { request.send().await.expect("send").status() })
        })
        .collect();
    let mut successes = 0;
    for task in tasks {
        if task.await.expect("task") == StatusCode::OK {
            successes += 1;
        }
    }
    assert_eq!(successes, 1);
    assert_eq!(sandbox.posts().await.len(), 1);
    assert_eq!(sandbox.calls("instagram.media_publish").await, 5);
}

#[tokio::test]
async fn tokens_in_query_body_or_header_and_token_errors() {
    let sandbox = start(SandboxOptions::instant()).await;

    let me = sandbox.get(&sandbox.ig(&format!("/me?fields=id&access_token={TOKEN}"))).await;
    assert_eq!(me.body, json!({ "id": instagram_user_id(TOKEN) }));
    let by_header = sandbox.send(sandbox.client.get(sandbox.ig("/me?fields=id")).bearer_auth(TOKEN)).await;
    assert_eq!(by_header.body, me.body);
    // Other version segments are served too.
    let other_version = sandbox.get(&sandbox.url(&format!("/instagram/v19.0/me?access_token={TOKEN}"))).await;
    assert_eq!(other_version.status, StatusCode::OK);

    let json_body = json!({"image_url": "https://cdn.example.com/x.jpg", "caption": "json", "access_token": TOKEN});
    let created = sandbox.post_json(&sandbox.ig(&format!("/{USER}/media")), json_body).await;
    assert_eq!(created.status, StatusCode::OK, "{:?}", created.body);

    let empty = sandbox.get(&sandbox.ig("/me?fields=id&access_token=")).await;
    ig_error(&empty, 190, Some(467));
    let missing = sandbox.get(&sandbox.ig("/me?fields=id")).await;
    ig_error(&missing, 190, Some(467));

    sandbox.revoke(TOKEN).await;
    let revoked = sandbox.get(&sandbox.ig(&format!("/me?fields=id&access_token={TOKEN}"))).await;
    let error = ig_error(&revoked, 190, Some(460));
    assert_eq!(error["type"], "OAuthException");
    assert_eq!(error["is_transient"], false);
    let revoked_create = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/x.jpg", "c").await;
    ig_error(&revoked_create, 190, Some(460));
}

#[tokio::test]
async fn container_validation_follows_the_platform() {
    let sandbox = start(quick()).await;

    let too_long = "x".repeat(2201);
    let reply = sandbox.ig_container(TOKEN, USER, &sandbox.media("sample.jpg"), &too_long).await;
    ig_error(&reply, 36004, Some(2207010));

    let png = sandbox.ig_container(TOKEN, USER, &sandbox.media("sample.png"), "png").await;
    ig_error(&png, 36001, Some(2207005));

    let missing = sandbox.ig_container(TOKEN, USER, &sandbox.media("nope.jpg"), "gone").await;
    ig_error(&missing, 9004, Some(2207052));

    let no_media =
        sandbox.send(sandbox.client.post(sandbox.ig(&format!("/{USER}/media"))).form(&[("caption", "c"), ("access_token", TOKEN)])).await;
    ig_error(&no_media, 100, None);

    let reel_form = |url: String| {
        let form = [("media_type", "REELS".to_owned()), ("video_url", url), ("access_token", TOKEN.to_owned())];
        sandbox.client.post(sandbox.ig(&format!("/{USER}/media"))).form(&form)
    };
    let bad_reel = sandbox.send(reel_form(sandbox.media("sample.jpg"))).await;
    ig_error(&bad_reel, 352, Some(2207026));

    let reel = sandbox.send(reel_form(sandbox.media("sample.mp4"))).await;
    assert_eq!(reel.status, StatusCode::OK, "{:?}", reel.body);
    let container = reel.body["id"].as_str().expect("id").to_owned();
    // Video containers take longer than image ones (1.5 s vs 0.5 s here).
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "IN_PROGRESS");
    sandbox.ig_wait_finished(TOKEN, &container).await;
    let published = sandbox.ig_publish(TOKEN, USER, &container).await;
    assert_eq!(published.status, StatusCode::OK);

    // Another user's path cannot publish this user's container.
    let unknown = sandbox.ig_publish(TOKEN, "17841499999999999", &container).await;
    ig_error(&unknown, 100, Some(33));
    let unknown_get = sandbox.get(&sandbox.ig(&format!("/123?fields=status_code&access_token={TOKEN}"))).await;
    ig_error(&unknown_get, 100, Some(33));
    let bad_version = sandbox.get(&sandbox.url(&format!("/instagram/latest/me?access_token={TOKEN}"))).await;
    ig_error(&bad_version, 2500, None);
}

#[tokio::test]
async fn publishing_quota_is_enforced() {
    let options = SandboxOptions { instagram_quota_total: 1, ..SandboxOptions::instant() };
    let sandbox = start(options).await;
    let mut replies = Vec::new();
    for caption in ["one", "two"] {
        let created = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", caption).await;
        let container = created.body["id"].as_str().expect("id").to_owned();
        replies.push(sandbox.ig_publish(TOKEN, USER, &container).await);
    }
    assert_eq!(replies[0].status, StatusCode::OK);
    ig_error(&replies[1], 9, Some(2207042));
    assert_eq!(sandbox.posts().await.len(), 1);
}
