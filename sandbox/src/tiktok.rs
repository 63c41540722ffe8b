//! TikTok Content Posting API (Direct Post), the Display API's List Videos and
//! User Info, and token refresh, served under `/tiktok`, so the client's base
//! URL is `http://HOST:PORT/tiktok`.
//!
//! # Video sources
//!
//! - `PULL_FROM_URL`: TikTok pulls `video_url`, which must be on a domain the app verified
//!   with TikTok, else 403 `url_ownership_unverified` (photos alike). Every domain counts as
//!   verified until `POST /_sandbox/tiktok/verified-domains {"domains": [...]}` names them
//!   (a domain also covers its subdomains; `null` restores the default).
//! - `FILE_UPLOAD` (the Media Transfer Guide): `source_info` gives `video_size`, `chunk_size`
//!   and `total_chunk_count`, checked by TikTok's chunk rules (400 `invalid_param` naming the
//!   field); the answer's `upload_url` is `http://HOST:PORT/tiktok/upload/?upload_id=..&upload_token=..`
//!   (TikTok's is on `open-upload.tiktokapis.com`). Each chunk is a `PUT upload_url` with
//!   `Content-Type` (`video/mp4`, `video/quicktime` or `video/webm`), `Content-Length` and
//!   `Content-Range: bytes FIRST-LAST/TOTAL`, in order, each exactly its range: every chunk is
//!   `chunk_size` bytes but the last, which carries the remainder. A chunk answers 206 Partial
//!   Content, the final one 201 Created, both without a body; a chunk received before may be
//!   sent again and answers as it did. A wrong header, range, length or total is refused with
//!   HTTP 400 `invalid_param` in TikTok's envelope, its message naming the header (the sandbox's
//!   choice: TikTok documents the statuses, not its codes); an unknown upload or a wrong
//!   `upload_token` gets 404 `not_found`. Calls are counted and faulted as `tiktok.upload`.
//!   `status/fetch` says `PROCESSING_UPLOAD` (with `uploaded_bytes`) until the final chunk is
//!   in and while the upload is processed, then `PUBLISH_COMPLETE`; an upload never finished
//!   stays `PROCESSING_UPLOAD` (TikTok's upload URL expires after an hour; the sandbox's does
//!   not). The post's `media` in `/_sandbox/posts` is `upload:<FNV-1a-64 of the bytes, 16 hex>:<size>`.
//!
//! Own-hosted and uploaded videos are checked as TikTok would: an MP4/MOV needs a movie header
//! (`moov`/`mvhd`) and, by its duration, at most the creator's `max_video_post_duration_sec`
//! (`duration_check_failed`); a WebM is taken as it is; anything else is
//! `file_format_check_failed`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::faults::{Endpoint, with_faults};
use crate::ids;
use crate::media::{self, MediaSource};
use crate::state::{CreatorSettings, MediaObject, Publish, PublishKind, PublishStatus, Shared, State as World, Upload};
use crate::tokens::{Platform, TokenKind};

/// The privacy levels a sandbox creator offers unless a test changes them.
pub(crate) const PRIVACY_LEVELS: [&str; 4] = ["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"];
/// Limits in UTF-16 code units ("runes" in TikTok's docs).
const VIDEO_TITLE_MAX: usize = 2200;
const PHOTO_TITLE_MAX: usize = 90;
const PHOTO_DESCRIPTION_MAX: usize = 4000;
const PHOTO_IMAGES_MAX: usize = 35;
const PHOTO_MAX_BYTES: u64 = 20 * 1024 * 1024;
pub(crate) const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
pub(crate) const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The User Object's fields that may be asked for in `/v2/user/info/`'s `fields`.
const USER_FIELDS: [&str; 14] = [
    "open_id",
    "union_id",
    "avatar_url",
    "avatar_url_100",
    "avatar_large_url",
    "display_name",
    "bio_description",
    "profile_deep_link",
    "is_verified",
    "username",
    "follower_count",
    "following_count",
    "likes_count",
    "video_count",
];
/// `/v2/video/list/` page sizes: the default, and the most one page may hold.
const VIDEO_LIST_DEFAULT_COUNT: usize = 10;
const VIDEO_LIST_MAX_COUNT: usize = 20;
/// The Video Object's fields that may be asked for in `fields`.
const VIDEO_FIELDS: [&str; 15] = [
    "id",
    "create_time",
    "cover_image_url",
    "share_url",
    "video_description",
    "duration",
    "height",
    "width",
    "title",
    "embed_html",
    "embed_link",
    "like_count",
    "comment_count",
    "share_count",
    "view_count",
];
/// The Video Object caps `title` and `video_description` at 150 characters.
const VIDEO_TEXT_MAX: usize = 150;
/// Tokens containing this lack the `video.list` scope (see [`video_list`]).
const NO_VIDEO_LIST_MARKER: &str = "no-video-list";
/// Number ranges for ids, shaped like TikTok's 19-digit ones.
const PUBLISH_ID_BASE: u64 = 7_300_000_000_000_000_000;
const POST_ID_BASE: u64 = 7_400_000_000_000_000_000;
const UPLOAD_ID_BASE: u64 = 7_500_000_000_000_000_000;
/// What `creator_info` reports unless a test says otherwise: the API's 10 minutes.
pub(crate) const MAX_VIDEO_POST_DURATION_SEC: u64 = 600;
/// The Media Transfer Guide's chunk rules.
const MB: u64 = 1024 * 1024;
const CHUNK_MIN: u64 = 5 * MB;
const CHUNK_MAX: u64 = 64 * MB;
/// The final chunk carries the remainder, so it may be up to twice the chunk size.
const FINAL_CHUNK_MAX: u64 = 128 * MB;
const VIDEO_MAX_BYTES: u64 = 4096 * MB;
/// The types a chunk's `Content-Type` may name.
const UPLOAD_TYPES: [&str; 3] = ["video/mp4", "video/quicktime", "video/webm"];

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v2/post/publish/creator_info/query/", post(creator_info))
        .route("/v2/post/publish/video/init/", post(video_init))
        // Axum's default 2 MB body limit would refuse real chunks.
        .route("/upload/", put(upload_chunk).layer(DefaultBodyLimit::max((FINAL_CHUNK_MAX + MB) as usize)))
        .route("/v2/post/publish/content/init/", post(content_init))
        .route("/v2/post/publish/status/fetch/", post(status_fetch))
        .route("/v2/video/list/", post(video_list))
        .route("/v2/user/info/", get(user_info))
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

    /// The TikTok API v2 (Display API) spelling; the Content Posting API says `invalid_param`.
    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_params", message)
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

/// The bearer token, if present, well-formed, not revoked, not expired and
/// not a refresh token issued by the sandbox.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<String, TtError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or_else(TtError::token_invalid)?;
    shared.lock().check_token(Platform::Tiktok, token, TokenKind::Access).map_err(|_| TtError::token_invalid())?;
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

/// The creator's TikTok handle (without `@`), derived from the `open_id`.
fn creator_username(open_id: &str) -> String {
    let suffix = &open_id[open_id.len().saturating_sub(8)..];
    format!("sandbox_creator_{suffix}")
}

async fn creator_info(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap) -> Response {
    run(&shared, &log_id, Endpoint::TiktokCreatorInfo, || {
        let token = authenticate(&shared, &headers)?;
        let (open_id, creator) = {
            let state = shared.lock();
            let open_id = state.token_user(Platform::Tiktok, &token);
            let creator = state.tiktok_creator(&open_id);
            (open_id, creator)
        };
        let host = host(&headers).unwrap_or("localhost");
        Ok(json!({
            "creator_avatar_url": format!("http://{host}/media/sample.jpg"),
            "creator_username": creator_username(&open_id),
            "creator_nickname": "Sandbox Creator",
            "privacy_level_options": creator.privacy_level_options,
            "comment_disabled": creator.comment_disabled,
            "duet_disabled": creator.duet_disabled,
            "stitch_disabled": creator.stitch_disabled,
            "max_video_post_duration_sec": creator.max_video_post_duration_sec,
        }))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct PostInfo {
    title: Option<String>,
    description: Option<String>,
    privacy_level: Option<String>,
    disable_comment: Option<bool>,
    disable_duet: Option<bool>,
    disable_stitch: Option<bool>,
    video_cover_timestamp_ms: Option<u64>,
    brand_content_toggle: Option<bool>,
    brand_organic_toggle: Option<bool>,
    is_aigc: Option<bool>,
    auto_add_music: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SourceInfo {
    source: Option<String>,
    video_url: Option<String>,
    photo_images: Option<Vec<String>>,
    photo_cover_index: Option<i64>,
    video_size: Option<i64>,
    chunk_size: Option<i64>,
    total_chunk_count: Option<i64>,
}

/// How a `FILE_UPLOAD` video arrives, as its init announced it.
struct ChunkPlan {
    video_size: u64,
    chunk_size: u64,
    total_chunk_count: u64,
}

impl SourceInfo {
    /// The announced chunks, if they follow the Media Transfer Guide: `chunk_size` 5 to 64 MB,
    /// except that a video under 5 MB is sent whole; `total_chunk_count` is `video_size /
    /// chunk_size` rounded down (the last chunk carries the rest); a video over 64 MB comes in
    /// several chunks. The guide's 1000-chunk cap needs no check of its own: 4 GB in chunks of
    /// at least 5 MB are at most 819.
    fn chunk_plan(&self) -> Result<ChunkPlan, TtError> {
        let field = |name: &str, value: Option<i64>| {
            let value = value.ok_or_else(|| TtError::invalid_param(format!("source_info.{name} is required for FILE_UPLOAD")))?;
            u64::try_from(value)
                .ok()
                .filter(|value| *value > 0)
                .ok_or_else(|| TtError::invalid_param(format!("source_info.{name} must be a positive number of bytes")))
        };
        let video_size = field("video_size", self.video_size)?;
        let chunk_size = field("chunk_size", self.chunk_size)?;
        let total_chunk_count = field("total_chunk_count", self.total_chunk_count)?;
        if video_size > VIDEO_MAX_BYTES {
            return Err(TtError::invalid_param("source_info.video_size exceeds 4 GB, the largest video TikTok takes"));
        }
        if video_size < CHUNK_MIN {
            if chunk_size != video_size {
                return Err(TtError::invalid_param(format!(
                    "source_info.chunk_size must equal video_size ({video_size}): a video under 5 MB is sent whole"
                )));
            }
            if total_chunk_count != 1 {
                return Err(TtError::invalid_param("source_info.total_chunk_count must be 1: a video under 5 MB is sent whole"));
            }
            return Ok(ChunkPlan { video_size, chunk_size, total_chunk_count });
        }
        if !(CHUNK_MIN..=CHUNK_MAX).contains(&chunk_size) || chunk_size > video_size {
            return Err(TtError::invalid_param(format!(
                "source_info.chunk_size must be between 5 MB and 64 MB ({CHUNK_MIN} to {CHUNK_MAX} bytes), and at most video_size"
            )));
        }
        if video_size > CHUNK_MAX && video_size / chunk_size < 2 {
            return Err(TtError::invalid_param(
                "source_info.chunk_size must be at most half of video_size: a video over 64 MB comes in several chunks",
            ));
        }
        let expected = video_size / chunk_size;
        if total_chunk_count != expected {
            return Err(TtError::invalid_param(format!(
                "source_info.total_chunk_count must be video_size / chunk_size rounded down: {expected}"
            )));
        }
        Ok(ChunkPlan { video_size, chunk_size, total_chunk_count })
    }
}

/// The domains of a `POST /_sandbox/tiktok/verified-domains`, normalised (lower case, no
/// leading dot), or why one is not a domain.
pub(crate) fn verified_domains(domains: Vec<String>) -> Result<Vec<String>, String> {
    domains
        .into_iter()
        .enumerate()
        .map(|(index, domain)| {
            let normalised = domain.trim().trim_start_matches('.').to_ascii_lowercase();
            let bare =
                url::Url::parse(&format!("http://{normalised}/")).ok().is_some_and(|url| url.host_str() == Some(normalised.as_str()));
            if normalised.is_empty() || !bare {
                return Err(format!(
                    "domains[{index}]: {domain:?} is not a domain: give a host such as media.example.com, without scheme, port or path"
                ));
            }
            Ok(normalised)
        })
        .collect()
}

/// Whether TikTok may pull `url`: its host is a verified domain or under one.
fn pull_allowed(world: &World, url: &str) -> bool {
    let Some(domains) = &world.tiktok_verified_domains else {
        return true;
    };
    let Some(host) = url::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase)) else {
        return false;
    };
    domains.iter().any(|domain| host == *domain || host.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.')))
}

fn url_unverified(field: &str) -> TtError {
    TtError::new(
        StatusCode::FORBIDDEN,
        "url_ownership_unverified",
        format!("The domain of {field} is not verified for this app: verify it with TikTok, or send the file with FILE_UPLOAD."),
    )
}

/// Why TikTok would refuse this video file, if it would: see the module docs.
fn video_problem(bytes: &[u8], max_duration_sec: u64) -> Option<&'static str> {
    const EBML_MAGIC: [u8; 4] = [0x1a, 0x45, 0xdf, 0xa3];
    if bytes.get(4..8) == Some(b"ftyp".as_slice()) {
        return match mp4_duration_ms(bytes) {
            None => Some("file_format_check_failed"),
            Some(ms) if ms > max_duration_sec.saturating_mul(1000) => Some("duration_check_failed"),
            Some(_) => None,
        };
    }
    if bytes.starts_with(&EBML_MAGIC) { None } else { Some("file_format_check_failed") }
}

/// An MP4/MOV's duration in milliseconds from its movie header (`moov`/`mvhd`, version 0 or 1),
/// wherever `moov` is. Deliberately not the worker's parser: the sandbox checks it independently.
fn mp4_duration_ms(bytes: &[u8]) -> Option<u64> {
    let mvhd = find_box(find_box(bytes, b"moov")?, b"mvhd")?;
    let be32 = |at: usize| Some(u32::from_be_bytes(mvhd.get(at..at + 4)?.try_into().ok()?));
    let be64 = |at: usize| Some(u64::from_be_bytes(mvhd.get(at..at + 8)?.try_into().ok()?));
    // version(1) flags(3), then creation and modification times, timescale and duration.
    let (timescale, duration) = match mvhd.first()? {
        0 => (be32(12)?, u64::from(be32(16)?)),
        1 => (be32(20)?, be64(24)?),
        _ => return None,
    };
    if timescale == 0 {
        return None;
    }
    u64::try_from(u128::from(duration) * 1000 / u128::from(timescale)).ok()
}

/// The contents of the first box of type `kind` among the boxes laid end to end in `bytes`.
fn find_box<'a>(mut bytes: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    while bytes.len() >= 8 {
        let small = u64::from(u32::from_be_bytes(bytes[..4].try_into().ok()?));
        let (header, size) = match small {
            // To the end of the file.
            0 => (8, bytes.len()),
            1 => (16, usize::try_from(u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?)).ok()?),
            _ => (8, usize::try_from(small).ok()?),
        };
        if size < header || size > bytes.len() {
            return None;
        }
        if &bytes[4..8] == kind {
            return Some(&bytes[header..size]);
        }
        bytes = &bytes[size..];
    }
    None
}

/// FNV-1a, 64 bit, of the uploaded bytes: a stable, documented name for them.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3))
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
    fn source(&self) -> Result<&SourceInfo, TtError> {
        self.source_info.as_ref().ok_or_else(|| TtError::invalid_param("source_info is required"))
    }

    /// A photo post's source: TikTok pulls photos, it takes no upload of them.
    fn pull_source(&self) -> Result<&SourceInfo, TtError> {
        let source = self.source()?;
        match source.source.as_deref() {
            Some("PULL_FROM_URL") => Ok(source),
            _ => Err(TtError::invalid_param("source_info.source must be PULL_FROM_URL for photos")),
        }
    }
}

impl PostInfo {
    /// The requested privacy level, if it is one the creator offers, and the settings the
    /// creator's own choices allow: TikTok refuses a post that turns on an interaction the
    /// creator disabled, and branded content that is private.
    fn check(&self, creator: &CreatorSettings, kind: PublishKind) -> Result<&'static str, TtError> {
        let level = self.privacy_level.as_deref().ok_or_else(|| TtError::invalid_param("post_info.privacy_level is required"))?;
        let offered = creator.privacy_level_options.iter().any(|o| o == level);
        let Some(level) = PRIVACY_LEVELS.into_iter().find(|known| *known == level && offered) else {
            return Err(TtError::new(
                StatusCode::FORBIDDEN,
                "privacy_level_option_mismatch",
                "privacy_level is not one of the creator's privacy_level_options.",
            ));
        };
        let video_only = [
            ("disable_duet", self.disable_duet.is_some()),
            ("disable_stitch", self.disable_stitch.is_some()),
            ("video_cover_timestamp_ms", self.video_cover_timestamp_ms.is_some()),
            ("is_aigc", self.is_aigc.is_some()),
        ];
        let photo_only = [("auto_add_music", self.auto_add_music.is_some())];
        let (misplaced, kind_name) = match kind {
            PublishKind::Video => (photo_only.as_slice(), "video"),
            PublishKind::Photo => (video_only.as_slice(), "photo"),
        };
        if let Some((field, _)) = misplaced.iter().find(|(_, set)| *set) {
            return Err(TtError::invalid_param(format!("post_info.{field} is not a field of a {kind_name} post")));
        }
        let enabled_but_disabled = [
            ("comment", creator.comment_disabled && !self.disable_comment.unwrap_or(false)),
            ("duet", kind == PublishKind::Video && creator.duet_disabled && !self.disable_duet.unwrap_or(false)),
            ("stitch", kind == PublishKind::Video && creator.stitch_disabled && !self.disable_stitch.unwrap_or(false)),
        ];
        if let Some((what, _)) = enabled_but_disabled.iter().find(|(_, refused)| *refused) {
            return Err(TtError::invalid_param(format!("the creator has disabled {what}s: post_info.disable_{what} must be true")));
        }
        if self.brand_content_toggle == Some(true) && level == "SELF_ONLY" {
            return Err(TtError::invalid_param("branded content (brand_content_toggle) cannot be posted with privacy_level SELF_ONLY"));
        }
        Ok(level)
    }

    /// The settings as sent, for `/_sandbox/posts` (title and description are the caption).
    fn recorded(&self, level: &str) -> Map<String, Value> {
        let mut options = Map::new();
        options.insert("privacy_level".into(), json!(level));
        let settings = [
            ("disable_comment", self.disable_comment.map(Value::from)),
            ("disable_duet", self.disable_duet.map(Value::from)),
            ("disable_stitch", self.disable_stitch.map(Value::from)),
            ("video_cover_timestamp_ms", self.video_cover_timestamp_ms.map(Value::from)),
            ("brand_content_toggle", self.brand_content_toggle.map(Value::from)),
            ("brand_organic_toggle", self.brand_organic_toggle.map(Value::from)),
            ("is_aigc", self.is_aigc.map(Value::from)),
            ("auto_add_music", self.auto_add_music.map(Value::from)),
        ];
        options.extend(settings.into_iter().filter_map(|(name, value)| Some((name.to_owned(), value?))));
        options
    }
}

async fn video_init(State(shared): State<Arc<Shared>>, Extension(log_id): Extension<LogId>, headers: HeaderMap, body: Bytes) -> Response {
    run(&shared, &log_id, Endpoint::TiktokVideoInit, || {
        let token = authenticate(&shared, &headers)?;
        let init: InitBody = parse_json(&body)?;
        let source = init.source()?;
        let (video_url, plan) = match source.source.as_deref() {
            Some("PULL_FROM_URL") => {
                let url = source
                    .video_url
                    .as_deref()
                    .filter(|url| !url.is_empty())
                    .ok_or_else(|| TtError::invalid_param("source_info.video_url is required"))?;
                (Some(url), None)
            }
            Some("FILE_UPLOAD") => (None, Some(source.chunk_plan()?)),
            _ => return Err(TtError::invalid_param("source_info.source must be PULL_FROM_URL or FILE_UPLOAD")),
        };
        let title = init.post_info.title.clone().unwrap_or_default();
        if utf16_len(&title) > VIDEO_TITLE_MAX {
            return Err(TtError::invalid_param(format!("post_info.title exceeds {VIDEO_TITLE_MAX} runes")));
        }
        let mut state = shared.lock();
        let open_id = state.token_user(Platform::Tiktok, &token);
        let creator = state.tiktok_creator(&open_id);
        let privacy_level = init.post_info.check(&creator, PublishKind::Video)?;
        let options = (privacy_level, Value::Object(init.post_info.recorded(privacy_level)));
        if let Some(plan) = plan {
            let publish_id = format!("v_pub_file~v2-1.{}", PUBLISH_ID_BASE + shared.next_id());
            let upload_id = (UPLOAD_ID_BASE + shared.next_id()).to_string();
            let upload_token = ids::random_token_part();
            let upload_url = format!(
                "http://{}/tiktok/upload/?upload_id={upload_id}&upload_token={upload_token}",
                host(&headers).unwrap_or("localhost")
            );
            // What is posted and whether it passes is known once the final chunk is in.
            let mut publish =
                new_publish(&shared, open_id, PublishKind::Video, options, title, vec![], Download { failure: None, media_bytes: 0 });
            let ChunkPlan { video_size, chunk_size, total_chunk_count } = plan;
            publish.upload = Some(Upload {
                upload_id,
                upload_token,
                video_size,
                chunk_size,
                total_chunk_count,
                bytes: Vec::new(),
                chunks_received: 0,
                completed: None,
            });
            state.publishes.insert(publish_id.clone(), publish);
            tracing::debug!(%publish_id, video_size, total_chunk_count, "tiktok video upload accepted");
            return Ok(json!({ "publish_id": publish_id, "upload_url": upload_url }));
        }
        let video_url = video_url.unwrap_or_default();
        let resolved = media::resolve(&state, host(&headers), video_url);
        if matches!(resolved, MediaSource::Invalid) {
            return Err(TtError::invalid_param("source_info.video_url is not a valid URL"));
        }
        if !pull_allowed(&state, video_url) {
            return Err(url_unverified("source_info.video_url"));
        }
        let (failure, media_bytes) = match resolved {
            MediaSource::Invalid | MediaSource::Foreign => (None, 0),
            MediaSource::Own(None) => (Some("video_pull_failed"), 0),
            MediaSource::Own(Some(video)) if !video.is_video() => (Some("file_format_check_failed"), video.len()),
            MediaSource::Own(Some(video)) => (video_problem(&video.bytes, creator.max_video_post_duration_sec), video.len()),
        };
        let publish_id = format!("v_pub_url~v2-1.{}", PUBLISH_ID_BASE + shared.next_id());
        let media = vec![video_url.to_owned()];
        let download = Download { failure, media_bytes };
        let publish = new_publish(&shared, open_id, PublishKind::Video, options, title, media, download);
        state.publishes.insert(publish_id.clone(), publish);
        tracing::debug!(%publish_id, "tiktok video publish accepted");
        Ok(json!({ "publish_id": publish_id }))
    })
    .await
}

/// `PUT upload_url`: one chunk of a `FILE_UPLOAD` video (see the module docs).
async fn upload_chunk(
    State(shared): State<Arc<Shared>>,
    Extension(log_id): Extension<LogId>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let on_fault = |status, body| fault_response(&log_id, status, body);
    with_faults(&shared, Endpoint::TiktokUpload, on_fault, async {
        match receive_chunk(&shared, query.as_deref(), &headers, &body) {
            Ok(status) => status.into_response(),
            Err(error) => respond(&log_id, Err(error)),
        }
    })
    .await
}

/// Takes one chunk; answers 206 for a chunk before the last, 201 for the last.
fn receive_chunk(shared: &Shared, query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<StatusCode, TtError> {
    let not_found = || TtError::new(StatusCode::NOT_FOUND, "not_found", "The upload_url is not valid: no such upload.");
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    let (Some(upload_id), Some(upload_token)) = (params.get("upload_id"), params.get("upload_token")) else {
        return Err(not_found());
    };
    let header = |name: header::HeaderName| headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim);
    let content_type =
        header(header::CONTENT_TYPE).and_then(|value| value.split(';').next()).map(|value| value.trim().to_ascii_lowercase());
    if !content_type.as_deref().is_some_and(|value| UPLOAD_TYPES.contains(&value)) {
        return Err(TtError::invalid_param(format!("Content-Type must be the video's type, one of {}", UPLOAD_TYPES.join(", "))));
    }
    let length: u64 = header(header::CONTENT_LENGTH)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| TtError::invalid_param("Content-Length is required: the chunk's size in bytes"))?;
    let range = header(header::CONTENT_RANGE).and_then(parse_content_range);
    let Some((first, last, total)) = range else {
        return Err(TtError::invalid_param("Content-Range must read `bytes FIRST-LAST/TOTAL`"));
    };
    if length != body.len() as u64 || last - first + 1 != length {
        return Err(TtError::invalid_param(format!(
            "Content-Length {length} must be the body's size and the size of Content-Range bytes {first}-{last}"
        )));
    }
    let mut state = shared.lock();
    let found = state.publishes.iter().find(|(_, publish)| publish.upload.as_ref().is_some_and(|u| u.upload_id == *upload_id));
    let Some((publish_id, open_id)) = found.map(|(id, publish)| (id.clone(), publish.open_id.clone())) else {
        return Err(not_found());
    };
    let max_duration_sec = state.tiktok_creator(&open_id).max_video_post_duration_sec;
    let publish = state.publishes.get_mut(&publish_id).ok_or_else(not_found)?;
    let upload = publish.upload.as_mut().ok_or_else(not_found)?;
    if upload.upload_token != *upload_token {
        return Err(not_found());
    }
    if total != upload.video_size {
        return Err(TtError::invalid_param(format!(
            "Content-Range total {total} must be the video_size given at init, {}",
            upload.video_size
        )));
    }
    let chunks = upload.total_chunk_count;
    let answer = |index: u64| if index + 1 == chunks { StatusCode::CREATED } else { StatusCode::PARTIAL_CONTENT };
    // A chunk received before, sent again because its answer was lost: answered as before.
    let index = first / upload.chunk_size;
    if index < upload.chunks_received && upload.chunk_range(index) == (first, last) {
        let (start, end) = (usize::try_from(first).unwrap_or(usize::MAX), usize::try_from(last).unwrap_or(usize::MAX));
        if upload.bytes.get(start..=end) != Some(body) {
            return Err(TtError::invalid_param(format!("Content-Range bytes {first}-{last}/{total} was received before with other bytes")));
        }
        return Ok(answer(index));
    }
    let next = upload.chunks_received;
    if next == upload.total_chunk_count {
        return Err(TtError::invalid_param(format!("the upload is complete: all {next} chunks were received")));
    }
    let (expected_first, expected_last) = upload.chunk_range(next);
    if (first, last) != (expected_first, expected_last) {
        return Err(TtError::invalid_param(format!(
            "Content-Range bytes {first}-{last}/{total} is not the next chunk: chunks go in order, and chunk {next} is bytes {expected_first}-{expected_last}/{total}"
        )));
    }
    upload.bytes.extend_from_slice(body);
    upload.chunks_received += 1;
    let status = answer(next);
    if status == StatusCode::CREATED {
        upload.completed = Some(Instant::now());
        let media = format!("upload:{:016x}:{}", fnv1a64(&upload.bytes), upload.bytes.len());
        publish.failure = video_problem(&upload.bytes, max_duration_sec);
        publish.media = vec![media];
        tracing::debug!(%publish_id, failure = publish.failure, "tiktok video upload complete");
    }
    Ok(status)
}

/// `bytes FIRST-LAST/TOTAL`, with FIRST <= LAST < TOTAL.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, total) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let number = |text: &str| text.bytes().all(|b| b.is_ascii_digit()).then(|| text.parse::<u64>().ok()).flatten();
    let (first, last, total) = (number(first)?, number(last)?, number(total)?);
    (first <= last && last < total).then_some((first, last, total))
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
        let mut state = shared.lock();
        let open_id = state.token_user(Platform::Tiktok, &token);
        let privacy_level = init.post_info.check(&state.tiktok_creator(&open_id), PublishKind::Photo)?;
        let mut options = init.post_info.recorded(privacy_level);
        options.insert("title".into(), json!(title));
        options.insert("photo_cover_index".into(), json!(cover));
        let mut failure = None;
        let mut media_bytes = 0;
        for url in &images {
            let resolved = media::resolve(&state, host(&headers), url);
            if matches!(resolved, MediaSource::Invalid) {
                return Err(TtError::invalid_param(format!("invalid photo URL: {url}")));
            }
            if !pull_allowed(&state, url) {
                return Err(url_unverified("source_info.photo_images"));
            }
            let reason = match resolved {
                MediaSource::Invalid | MediaSource::Foreign => None,
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
        let download = Download { failure, media_bytes };
        let options = (privacy_level, Value::Object(options));
        let publish = new_publish(&shared, open_id, PublishKind::Photo, options, caption, images, download);
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

/// What the sandbox found when it "downloaded" a publish's media at init.
struct Download {
    failure: Option<&'static str>,
    media_bytes: u64,
}

fn new_publish(
    shared: &Shared,
    open_id: String,
    kind: PublishKind,
    (privacy_level, options): (&'static str, Value),
    caption: String,
    media: Vec<String>,
    download: Download,
) -> Publish {
    let Download { failure, media_bytes } = download;
    Publish {
        open_id,
        kind,
        privacy_level,
        options,
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
        upload: None,
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
        let open_id = state.token_user(Platform::Tiktok, &token);
        // Another creator's publish is as unknown as a made-up id.
        let publish = state
            .publishes
            .get(&publish_id)
            .filter(|publish| publish.open_id == open_id)
            .ok_or_else(|| TtError::invalid_param(format!("publish_id {publish_id} was not found")))?;
        let uploaded_bytes = publish.upload.as_ref().map_or(0, |upload| upload.bytes.len());
        let mut data = json!({
            "status": "PROCESSING_DOWNLOAD",
            "uploaded_bytes": uploaded_bytes,
            "downloaded_bytes": 0,
            "publicaly_available_post_id": [],
        });
        match publish.status(Instant::now(), shared.options.tiktok_complete_after) {
            PublishStatus::ProcessingUpload => data["status"] = json!("PROCESSING_UPLOAD"),
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

/// The scopes a token was granted, as TikTok lists them (comma-separated).
/// The sandbox grants every scope it emulates, except `video.list` to tokens
/// containing [`NO_VIDEO_LIST_MARKER`].
fn granted_scopes(token: &str) -> &'static str {
    if has_video_list_scope(token) { "video.publish,video.list" } else { "video.publish" }
}

fn has_video_list_scope(token: &str) -> bool {
    !token.contains(NO_VIDEO_LIST_MARKER)
}

#[derive(Debug, Default, Deserialize)]
struct VideoListBody {
    cursor: Option<i64>,
    max_count: Option<i64>,
}

/// One entry of a creator's video listing.
struct ListedVideo<'a> {
    publish: &'a Publish,
    /// When it was created, in unix milliseconds; unique per creator.
    created_ms: i64,
}

/// `POST /v2/video/list/?fields=...` (Display API, List Videos): the token's
/// creator's public videos, newest first, paged by a unix-millisecond `cursor`.
///
/// - **Scope**: the endpoint needs `video.list`. The sandbox has no scope
///   grants, so every valid token has it, except a token containing
///   `no-video-list` (e.g. `carol-no-video-list`), which gets HTTP 401
///   `scope_not_authorized`. With the marker in the token's subject (before its
///   first `.`), tokens refreshed from it lack the scope too. Revoked or
///   missing tokens get `access_token_invalid` first, as on every endpoint.
/// - **Listed**: video publishes (`video/init`) made with privacy
///   `PUBLIC_TO_EVERYONE` that reached `PUBLISH_COMPLETE`. Photo posts, videos
///   of any other privacy level, failed and still-processing publishes are not
///   listed, as on TikTok.
/// - **Video Object**: `id` is the post id that `status/fetch` reports in
///   `publicaly_available_post_id` (as a string, the Video Object's type);
///   `title` and `video_description` are the caption (cut at 150 characters,
///   the Video Object's limit); `share_url` is
///   `https://www.tiktok.com/@{creator_username}/video/{id}`, `embed_link` and
///   `embed_html` point at the same id, `cover_image_url` is the sandbox's
///   `sample.jpg` and the counts are 0. `duration`, `height` and `width` are
///   unknown to the sandbox and left out even when asked for.
/// - **create_time** (unix seconds) and the `cursor` (unix ms) are when TikTok
///   *accepted* the publish (the moment `received_at` in `/_sandbox/posts`
///   records), not when processing completed, so a video keeps its place in
///   the listing. Within a creator, a publish accepted in the same millisecond
///   as the previous one counts one millisecond later, so paging never skips
///   nor repeats a video.
/// - **Paging**: without `cursor` (or with `0`), the newest videos; with one,
///   the videos created strictly before it. The answered `cursor` is the
///   creation time of the page's last video (the request's cursor, or 0, for
///   an empty page); `has_more` says whether older videos remain.
/// - **Invalid** (`invalid_params`): `max_count` outside 1 to 20 (default 10),
///   a negative cursor, no `fields`, or a field that is not in the Video Object.
///   `id` is always returned.
async fn video_list(
    State(shared): State<Arc<Shared>>,
    Extension(log_id): Extension<LogId>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, &log_id, Endpoint::TiktokVideoList, || {
        let token = authenticate(&shared, &headers)?;
        if !has_video_list_scope(&token) {
            return Err(TtError::new(
                StatusCode::UNAUTHORIZED,
                "scope_not_authorized",
                "The user did not authorize the scope required for completing this request.",
            ));
        }
        let fields = requested_fields(query.as_deref(), &VIDEO_FIELDS)?;
        let request: VideoListBody = if body.iter().all(u8::is_ascii_whitespace) {
            VideoListBody::default()
        } else {
            serde_json::from_slice(&body).map_err(|error| TtError::invalid_params(format!("Invalid request body: {error}")))?
        };
        let max_count = match request.max_count {
            None => VIDEO_LIST_DEFAULT_COUNT,
            Some(count) => usize::try_from(count)
                .ok()
                .filter(|count| (1..=VIDEO_LIST_MAX_COUNT).contains(count))
                .ok_or_else(|| TtError::invalid_params(format!("max_count must be between 1 and {VIDEO_LIST_MAX_COUNT}")))?,
        };
        let cursor = match request.cursor {
            Some(cursor) if cursor < 0 => return Err(TtError::invalid_params("cursor must be a unix timestamp in milliseconds")),
            Some(0) | None => None,
            Some(cursor) => Some(cursor),
        };

        let open_id = shared.lock().token_user(Platform::Tiktok, &token);
        let username = creator_username(&open_id);
        let host = host(&headers).unwrap_or("localhost");
        let mut state = shared.lock();
        state.settle_tiktok(shared.options.tiktok_complete_after);
        let listing = creator_videos(&state, &open_id, shared.options.tiktok_complete_after);
        let mut older = listing.into_iter().filter(|video| cursor.is_none_or(|cursor| video.created_ms < cursor));
        let page: Vec<ListedVideo<'_>> = older.by_ref().take(max_count).collect();
        let has_more = older.next().is_some();
        let next_cursor = page.last().map(|video| video.created_ms).or(cursor).unwrap_or(0);
        let videos: Vec<Value> = page.iter().map(|video| video_object(video, &fields, &username, host)).collect();
        Ok(json!({ "videos": videos, "cursor": next_cursor, "has_more": has_more }))
    })
    .await
}

/// The fields named in the `fields` query parameter, each one of `known` (the Video or the User
/// Object's), in order and without repeats.
fn requested_fields(query: Option<&str>, known: &[&str]) -> Result<Vec<String>, TtError> {
    let mut fields = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if name != "fields" {
            continue;
        }
        for field in value.split(',').map(str::trim).filter(|field| !field.is_empty()) {
            if !known.contains(&field) {
                return Err(TtError::invalid_params(format!("Invalid field: {field}")));
            }
            if !fields.iter().any(|known| known == field) {
                fields.push(field.to_owned());
            }
        }
    }
    if fields.is_empty() {
        return Err(TtError::invalid_params("fields is required"));
    }
    Ok(fields)
}

/// The creator's listable videos, newest first (see [`video_list`]).
fn creator_videos<'a>(state: &'a World, open_id: &str, complete_after: Duration) -> Vec<ListedVideo<'a>> {
    let now = Instant::now();
    let mut publishes: Vec<&Publish> = state.publishes.values().filter(|publish| publish.open_id == open_id).collect();
    // Post ids are drawn in the order publishes are accepted.
    publishes.sort_by_key(|publish| publish.post_id);
    let mut listing = Vec::new();
    let mut previous_ms = i64::MIN;
    for publish in publishes {
        // Every publish of the creator takes a millisecond, listed or not, so
        // the times of listed videos never change as more publishes complete.
        let created_ms = publish.accepted_at.timestamp_millis().max(previous_ms.saturating_add(1));
        previous_ms = created_ms;
        let listed = publish.kind == PublishKind::Video
            && publish.privacy_level == "PUBLIC_TO_EVERYONE"
            && publish.status(now, complete_after) == PublishStatus::Complete;
        if listed {
            listing.push(ListedVideo { publish, created_ms });
        }
    }
    listing.reverse();
    listing
}

/// A video as the Display API's Video Object, with only the `fields` asked for (and `id`).
fn video_object(video: &ListedVideo<'_>, fields: &[String], username: &str, host: &str) -> Value {
    let id = video.publish.post_id.to_string();
    let text: String = video.publish.caption.chars().take(VIDEO_TEXT_MAX).collect();
    let share_url = format!("https://www.tiktok.com/@{username}/video/{id}");
    let mut object = serde_json::Map::new();
    object.insert("id".into(), json!(id));
    for field in fields {
        let value = match field.as_str() {
            "create_time" => json!(video.created_ms.div_euclid(1000)),
            "title" | "video_description" => json!(text),
            "share_url" => json!(share_url),
            "embed_link" => json!(format!("https://www.tiktok.com/player/v1/{id}")),
            "embed_html" => json!(format!(
                r#"<blockquote class="tiktok-embed" cite="{share_url}" data-video-id="{id}"><section></section></blockquote><script async src="https://www.tiktok.com/embed.js"></script>"#
            )),
            "cover_image_url" => json!(format!("http://{host}/media/sample.jpg")),
            "like_count" | "comment_count" | "share_count" | "view_count" => json!(0),
            // `id` is already there; duration, height and width are unknown.
            _ => continue,
        };
        object.insert(field.clone(), value);
    }
    Value::Object(object)
}

/// An OAuth error in TikTok's token-endpoint shape (not the API envelope).
fn oauth_error(log_id: &LogId, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description, "log_id": log_id.0 });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// `GET /v2/user/info/?fields=open_id,union_id,display_name` (Display API):
/// the token's user, with the fields asked for. This is the identity check:
/// a bound token answers its bound `open_id`; an unbound made-up token has no
/// user to be checked against here, so it answers the `open_id` derived from
/// its subject and is bound to it.
async fn user_info(
    State(shared): State<Arc<Shared>>,
    Extension(log_id): Extension<LogId>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&shared, &log_id, Endpoint::TiktokUserInfo, || {
        let token = authenticate(&shared, &headers)?;
        let fields = requested_fields(query.as_deref(), &USER_FIELDS)?;
        let open_id = {
            let mut state = shared.lock();
            let open_id = state.token_user(Platform::Tiktok, &token);
            // Cannot fail: `open_id` is the token's bound user when it has one.
            let bound = state.check_identity(Platform::Tiktok, &token, &open_id);
            debug_assert!(bound.is_ok());
            open_id
        };
        let host = host(&headers).unwrap_or("localhost");
        let username = creator_username(&open_id);
        let mut user = Map::new();
        for field in fields {
            let value = match field.as_str() {
                "open_id" => json!(open_id),
                // Stable per user, like the real one across a developer's apps.
                "union_id" => json!(format!("union-{open_id}")),
                "display_name" => json!("Sandbox Creator"),
                "username" => json!(username),
                "avatar_url" | "avatar_url_100" | "avatar_large_url" => json!(format!("http://{host}/media/sample.jpg")),
                "profile_deep_link" => json!(format!("https://www.tiktok.com/@{username}")),
                "bio_description" => json!(""),
                "is_verified" => json!(false),
                _ => json!(0),
            };
            user.insert(field, value);
        }
        Ok(json!({ "user": user }))
    })
    .await
}

/// `POST /v2/oauth/token/` with `grant_type=refresh_token`. The new tokens
/// belong to the refresh token's user (its bound `open_id`, else the one
/// derived from its subject) and keep its subject (see
/// [`ids::token_subject`]). The access token lives 24 h, the refresh token
/// 365 days; the refresh token rotates on every call, and older ones stay
/// valid until they expire or are revoked. Revoked, expired and issued access
/// tokens are refused with `invalid_grant`.
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
        let mut state = shared.lock();
        if state.check_token(Platform::Tiktok, refresh_token, TokenKind::Refresh).is_err() {
            return oauth_error(&log_id, "invalid_grant", "Refresh token is invalid or expired.");
        }
        let subject = ids::token_subject(refresh_token);
        let open_id = state.token_user(Platform::Tiktok, refresh_token);
        let user = Some(open_id.clone());
        let (access_token, _) = state.issue_token(Platform::Tiktok, TokenKind::Access, subject, user.clone(), ACCESS_TOKEN_LIFETIME);
        let (new_refresh_token, _) = state.issue_token(Platform::Tiktok, TokenKind::Refresh, subject, user, REFRESH_TOKEN_LIFETIME);
        drop(state);
        Json(json!({
            "access_token": access_token,
            "expires_in": ACCESS_TOKEN_LIFETIME.as_secs(),
            "open_id": open_id,
            "refresh_expires_in": REFRESH_TOKEN_LIFETIME.as_secs(),
            "refresh_token": new_refresh_token,
            "scope": granted_scopes(refresh_token),
            "token_type": "Bearer",
        }))
        .into_response()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(post_id: u64, kind: PublishKind, privacy_level: &'static str, accepted_at: chrono::DateTime<Utc>) -> Publish {
        Publish {
            open_id: ids::tiktok_open_id("alice"),
            kind,
            privacy_level,
            options: json!({ "privacy_level": privacy_level }),
            caption: format!("post {post_id}"),
            media: vec![],
            accepted_at,
            accepted: Instant::now(),
            failure: None,
            media_bytes: 0,
            post_id,
            recorded: false,
            upload: None,
        }
    }

    /// `ftyp`, a 64-bit-size `mdat`, then `moov` with a version 1 `mvhd` of 90.5 s.
    fn moov_last_v1() -> Vec<u8> {
        let mut mvhd = vec![1, 0, 0, 0];
        mvhd.extend_from_slice(&[0; 16]); // creation and modification times
        mvhd.extend_from_slice(&600u32.to_be_bytes());
        mvhd.extend_from_slice(&54_300u64.to_be_bytes());
        let boxed = |kind: &[u8; 4], body: &[u8]| [&u32::try_from(body.len() + 8).unwrap().to_be_bytes(), kind.as_slice(), body].concat();
        let mut file = boxed(b"ftyp", b"isom\0\0\0\0");
        file.extend_from_slice(&[0, 0, 0, 1]);
        file.extend_from_slice(b"mdat");
        file.extend_from_slice(&(16u64 + 5).to_be_bytes());
        file.extend_from_slice(&[9; 5]);
        file.extend(boxed(b"moov", &boxed(b"mvhd", &mvhd)));
        file
    }

    #[test]
    fn durations_come_from_the_movie_header_wherever_it_is() {
        assert_eq!(mp4_duration_ms(include_bytes!("../assets/sample.mp4")), Some(3000));
        let file = moov_last_v1();
        assert_eq!(mp4_duration_ms(&file), Some(90_500));
        assert_eq!(video_problem(&file, 90), Some("duration_check_failed"));
        assert_eq!(video_problem(&file, 91), None);
        assert_eq!(mp4_duration_ms(&file[..file.len() - 1]), None, "truncated");
        assert_eq!(video_problem(&file[..40], 600), Some("file_format_check_failed"));
        assert_eq!(video_problem(&[0x1a, 0x45, 0xdf, 0xa3, 0, 0, 0, 0], 600), None, "WebM is not parsed");
    }

    #[test]
    fn publishes_in_one_millisecond_get_distinct_times_in_acceptance_order() {
        let at = Utc::now();
        let mut world = World::default();
        let publishes = [
            publish(1, PublishKind::Video, "PUBLIC_TO_EVERYONE", at),
            publish(2, PublishKind::Photo, "PUBLIC_TO_EVERYONE", at),
            publish(3, PublishKind::Video, "SELF_ONLY", at),
            publish(4, PublishKind::Video, "PUBLIC_TO_EVERYONE", at),
            publish(5, PublishKind::Video, "PUBLIC_TO_EVERYONE", at),
        ];
        for (index, publish) in publishes.into_iter().enumerate() {
            world.publishes.insert(format!("publish-{index}"), publish);
        }
        let listing = creator_videos(&world, &ids::tiktok_open_id("alice"), Duration::ZERO);
        let listed: Vec<(u64, i64)> = listing.iter().map(|video| (video.publish.post_id, video.created_ms)).collect();
        let ms = at.timestamp_millis();
        // Photos and private videos take their millisecond without being listed.
        assert_eq!(listed, [(5, ms + 4), (4, ms + 3), (1, ms)]);
        assert!(creator_videos(&world, &ids::tiktok_open_id("bob"), Duration::ZERO).is_empty());
    }
}
