//! `/_sandbox/...`: the control API used by tests and demos to look inside the
//! sandbox and to steer it (faults, token revocation, reset).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::faults::{Fault, FaultSpec};
use crate::state::Shared;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/posts", get(posts))
        .route("/calls", get(calls))
        .route("/faults", post(add_fault))
        .route("/tokens/revoke", post(revoke))
        .route("/reset", post(reset))
        .route("/consistency", post(consistency))
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message.into() }))).into_response()
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

/// Parses a JSON body; the error becomes a JSON 400 (not axum's plain-text
/// rejection, which a JSON client could not read).
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|error| format!("invalid JSON body: {error}"))
}

/// Every post published so far, oldest `received_at` first.
async fn posts(State(shared): State<Arc<Shared>>) -> Response {
    let mut state = shared.lock();
    state.settle_tiktok(shared.options.tiktok_complete_after);
    let mut posts = state.posts.clone();
    drop(state);
    posts.sort_by_key(|post| post.received_at);
    Json(json!({ "posts": posts })).into_response()
}

async fn calls(State(shared): State<Arc<Shared>>) -> Response {
    let calls = shared.lock().calls.clone();
    Json(json!({ "calls": calls })).into_response()
}

/// Queues a fault; faults for one endpoint are used in the order added.
async fn add_fault(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let spec: FaultSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(message) => return bad_request(message),
    };
    match Fault::from_spec(spec) {
        Ok((endpoint, fault)) => {
            tracing::info!(endpoint = endpoint.name(), ?fault, "fault queued");
            shared.lock().faults.entry(endpoint).or_default().push_back(fault);
            ok()
        }
        Err(message) => bad_request(message),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    access_token: Option<String>,
    refresh_token: Option<String>,
}

/// Revokes the given tokens (access or refresh, on either platform).
async fn revoke(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: RevokeBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let tokens: Vec<String> = [request.access_token, request.refresh_token].into_iter().flatten().filter(|t| !t.is_empty()).collect();
    if tokens.is_empty() {
        return bad_request("give access_token and/or refresh_token");
    }
    shared.lock().revoked.extend(tokens);
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyBody {
    /// How long a published Instagram container still reads `FINISHED`.
    instagram_status_lag_ms: u64,
}

/// Makes status reads lag behind what the platform did, as the real Graph API's may.
async fn consistency(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: ConsistencyBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    shared.lock().instagram_status_lag = std::time::Duration::from_millis(request.instagram_status_lag_ms);
    ok()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.lock().reset();
    tracing::info!("sandbox reset");
    ok()
}
