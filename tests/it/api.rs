//! The REST API's contract: clear 4xx errors naming the field, nothing written on bad input,
//! tokens never echoed, and the calendar listing.

use crate::common::{CREATOR, TestApp, link_body};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

fn error_of(body: &Value) -> (&str, Option<&str>) {
    (body["error"]["code"].as_str().expect("an error code"), body["error"]["field"].as_str())
}

async fn job_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM publish_jobs").fetch_one(&app.db).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn linking_an_account_never_echoes_its_tokens() {
    let app = TestApp::spawn_api_only().await;
    let mut body = link_body("tiktok", "creator9.secret-access-token");
    body["refresh_token"] = json!("creator9.secret-refresh-token");
    let (status, created) = app.post("/v1/accounts", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = app.get(&format!("/v1/accounts/{id}")).await;
    assert_eq!(status, 200);
    for account in [&created, &fetched] {
        let text = account.to_string();
        assert!(!text.contains("secret-access-token") && !text.contains("secret-refresh-token"), "{text}");
        assert_eq!(account["has_refresh_token"], true);
        assert_eq!(account["creator_id"], CREATOR, "the creator is the token's subject");
        assert_eq!(account["health"]["status"], "ok");
    }

    // Linking the same platform account again refreshes it in place, and without a refresh
    // token keeps the one stored before.
    body.as_object_mut().unwrap().remove("refresh_token");
    let (status, relinked) = app.post("/v1/accounts", &body).await;
    assert_eq!(status, 200, "{relinked}");
    assert_eq!(relinked["id"], created["id"]);
    assert_eq!(relinked["has_refresh_token"], true);
    // Another creator cannot take it over.
    let other = app.client_for("creator-10");
    let refused = other.post(format!("{}/v1/accounts", app.api)).json(&body).send().await.unwrap();
    assert_eq!(refused.status(), 409);
    // Nor can a body name another creator.
    body["creator_id"] = json!("creator-10");
    let (status, mismatch) = app.post("/v1/accounts", &body).await;
    assert_eq!((status, error_of(&mismatch).0), (403, "creator_mismatch"), "{mismatch}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_account_input_is_refused_with_the_field_named() {
    let app = TestApp::spawn_api_only().await;
    let valid = link_body("instagram", "t");
    let cases = [
        ("channel", json!("myspace"), 400),
        ("access_token", json!(""), 422),
        ("access_token", json!("t\u{0}"), 422),
        ("access_token", json!("t".repeat(5000)), 422),
        ("token_expires_at", json!("yesterday"), 400),
        ("token_expires_at", json!(Utc::now() - Duration::days(1)), 422),
        ("platform_user_id", json!("../../me/media"), 422),
        ("platform_user_id", json!("\u{0}"), 422),
    ];
    for (field, value, expected) in cases {
        let mut body = valid.clone();
        body[field] = value;
        let (status, error) = app.post("/v1/accounts", &body).await;
        assert_eq!(status, expected, "{field}: {error}");
        assert_eq!(error_of(&error).1, Some(field), "{error}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM social_accounts").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_job_input_is_refused_with_the_field_named_and_nothing_written() {
    let app = TestApp::spawn_api_only().await;
    let instagram = app.link_account("instagram", "token").await;
    let tiktok = app.link_account("tiktok", "token").await;
    let jpg = app.media_url("sample.jpg");
    let mp4 = app.media_url("sample.mp4");
    let valid = json!({
        "account_id": instagram, "publish_at": Utc::now() + Duration::hours(1),
        "caption": "hello", "media": [{ "url": jpg, "kind": "image" }],
    });
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("account_id", json!(uuid_v4())), 422, "unknown_account", "account_id"),
        (with("account_id", json!("not-a-uuid")), 400, "invalid_body", "account_id"),
        (with("publish_at", json!(Utc::now() - Duration::minutes(1))), 422, "publish_at_in_past", "publish_at"),
        (with("publish_at", json!("tomorrow at noon")), 400, "invalid_body", "publish_at"),
        (with("caption", json!("x".repeat(2201))), 422, "caption_too_long", "caption"),
        (with("media", json!([])), 422, "media_missing", "media"),
        (with("media", json!([{ "url": "http://cdn.example.com/a.jpg", "kind": "image" }])), 422, "media_url_not_https", "media[0].url"),
        (with("media", json!([{ "url": jpg, "kind": "gif" }])), 400, "invalid_body", "media[0].kind"),
        (with("media", json!([{ "url": jpg, "kind": "video" }])), 422, "media_kind_mismatch", "media[0].kind"),
        // Two to ten are a carousel; eleven are too many.
        (with("media", json!((0..11).map(|_| json!({ "url": jpg, "kind": "image" })).collect::<Vec<_>>())), 422, "too_many_media", "media"),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": [{ "url": mp4, "kind": "video" }, { "url": jpg, "kind": "image" }] }),
            422,
            "media_mixed",
            "media",
        ),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": (0..36).map(|_| json!({ "url": jpg, "kind": "image" })).collect::<Vec<_>>() }),
            422,
            "too_many_media",
            "media",
        ),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": [{ "url": mp4, "kind": "video" }] }),
            422,
            "privacy_level_required",
            "options.privacy_level",
        ),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": [{ "url": mp4, "kind": "video" }], "options": { "channel": "tiktok" } }),
            400,
            "invalid_body",
            "options",
        ),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": [{ "url": mp4, "kind": "video" }],
                 "options": { "channel": "tiktok", "privacy_level": "SELF_ONLY", "brand_content_toggle": true } }),
            422,
            "branded_content_private",
            "options.privacy_level",
        ),
        (
            json!({ "account_id": tiktok, "publish_at": Utc::now() + Duration::hours(1), "caption": "c",
                 "media": [{ "url": jpg, "kind": "image" }],
                 "options": { "channel": "tiktok", "privacy_level": "SELF_ONLY", "photo_cover_index": 1 } }),
            422,
            "photo_cover_index_out_of_range",
            "options.photo_cover_index",
        ),
        (with("options", json!({ "channel": "tiktok", "privacy_level": "SELF_ONLY" })), 422, "options_channel_mismatch", "options.channel"),
    ];
    for (body, status, code, field) in cases {
        let (actual, error) = app.post("/v1/publish-jobs", &body).await;
        assert_eq!((actual, error_of(&error)), (status, (code, Some(field))), "{body}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (status, error) = app.post("/v1/publish-jobs", &json!("{not json")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(job_count(&app).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_malformed_ids_are_told_apart() {
    let app = TestApp::spawn_api_only().await;
    let (status, body) = app.get(&format!("/v1/publish-jobs/{}", uuid_v4())).await;
    assert_eq!((status, error_of(&body).0), (404, "not_found"));
    let (status, body) = app.get("/v1/publish-jobs/42").await;
    assert_eq!((status, error_of(&body)), (400, ("invalid_id", Some("id"))));
    let (status, _) = app.get(&format!("/v1/publish-jobs/{}/attempts", uuid_v4())).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/v1/accounts/{}", uuid_v4())).await;
    assert_eq!(status, 404);
    let (status, body) = app.get("/v1/accounts/not-an-id").await;
    assert_eq!((status, error_of(&body)), (400, ("invalid_id", Some("id"))));
    // Commands read the id before anything else: a malformed one is never sent to Temporal.
    for command in ["retry", "cancel", "publish-now"] {
        let (status, body) = app.post(&format!("/v1/publish-jobs/42/{command}"), &json!({})).await;
        assert_eq!((status, error_of(&body)), (400, ("invalid_id", Some("id"))), "{command}: {body}");
        let (status, body) = app.post(&format!("/v1/publish-jobs/{}/{command}", uuid_v4()), &json!({})).await;
        assert_eq!(status, if command == "publish-now" { 403 } else { 404 }, "{command}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_calendar_lists_a_time_range_in_order_page_by_page() {
    let app = TestApp::spawn_api_only().await;
    let account = app.link_account("instagram", "token").await;
    let base = Utc::now() + Duration::days(2);
    let media = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    for hours in [5, 1, 3, 2, 4] {
        app.schedule(&account, base + Duration::hours(hours), &format!("post {hours}"), media.clone()).await;
    }
    let from = (base + Duration::hours(2)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (base + Duration::hours(5)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut captions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/publish-jobs?status=scheduled&channel=instagram&from={from}&to={to}&limit=2");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        captions.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["caption"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // `from` inclusive, `to` exclusive, ordered by publish time.
    assert_eq!(captions, ["post 2", "post 3", "post 4"]);

    let (status, body) = app.get("/v1/publish-jobs?status=done").await;
    assert_eq!((status, error_of(&body)), (400, ("invalid_query", Some("status"))));
    let (status, body) = app.get("/v1/publish-jobs?limit=0").await;
    assert_eq!((status, error_of(&body)), (400, ("invalid_query", Some("limit"))));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_and_readiness_report_their_dependencies() {
    let app = TestApp::spawn_api_only().await;
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")));
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["postgres"]["ok"], true);
    assert_eq!(body["checks"]["temporal"]["ok"], true);
}

fn uuid_v4() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_served() {
    let app = TestApp::spawn_api_only().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert!(doc["paths"]["/v1/publish-jobs"]["post"].is_object());
}
