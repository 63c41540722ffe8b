//! Sandbox accounts, token binding, expiry and refresh, end to end over HTTP.

mod common;

use autopost_sandbox::{SandboxOptions, instagram_user_id, tiktok_open_id};
use common::{Running, ig_error, start, tt_error};
use reqwest::StatusCode;
use serde_json::{Value, json};

const USER: &str = "17841400000000001";
const OTHER_USER: &str = "17841400000000002";

async fn account(sandbox: &Running, body: Value) -> Value {
    let reply = sandbox.post_json(&sandbox.url("/_sandbox/accounts"), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

fn token(account: &Value, field: &str) -> String {
    account[field].as_str().unwrap_or_else(|| panic!("{field} in {account}")).to_owned()
}

async fn ig_user(sandbox: &Running, token: &str, user: &str) -> common::Reply {
    sandbox.send(sandbox.client.get(sandbox.ig(&format!("/{user}?fields=id,username"))).bearer_auth(token)).await
}

async fn tt_user_info(sandbox: &Running, token: &str) -> common::Reply {
    sandbox.send(sandbox.client.get(sandbox.tt("/v2/user/info/?fields=open_id,union_id,display_name")).bearer_auth(token)).await
}

async fn expire(sandbox: &Running, token: &str) -> common::Reply {
    sandbox.post_json(&sandbox.url("/_sandbox/tokens/expire"), json!({ "token": token })).await
}

async fn ig_refresh(sandbox: &Running, token: &str) -> common::Reply {
    let url = sandbox.url(&format!("/instagram/refresh_access_token?grant_type=ig_refresh_token&access_token={token}"));
    sandbox.get(&url).await
}

async fn tt_refresh(sandbox: &Running, refresh_token: &str) -> common::Reply {
    let form = [("client_key", "key"), ("client_secret", "secret"), ("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
    sandbox.send(sandbox.client.post(sandbox.tt("/v2/oauth/token/")).form(&form)).await
}

#[tokio::test]
async fn an_instagram_account_token_sees_and_publishes_for_its_user_only() {
    let sandbox = start(SandboxOptions::instant()).await;
    let created = account(&sandbox, json!({ "channel": "instagram", "platform_user_id": USER })).await;
    assert_eq!(created["platform_user_id"], USER);
    assert_eq!(created["expires_in"], 60 * 24 * 60 * 60);
    assert_eq!(created["refresh_token"], Value::Null, "Instagram Login has no refresh tokens");
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(created["token_expires_at"].as_str().expect("token_expires_at")).expect("RFC 3339");
    assert!(expires_at > chrono::Utc::now() + chrono::Duration::days(59));
    let token = token(&created, "access_token");

    let own = ig_user(&sandbox, &token, USER).await;
    assert_eq!(own.status, StatusCode::OK, "{:?}", own.body);
    assert_eq!(own.body["id"], USER);
    assert!(own.body["username"].as_str().is_some_and(|name| !name.is_empty()));
    let other = ig_user(&sandbox, &token, OTHER_USER).await;
    let error = ig_error(&other, 100, Some(33));
    assert!(error["message"].as_str().is_some_and(|m| m.contains(&format!("Object with ID '{OTHER_USER}' does not exist"))), "{error}");
    assert_eq!(sandbox.calls("instagram.user").await, 2);

    let me = sandbox.get(&sandbox.ig(&format!("/me?fields=id&access_token={token}"))).await;
    assert_eq!(me.body, json!({ "id": USER }));

    // Publishing paths must name the token's user.
    ig_error(&sandbox.ig_container(&token, OTHER_USER, "https://cdn.example.com/a.jpg", "not mine").await, 100, Some(33));
    let limit = sandbox.get(&sandbox.ig(&format!("/{OTHER_USER}/content_publishing_limit?access_token={token}"))).await;
    ig_error(&limit, 100, Some(33));
    let created = sandbox.ig_container(&token, USER, "https://cdn.example.com/a.jpg", "mine").await;
    let container = created.body["id"].as_str().expect("container id").to_owned();
    ig_error(&sandbox.ig_publish(&token, OTHER_USER, &container).await, 100, Some(33));
    assert_eq!(sandbox.ig_publish(&token, USER, &container).await.status, StatusCode::OK);
    assert_eq!(sandbox.posts().await[0]["platform_user_id"], USER);
}

#[tokio::test]
async fn a_made_up_token_binds_to_the_first_user_it_is_checked_against() {
    let sandbox = start(SandboxOptions::instant()).await;
    let token = "any-non-empty-token";
    // Before any check, a made-up token may act under any user id (demos).
    let before = sandbox.ig_container(token, OTHER_USER, "https://cdn.example.com/a.jpg", "c").await;
    assert_eq!(before.status, StatusCode::OK, "{:?}", before.body);
    let me = sandbox.get(&sandbox.ig(&format!("/me?access_token={token}"))).await;
    assert_eq!(me.body["id"], instagram_user_id(token), "/me binds nothing");

    assert_eq!(ig_user(&sandbox, token, USER).await.status, StatusCode::OK);
    assert_eq!(ig_user(&sandbox, token, USER).await.status, StatusCode::OK);
    ig_error(&ig_user(&sandbox, token, OTHER_USER).await, 100, Some(33));
    let me = sandbox.get(&sandbox.ig(&format!("/me?access_token={token}"))).await;
    assert_eq!(me.body["id"], USER);
    ig_error(&sandbox.ig_container(token, OTHER_USER, "https://cdn.example.com/a.jpg", "c").await, 100, Some(33));

    // Bindings are per platform: on TikTok the same token answers its derived open_id.
    let info = tt_user_info(&sandbox, token).await;
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.body);
    assert_eq!(info.body["data"]["user"]["open_id"], tiktok_open_id(token));
    assert!(info.body["data"]["user"]["union_id"].is_string());
    assert!(info.body["data"]["user"]["display_name"].is_string());
    assert_eq!(info.body["error"]["code"], "ok");

    // A control reset forgets bindings.
    sandbox.post_json(&sandbox.url("/_sandbox/reset"), json!({})).await;
    assert_eq!(ig_user(&sandbox, token, OTHER_USER).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_tiktok_account_token_acts_for_its_bound_open_id() {
    let sandbox = start(SandboxOptions::instant()).await;
    let open_id = "-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT";
    let created = account(&sandbox, json!({ "channel": "tiktok", "platform_user_id": open_id })).await;
    assert_eq!(created["expires_in"], 24 * 60 * 60);
    let access = token(&created, "access_token");
    let refresh = token(&created, "refresh_token");

    let info = tt_user_info(&sandbox, &access).await;
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.body);
    assert_eq!(info.body["data"]["user"]["open_id"], open_id);
    assert_eq!(sandbox.calls("tiktok.user_info").await, 1);
    let bad_field = sandbox.send(sandbox.client.get(sandbox.tt("/v2/user/info/?fields=open_id,password")).bearer_auth(&access)).await;
    tt_error(&bad_field, StatusCode::BAD_REQUEST, "invalid_params");

    let init = json!({
        "post_info": { "title": "mine", "privacy_level": "SELF_ONLY" },
        "source_info": { "source": "PULL_FROM_URL", "video_url": sandbox.media("sample.mp4") },
    });
    let reply = sandbox.tiktok(&access, "/v2/post/publish/video/init/", init).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let publish_id = reply.body["data"]["publish_id"].as_str().expect("publish_id").to_owned();
    assert_eq!(sandbox.tt_wait(&access, &publish_id).await["status"], "PUBLISH_COMPLETE");
    assert_eq!(sandbox.posts().await[0]["platform_user_id"], open_id);

    // A refresh token is not an access token.
    tt_error(&tt_user_info(&sandbox, &refresh).await, StatusCode::UNAUTHORIZED, "access_token_invalid");
}

#[tokio::test]
async fn expired_tokens_are_refused_with_each_platforms_error() {
    let sandbox = start(SandboxOptions::instant()).await;
    let instagram = account(&sandbox, json!({ "channel": "instagram", "platform_user_id": USER, "expires_in": 0 })).await;
    let ig_token = token(&instagram, "access_token");
    let me = sandbox.get(&sandbox.ig(&format!("/me?fields=id&access_token={ig_token}"))).await;
    let error = ig_error(&me, 190, Some(463));
    assert_eq!(error["type"], "OAuthException");
    assert!(error["message"].as_str().is_some_and(|m| m.starts_with("Error validating access token: Session has expired")), "{error}");
    ig_error(&ig_user(&sandbox, &ig_token, USER).await, 190, Some(463));
    ig_error(&sandbox.ig_container(&ig_token, USER, "https://cdn.example.com/a.jpg", "c").await, 190, Some(463));

    let tiktok = account(&sandbox, json!({ "channel": "tiktok", "platform_user_id": "sbx-0000000000000001" })).await;
    let tt_token = token(&tiktok, "access_token");
    let path = "/v2/post/publish/creator_info/query/";
    assert_eq!(sandbox.tiktok(&tt_token, path, json!({})).await.status, StatusCode::OK);
    assert_eq!(expire(&sandbox, &tt_token).await.status, StatusCode::OK);
    tt_error(&sandbox.tiktok(&tt_token, path, json!({})).await, StatusCode::UNAUTHORIZED, "access_token_invalid");
    tt_error(&tt_user_info(&sandbox, &tt_token).await, StatusCode::UNAUTHORIZED, "access_token_invalid");

    // Made-up tokens never expire.
    let made_up = expire(&sandbox, "made-up").await;
    assert_eq!(made_up.status, StatusCode::NOT_FOUND);
    assert!(made_up.body["error"].as_str().is_some_and(|m| m.starts_with("token")));
    assert_eq!(sandbox.tiktok("made-up", path, json!({})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn instagram_refresh_issues_a_new_60_day_token_for_the_same_user_but_not_for_an_expired_one() {
    let sandbox = start(SandboxOptions::instant()).await;
    let created = account(&sandbox, json!({ "channel": "instagram", "platform_user_id": USER, "expires_in": 3600 })).await;
    let old = token(&created, "access_token");

    let refreshed = ig_refresh(&sandbox, &old).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    assert_eq!(refreshed.body["token_type"], "bearer");
    assert_eq!(refreshed.body["expires_in"], 60 * 24 * 60 * 60);
    let fresh = token(&refreshed.body, "access_token");
    assert_ne!(fresh, old);
    // The binding carries over.
    assert_eq!(ig_user(&sandbox, &fresh, USER).await.status, StatusCode::OK);
    ig_error(&ig_user(&sandbox, &fresh, OTHER_USER).await, 100, Some(33));

    assert_eq!(expire(&sandbox, &old).await.status, StatusCode::OK);
    ig_error(&ig_refresh(&sandbox, &old).await, 190, Some(463));
    // The versioned path is refused the same way.
    let versioned = sandbox.get(&sandbox.ig(&format!("/refresh_access_token?grant_type=ig_refresh_token&access_token={old}"))).await;
    ig_error(&versioned, 190, Some(463));
    // The token it was refreshed into lives on.
    assert_eq!(ig_user(&sandbox, &fresh, USER).await.status, StatusCode::OK);
}

#[tokio::test]
async fn tiktok_refresh_rotates_both_tokens_and_keeps_the_binding() {
    let sandbox = start(SandboxOptions::instant()).await;
    let open_id = "sbx-00000000000000aa";
    let created = account(&sandbox, json!({ "channel": "tiktok", "platform_user_id": open_id })).await;
    let refresh = token(&created, "refresh_token");

    let reply = tt_refresh(&sandbox, &refresh).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["open_id"], open_id);
    assert_eq!(reply.body["expires_in"], 86400);
    assert_eq!(reply.body["refresh_expires_in"], 31536000);
    let access = token(&reply.body, "access_token");
    let rotated = token(&reply.body, "refresh_token");
    assert_ne!(rotated, refresh);
    assert_eq!(tt_user_info(&sandbox, &access).await.body["data"]["user"]["open_id"], open_id);
    assert_eq!(tt_refresh(&sandbox, &rotated).await.body["open_id"], open_id);

    // An access token is no refresh token, and an expired refresh token is dead.
    assert_eq!(tt_refresh(&sandbox, &access).await.body["error"], "invalid_grant");
    assert_eq!(expire(&sandbox, &refresh).await.status, StatusCode::OK);
    let refused = tt_refresh(&sandbox, &refresh).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["error"], "invalid_grant");
    // Expiring a refresh token leaves the access tokens it issued alone.
    assert_eq!(tt_user_info(&sandbox, &access).await.status, StatusCode::OK);

    // Tokens refreshed from a made-up refresh token are bound to its derived open_id and expire.
    let from_made_up = tt_refresh(&sandbox, "dave.rt-0").await;
    assert_eq!(from_made_up.body["open_id"], tiktok_open_id("dave"));
    let dave = token(&from_made_up.body, "access_token");
    assert_eq!(expire(&sandbox, &dave).await.status, StatusCode::OK);
    tt_error(&tt_user_info(&sandbox, &dave).await, StatusCode::UNAUTHORIZED, "access_token_invalid");
}

#[tokio::test]
async fn accounts_refuse_bad_requests_naming_the_field() {
    let sandbox = start(SandboxOptions::instant()).await;
    for (body, field) in [
        (json!({ "channel": "myspace", "platform_user_id": USER }), "channel"),
        (json!({ "channel": "instagram", "platform_user_id": "ig-1" }), "platform_user_id"),
        (json!({ "channel": "tiktok", "platform_user_id": "a/b" }), "platform_user_id"),
        (json!({ "channel": "tiktok", "platform_user_id": "sbx-1", "expires_in": -1 }), "expires_in"),
    ] {
        let reply = sandbox.post_json(&sandbox.url("/_sandbox/accounts"), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        assert!(reply.body["error"].as_str().is_some_and(|m| m.starts_with(field)), "{:?}", reply.body);
    }
    let missing = sandbox.post_json(&sandbox.url("/_sandbox/accounts"), json!({ "channel": "tiktok" })).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(missing.body["error"].as_str().is_some_and(|m| m.contains("platform_user_id")), "{:?}", missing.body);
}
