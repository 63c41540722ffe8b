//! Instagram Graph API (content publishing), served under `/instagram`.
//!
//! Paths are relative to the client's base URL `http://HOST:PORT/instagram/vNN.N`.
//! Parameters may come in the query string, a form body or a JSON body; the
//! access token as `access_token` parameter or `Authorization: Bearer`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{Map, Value, json};

use crate::faults::{Endpoint, with_faults};
use crate::ids;
use crate::media::{self, MediaSource};
use crate::state::{Container, ContainerStatus, PostRecord, Shared};
use crate::tokens::{Platform, TokenKind, TokenProblem};

const CAPTION_MAX_CHARS: usize = 2200;
/// Image containers accept JPEGs up to 8 MB (platforms.md).
const IMAGE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Window of the content publishing quota.
const QUOTA_DURATION_SECS: u64 = 24 * 60 * 60;
/// Ids look like the Graph API's 17-digit numeric ids; the ranges keep
/// containers and published media apart.
const CONTAINER_ID_BASE: u64 = 17_900_000_000_000_000;
const MEDIA_ID_BASE: u64 = 17_950_000_000_000_000;
/// Long-lived tokens last 60 days, from issue or from their last refresh.
pub(crate) const LONG_LIVED_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 24 * 60 * 60);

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        // Instagram Login's refresh endpoint is unversioned on the real host;
        // the versioned form is handled by `get_node`.
        .route("/refresh_access_token", get(refresh_unversioned))
        // `GET /me`, `GET /{container-id}` and `GET /{ig-user-id}` share one
        // pattern; `get_node` tells them apart.
        .route("/{version}/{node}", get(get_node))
        .route("/{version}/{node}/media", post(create_media))
        .route("/{version}/{node}/media_publish", post(publish_media))
        .route("/{version}/{node}/content_publishing_limit", get(publishing_limit))
        .fallback(unknown_path)
        .layer(middleware::from_fn(trace_header))
}

/// The `fbtrace_id` of the current request, also sent as `x-fb-trace-id`.
#[derive(Clone)]
struct Trace(String);

async fn trace_header(mut request: Request, next: Next) -> Response {
    let trace = ids::fbtrace_id();
    request.extensions_mut().insert(Trace(trace.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&trace) {
        response.headers_mut().insert("x-fb-trace-id", value);
    }
    response
}

/// A Graph API error, rendered as `{"error":{...}}`.
#[derive(Debug)]
struct IgError {
    status: StatusCode,
    code: i64,
    subcode: Option<i64>,
    message: String,
    kind: &'static str,
    transient: bool,
    user_title: Option<&'static str>,
}

impl IgError {
    fn new(code: i64, subcode: Option<i64>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            subcode,
            message: message.into(),
            kind: "OAuthException",
            transient: false,
            user_title: None,
        }
    }

    /// Error 100: a missing or invalid parameter.
    fn param(message: impl Into<String>) -> Self {
        Self::new(100, None, message)
    }

    fn titled(mut self, title: &'static str) -> Self {
        self.user_title = Some(title);
        self
    }

    /// What the Graph API answers for ids it does not know (or may not see).
    fn unknown_object(method: &str, id: &str) -> Self {
        let mut error = Self::new(
            100,
            Some(33),
            format!(
                "Unsupported {method} request. Object with ID '{id}' does not exist, cannot be \
                 loaded due to missing permissions, or does not support this operation. Please \
                 read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
        );
        error.kind = "GraphMethodException";
        error
    }

    fn body(&self, trace: &Trace) -> Value {
        let mut error = json!({
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "is_transient": self.transient,
            "fbtrace_id": trace.0,
        });
        if let Some(subcode) = self.subcode {
            error["error_subcode"] = json!(subcode);
        }
        if let Some(title) = self.user_title {
            error["error_user_title"] = json!(title);
            error["error_user_msg"] = json!(self.message);
        }
        json!({ "error": error })
    }
}

fn respond(trace: &Trace, result: Result<Value, IgError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(error) => (error.status, Json(error.body(trace))).into_response(),
    }
}

/// Default injected fault: the Graph API's generic transient error (code 1),
/// or its rate-limit error (code 4) for a 429.
fn fault_response(trace: &Trace, status: StatusCode, body: Option<Value>) -> Response {
    let body = body.unwrap_or_else(|| {
        let (code, message) = if status == StatusCode::TOO_MANY_REQUESTS {
            (4, "(#4) Application request limit reached")
        } else {
            (1, "An unknown error occurred")
        };
        let mut error = IgError::new(code, None, message);
        error.transient = true;
        error.body(trace)
    });
    (status, Json(body)).into_response()
}

/// Counts the call, applies faults, runs `operation` and renders its result.
async fn run(shared: &Shared, trace: &Trace, endpoint: Endpoint, operation: impl FnOnce() -> Result<Value, IgError>) -> Response {
    let on_fault = |status, body| fault_response(trace, status, body);
    with_faults(shared, endpoint, on_fault, async { respond(trace, operation()) }).await
}

/// Everything a Graph API call carries besides its path.
struct IgCall {
    params: HashMap<String, String>,
    bearer: Option<String>,
    host: Option<String>,
}

impl IgCall {
    /// Merges query-string and body parameters (the query wins on conflict).
    fn parse(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Self, IgError> {
        let mut params: HashMap<String, String> =
            query.map(|query| url::form_urlencoded::parse(query.as_bytes()).into_owned().collect()).unwrap_or_default();
        for (name, value) in body_params(headers, body)? {
            params.entry(name).or_insert(value);
        }
        let bearer = header_str(headers, header::AUTHORIZATION).and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            // The Graph API also accepts the legacy `OAuth` scheme.
            let known = scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth");
            known.then(|| token.trim().to_owned())
        });
        let host = header_str(headers, header::HOST).map(str::to_owned);
        Ok(Self { params, bearer, host })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str).filter(|value| !value.is_empty())
    }

    /// The requested `fields`, e.g. `status_code,status`.
    fn fields(&self) -> Vec<&str> {
        self.param("fields").map(|f| f.split(',').map(str::trim).collect()).unwrap_or_default()
    }

    /// Checks the access token: any non-empty, well-formed token is valid
    /// unless it was revoked through the control API or, for tokens the
    /// sandbox issued, has expired.
    fn authenticate(&self, shared: &Shared) -> Result<&str, IgError> {
        let token = self.params.get("access_token").or(self.bearer.as_ref()).map_or("", String::as_str);
        match shared.lock().check_token(Platform::Instagram, token, TokenKind::Access) {
            Ok(()) => Ok(token),
            Err(problem) => Err(token_error(problem)),
        }
    }
}

/// The Graph API's OAuthException (code 190) for an unusable token.
fn token_error(problem: TokenProblem) -> IgError {
    match problem {
        TokenProblem::Malformed | TokenProblem::WrongKind => {
            IgError::new(190, Some(467), "Invalid OAuth access token - Cannot parse access token")
        }
        TokenProblem::Revoked => IgError::new(
            190,
            Some(460),
            "Error validating access token: The session has been invalidated because the \
             user changed their password or Facebook has changed the session for security \
             reasons.",
        ),
        TokenProblem::Expired(at) => {
            let format = "%A, %d-%b-%y %H:%M:%S UTC";
            IgError::new(
                190,
                Some(463),
                format!(
                    "Error validating access token: Session has expired on {}. The current time is {}.",
                    at.format(format),
                    Utc::now().format(format)
                ),
            )
        }
    }
}

/// A token bound to a user may only act on that user's node: another
/// `{ig-user-id}` is as unknown to it as a made-up id, as on the Graph API.
fn check_owner(shared: &Shared, token: &str, method: &str, ig_user_id: &str) -> Result<(), IgError> {
    match shared.lock().bound_user(Platform::Instagram, token) {
        Some(bound) if bound != ig_user_id => Err(IgError::unknown_object(method, ig_user_id)),
        _ => Ok(()),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Parameters from a JSON or form body. Without a usable `Content-Type` the
/// body is sniffed: a JSON object, else form-encoded.
fn body_params(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, IgError> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or_default().to_ascii_lowercase();
    let looks_like_json = body.trim_ascii_start().starts_with(b"{");
    let is_json =
        content_type.starts_with("application/json") || (!content_type.starts_with("application/x-www-form-urlencoded") && looks_like_json);
    if !is_json {
        return Ok(url::form_urlencoded::parse(body).into_owned().collect());
    }
    let object: Map<String, Value> =
        serde_json::from_slice(body).map_err(|error| IgError::param(format!("(#100) Invalid JSON body: {error}")))?;
    let as_param = |value: Value| match value {
        Value::String(text) => text,
        other => other.to_string(),
    };
    Ok(object.into_iter().map(|(name, value)| (name, as_param(value))).collect())
}

/// `vNN.N`, as in `v25.0`.
fn valid_version(version: &str) -> bool {
    let Some((major, minor)) = version.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

fn check_version(version: &str) -> Result<(), IgError> {
    if valid_version(version) { Ok(()) } else { Err(IgError::new(2500, None, format!("Unknown path components: /{version}"))) }
}

async fn unknown_path(Extension(trace): Extension<Trace>, uri: Uri) -> Response {
    let error = IgError::new(2500, None, format!("Unknown path components: {}", uri.path()));
    respond(&trace, Err(error))
}

/// `GET /{version}/{node}`: `me`, `refresh_access_token`, a container or a
/// user. A node is a container when one has that id, when its id is in the
/// range the sandbox draws container and media ids from, or when container
/// fields (`status_code`, `status`) are asked for (an unknown container);
/// any other node is read as an `{ig-user-id}`.
async fn get_node(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, node)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let endpoint = match node.as_str() {
        "me" => Endpoint::InstagramMe,
        "refresh_access_token" => Endpoint::InstagramRefreshToken,
        _ if shared.lock().containers.contains_key(&node) || is_object_id(&node) || asks_container_fields(query.as_deref()) => {
            Endpoint::InstagramContainerStatus
        }
        _ => Endpoint::InstagramUser,
    };
    run(&shared, &trace, endpoint, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &[])?;
        let token = call.authenticate(&shared)?;
        match endpoint {
            Endpoint::InstagramMe => Ok(me(&shared, token, &call)),
            Endpoint::InstagramRefreshToken => refresh_token(&shared, token, &call),
            Endpoint::InstagramUser => user_node(&shared, token, &call, &node),
            _ => container_status(&shared, &call, &node),
        }
    })
    .await
}

/// Whether `node` is in the range of the sandbox's container and media ids
/// (so a forgotten container, after a reset, is still no user).
fn is_object_id(node: &str) -> bool {
    node.parse::<u64>().is_ok_and(|id| (CONTAINER_ID_BASE..CONTAINER_ID_BASE + 100_000_000_000_000).contains(&id))
}

fn asks_container_fields(query: Option<&str>) -> bool {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(name, value)| name == "fields" && value.split(',').any(|field| matches!(field.trim(), "status_code" | "status")))
}

async fn refresh_unversioned(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramRefreshToken, || {
        let call = IgCall::parse(query.as_deref(), &headers, &[])?;
        let token = call.authenticate(&shared)?;
        refresh_token(&shared, token, &call)
    })
    .await
}

/// The token's user: the one it is bound to, else the id derived from the
/// token (see [`ids::instagram_user_id`]). Reading `/me` binds nothing: it
/// checks no user id.
fn me(shared: &Shared, token: &str, call: &IgCall) -> Value {
    let id = shared.lock().token_user(Platform::Instagram, token);
    user_body(&id, call)
}

/// `GET /{ig-user-id}?fields=id,username`: the identity check. A token bound
/// to another user cannot see this one (`100/33`); an unbound one is bound
/// to it.
fn user_node(shared: &Shared, token: &str, call: &IgCall, ig_user_id: &str) -> Result<Value, IgError> {
    shared.lock().check_identity(Platform::Instagram, token, ig_user_id).map_err(|_| IgError::unknown_object("get", ig_user_id))?;
    Ok(user_body(ig_user_id, call))
}

/// An IG user node: `id`, and the fields asked for that the sandbox knows.
fn user_body(id: &str, call: &IgCall) -> Value {
    let mut body = json!({ "id": id });
    for field in call.fields() {
        if matches!(field, "username" | "name") {
            // The last six characters (ids from paths need not be ASCII).
            let suffix = id.char_indices().rev().nth(5).map_or(id, |(at, _)| &id[at..]);
            body[field] = json!(format!("sandbox_user_{suffix}"));
        }
    }
    body
}

/// `GET refresh_access_token?grant_type=ig_refresh_token&access_token=...`:
/// a new long-lived token for the same user (its binding carries over),
/// valid 60 days. Expired tokens were refused by `authenticate`, as Instagram
/// refuses to refresh them. The old token stays valid until it expires.
fn refresh_token(shared: &Shared, token: &str, call: &IgCall) -> Result<Value, IgError> {
    if call.param("grant_type") != Some("ig_refresh_token") {
        return Err(IgError::param("(#100) grant_type must be ig_refresh_token"));
    }
    let mut state = shared.lock();
    let user = state.bound_user(Platform::Instagram, token).map(str::to_owned);
    // Keep the subject so an unbound token's derived user survives too.
    let (fresh, _) = state.issue_token(Platform::Instagram, TokenKind::Access, ids::token_subject(token), user, LONG_LIVED_TOKEN_LIFETIME);
    Ok(json!({
        "access_token": fresh,
        "token_type": "bearer",
        "expires_in": LONG_LIVED_TOKEN_LIFETIME.as_secs(),
    }))
}

/// `GET /{container-id}?fields=status_code,status`. Like the Graph API, only
/// `id` comes back unless other fields are asked for.
fn container_status(shared: &Shared, call: &IgCall, container_id: &str) -> Result<Value, IgError> {
    let state = shared.lock();
    let container = state.containers.get(container_id).ok_or_else(|| IgError::unknown_object("get", container_id))?;
    let status = container.visible_status(Instant::now(), state.instagram_status_lag);
    let mut body = json!({ "id": container_id });
    for field in call.fields() {
        match field {
            "status_code" => body["status_code"] = json!(status.code()),
            "status" => body["status"] = json!(status.description()),
            _ => {}
        }
    }
    Ok(body)
}

async fn create_media(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, ig_user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramMedia, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &body)?;
        let token = call.authenticate(&shared)?;
        check_owner(&shared, token, "post", &ig_user_id)?;
        create_container(&shared, &call, &ig_user_id)
    })
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContainerKind {
    Image,
    Reel,
}

/// `POST /{ig-user-id}/media`: validates like the platform would, without
/// fetching anything except media hosted by this sandbox.
fn create_container(shared: &Shared, call: &IgCall, ig_user_id: &str) -> Result<Value, IgError> {
    let caption = call.param("caption").unwrap_or_default();
    if caption.chars().count() > CAPTION_MAX_CHARS {
        return Err(IgError::new(
            36004,
            Some(2207010),
            format!("The caption is too long: at most {CAPTION_MAX_CHARS} characters are allowed."),
        )
        .titled("Caption too long"));
    }
    let media_type = call.param("media_type").map(str::to_ascii_uppercase);
    let (kind, media_url) = match (media_type.as_deref(), call.param("image_url"), call.param("video_url")) {
        (None | Some("IMAGE"), Some(url), _) => (ContainerKind::Image, url),
        (Some("REELS"), _, Some(url)) => (ContainerKind::Reel, url),
        (Some("REELS"), _, None) => {
            return Err(IgError::param("(#100) The parameter video_url is required."));
        }
        (None, None, Some(_)) => {
            return Err(IgError::new(100, Some(2207023), "(#100) The media type VIDEO is not supported; use media_type=REELS."));
        }
        (None | Some("IMAGE"), None, _) => {
            return Err(IgError::param("(#100) The parameter image_url is required."));
        }
        (Some(other), _, _) => {
            return Err(IgError::new(100, Some(2207023), format!("(#100) The media type {other} is not supported by this sandbox.")));
        }
    };

    let mut state = shared.lock();
    check_media(media::resolve(&state, call.host.as_deref(), media_url), kind)?;
    let id = (CONTAINER_ID_BASE + shared.next_id()).to_string();
    let ready_after = match kind {
        ContainerKind::Image => shared.options.container_ready_after,
        ContainerKind::Reel => shared.options.video_ready_after,
    };
    state.containers.insert(
        id.clone(),
        Container {
            ig_user_id: ig_user_id.to_owned(),
            caption: caption.to_owned(),
            media_url: media_url.to_owned(),
            created: Instant::now(),
            ready_after,
            published_media_id: None,
            published_at: None,
        },
    );
    tracing::debug!(%ig_user_id, container = %id, "instagram container created");
    Ok(json!({ "id": id }))
}

/// Media checks the platform makes when it downloads the media. Only
/// sandbox-hosted media can be checked; other hosts are trusted.
fn check_media(source: MediaSource, kind: ContainerKind) -> Result<(), IgError> {
    let media = match source {
        MediaSource::Foreign => return Ok(()),
        MediaSource::Own(Some(media)) => media,
        MediaSource::Invalid | MediaSource::Own(None) => {
            return Err(IgError::new(9004, Some(2207052), "Media download has failed. The media URI doesn't meet our requirements.")
                .titled("Media download has failed"));
        }
    };
    match kind {
        ContainerKind::Image if media.mime() != "image/jpeg" => {
            Err(IgError::new(36001, Some(2207005), "The image format is not supported. Only JPEG images can be published.")
                .titled("Unsupported image format"))
        }
        ContainerKind::Image if media.len() > IMAGE_MAX_BYTES => {
            Err(IgError::new(36000, Some(2207004), "The image is too large to download: at most 8 MB is allowed.")
                .titled("Image too large"))
        }
        ContainerKind::Reel if !media.is_video() => {
            Err(IgError::new(352, Some(2207026), "The video format is not supported. Please check the spec for supported formats.")
                .titled("Unsupported video format"))
        }
        _ => Ok(()),
    }
}

async fn publish_media(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, ig_user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramMediaPublish, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &body)?;
        let token = call.authenticate(&shared)?;
        check_owner(&shared, token, "post", &ig_user_id)?;
        publish_container(&shared, &call, &ig_user_id)
    })
    .await
}

/// `POST /{ig-user-id}/media_publish?creation_id=...`. The check and the
/// publication happen under one lock, so concurrent retries publish once.
fn publish_container(shared: &Shared, call: &IgCall, ig_user_id: &str) -> Result<Value, IgError> {
    let container_id = call.param("creation_id").ok_or_else(|| IgError::param("(#100) The parameter creation_id is required."))?;
    let mut guard = shared.lock();
    let state = &mut *guard;
    let quota_usage = state.instagram_quota_usage(ig_user_id);
    let container = state
        .containers
        .get_mut(container_id)
        .filter(|container| container.ig_user_id == ig_user_id)
        .ok_or_else(|| IgError::unknown_object("post", container_id))?;
    match container.status(Instant::now()) {
        ContainerStatus::Finished => {}
        ContainerStatus::InProgress => {
            return Err(IgError::new(9007, Some(2207027), "Media ID is not available")
                .titled("The media is not ready for publishing, please wait for a moment"));
        }
        // The real error for a second publish is not documented. Code 100
        // without a subcode is a permanent "bad request", so a client never
        // loops on it; per platforms.md it must read the container's
        // status_code, see PUBLISHED, and count the post as done.
        ContainerStatus::Published => {
            return Err(IgError::param("(#100) This media container has already been published."));
        }
        ContainerStatus::Expired => {
            return Err(IgError::param("(#100) This media container has expired."));
        }
    }
    if quota_usage >= shared.options.instagram_quota_total as usize {
        return Err(IgError::new(
            9,
            Some(2207042),
            "You reached the maximum number of posts that is allowed to be published by Content \
             Publishing API.",
        )
        .titled("Publishing limit reached"));
    }
    let media_id = (MEDIA_ID_BASE + shared.next_id()).to_string();
    container.published_media_id = Some(media_id.clone());
    container.published_at = Some(Instant::now());
    state.posts.push(PostRecord {
        channel: "instagram",
        platform_user_id: ig_user_id.to_owned(),
        caption: container.caption.clone(),
        media: vec![container.media_url.clone()],
        platform_post_id: media_id.clone(),
        received_at: Utc::now(),
        options: None,
    });
    tracing::info!(%ig_user_id, container = %container_id, media = %media_id, "instagram post published");
    Ok(json!({ "id": media_id }))
}

/// `GET /{ig-user-id}/content_publishing_limit?fields=quota_usage,config`.
async fn publishing_limit(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, ig_user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramPublishingLimit, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &[])?;
        let token = call.authenticate(&shared)?;
        check_owner(&shared, token, "get", &ig_user_id)?;
        let usage = shared.lock().instagram_quota_usage(&ig_user_id);
        let mut entry = json!({ "quota_usage": usage });
        if call.fields().contains(&"config") {
            entry["config"] = json!({
                "quota_total": shared.options.instagram_quota_total,
                "quota_duration": QUOTA_DURATION_SECS,
            });
        }
        Ok(json!({ "data": [entry] }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(valid_version("v25.0"));
        assert!(valid_version("v3.10"));
        assert!(!valid_version("25.0"));
        assert!(!valid_version("v25"));
        assert!(!valid_version("v.0"));
    }

    #[test]
    fn json_and_form_bodies_become_params() {
        let mut headers = HeaderMap::new();
        let form = IgCall::parse(Some("caption=q"), &headers, b"caption=b&image_url=x%20y").unwrap();
        assert_eq!(form.param("caption"), Some("q"));
        assert_eq!(form.param("image_url"), Some("x y"));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let json = IgCall::parse(None, &headers, br#"{"creation_id": 17, "caption": "c"}"#).unwrap();
        assert_eq!(json.param("creation_id"), Some("17"));
        assert!(IgCall::parse(None, &headers, b"{oops").is_err());
    }
}
