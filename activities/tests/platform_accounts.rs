//! The adapters' account checks and token refresh against the in-process platform sandbox:
//! verifying that a token belongs to an account, expiry, and Instagram's long-lived refresh.

use autopost_activities::platforms::instagram::InstagramClient;
use autopost_activities::platforms::tiktok::TiktokClient;
use autopost_activities::platforms::{ErrorClass, PlatformError};
use autopost_sandbox::{Sandbox, SandboxOptions, tiktok_open_id};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

const USER: &str = "17841400000000001";
const OTHER_USER: &str = "17841400000000002";

struct Running {
    base: String,
    http: reqwest::Client,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Running {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let sandbox = Sandbox::with_options(SandboxOptions::instant());
        let task = tokio::spawn(async move { sandbox.serve(listener).await });
        Self { base, http: reqwest::Client::new(), task }
    }

    fn instagram(&self) -> InstagramClient {
        InstagramClient::new(self.http.clone(), format!("{}/instagram/v25.0", self.base))
    }

    fn tiktok(&self) -> TiktokClient {
        TiktokClient::new(self.http.clone(), format!("{}/tiktok", self.base))
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let response = self.http.post(format!("{}/_sandbox{path}", self.base)).json(&body).send().await.expect("control call");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.expect("control JSON")
    }

    /// An account's access token, as `POST /_sandbox/accounts` issues it.
    async fn account(&self, channel: &str, user: &str, expires_in: Option<i64>) -> SecretString {
        let mut body = json!({ "channel": channel, "platform_user_id": user });
        if let Some(seconds) = expires_in {
            body["expires_in"] = json!(seconds);
        }
        let account = self.control("/accounts", body).await;
        SecretString::from(account["access_token"].as_str().expect("access_token").to_owned())
    }

    async fn expire(&self, token: &SecretString) {
        self.control("/tokens/expire", json!({ "token": token.expose_secret() })).await;
    }

    async fn calls(&self, endpoint: &str) -> u64 {
        let calls: Value = self.http.get(format!("{}/_sandbox/calls", self.base)).send().await.expect("calls").json().await.expect("JSON");
        calls["calls"][endpoint].as_u64().unwrap_or(0)
    }
}

/// No platform error may carry the token it was about.
fn assert_no_token(error: &PlatformError, token: &SecretString) {
    let text = format!("{error} {error:?}");
    assert!(!text.contains(token.expose_secret()), "{text}");
}

#[tokio::test]
async fn an_instagram_token_verifies_for_its_own_user_and_not_for_another() {
    let sandbox = Running::start().await;
    let client = sandbox.instagram();
    let token = sandbox.account("instagram", USER, None).await;

    let user = client.user(&token, USER).await.expect("own user");
    assert_eq!(user.value.id, USER);
    assert!(user.value.username.is_some_and(|name| !name.is_empty()));
    assert!(user.request_id.is_some(), "the fbtrace_id is kept");

    let error = client.user(&token, OTHER_USER).await.expect_err("another user");
    assert_eq!(error.class, ErrorClass::Permanent);
    assert_eq!(error.code, "instagram.100.33");
    assert_no_token(&error, &token);
}

#[tokio::test]
async fn a_made_up_instagram_token_verifies_for_the_first_user_checked_only() {
    let sandbox = Running::start().await;
    let client = sandbox.instagram();
    let token = SecretString::from("demo-token");
    assert_eq!(client.user(&token, OTHER_USER).await.expect("first check binds").value.id, OTHER_USER);
    assert_eq!(client.user(&token, USER).await.expect_err("bound elsewhere").code, "instagram.100.33");
}

#[tokio::test]
async fn an_instagram_user_id_that_is_not_numeric_is_refused_without_a_call() {
    let sandbox = Running::start().await;
    let token = SecretString::from("demo-token");
    for id in ["ig-1", "../me", "17841400000000001/media", ""] {
        let error = sandbox.instagram().user(&token, id).await.expect_err(id);
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code, "instagram.invalid_user_id");
    }
    assert_eq!(sandbox.calls("instagram.user").await, 0);
    assert_eq!(sandbox.calls("instagram.me").await, 0);
}

#[tokio::test]
async fn an_expired_instagram_token_is_a_token_error() {
    let sandbox = Running::start().await;
    let token = sandbox.account("instagram", USER, Some(0)).await;
    let error = sandbox.instagram().user(&token, USER).await.expect_err("expired");
    assert_eq!(error.class, ErrorClass::Token);
    assert_eq!(error.code, "instagram.190.463");
    assert_no_token(&error, &token);
}

#[tokio::test]
async fn instagram_refresh_issues_a_new_long_lived_token_but_not_from_an_expired_one() {
    let sandbox = Running::start().await;
    let client = sandbox.instagram();
    let token = sandbox.account("instagram", USER, Some(3600)).await;

    let refreshed = client.refresh_long_lived(&token).await.expect("refresh").value;
    assert_ne!(refreshed.access_token.expose_secret(), token.expose_secret());
    assert_eq!(refreshed.expires_in, 60 * 24 * 60 * 60);
    assert_eq!(sandbox.calls("instagram.refresh_access_token").await, 1);
    // The new token is the same account's.
    assert_eq!(client.user(&refreshed.access_token, USER).await.expect("refreshed token").value.id, USER);

    sandbox.expire(&token).await;
    let error = client.refresh_long_lived(&token).await.expect_err("expired tokens cannot be refreshed");
    assert_eq!(error.class, ErrorClass::Token);
    assert_eq!(error.code, "instagram.190.463");
    assert_no_token(&error, &token);
}

#[tokio::test]
async fn a_tiktok_token_answers_its_own_open_id() {
    let sandbox = Running::start().await;
    let client = sandbox.tiktok();
    let alice = sandbox.account("tiktok", "alice-open-id", None).await;
    let bob = sandbox.account("tiktok", "bob-open-id", None).await;

    let user = client.user_info(&alice).await.expect("user info");
    assert_eq!(user.value.id, "alice-open-id");
    assert!(user.value.username.is_some());
    assert!(user.request_id.is_some(), "the log_id is kept");
    // Another account's token answers that account: a link to alice with it would not verify.
    assert_eq!(client.user_info(&bob).await.expect("user info").value.id, "bob-open-id");

    // A made-up token has no user to be checked against: it answers its derived open_id.
    let made_up = SecretString::from("carol.at-1");
    assert_eq!(client.user_info(&made_up).await.expect("user info").value.id, tiktok_open_id("carol"));
}

#[tokio::test]
async fn an_expired_tiktok_token_is_a_token_error() {
    let sandbox = Running::start().await;
    let token = sandbox.account("tiktok", "alice-open-id", None).await;
    sandbox.expire(&token).await;
    let error = sandbox.tiktok().user_info(&token).await.expect_err("expired");
    assert_eq!(error.class, ErrorClass::Token);
    assert_eq!(error.code, "tiktok.access_token_invalid");
    assert_no_token(&error, &token);
}
