//! TikTok Content Posting API (Direct Post) and token refresh, served under
//! `/tiktok`, so the client's base URL is `http://HOST:PORT/tiktok`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Extension, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::faults::{Endpoint, with_faults};
use crate::ids;
use crate::media::{self, MediaSource};
use crate::state::{MediaObject, Publish, PublishStatus, Shared};

/// The privacy levels every sandbox creator offers.
const PRIVACY_LEVELS: [&str; 4] = ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"];
/// Limits in UTF-16 code units ("runes" in TikTok's docs).
const VIDEO_TITLE_MAX: usize = 2200;
const PHOTO_TITLE_MAX: usize = 90;
const PHOTO_DESCRIPTION_MAX: usize = 4000;
const PHOTO_IMAGES_MAX: usize = 35;
const PHOTO_MAX_BYTES: u64 = 20 * 1024 * 1024;
const ACCESS_TOKEN_LIFETIME_SECS: u64 = 24 * 60 * 60;
const REFRESH_TOKEN_LIFETIME_SECS: u64 = 365 * 24 * 60 * 60;
/// Number ranges for ids, shaped like TikTok's 19-digit ones.
const PUBLISH_ID_BASE: u64 = 7_300_000_000_000_000_000;
const POST_ID_BASE: u64 = 7_400_000_000_000_000_000;

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/post/publish/creator_info/query/", post(creator_info))
        .route("/v2/post/publish/video/init/", post(video_init))
        .route("/v2/post/publish/content/init/", post(content_init))
        .route("/v2/post/publish/status/fetch/", post(status_fetch))
        .route("/v2/oauth/token/", post(oauth_token))
        .fallback(unknown_path)
        .layer(middleware::from_fn(log_id_header))
}

/// The `log_id` of the current request, also sent as `x-tt-logid`.
#[derive(Clone)]
struct LogId(String);

async fn log_id_header(mut request: Request, next: Next) -> Response {
    let log_id = ids::tiktok_log_id();
    request.extensions_mut().insert(LogId(log_id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&log_id) {
        response.headers_mut().insert("x-tt-logid", value);
    }
    response
}

/// A non-ok `error.code` with its HTTP status.
#[derive(Debug)]
struct TtError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl TtError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_param", message)
    }

    fn token_invalid() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "access_token_invalid", "The access token is invalid or not found in the request.")
    }
}

/// Renders the `{"data":..,"error":{"code","message","log_id"}}` envelope.
fn respond(log_id: &LogId, result: Result<Value, TtError>) -> Response {
    let (status, data, code, message) = match result {
        Ok(data) => (StatusCode::OK, data, "ok", String::new()),
        Err(error) => (error.status, json!({}), error.code, error.message),
    };
    let body = json!({
        "data": data,
        "error": { "code": code, "message": message, "log_id": log_id.0 },
    });
    (status, Json(body)).into_response()
}

/// Default injected fault: the envelope TikTok uses for that status.
fn fault_response(log_id: &LogId, status: StatusCode, body: Option<Value>) -> Response {
    if let Some(body) = body {
        return (status, Json(body)).into_response();
    }
    let error = match status {
        StatusCode::TOO_MANY_REQUESTS => TtError::new(status, "rate_limit_exceeded", "API rate limit exceeded, please retry later."),
        StatusCode::UNAUTHORIZED => TtError::token_invalid(),
        _ => TtError::new(status, "internal_error", "Something went wrong. Please try again later."),
    };
    let mut response = respond(log_id, Err(error));
    *response.status_mut() = status;
    response
}

/// Counts the call, applies faults, runs `operation` and renders its result.
async fn run(shared: &Shared, log_id: &LogId, endpoint: Endpoint, operation: impl FnOnce() -> Result<Value, TtError>) -> Response {
    let on_fault = |status, body| fault_response(log_id, status, body);
    with_faults(shared, endpoint, on_fault, async { respond(log_id, operation()) }).await
}

/// The bearer token, if present, well-formed and not revoked.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, TtError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(TtError::token_invalid)?;
    if shared.lock().is_revoked(token) {
        return Err(TtError::token_invalid());
    }
    Ok(token.to_owned())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, TtError> {
    serde_json::from_slice(body).map_err(|error| TtError::invalid_param(format!("Invalid request body: {error}")))
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

fn host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|value| value.to_str().ok())
}

async fn unknown_path(Extension(log_id): Extension<LogId>) -> Response {
    let error = TtError::new(StatusCode::NOT_FOUND, "not_found", "The requested path does not exist.");
    respond(&log_id, Err(error))
}

async fn creator_info(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap) -> Response {
    run(&shared, &log_id, Endpoint::TiktokCreatorInfo, || {
        let token = authenticate(&shared, &headers)?;
        let open_id = ids::tiktok_open_id(&token);
        let suffix = &open_id[open_id.len() - 8..];
        let host = host(&headers).unwrap_or("localhost");
        Ok(json!({
            "creator_avatar_url": format!("http://{host}/media/sample.jpg"),
            "creator_username": format!("sandbox_creator_{suffix}"),
            "creator_nickname": "Sandbox Creator",
            "privacy_level_options": PRIVACY_LEVELS,
            "comment_disabled": false,
            "duet_disabled": false,
            "stitch_disabled": false,
            "max_video_post_duration_sec": 600,
        }))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct PostInfo {
    title: Option<String>,
    description: Option<String>,
    privacy_level: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SourceInfo {
    source: Option<String>,
    video_url: Option<String>,
    photo_images: Option<Vec<String>>,
    photo_cover_index: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct InitBody {
    #[serde(default)]
    post_info: PostInfo,
    source_info: Option<SourceInfo>,
    post_mode: Option<String>,
    media_type: Option<String>,
}

impl InitBody {
    /// The source, which the sandbox only supports as `PULL_FROM_URL`.
    fn pull_source(&self) -> Result<&SourceInfo, TtError> {
        let source = self.source_info.as_ref().ok_or_else(|| TtError::invalid_param("source_info is required"))?;
        match source.source.as_deref() {
            Some("PULL_FROM_URL") => Ok(source),
            Some("FILE_UPLOAD") => Err(TtError::invalid_param("source FILE_UPLOAD is not supported by the sandbox; use PULL_FROM_URL")),
            _ => Err(TtError::invalid_param("source_info.source must be PULL_FROM_URL or FILE_UPLOAD")),
        }
    }
}

impl PostInfo {
    fn check_privacy(&self) -> Result<(), TtError> {
        let level = self.privacy_level.as_deref().ok_or_else(|| TtError::invalid_param("post_info.privacy_level is required"))?;
        if PRIVACY_LEVELS.contains(&level) {
            Ok(())
        } else {
            Err(TtError::new(
                StatusCode::FORBIDDEN,
                "privacy_level_option_mismatch",
                "privacy_level is not one of the creator's privacy_level_options.",
            ))
        }
    }
}

async fn video_init(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap, body: Bytes) -> Response {
    run(&shared, &log_id, Endpoint::TiktokVideoInit, || {
        let token = authenticate(&shared, &headers)?;
        let init: InitBody = parse_json(&body)?;
        let source = init.pull_source()?;
        let video_url = source
            .video_url
            .as_deref()
            .filter(|url| !url.is_empty())
            .ok_or_else(|| TtError::invalid_param("source_info.video_url is required"))?;
        let title = init.post_info.title.clone().unwrap_or_default();
        if utf16_len(&title) > VIDEO_TITLE_MAX {
            return Err(TtError::invalid_param(format!("post_info.title exceeds {VIDEO_TITLE_MAX} runes")));
        }
        init.post_info.check_privacy()?;

        let mut state = shared.lock();
        let (failure, media_bytes) = match media::resolve(&state, host(&headers), video_url) {
            MediaSource::Invalid => {
                return Err(TtError::invalid_param("source_info.video_url is not a valid URL"));
            }
            MediaSource::Foreign => (None, 0),
            MediaSource::Own(None) => (Some("video_pull_failed"), 0),
            MediaSource::Own(Some(video)) if !video.is_video() => (Some("file_format_check_failed"), video.len()),
            MediaSource::Own(Some(video)) => (None, video.len()),
        };
        let publish_id = format!("v_pub_url~v2-1.{}", PUBLISH_ID_BASE + shared.next_id());
        let publish = new_publish(&shared, &token, title, vec![video_url.to_owned()], failure, media_bytes);
        state.publishes.insert(publish_id.clone(), publish);
        tracing::debug!(%publish_id, "tiktok video publish accepted");
        Ok(json!({ "publish_id": publish_id }))
    })
    .await
}

async fn content_init(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap, body: Bytes) -> Response {
    run(&shared, &log_id, Endpoint::TiktokContentInit, || {
        let token = authenticate(&shared, &headers)?;
        let init: InitBody = parse_json(&body)?;
        if init.media_type.as_deref() != Some("PHOTO") {
            return Err(TtError::invalid_param("media_type must be PHOTO"));
        }
        match init.post_mode.as_deref() {
            Some("DIRECT_POST") => {}
            Some("MEDIA_UPLOAD") => {
                return Err(TtError::invalid_param("post_mode MEDIA_UPLOAD is not supported by the sandbox"));
            }
            _ => {
                return Err(TtError::invalid_param("post_mode must be DIRECT_POST or MEDIA_UPLOAD"));
            }
        }
        let source = init.pull_source()?;
        let images = source.photo_images.clone().unwrap_or_default();
        if images.is_empty() || images.len() > PHOTO_IMAGES_MAX {
            return Err(TtError::invalid_param(format!("source_info.photo_images must hold 1 to {PHOTO_IMAGES_MAX} URLs")));
        }
        let cover = source.photo_cover_index.unwrap_or(0);
        if usize::try_from(cover).map_or(true, |cover| cover >= images.len()) {
            return Err(TtError::invalid_param("source_info.photo_cover_index is out of range"));
        }
        let title = init.post_info.title.clone().unwrap_or_default();
        let description = init.post_info.description.clone().unwrap_or_default();
        if utf16_len(&title) > PHOTO_TITLE_MAX {
            return Err(TtError::invalid_param(format!("post_info.title exceeds {PHOTO_TITLE_MAX} runes")));
        }
        if utf16_len(&description) > PHOTO_DESCRIPTION_MAX {
            return Err(TtError::invalid_param(format!("post_info.description exceeds {PHOTO_DESCRIPTION_MAX} runes")));
        }
        init.post_info.check_privacy()?;

        let mut state = shared.lock();
        let mut failure = None;
        let mut media_bytes = 0;
        for url in &images {
            let reason = match media::resolve(&state, host(&headers), url) {
                MediaSource::Invalid => {
                    return Err(TtError::invalid_param(format!("invalid photo URL: {url}")));
                }
                MediaSource::Foreign => None,
                MediaSource::Own(None) => Some("photo_pull_failed"),
                MediaSource::Own(Some(photo)) => {
                    media_bytes += photo.len();
                    photo_problem(&photo)
                }
            };
            failure = failure.or(reason);
        }
        // The listing has one caption: the description, which is what
        // TikTok shows under a photo post, or the title if there is none.
        let caption = if description.is_empty() { title } else { description };
        let publish_id = format!("p_pub_url~v2.{}", PUBLISH_ID_BASE + shared.next_id());
        let publish = new_publish(&shared, &token, caption, images, failure, media_bytes);
        state.publishes.insert(publish_id.clone(), publish);
        tracing::debug!(%publish_id, "tiktok photo publish accepted");
        Ok(json!({ "publish_id": publish_id }))
    })
    .await
}

/// Photos must be JPEG or WebP of at most 20 MB.
fn photo_problem(photo: &MediaObject) -> Option<&'static str> {
    if !matches!(photo.mime().as_str(), "image/jpeg" | "image/webp") {
        Some("file_format_check_failed")
    } else if photo.len() > PHOTO_MAX_BYTES {
        Some("picture_size_check_failed")
    } else {
        None
    }
}

fn new_publish(
    shared: &Shared,
    token: &str,
    caption: String,
    media: Vec<String>,
    failure: Option<&'static str>,
    media_bytes: u64,
) -> Publish {
    Publish {
        open_id: ids::tiktok_open_id(token),
        caption,
        media,
        // The post's received_at is when TikTok accepted it, even though it
        // only shows in the listing once processing completes: that is the
        // moment the platform took responsibility for the post.
        accepted_at: Utc::now(),
        accepted: Instant::now(),
        failure,
        media_bytes,
        post_id: POST_ID_BASE + shared.next_id(),
        recorded: false,
    }
}

#[derive(Deserialize)]
struct StatusBody {
    publish_id: Option<String>,
}

async fn status_fetch(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap, body: Bytes) -> Response {
    run(&shared, &log_id, Endpoint::TiktokStatusFetch, || {
        let token = authenticate(&shared, &headers)?;
        let request: StatusBody = parse_json(&body)?;
        let publish_id = request.publish_id.filter(|id| !id.is_empty()).ok_or_else(|| TtError::invalid_param("publish_id is required"))?;
        let mut state = shared.lock();
        state.settle_tiktok(shared.options.tiktok_complete_after);
        // Another creator's publish is as unknown as a made-up id.
        let publish = state
            .publishes
            .get(&publish_id)
            .filter(|publish| publish.open_id == ids::tiktok_open_id(&token))
            .ok_or_else(|| TtError::invalid_param(format!("publish_id {publish_id} was not found")))?;
        let mut data = json!({
            "status": "PROCESSING_DOWNLOAD",
            "uploaded_bytes": 0,
            "downloaded_bytes": 0,
            "publicaly_available_post_id": [],
        });
        match publish.status(Instant::now(), shared.options.tiktok_complete_after) {
            PublishStatus::ProcessingDownload => {}
            PublishStatus::Complete => {
                data["status"] = json!("PUBLISH_COMPLETE");
                data["downloaded_bytes"] = json!(publish.media_bytes);
                data["publicaly_available_post_id"] = json!([publish.post_id]);
            }
            PublishStatus::Failed(reason) => {
                data["status"] = json!("FAILED");
                data["fail_reason"] = json!(reason);
            }
        }
        Ok(data)
    })
    .await
}

/// An OAuth error in TikTok's token-endpoint shape (not the API envelope).
fn oauth_error(log_id: &LogId, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description, "log_id": log_id.0 });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `POST /v2/oauth/token/` with `grant_type=refresh_token`. Issued tokens keep
/// the refresh token's subject (see [`ids::token_subject`]), so the creator's
/// open_id survives refreshes. The refresh token rotates on every call; older
/// ones stay valid until revoked.
async fn oauth_token(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, body: Bytes) -> Response {
    let on_fault = |status: StatusCode, body: Option<Value>| {
        let body = body
            .unwrap_or_else(|| json!({"error": "server_error", "error_description": "Internal error, please retry.", "log_id": log_id.0}));
        (status, Json(body)).into_response()
    };
    with_faults(&shared, Endpoint::TiktokOauthToken, on_fault, async {
        let form: std::collections::HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| form.get(name).map(String::as_str).filter(|value| !value.is_empty());
        if field("client_key").is_none() || field("client_secret").is_none() {
            return oauth_error(&log_id, "invalid_request", "client_key and client_secret are required.");
        }
        match field("grant_type") {
            Some("refresh_token") => {}
            Some(_) => {
                return oauth_error(&log_id, "unsupported_grant_type", "The sandbox supports grant_type=refresh_token only.");
            }
            None => return oauth_error(&log_id, "invalid_request", "grant_type is required."),
        }
        let Some(refresh_token) = field("refresh_token") else {
            return oauth_error(&log_id, "invalid_request", "refresh_token is required.");
        };
        if shared.lock().is_revoked(refresh_token) {
            return oauth_error(&log_id, "invalid_grant", "Refresh token is invalid or expired.");
        }
        let subject = ids::token_subject(refresh_token);
        Json(json!({
            "access_token": format!("{subject}.at-{}", ids::random_token_part()),
            "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
            "open_id": ids::tiktok_open_id(refresh_token),
            "refresh_expires_in": REFRESH_TOKEN_LIFETIME_SECS,
            "refresh_token": format!("{subject}.rt-{}", ids::random_token_part()),
            "scope": "video.publish",
            "token_type": "Bearer",
        }))
        .into_response()
    })
    .await
}
