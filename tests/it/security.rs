//! Issue 11: only the creator can touch their posts. Every `/v1` route wants a bearer token, and
//! with one it sees only its own creator's accounts and jobs; another creator's are `404`, like
//! ids that do not exist. The route lists come from the served OpenAPI document, so a route added
//! later is covered (or fails these tests until it is).

use std::{collections::BTreeSet, time::Duration};

use autopost_workflows::PublishPostWorkflow;
use chrono::Utc;
use serde_json::{Value, json};
use temporalio_client::{WorkflowDescribeOptions, WorkflowExecutionStatus};
use uuid::Uuid;

use crate::common::{Options, TestApp, link_body, tiktok_options};

const WAIT: Duration = Duration::from_secs(60);

/// Every documented `/v1` operation as `(METHOD, path template)`.
async fn v1_operations(app: &TestApp) -> BTreeSet<(String, String)> {
    let (_, document) = app.get("/openapi.json").await;
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            operations.insert((method.to_uppercase(), path.clone()));
        }
    }
    assert!(operations.len() >= 12, "{operations:?}");
    operations
}

fn request(client: &reqwest::Client, api: &str, method: &str, path: &str, body: Option<&Value>) -> reqwest::RequestBuilder {
    let builder = client.request(method.parse().unwrap(), format!("{api}{path}"));
    match body {
        Some(body) => builder.json(body),
        None => builder,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_v1_route_refuses_a_missing_expired_or_forged_token_with_401() {
    let app = TestApp::spawn_api_only().await;
    let anonymous = reqwest::Client::new();
    let expired = {
        let claims = json!({ "sub": "creator-1", "exp": Utc::now().timestamp() - 3600 });
        jsonwebtoken_free_hs256(&claims, crate::common::JWT_SECRET)
    };
    let forged = jsonwebtoken_free_hs256(
        &json!({ "sub": "creator-1", "exp": Utc::now().timestamp() + 3600 }),
        "not-the-secret-at-all-not-at-all-32",
    );
    let some_id = Uuid::new_v4().to_string();
    for (method, template) in v1_operations(&app).await {
        let path = template.replace("{id}", &some_id);
        for (what, token) in
            [("none", None), ("expired", Some(&expired)), ("forged", Some(&forged)), ("garbage", Some(&"x.y.z".to_owned()))]
        {
            let mut builder = request(&anonymous, &app.api, &method, &path, Some(&json!({})));
            if let Some(token) = token {
                builder = builder.bearer_auth(token);
            }
            let response = builder.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with {what} token");
            let challenge = response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            assert!(challenge.is_some_and(|c| c.starts_with("Bearer")), "{method} {path}: no Bearer challenge");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{body}");
            if let Some(token) = token {
                assert!(!body.to_string().contains(token.as_str()), "the answer repeats the token");
            }
        }
    }
    // The public routes stay public.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(anonymous.get(format!("{}{path}", app.api)).send().await.unwrap().status(), 200, "{path}");
    }
}

/// An HS256 JWT made by hand (header.claims.signature), so the test does not share the
/// product's signing code.
fn jsonwebtoken_free_hs256(claims: &Value, secret: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let signing_input = format!("{}.{}", b64(br#"{"alg":"HS256","typ":"JWT"}"#), b64(claims.to_string().as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_made_token_is_accepted_so_the_401s_above_are_about_the_token() {
    let app = TestApp::spawn_api_only().await;
    let token = jsonwebtoken_free_hs256(&json!({ "sub": "creator-1", "exp": Utc::now().timestamp() + 3600 }), crate::common::JWT_SECRET);
    let response = reqwest::Client::new().get(format!("{}/v1/publish-jobs", app.api)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_creators_never_see_or_touch_each_others_accounts_and_jobs() {
    let app = TestApp::spawn_with(Options { worker: false, publish_now: true, ..Options::default() }).await;
    let alice = app.client_for("alice");
    let bob = app.client_for("bob");
    let post = |client: &reqwest::Client, path: &str, body: Value, key: Option<&str>| {
        let mut builder = client.post(format!("{}{path}", app.api)).json(&body);
        if let Some(key) = key {
            builder = builder.header("Idempotency-Key", key);
        }
        async move {
            let response = builder.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, alice_account) = post(&alice, "/v1/accounts", link_body("instagram", "alice.token"), None).await;
    assert_eq!(status, 201, "{alice_account}");
    let (status, bob_account) = post(&bob, "/v1/accounts", link_body("tiktok", "bob.token"), None).await;
    assert_eq!(status, 201, "{bob_account}");
    let alice_account = alice_account["id"].as_str().unwrap().to_owned();
    let bob_account = bob_account["id"].as_str().unwrap().to_owned();
    let create = |account: &str| {
        let mut body = json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::days(1), "caption": "mine",
                "media": [{ "url": app.media_url(if account == alice_account { "sample.jpg" } else { "sample.mp4" }),
                            "kind": if account == alice_account { "image" } else { "video" } }] });
        if account == bob_account {
            body["options"] = tiktok_options("SELF_ONLY");
        }
        body
    };
    let (status, alice_job) = post(&alice, "/v1/publish-jobs", create(&alice_account), Some("launch")).await;
    assert_eq!(status, 201, "{alice_job}");
    let alice_job_id = alice_job["id"].as_str().unwrap().to_owned();
    let before: (String, i64) = sqlx::query_as("SELECT status, version FROM publish_jobs WHERE id = $1::uuid")
        .bind(&alice_job_id)
        .fetch_one(&app.db)
        .await
        .unwrap();

    // Bob, on every route, with Alice's ids.
    let tomorrow = Utc::now() + chrono::Duration::days(2);
    let expected: Vec<(&str, String, Option<Value>, u16)> = vec![
        ("GET", format!("/v1/accounts/{alice_account}"), None, 404),
        ("GET", format!("/v1/accounts/{alice_account}/capabilities"), None, 404),
        ("DELETE", format!("/v1/accounts/{alice_account}"), None, 404),
        ("POST", "/v1/accounts".into(), Some(link_body("instagram", "alice.token")), 409),
        ("POST", "/v1/publish-jobs".into(), Some(create(&alice_account)), 422),
        ("GET", format!("/v1/publish-jobs/{alice_job_id}"), None, 404),
        ("GET", format!("/v1/publish-jobs/{alice_job_id}/attempts"), None, 404),
        ("POST", format!("/v1/publish-jobs/{alice_job_id}/retry"), Some(json!({})), 404),
        ("POST", format!("/v1/publish-jobs/{alice_job_id}/reschedule"), Some(json!({ "publish_at": tomorrow })), 404),
        ("POST", format!("/v1/publish-jobs/{alice_job_id}/cancel"), Some(json!({})), 404),
        ("POST", format!("/v1/publish-jobs/{alice_job_id}/publish-now"), Some(json!({})), 404),
        ("PATCH", format!("/v1/publish-jobs/{alice_job_id}"), Some(json!({ "caption": "bob's now" })), 404),
    ];
    let mut covered = BTreeSet::new();
    for (method, path, body, status) in &expected {
        let response = request(&bob, &app.api, method, path, body.as_ref()).send().await.unwrap();
        let code = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(code, *status, "bob {method} {path}: {answer}");
        assert!(!answer.to_string().contains("alice"), "bob {method} {path} learns about alice: {answer}");
        covered.insert((method.to_string(), path.replace(&alice_account, "{id}").replace(&alice_job_id, "{id}")));
    }
    // Lists answer only Bob's own.
    let (_, jobs) = (0, bob.get(format!("{}/v1/publish-jobs", app.api)).send().await.unwrap().json::<Value>().await.unwrap());
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    covered.insert(("GET".into(), "/v1/publish-jobs".into()));
    let accounts: Value = bob.get(format!("{}/v1/accounts", app.api)).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = accounts["accounts"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![bob_account.as_str()]);
    covered.insert(("GET".into(), "/v1/accounts".into()));
    // A stream never ends, so it is not read here: tests/it/events.rs proves Bob's stream shows
    // none of Alice's events, also when he resumes with her event ids.
    covered.insert(("GET".into(), "/v1/events".into()));
    // The server's switches, the same for every creator: nothing of Alice's in Bob's answer.
    let features: Value = bob.get(format!("{}/v1/features", app.api)).send().await.unwrap().json().await.unwrap();
    assert!(features["publish_now"].is_boolean() && !features.to_string().contains("alice"), "{features}");
    covered.insert(("GET".into(), "/v1/features".into()));
    assert_eq!(covered, v1_operations(&app).await, "every /v1 operation is in the matrix");

    // Idempotency keys are per creator: Bob's "launch" is his own new job, not Alice's.
    let (status, bob_job) = post(&bob, "/v1/publish-jobs", create(&bob_account), Some("launch")).await;
    assert_eq!(status, 201, "{bob_job}");
    assert_ne!(bob_job["id"], alice_job["id"]);
    assert_eq!(bob_job["creator_id"], "bob");

    // Nothing of Alice's changed, and she still sees it all.
    let after: (String, i64) = sqlx::query_as("SELECT status, version FROM publish_jobs WHERE id = $1::uuid")
        .bind(&alice_job_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(before, after);
    let unlinked: Option<chrono::DateTime<Utc>> = sqlx::query_scalar("SELECT unlinked_at FROM social_accounts WHERE id = $1::uuid")
        .bind(&alice_account)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(unlinked.is_none());
    let mine: Value = alice.get(format!("{}/v1/publish-jobs", app.api)).send().await.unwrap().json().await.unwrap();
    let ids: Vec<&str> = mine["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![alice_job_id.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_another_platform_account_cannot_link_it() {
    let app = TestApp::spawn_api_only().await;
    // The sandbox binds a made-up token to the first account it is checked against.
    let (status, _) = app.post("/v1/accounts", &link_body("instagram", "carol.token")).await;
    assert_eq!(status, 201);
    let mut someone_else = link_body("instagram", "dave.token");
    someone_else["access_token"] = json!("carol.token");
    let (status, refused) = app.post("/v1/accounts", &someone_else).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("account_token_mismatch")), "{refused}");
    // TikTok: the token's open_id is not the account named.
    let mut tiktok = link_body("tiktok", "erin.token");
    tiktok["platform_user_id"] = json!(crate::common::platform_user_id("tiktok", "frank.token"));
    let (status, refused) = app.post("/v1/accounts", &tiktok).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("account_token_mismatch")), "{refused}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM social_accounts").fetch_one(&app.db).await.unwrap();
    assert_eq!(count, 1, "nothing was stored for the refused links");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_creator_over_the_write_quota_gets_429_with_retry_after_and_others_do_not() {
    let app = TestApp::spawn_with(Options { worker: false, creator_writes_per_minute: 3, ..Options::default() }).await;
    for _ in 0..3 {
        assert_eq!(app.post("/v1/accounts", &link_body("instagram", "quota.token")).await.0 / 100, 2);
    }
    let response = app.http.post(format!("{}/v1/accounts", app.api)).json(&link_body("instagram", "quota.token")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
    // Reads are not limited, and another creator has a quota of their own.
    assert_eq!(app.get("/v1/accounts").await.0, 200);
    let other = app.client_for("someone-else");
    let response = other.post(format!("{}/v1/accounts", app.api)).json(&link_body("tiktok", "other.token")).send().await.unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn unlinking_cancels_the_open_jobs_erases_the_tokens_and_keeps_the_history() {
    let app = TestApp::spawn().await;
    let account = app.link_account("instagram", "gone.token").await;
    let image = json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]);
    let published = app.schedule(&account, Utc::now() + chrono::Duration::seconds(2), "out already", image.clone()).await;
    let published = published["id"].as_str().unwrap().to_owned();
    app.wait_for_status(&published, "published", WAIT).await;
    let later = app.schedule(&account, Utc::now() + chrono::Duration::days(1), "later", image).await;
    let broken = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::seconds(2),
            "broken",
            json!([{ "url": app.media_url("gone.jpg"), "kind": "image" }]),
        )
        .await;
    let (later, broken) = (later["id"].as_str().unwrap().to_owned(), broken["id"].as_str().unwrap().to_owned());
    app.wait_for_status(&broken, "needs_attention", WAIT).await;

    let response = app.http.delete(format!("{}/v1/accounts/{account}", app.api)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let unlinked: Value = response.json().await.unwrap();
    let mut cancelled: Vec<&str> = unlinked["cancelled_jobs"].as_array().unwrap().iter().map(|j| j.as_str().unwrap()).collect();
    cancelled.sort();
    let mut expected = vec![later.as_str(), broken.as_str()];
    expected.sort();
    assert_eq!(cancelled, expected, "{unlinked}");
    assert_eq!(unlinked["account"]["health"]["status"], "unlinked");
    for job in [&later, &broken] {
        let (_, view) = app.get(&format!("/v1/publish-jobs/{job}")).await;
        assert_eq!(view["status"], "cancelled", "{view}");
        // The workflow ended too, not only the mirror.
        assert_eq!(workflow_status(&app, job).await, WorkflowExecutionStatus::Completed, "job {job}'s workflow");
    }
    let (_, kept) = app.get(&format!("/v1/publish-jobs/{published}")).await;
    assert_eq!(kept["status"], "published", "history is kept");
    let tokens: (Option<Vec<u8>>, Option<Vec<u8>>) =
        sqlx::query_as("SELECT access_token_ciphertext, refresh_token_ciphertext FROM social_accounts WHERE id = $1::uuid")
            .bind(&account)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(tokens, (None, None), "the tokens are erased");
    let (_, accounts) = app.get("/v1/accounts").await;
    assert_eq!(accounts["accounts"], json!([]));
    // Nothing more can be scheduled on it, and unlinking again is harmless.
    let (status, refused) = app
        .post(
            "/v1/publish-jobs",
            &json!({ "account_id": account, "publish_at": Utc::now() + chrono::Duration::days(1), "caption": "x",
            "media": [{ "url": app.media_url("sample.jpg"), "kind": "image" }] }),
        )
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (422, Some("unknown_account")));
    assert_eq!(app.http.delete(format!("{}/v1/accounts/{account}", app.api)).send().await.unwrap().status(), 200);
    // The same platform account can be linked again, as a new account.
    let relinked = app.link_account("instagram", "gone.token").await;
    assert_ne!(relinked, account);
    assert_eq!(app.sandbox_posts().await.len(), 1);
}

/// The job's workflow status once it stops running (or after 20 s).
async fn workflow_status(app: &TestApp, job_id: &str) -> WorkflowExecutionStatus {
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(format!("publish-job:{job_id}"));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = handle.describe(WorkflowDescribeOptions::default()).await.unwrap().status();
        if status != WorkflowExecutionStatus::Running || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_bearer_token_secret_or_platform_token_reaches_a_history_or_the_worker_log() {
    let app = TestApp::spawn().await;
    let platform_token = "hist.platform-token-secret";
    let mut body = link_body("tiktok", platform_token);
    body["refresh_token"] = json!("hist.refresh-token-secret");
    let (status, account) = app.post("/v1/accounts", &body).await;
    assert_eq!(status, 201, "{account}");
    let job = app
        .schedule(
            account["id"].as_str().unwrap(),
            Utc::now() + chrono::Duration::seconds(2),
            "secrets stay out",
            json!([{ "url": app.media_url("sample.mp4"), "kind": "video" }]),
        )
        .await;
    let job_id = job["id"].as_str().unwrap();
    app.wait_for_status(job_id, "published", WAIT).await;
    let temporal = autopost_app::connect_temporal(&app.config.temporal).await.unwrap();
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(format!("publish-job:{job_id}"));
    let history = handle.fetch_history(temporalio_client::WorkflowFetchHistoryOptions::default()).to_json().await.unwrap();
    let history = String::from_utf8_lossy(&history);
    let bearer = app.token_for(crate::common::CREATOR);
    let secrets = [
        ("the bearer token", bearer.as_str()),
        ("the JWT secret", crate::common::JWT_SECRET),
        ("the access token", platform_token),
        ("the refresh token", "hist.refresh-token-secret"),
        ("the token key", crate::common::TEST_TOKEN_KEYS.split_once(':').unwrap().1),
    ];
    let log = app.worker_log();
    assert!(log.contains("job transition"), "the worker logged its work");
    for (what, secret) in secrets {
        assert!(!history.contains(secret), "{what} is in the workflow history");
        assert!(!log.contains(secret), "{what} is in the worker log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_the_timeout_is_stopped_and_one_over_the_concurrency_limit_is_refused_at_once() {
    // No worker: a command waits for its workflow until the command timeout (30 s here), which
    // holds a request in flight for as long as the test needs.
    let options =
        Options { worker: false, command_timeout: "30s", api_request_timeout: "2s", max_concurrent_requests: 2, ..Options::default() };
    let app = TestApp::spawn_with(options).await;
    let account = app.link_account("instagram", "slow.token").await;
    let job = app
        .schedule(
            &account,
            Utc::now() + chrono::Duration::days(1),
            "held",
            json!([{ "url": app.media_url("sample.jpg"), "kind": "image" }]),
        )
        .await;
    let cancel = format!("{}/v1/publish-jobs/{}/cancel", app.api, job["id"].as_str().unwrap());

    let started = std::time::Instant::now();
    let response = app.http.post(&cancel).json(&json!({})).send().await.unwrap();
    let status = response.status();
    assert_eq!(status, 503, "{}", response.text().await.unwrap());
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped by the 2 s request timeout, not the 30 s command timeout");

    // Two requests held in flight fill the limit; a third is refused at once.
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(app.http.post(&cancel).json(&json!({})).send())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = app.http.get(format!("{}/v1/accounts", app.api)).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "overloaded");
    for request in held {
        let _ = request.await;
    }
    assert_eq!(app.get("/v1/accounts").await.0, 200, "served again once the held requests ended");
}
