//! Control API (faults, calls, revocation, reset) and the media host.

mod common;

use std::time::{Duration, Instant};

use autopost_sandbox::SandboxOptions;
use common::{ig_error, start, tt_error};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use serde_json::json;

const TOKEN: &str = "token1";
const USER: &str = "17841400000000001";

#[tokio::test]
async fn faults_fail_the_next_n_calls_with_platform_envelopes() {
    let sandbox = start(SandboxOptions::instant()).await;
    sandbox.fault(json!({ "endpoint": "instagram.me", "times": 2, "status": 500 })).await;
    let me = sandbox.ig(&format!("/me?fields=id&access_token={TOKEN}"));
    for _ in 0..2 {
        let reply = sandbox.get(&me).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        let error = &reply.body["error"];
        assert_eq!(error["code"], 1);
        assert_eq!(error["is_transient"], true);
        assert_eq!(error["type"], "OAuthException");
        assert_eq!(error["fbtrace_id"], reply.headers["x-fb-trace-id"].to_str().expect("trace"));
    }
    assert_eq!(sandbox.get(&me).await.status, StatusCode::OK);
    assert_eq!(sandbox.calls("instagram.me").await, 3);

    // A caller-supplied body is sent as is.
    let custom =
        json!({"error":{"message":"Fatal","type":"OAuthException","code":-2,"error_subcode":2207003,"is_transient":true,"fbtrace_id":"X"}});
    sandbox.fault(json!({ "endpoint": "instagram.media", "status": 400, "body": custom })).await;
    let reply = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", "c").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.body, custom);

    sandbox.fault(json!({ "endpoint": "tiktok.creator_info", "status": 503 })).await;
    sandbox.fault(json!({ "endpoint": "tiktok.creator_info", "status": 429 })).await;
    let path = "/v2/post/publish/creator_info/query/";
    tt_error(&sandbox.tiktok(TOKEN, path, json!({})).await, StatusCode::SERVICE_UNAVAILABLE, "internal_error");
    tt_error(&sandbox.tiktok(TOKEN, path, json!({})).await, StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded");
    assert_eq!(sandbox.tiktok(TOKEN, path, json!({})).await.status, StatusCode::OK);
}

#[tokio::test]
async fn after_accept_faults_take_effect_before_failing() {
    let sandbox = start(SandboxOptions::instant()).await;
    let created = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", "lost answer").await;
    let container = created.body["id"].as_str().expect("id").to_owned();

    sandbox.fault(json!({ "endpoint": "instagram.media_publish", "status": 500, "after_accept": true })).await;
    let lost = sandbox.ig_publish(TOKEN, USER, &container).await;
    assert_eq!(lost.status, StatusCode::INTERNAL_SERVER_ERROR);
    // The post went live although the call failed; the container says so.
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "PUBLISHED");
    ig_error(&sandbox.ig_publish(TOKEN, USER, &container).await, 100, None);
    assert_eq!(sandbox.posts().await.len(), 1);

    sandbox.fault(json!({ "endpoint": "tiktok.video_init", "status": 500, "after_accept": true })).await;
    let body = json!({
        "post_info": { "title": "tt", "privacy_level": "SELF_ONLY" },
        "source_info": { "source": "PULL_FROM_URL", "video_url": sandbox.media("sample.mp4") },
    });
    let reply = sandbox.tiktok(TOKEN, "/v2/post/publish/video/init/", body).await;
    tt_error(&reply, StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    let posts = sandbox.posts().await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[1]["channel"], "tiktok");
}

#[tokio::test]
async fn delay_faults_slow_the_answer_down() {
    let sandbox = start(SandboxOptions::instant()).await;
    sandbox.fault(json!({ "endpoint": "instagram.me", "delay_ms": 300 })).await;
    let started = Instant::now();
    let reply = sandbox.get(&sandbox.ig(&format!("/me?access_token={TOKEN}"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // A client that gives up on a slow after_accept call still published.
    let created = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", "slow").await;
    let container = created.body["id"].as_str().expect("id").to_owned();
    sandbox.fault(json!({ "endpoint": "instagram.media_publish", "delay_ms": 2000, "after_accept": true })).await;
    let url = sandbox.ig(&format!("/{USER}/media_publish?creation_id={container}&access_token={TOKEN}"));
    let timed_out = sandbox.client.post(url).timeout(Duration::from_millis(200)).send().await;
    assert!(timed_out.is_err_and(|error| error.is_timeout()));
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "PUBLISHED");
}

#[tokio::test]
async fn fault_specs_are_validated() {
    let sandbox = start(SandboxOptions::instant()).await;
    let url = sandbox.url("/_sandbox/faults");
    for spec in
        [json!({ "endpoint": "instagram.nope" }), json!({ "endpoint": "media", "times": 0 }), json!({ "endpoint": "media", "status": 99 })]
    {
        let reply = sandbox.post_json(&url, spec).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(reply.body["error"].is_string(), "{:?}", reply.body);
    }
    let garbage = sandbox.send(sandbox.client.post(&url).body("nope")).await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
    assert!(garbage.body["error"].is_string());
}

#[tokio::test]
async fn media_host_serves_builtins_and_uploads() {
    let sandbox = start(SandboxOptions::instant()).await;
    for (name, content_type, magic) in [
        ("sample.jpg", "image/jpeg", &b"\xFF\xD8\xFF"[..]),
        ("sample.png", "image/png", &b"\x89PNG"[..]),
        ("sample.mp4", "video/mp4", &b"ftyp"[..]),
    ] {
        let response = sandbox.client.get(sandbox.media(name)).send().await.expect("get");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], content_type);
        let length: usize = response.headers()[CONTENT_LENGTH].to_str().expect("len").parse().expect("number");
        let bytes = response.bytes().await.expect("bytes");
        assert_eq!(bytes.len(), length);
        assert!(bytes.windows(magic.len()).take(8).any(|window| window == magic), "{name}");
        assert!(bytes.len() < 50 * 1024);

        let head = sandbox.client.head(sandbox.media(name)).send().await.expect("head");
        assert_eq!(head.status(), StatusCode::OK);
        assert_eq!(head.headers()[CONTENT_LENGTH], length.to_string().as_str());
        assert!(head.bytes().await.expect("body").is_empty());
    }
    assert_eq!(sandbox.client.get(sandbox.media("nope.jpg")).send().await.expect("get").status(), StatusCode::NOT_FOUND);

    let put = sandbox.client.put(sandbox.media("clip.mov")).body(vec![0u8; 100]).send().await.expect("put");
    assert_eq!(put.status(), StatusCode::CREATED);
    let got = sandbox.client.get(sandbox.media("clip.mov")).send().await.expect("get");
    assert_eq!(got.headers()[CONTENT_TYPE], "video/quicktime");
    assert_eq!(got.bytes().await.expect("bytes").len(), 100);

    // The Content-Type header wins over the extension, and checks use it:
    // a PNG disguised as .jpg is still refused by Instagram.
    let png = sandbox.client.get(sandbox.media("sample.png")).send().await.expect("get").bytes().await.expect("png");
    sandbox.client.put(sandbox.media("disguised.jpg")).header(CONTENT_TYPE, "image/png").body(png).send().await.expect("put");
    let reply = sandbox.ig_container(TOKEN, USER, &sandbox.media("disguised.jpg"), "c").await;
    ig_error(&reply, 36001, Some(2207005));

    sandbox.fault(json!({ "endpoint": "media", "status": 503 })).await;
    let faulted = sandbox.client.get(sandbox.media("sample.jpg")).send().await.expect("get");
    assert_eq!(faulted.status(), StatusCode::SERVICE_UNAVAILABLE);
    // 3 GET + 3 HEAD of built-ins, 4 more GETs: PUTs and internal checks are not counted.
    assert_eq!(sandbox.calls("media").await, 10);
}

#[tokio::test]
async fn reset_forgets_everything_but_builtins() {
    let sandbox = start(SandboxOptions::instant()).await;
    let created = sandbox.ig_container(TOKEN, USER, "https://cdn.example.com/a.jpg", "c").await;
    let container = created.body["id"].as_str().expect("id").to_owned();
    sandbox.ig_publish(TOKEN, USER, &container).await;
    sandbox.client.put(sandbox.media("sample.jpg")).body("not a jpeg").header(CONTENT_TYPE, "text/plain").send().await.expect("put");
    sandbox.client.put(sandbox.media("extra.jpg")).body("x").send().await.expect("put");
    sandbox.fault(json!({ "endpoint": "instagram.me", "times": 5 })).await;
    sandbox.revoke(TOKEN).await;
    assert_eq!(sandbox.posts().await.len(), 1);

    let reply = sandbox.send(sandbox.client.post(sandbox.url("/_sandbox/reset"))).await;
    assert_eq!(reply.body, json!({ "ok": true }));
    assert!(sandbox.posts().await.is_empty());
    assert_eq!(sandbox.get(&sandbox.url("/_sandbox/calls")).await.body, json!({ "calls": {} }));
    // Faults and the revocation are gone.
    assert_eq!(sandbox.get(&sandbox.ig(&format!("/me?access_token={TOKEN}"))).await.status, StatusCode::OK);
    ig_error(&sandbox.get(&sandbox.ig(&format!("/{container}?access_token={TOKEN}"))).await, 100, Some(33));
    // The built-in JPEG is back; the upload is gone.
    let jpg = sandbox.client.get(sandbox.media("sample.jpg")).send().await.expect("get");
    assert_eq!(jpg.headers()[CONTENT_TYPE], "image/jpeg");
    let extra = sandbox.client.get(sandbox.media("extra.jpg")).send().await.expect("get");
    assert_eq!(extra.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_paths_answer_in_platform_shape() {
    let sandbox = start(SandboxOptions::instant()).await;
    let ig = sandbox.get(&sandbox.ig(&format!("/a/b/c/d?access_token={TOKEN}"))).await;
    ig_error(&ig, 2500, None);
    let tt = sandbox.tiktok(TOKEN, "/v2/post/publish/nothing/", json!({})).await;
    tt_error(&tt, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(sandbox.get(&sandbox.url("/_sandbox/calls")).await.body, json!({ "calls": {} }));
}

#[tokio::test]
async fn a_lagging_status_read_never_lets_a_container_publish_twice() {
    let sandbox = start(SandboxOptions::instant()).await;
    let reply = sandbox.post_json(&sandbox.url("/_sandbox/consistency"), json!({ "instagram_status_lag_ms": 600 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let container =
        sandbox.ig_container(TOKEN, USER, &sandbox.media("sample.jpg"), "lagging").await.body["id"].as_str().unwrap().to_owned();
    sandbox.ig_wait_finished(TOKEN, &container).await;
    assert_eq!(sandbox.ig_publish(TOKEN, USER, &container).await.status, StatusCode::OK);

    // Published, yet the status read still says FINISHED for a while, as Instagram's may.
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "FINISHED");
    // The platform itself knows better: a second publish is refused, and nothing posts twice.
    assert_eq!(sandbox.ig_publish(TOKEN, USER, &container).await.status, StatusCode::BAD_REQUEST);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(sandbox.ig_status(TOKEN, &container).await, "PUBLISHED");
    assert_eq!(sandbox.posts().await.len(), 1);
}

#[tokio::test]
async fn clearing_faults_lets_the_next_calls_through() {
    let sandbox = start(SandboxOptions::instant()).await;
    sandbox.fault(json!({ "endpoint": "instagram.me", "times": 100, "status": 500 })).await;
    let me = sandbox.ig(&format!("/me?fields=id&access_token={TOKEN}"));
    assert_eq!(sandbox.get(&me).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    let cleared = sandbox.send(sandbox.client.delete(sandbox.url("/_sandbox/faults"))).await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert_eq!(cleared.body["cleared"], 1, "one queued fault (99 calls left of it): {:?}", cleared.body);
    assert_eq!(sandbox.get(&me).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_control_api_answers_a_page_on_another_origin() {
    let sandbox = start(SandboxOptions::instant()).await;
    // The calendar page (the API's origin) asks for a token: the browser's preflight first.
    let preflight = sandbox
        .client
        .request(reqwest::Method::OPTIONS, sandbox.url("/_sandbox/accounts"))
        .header("origin", "http://127.0.0.1:8080")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    let issued = sandbox
        .client
        .post(sandbox.url("/_sandbox/accounts"))
        .header("origin", "http://127.0.0.1:8080")
        .json(&json!({ "channel": "instagram", "platform_user_id": USER }))
        .send()
        .await
        .expect("issue");
    assert_eq!(issued.headers()["access-control-allow-origin"], "*");
    // The platforms' own paths stay without CORS: only the control API is for pages.
    let me = sandbox
        .client
        .get(sandbox.ig(&format!("/me?fields=id&access_token={TOKEN}")))
        .header("origin", "http://127.0.0.1:8080")
        .send()
        .await
        .expect("me");
    assert!(me.headers().get("access-control-allow-origin").is_none());
}
