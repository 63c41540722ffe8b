//! The calendar page at `/` and what it asks the server (`GET /v1/features`). The page's
//! behaviour in a browser is the Playwright suite's (e2e/).

use crate::common::{Options, TestApp};

#[tokio::test(flavor = "multi_thread")]
async fn the_calendar_page_and_its_assets_are_served_without_a_token_and_script_only_from_the_server() {
    let app = TestApp::spawn_api_only().await;
    let bare = reqwest::Client::new();
    let page = bare.get(format!("{}/", app.api)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self';"), "{policy}");
    // The development sandbox is the one other origin the page may call (for account tokens).
    assert!(policy.contains(&format!("connect-src 'self' {};", app.sandbox)), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/assets/app.js">"#), "{html}");
    // The page holds no data of its own: everything comes from the API with the creator's token.
    assert!(!html.contains("Bearer ey"), "no token is baked into the page");

    for (path, content_type, marker) in [
        ("/assets/app.js", "text/javascript; charset=utf-8", "/v1/events"),
        ("/assets/app.css", "text/css; charset=utf-8", ".tile"),
        ("/assets/icon.svg", "image/svg+xml", "<svg"),
    ] {
        let asset = bare.get(format!("{}{path}", app.api)).send().await.unwrap();
        assert_eq!(asset.status(), 200, "{path}");
        assert_eq!(asset.headers()["content-type"], content_type, "{path}");
        assert_eq!(asset.headers()["x-content-type-options"], "nosniff", "{path}");
        assert!(asset.text().await.unwrap().contains(marker), "{path}");
    }
    let unknown = bare.get(format!("{}/assets/nope.js", app.api)).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn features_tell_the_page_whether_publish_now_is_on_and_need_a_token() {
    let on = TestApp::spawn_with(Options { worker: false, publish_now: true, ..Options::default() }).await;
    let (status, features) = on.get("/v1/features").await;
    assert_eq!(status, 200, "{features}");
    assert_eq!(features["publish_now"], true);
    assert_eq!(features["sandbox_url"], on.sandbox.as_str());
    assert_eq!(features["caption_limits"]["instagram"], 2200);
    assert_eq!(features["caption_limits"]["tiktok_photo"], 4000);

    let off = TestApp::spawn_with(Options { worker: false, publish_now: false, ..Options::default() }).await;
    let (_, features) = off.get("/v1/features").await;
    assert_eq!(features["publish_now"], false);

    let anonymous = reqwest::Client::new().get(format!("{}/v1/features", off.api)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}
