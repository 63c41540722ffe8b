//! `/_sandbox/...`: the control API used by tests and demos to look inside the
//! sandbox and to steer it (faults, accounts and their tokens, token
//! revocation and expiry, reset).

use std::sync::Arc;
use std::time::Duration;

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
use crate::state::{CreatorSettings, Shared};
use crate::tokens::Platform;
use crate::{instagram, tiktok};

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/posts", get(posts))
        .route("/redirect", get(crate::redirect::redirect))
        .route("/calls", get(calls))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/tokens/revoke", post(revoke))
        .route("/tokens/expire", post(expire))
        .route("/accounts", post(create_account))
        .route("/tiktok/creators", post(set_tiktok_creator))
        .route("/tiktok/verified-domains", post(set_tiktok_verified_domains))
        .route("/instagram/users", post(add_instagram_users))
        .route("/instagram/processing-errors", post(add_instagram_processing_error))
        .route("/instagram/quota", post(set_instagram_quota))
        .route("/reset", post(reset))
        .route("/consistency", post(consistency))
}

/// Any origin may steer the sandbox: it is a development tool, and the calendar page (on the
/// API's origin) asks it for account tokens.
pub(crate) fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{Method, header};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::CONTENT_TYPE])
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

/// Drops every queued fault: the platforms answer normally again (the posts and accounts stay).
async fn clear_faults(State(shared): State<Arc<Shared>>) -> Response {
    let cleared: usize = std::mem::take(&mut shared.lock().faults).into_values().map(|queue| queue.len()).sum();
    tracing::info!(cleared, "faults cleared");
    Json(json!({ "cleared": cleared })).into_response()
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
struct ExpireBody {
    token: String,
}

/// Expires a token the sandbox issued, now. Made-up tokens never expire.
async fn expire(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: ExpireBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if shared.lock().expire_token(&request.token) {
        ok()
    } else {
        let message = "token: not issued by the sandbox (made-up tokens never expire)";
        (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
    }
}

/// The longest `expires_in` an account may ask for: ten years.
const MAX_EXPIRES_IN_SECS: i64 = 10 * 365 * 24 * 60 * 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountBody {
    channel: String,
    platform_user_id: String,
    /// Lifetime of the access token in seconds; the platform's own by default.
    expires_in: Option<i64>,
}

/// Issues tokens bound to a platform user, as if they had just connected:
/// an access token (Instagram: long-lived, 60 days; TikTok: 24 h, unless
/// `expires_in` says otherwise) and, on TikTok, a refresh token (365 days).
/// Instagram Login has no refresh tokens, so `refresh_token` is `null` there.
async fn create_account(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: AccountBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let Some(platform) = Platform::from_channel(&request.channel) else {
        return bad_request("channel: must be instagram or tiktok");
    };
    let user_id = request.platform_user_id;
    if !platform.valid_user_id(&user_id) {
        return bad_request(match platform {
            Platform::Instagram => "platform_user_id: an Instagram user id is 1 to 32 digits",
            Platform::Tiktok => "platform_user_id: a TikTok open_id is 1 to 128 letters, digits, '.', '_' or '-'",
        });
    }
    let lifetime = match (request.expires_in, platform) {
        (Some(seconds), _) if (0..=MAX_EXPIRES_IN_SECS).contains(&seconds) => Duration::from_secs(seconds.unsigned_abs()),
        (Some(_), _) => return bad_request(format!("expires_in: must be 0 to {MAX_EXPIRES_IN_SECS} seconds")),
        (None, Platform::Instagram) => instagram::LONG_LIVED_TOKEN_LIFETIME,
        (None, Platform::Tiktok) => tiktok::ACCESS_TOKEN_LIFETIME,
    };
    let issued = shared.lock().issue_account(platform, &user_id, lifetime, tiktok::REFRESH_TOKEN_LIFETIME);
    tracing::info!(channel = request.channel, platform_user_id = %user_id, "sandbox account issued");
    Json(json!({
        "access_token": issued.access_token,
        "refresh_token": issued.refresh_token,
        "expires_in": lifetime.as_secs(),
        "token_expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "platform_user_id": user_id,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TiktokCreatorBody {
    open_id: String,
    privacy_level_options: Vec<String>,
    #[serde(default)]
    comment_disabled: bool,
    #[serde(default)]
    duet_disabled: bool,
    #[serde(default)]
    stitch_disabled: bool,
    #[serde(default = "tiktok_max_video_post_duration_sec")]
    max_video_post_duration_sec: u64,
}

fn tiktok_max_video_post_duration_sec() -> u64 {
    tiktok::MAX_VIDEO_POST_DURATION_SEC
}

/// Sets what a TikTok creator's `creator_info` reports (privacy levels offered, interactions
/// disabled), as the creator changing their account's settings in the app would.
async fn set_tiktok_creator(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: TiktokCreatorBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if let Some(unknown) = request.privacy_level_options.iter().find(|l| !tiktok::PRIVACY_LEVELS.contains(&l.as_str())) {
        return bad_request(format!("privacy_level_options: unknown level {unknown}"));
    }
    if request.max_video_post_duration_sec == 0 {
        return bad_request("max_video_post_duration_sec: must be at least 1");
    }
    let settings = CreatorSettings {
        privacy_level_options: request.privacy_level_options,
        comment_disabled: request.comment_disabled,
        duet_disabled: request.duet_disabled,
        stitch_disabled: request.stitch_disabled,
        max_video_post_duration_sec: request.max_video_post_duration_sec,
    };
    tracing::info!(open_id = %request.open_id, ?settings, "tiktok creator settings changed");
    shared.lock().tiktok_creators.insert(request.open_id, settings);
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstagramUsersBody {
    usernames: Vec<String>,
}

/// Makes Instagram accounts exist, so posts may tag them or invite them as collaborators.
async fn add_instagram_users(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: InstagramUsersBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if let Some(invalid) = request.usernames.iter().find(|name| !instagram::valid_username(name)) {
        return bad_request(format!("usernames: {invalid:?} is not an Instagram username (1 to 30 of a-z 0-9 . _)"));
    }
    tracing::info!(usernames = ?request.usernames, "instagram users added");
    shared.lock().instagram_usernames.extend(request.usernames.iter().map(|name| name.to_ascii_lowercase()));
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProcessingErrorBody {
    media_url_contains: String,
}

/// Makes every Instagram container created from now on whose media URL contains the string end
/// its processing in `ERROR`.
async fn add_instagram_processing_error(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: ProcessingErrorBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    if request.media_url_contains.is_empty() {
        return bad_request("media_url_contains: must not be empty (it would fail every container)");
    }
    tracing::info!(media_url_contains = %request.media_url_contains, "instagram processing error armed");
    shared.lock().instagram_processing_errors.push(request.media_url_contains);
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotaBody {
    ig_user_id: String,
    quota_total: u32,
}

/// Sets one account's publishing quota (posts per 24 h), so a test can use it up.
async fn set_instagram_quota(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: QuotaBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    shared.lock().instagram_quota_totals.insert(request.ig_user_id, request.quota_total);
    ok()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifiedDomainsBody {
    /// `null` (or absent): every domain counts as verified again, the default.
    domains: Option<Vec<String>>,
}

/// Sets the domains the app has verified with TikTok: `PULL_FROM_URL` from any other host
/// answers 403 `url_ownership_unverified`, as on TikTok.
async fn set_tiktok_verified_domains(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: VerifiedDomainsBody = match parse(&body) {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let domains = match request.domains.map(tiktok::verified_domains).transpose() {
        Ok(domains) => domains,
        Err(message) => return bad_request(message),
    };
    tracing::info!(?domains, "tiktok verified domains set");
    shared.lock().tiktok_verified_domains = domains;
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
