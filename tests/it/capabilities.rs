//! `GET /v1/accounts/{id}/capabilities`: the platform's live view of an account (TikTok's
//! `creator_info`, Instagram's publishing quota), cached briefly per account and token, scoped to
//! its creator, with token and outage errors the UI can act on and no token ever in a body.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use reqwest::header::{CACHE_CONTROL, HeaderMap, RETRY_AFTER};

use crate::common::{TestApp, platform_user_id};

/// The account's capabilities as [`crate::common::CREATOR`]: status, headers, body.
async fn capabilities(app: &TestApp, account: &str) -> (u16, HeaderMap, Value) {
    capabilities_as(app, &app.http, account).await
}

async fn capabilities_as(app: &TestApp, client: &reqwest::Client, account: &str) -> (u16, HeaderMap, Value) {
    let response = client.get(format!("{}/v1/accounts/{account}/capabilities", app.api)).send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, headers, body)
}

fn header(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

/// Sets what the TikTok creator behind `token` offers (`creator_info`).
async fn set_creator(app: &TestApp, token: &str, settings: Value) {
    let mut body = settings;
    body["open_id"] = json!(platform_user_id("tiktok", token));
    let response = app.http.post(format!("{}/_sandbox/tiktok/creators", app.sandbox)).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());
}

fn no_token_in(body: &Value, tokens: &[&str]) {
    let text = body.to_string();
    for token in tokens {
        assert!(!text.contains(token), "a token in the body: {text}");
    }
}

fn fetched_at(body: &Value) -> DateTime<Utc> {
    body["fetched_at"].as_str().and_then(|at| DateTime::parse_from_rfc3339(at).ok()).expect("fetched_at in RFC 3339").into()
}

#[tokio::test(flavor = "multi_thread")]
async fn tiktok_capabilities_show_the_creators_settings_once_per_cache_window_and_token() {
    let app = TestApp::spawn_api_only().await;
    let first = "tt-caps.first-secret-token";
    let account = app.link_account("tiktok", first).await;
    set_creator(
        &app,
        first,
        json!({ "privacy_level_options": ["FOLLOWER_OF_CREATOR", "SELF_ONLY", "MUTUAL_FOLLOW_FRIENDS"],
                "comment_disabled": true, "duet_disabled": false, "stitch_disabled": true }),
    )
    .await;

    // A form opened in many tabs at once: one creator_info call.
    let before = Utc::now();
    let answers = futures::future::join_all((0..8).map(|_| capabilities(&app, &account))).await;
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 1, "concurrent requests share one platform call");
    let (status, headers, body) = answers[0].clone();
    assert_eq!(status, 200, "{body}");
    for (_, _, other) in &answers {
        assert_eq!(other, &body, "every concurrent request gets the one answer");
    }
    assert_eq!(body["account_id"], account);
    assert_eq!(body["channel"], "tiktok");
    assert!(fetched_at(&body) >= before - chrono::Duration::seconds(1) && fetched_at(&body) <= Utc::now(), "{body}");
    let username = body["capabilities"]["creator_username"].as_str().expect("the creator's username").to_owned();
    assert!(!username.is_empty());
    assert_eq!(
        body["capabilities"],
        json!({ "channel": "tiktok", "post_types": ["video", "photo"],
                "privacy_level_options": ["FOLLOWER_OF_CREATOR", "SELF_ONLY", "MUTUAL_FOLLOW_FRIENDS"],
                "comment_disabled": true, "duet_disabled": false, "stitch_disabled": true,
                "max_video_post_duration_sec": 600, "creator_username": username }),
        "TikTok's settings, privacy levels in TikTok's order"
    );
    let cache_control = header(&headers, CACHE_CONTROL);
    let max_age: u64 = cache_control.and_then(|v| v.strip_prefix("private, max-age=")).and_then(|s| s.parse().ok()).unwrap();
    assert!((1..=30).contains(&max_age), "{cache_control:?}");
    no_token_in(&body, &[first]);

    // The creator changes the settings in the app: within the window the kept answer is served.
    set_creator(&app, first, json!({ "privacy_level_options": ["PUBLIC_TO_EVERYONE"] })).await;
    let (status, _, cached) = capabilities(&app, &account).await;
    assert_eq!((status, &cached), (200, &body), "the answer is reused within the window");
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 1);

    // Reconnecting (a new token) is never answered from the old token's call.
    let second = "tt-caps.second-secret-token";
    assert_eq!(app.link_account_status("tiktok", second).await, 200);
    let (status, _, relinked) = capabilities(&app, &account).await;
    assert_eq!(status, 200, "{relinked}");
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 2, "the new token is asked");
    assert_eq!(relinked["capabilities"]["privacy_level_options"], json!(["PUBLIC_TO_EVERYONE"]));
    assert_eq!(relinked["capabilities"]["comment_disabled"], false);
    assert!(fetched_at(&relinked) > fetched_at(&body));
    no_token_in(&relinked, &[first, second]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_on_the_platform_is_seen_once_the_cache_window_has_passed() {
    let app = TestApp::spawn_api_only().await;
    let token = "tt-caps-window";
    let account = app.link_account("tiktok", token).await;
    set_creator(&app, token, json!({ "privacy_level_options": ["SELF_ONLY"], "duet_disabled": true })).await;
    let (status, _, first) = capabilities(&app, &account).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["capabilities"]["privacy_level_options"], json!(["SELF_ONLY"]));

    set_creator(&app, token, json!({ "privacy_level_options": ["PUBLIC_TO_EVERYONE", "SELF_ONLY"] })).await;
    tokio::time::sleep(Duration::from_secs(25)).await;
    let (_, _, still) = capabilities(&app, &account).await;
    assert_eq!(still, first, "25 s on, still the kept answer");
    tokio::time::sleep(autopost_api::capabilities::CACHE_TTL - Duration::from_secs(24)).await;
    let (status, _, fresh) = capabilities(&app, &account).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["capabilities"]["privacy_level_options"], json!(["PUBLIC_TO_EVERYONE", "SELF_ONLY"]));
    assert_eq!(fresh["capabilities"]["duet_disabled"], false);
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn instagram_capabilities_count_the_posts_published() {
    let app = TestApp::spawn().await;
    let busy = app.link_account("instagram", "ig-caps-busy.secret").await;
    let idle = app.link_account("instagram", "ig-caps-idle.secret").await;
    let job = app
        .schedule(
            &busy,
            Utc::now() + chrono::Duration::seconds(2),
            "counted",
            json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]),
        )
        .await;
    app.wait_for_status(job["id"].as_str().unwrap(), "published", Duration::from_secs(60)).await;

    // The worker reads the quota too, before publishing.
    let calls = app.sandbox_calls("instagram.content_publishing_limit").await;
    for (account, used) in [(&busy, 1), (&idle, 0)] {
        let (status, _, body) = capabilities(&app, account).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["channel"], "instagram");
        assert_eq!(
            body["capabilities"],
            json!({ "channel": "instagram", "post_types": ["feed", "reel", "story", "carousel"],
                    "content_publishing_limit": { "used": used, "allowed": 50, "window_seconds": 86400 } }),
        );
        no_token_in(&body, &["ig-caps-busy.secret", "ig-caps-idle.secret"]);
    }
    assert_eq!(app.sandbox_calls("instagram.content_publishing_limit").await, calls + 2, "one call per account");
    let (_, _, again) = capabilities(&app, &busy).await;
    assert_eq!(again["capabilities"]["content_publishing_limit"]["used"], 1);
    assert_eq!(app.sandbox_calls("instagram.content_publishing_limit").await, calls + 2, "kept within the window");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_accounts_creator_sees_its_capabilities() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("tiktok", "tt-caps-owner").await;
    let (status, _, body) = capabilities_as(&app, &app.client_for("creator-2"), &account).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{body}");
    let (status, _, body) = capabilities(&app, &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{body}");
    let (status, _, body) = capabilities(&app, "not-an-id").await;
    assert_eq!((status, &body["error"]["code"], &body["error"]["field"]), (400, &json!("invalid_id"), &json!("id")), "{body}");
    let anonymous = reqwest::get(format!("{}/v1/accounts/{account}/capabilities", app.api)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 0, "nobody but the owner made the platform be asked");

    // Unlinked, it is gone, even with an answer kept from before.
    let (status, _, _) = capabilities(&app, &account).await;
    assert_eq!(status, 200);
    assert_eq!(app.http.delete(format!("{}/v1/accounts/{account}", app.api)).send().await.unwrap().status(), 200);
    let (status, _, body) = capabilities(&app, &account).await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_or_expired_token_asks_the_creator_to_reconnect() {
    let app = TestApp::spawn_api_only().await;
    for (channel, token, endpoint) in [
        ("tiktok", "tt-caps-revoked.secret", "tiktok.creator_info"),
        ("instagram", "ig-caps-revoked.secret", "instagram.content_publishing_limit"),
    ] {
        let account = app.link_account(channel, token).await;
        app.sandbox_revoke(token).await;
        let (status, _, body) = capabilities(&app, &account).await;
        assert_eq!((status, &body["error"]["code"]), (422, &json!("account_token_invalid")), "{channel}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("reconnect"), "{body}");
        no_token_in(&body, &[token]);
        assert_eq!(app.sandbox_calls(endpoint).await, 1, "{channel}: the platform was asked");
        // Failures are not kept: the next request asks again.
        let (status, _, _) = capabilities(&app, &account).await;
        assert_eq!(status, 422);
        assert_eq!(app.sandbox_calls(endpoint).await, 2, "{channel}");
    }

    // A stored token past its expiry is refused without asking the platform.
    let account = app.link_account("tiktok", "tt-caps-expired.secret").await;
    sqlx::query("UPDATE social_accounts SET token_expires_at = now() - interval '1 hour' WHERE id = $1::uuid")
        .bind(&account)
        .execute(&app.db)
        .await
        .unwrap();
    let calls = app.sandbox_calls("tiktok.creator_info").await;
    let (status, _, body) = capabilities(&app, &account).await;
    assert_eq!((status, &body["error"]["code"]), (422, &json!("account_token_invalid")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("expired"), "{body}");
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, calls, "no platform call for an expired token");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_platform_is_503_with_its_retry_after_and_not_kept() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("tiktok", "tt-caps-down").await;
    app.sandbox_fault(json!({ "endpoint": "tiktok.creator_info", "times": 1, "status": 500 })).await;
    let (status, headers, body) = capabilities(&app, &account).await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("platform_unavailable")), "{body}");
    assert_eq!(header(&headers, RETRY_AFTER), Some("1"));

    // The daily posting cap: TikTok's wait (a day) is passed on, its message is not.
    let capped =
        json!({ "data": {}, "error": { "code": "spam_risk_too_many_posts", "message": "internal detail 7f3a", "log_id": "log-1" } });
    app.sandbox_fault(json!({ "endpoint": "tiktok.creator_info", "times": 1, "status": 403, "body": capped })).await;
    let (status, headers, body) = capabilities(&app, &account).await;
    assert_eq!((status, &body["error"]["code"]), (503, &json!("platform_unavailable")), "{body}");
    assert_eq!(header(&headers, RETRY_AFTER), Some("86400"));
    assert!(!body.to_string().contains("internal detail"), "{body}");

    // Failures are not kept: once the platform is back, it answers.
    let (status, _, body) = capabilities(&app, &account).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.sandbox_calls("tiktok.creator_info").await, 3);
}
