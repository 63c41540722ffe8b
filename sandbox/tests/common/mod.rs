//! Shared helpers: a sandbox on 127.0.0.1:0 and a thin JSON client.

#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

use autopost_sandbox::{Sandbox, SandboxOptions};
use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

pub struct Running {
    pub base: String,
    pub client: Client,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Short delays, yet long enough that a busy (debug, shared) machine still
/// sees the in-progress states right after creating something.
pub fn quick() -> SandboxOptions {
    SandboxOptions {
        container_ready_after: Duration::from_millis(500),
        video_ready_after: Duration::from_millis(1500),
        tiktok_complete_after: Duration::from_millis(500),
        ..SandboxOptions::default()
    }
}

pub async fn start(options: SandboxOptions) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let sandbox = Sandbox::with_options(options);
    let task = tokio::spawn(async move { sandbox.serve(listener).await });
    Running { base: format!("http://{address}"), client: Client::new(), task }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Running {
    pub fn ig(&self, path: &str) -> String {
        format!("{}/instagram/v25.0{path}", self.base)
    }

    pub fn tt(&self, path: &str) -> String {
        format!("{}/tiktok{path}", self.base)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A media URL as a client would pass it (own-hosted).
    pub fn media(&self, name: &str) -> String {
        self.url(&format!("/media/{name}"))
    }

    pub async fn send(&self, request: RequestBuilder) -> Reply {
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, headers, body }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(self.client.get(url)).await
    }

    pub async fn post_json(&self, url: &str, body: Value) -> Reply {
        self.send(self.client.post(url).json(&body)).await
    }

    /// A TikTok API call with a bearer token and JSON body.
    pub async fn tiktok(&self, token: &str, path: &str, body: Value) -> Reply {
        self.send(self.client.post(self.tt(path)).bearer_auth(token).json(&body)).await
    }

    pub async fn fault(&self, spec: Value) {
        let reply = self.post_json(&self.url("/_sandbox/faults"), spec).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }

    pub async fn revoke(&self, token: &str) {
        let reply = self.post_json(&self.url("/_sandbox/tokens/revoke"), json!({ "access_token": token })).await;
        assert_eq!(reply.status, StatusCode::OK);
    }

    pub async fn posts(&self) -> Vec<Value> {
        let reply = self.get(&self.url("/_sandbox/posts")).await;
        reply.body["posts"].as_array().cloned().expect("posts array")
    }

    pub async fn calls(&self, endpoint: &str) -> u64 {
        let reply = self.get(&self.url("/_sandbox/calls")).await;
        reply.body["calls"][endpoint].as_u64().unwrap_or(0)
    }

    /// Creates an Instagram image container (form body, like most clients).
    pub async fn ig_container(&self, token: &str, user: &str, image_url: &str, caption: &str) -> Reply {
        let form = [("image_url", image_url), ("caption", caption), ("access_token", token)];
        self.send(self.client.post(self.ig(&format!("/{user}/media"))).form(&form)).await
    }

    pub async fn ig_status(&self, token: &str, container: &str) -> String {
        let url = self.ig(&format!("/{container}?fields=status_code,status&access_token={token}"));
        let reply = self.get(&url).await;
        reply.body["status_code"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn ig_wait_finished(&self, token: &str, container: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.ig_status(token, container).await != "FINISHED" {
            assert!(Instant::now() < deadline, "container never finished");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn ig_publish(&self, token: &str, user: &str, container: &str) -> Reply {
        let url = self.ig(&format!("/{user}/media_publish?creation_id={container}&access_token={token}"));
        self.send(self.client.post(url)).await
    }

    /// Polls a TikTok publish until it leaves PROCESSING_DOWNLOAD.
    pub async fn tt_wait(&self, token: &str, publish_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let reply = self.tiktok(token, "/v2/post/publish/status/fetch/", json!({ "publish_id": publish_id })).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            if reply.body["data"]["status"] != "PROCESSING_DOWNLOAD" {
                return reply.body["data"].clone();
            }
            assert!(Instant::now() < deadline, "publish never finished");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Asserts a Graph API error envelope and returns its `error` object.
pub fn ig_error(reply: &Reply, code: i64, subcode: Option<i64>) -> Value {
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
    let error = reply.body["error"].clone();
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(error["error_subcode"].as_i64(), subcode, "{error}");
    assert_eq!(error["type"].as_str().map(|t| t.ends_with("Exception")), Some(true));
    assert!(error["is_transient"].is_boolean());
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    let trace = reply.headers["x-fb-trace-id"].to_str().expect("trace header");
    assert_eq!(error["fbtrace_id"], trace);
    error
}

/// Asserts TikTok's envelope with a non-ok code; returns the log_id.
pub fn tt_error(reply: &Reply, status: StatusCode, code: &str) -> String {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{:?}", reply.body);
    assert_eq!(reply.body["data"], json!({}));
    let log_id = reply.body["error"]["log_id"].as_str().expect("log_id").to_owned();
    assert_eq!(reply.headers["x-tt-logid"].to_str().ok(), Some(log_id.as_str()));
    log_id
}
