//! Instagram Graph API (content publishing), served under `/instagram`.
//!
//! Paths are relative to the client's base URL `http://HOST:PORT/instagram/vNN.N`.
//! Parameters may come in the query string, a form body or a JSON body; the
//! access token as `access_token` parameter or `Authorization: Bearer`.
//!
//! `POST /{ig-user-id}/media` creates feed images, reels, stories, carousel items and carousel
//! parents; the parameters each takes and the choices made where the platform's behaviour is
//! undocumented are listed in the crate docs ("Instagram content publishing"). Every refusal
//! is a Graph API error envelope whose message names the parameter. `POST
//! /{ig-media-id}/comments` and `GET /{ig-media-id}/comments` comment on published media.

use std::collections::HashMap;
use std::ops::RangeInclusive;
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
use crate::state::{CommentRecord, Container, ContainerKind, ContainerStatus, PostRecord, Shared, State as World};
use crate::tokens::{Platform, TokenKind, TokenProblem};

const CAPTION_MAX_CHARS: usize = 2200;
const ALT_TEXT_MAX_CHARS: usize = 1000;
const USER_TAGS_MAX: usize = 20;
const COLLABORATORS_MAX: usize = 3;
const CAROUSEL_CHILDREN: RangeInclusive<usize> = 2..=10;
const COMMENT_MAX_CHARS: usize = 2200;
/// Image containers accept JPEGs up to 8 MB (platforms.md).
const IMAGE_MAX_BYTES: u64 = 8 * 1024 * 1024;
/// Window of the content publishing quota.
const QUOTA_DURATION_SECS: u64 = 24 * 60 * 60;
/// Ids look like the Graph API's 17-digit numeric ids; the ranges keep
/// containers and published media apart.
const CONTAINER_ID_BASE: u64 = 17_900_000_000_000_000;
const MEDIA_ID_BASE: u64 = 17_950_000_000_000_000;
const COMMENT_ID_BASE: u64 = 17_980_000_000_000_000;
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
        .route("/{version}/{node}/comments", get(list_comments).post(create_comment))
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
            body[field] = json!(username_of(id));
        }
    }
    body
}

/// A sandbox user's username: `sandbox_user_` and the last six characters of the id (ids from
/// paths need not be ASCII).
fn username_of(id: &str) -> String {
    let suffix = id.char_indices().rev().nth(5).map_or(id, |(at, _)| &id[at..]);
    format!("sandbox_user_{suffix}")
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

/// What a `POST /{ig-user-id}/media` call creates: the kind, its media URL (none for a
/// carousel parent) and whether that media is a video.
struct MediaSpec<'a> {
    kind: ContainerKind,
    url: Option<&'a str>,
    video: bool,
}

/// Tells the container kinds apart by `is_carousel_item`, `media_type` and the media URL given.
fn media_spec(call: &IgCall) -> Result<MediaSpec<'_>, IgError> {
    let carousel_item = call.param("is_carousel_item").map(|value| parse_bool("is_carousel_item", value)).transpose()?.unwrap_or(false);
    let media_type = call.param("media_type").map(str::to_ascii_uppercase);
    let (image, video) = (call.param("image_url"), call.param("video_url"));
    let spec = |kind, url, video| Ok(MediaSpec { kind, url: Some(url), video });
    let required = |name: &str| IgError::param(format!("(#100) The parameter {name} is required."));
    match (carousel_item, media_type.as_deref()) {
        (true, None | Some("IMAGE")) => spec(ContainerKind::CarouselImage, image.ok_or_else(|| required("image_url"))?, false),
        (true, Some("VIDEO")) => spec(ContainerKind::CarouselVideo, video.ok_or_else(|| required("video_url"))?, true),
        (true, Some(other @ ("REELS" | "STORIES" | "CAROUSEL"))) => Err(IgError::param(format!(
            "(#100) Param is_carousel_item cannot be used with media_type={other}: carousel items are images or media_type=VIDEO."
        ))),
        (false, None | Some("IMAGE")) => match (image, video) {
            (Some(url), _) => spec(ContainerKind::Image, url, false),
            (None, Some(_)) if media_type.is_none() => {
                Err(IgError::new(100, Some(2207023), "(#100) The media type VIDEO is not supported; use media_type=REELS."))
            }
            (None, _) => Err(required("image_url")),
        },
        (false, Some("REELS")) => spec(ContainerKind::Reel, video.ok_or_else(|| required("video_url"))?, true),
        (false, Some("STORIES")) => match (image, video) {
            (Some(url), None) => spec(ContainerKind::Story, url, false),
            (None, Some(url)) => spec(ContainerKind::Story, url, true),
            (Some(_), Some(_)) => Err(IgError::param("(#100) A story takes either image_url or video_url, not both.")),
            (None, None) => Err(required("image_url or video_url")),
        },
        (false, Some("CAROUSEL")) => Ok(MediaSpec { kind: ContainerKind::Carousel, url: None, video: false }),
        (false, Some("VIDEO")) => Err(IgError::new(
            100,
            Some(2207023),
            "(#100) The media type VIDEO is only for carousel items (is_carousel_item=true); use media_type=REELS.",
        )),
        (_, Some(other)) => {
            Err(IgError::new(100, Some(2207023), format!("(#100) The media type {other} is not supported by this sandbox.")))
        }
    }
}

/// The `media_type` a post (or a carousel child) is shown with.
fn media_type_name(kind: ContainerKind) -> &'static str {
    match kind {
        ContainerKind::Image | ContainerKind::CarouselImage => "IMAGE",
        ContainerKind::CarouselVideo => "VIDEO",
        ContainerKind::Reel => "REELS",
        ContainerKind::Story => "STORIES",
        ContainerKind::Carousel => "CAROUSEL",
    }
}

/// The parameters beyond the media that only some kinds take. A kind refuses those it does
/// not take, even where the platform may silently drop them: a client learns of its mistake.
const OPTION_PARAMS: [&str; 9] =
    ["alt_text", "user_tags", "collaborators", "location_id", "share_to_feed", "cover_url", "thumb_offset", "audio_name", "children"];

fn option_supported(kind: ContainerKind, name: &str) -> bool {
    use ContainerKind::{Carousel, CarouselImage, Image, Reel};
    match name {
        "alt_text" => matches!(kind, Image | CarouselImage),
        // On a carousel, users are tagged on its items.
        "user_tags" => kind != Carousel,
        "collaborators" | "location_id" => matches!(kind, Image | Reel | Carousel),
        "share_to_feed" | "cover_url" | "thumb_offset" | "audio_name" => kind == Reel,
        "children" => kind == Carousel,
        _ => true,
    }
}

/// Where user tags sit: photos need a position, videos take none, stories may have one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TagPosition {
    Required,
    Optional,
    Forbidden,
}

/// Graph API booleans: `true`/`false` (also `1`/`0`).
fn parse_bool(name: &str, value: &str) -> Result<bool, IgError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(IgError::param(format!("(#100) Param {name} must be a boolean (true or false)."))),
    }
}

/// `user_tags`: a JSON array of `{"username", "x", "y"}`. Returns the tags as sent and the
/// usernames, which are checked against the accounts under the state lock.
fn parse_user_tags(raw: &str, position: TagPosition) -> Result<(Value, Vec<String>), IgError> {
    let malformed =
        || IgError::param("(#100) Param user_tags must be a JSON array of objects like {\"username\": \"name\", \"x\": 0.5, \"y\": 0.5}.");
    let value: Value = serde_json::from_str(raw).map_err(|_| malformed())?;
    let tags = value.as_array().ok_or_else(malformed)?;
    if tags.len() > USER_TAGS_MAX {
        return Err(IgError::new(
            100,
            Some(2207040),
            format!("(#100) Param user_tags: cannot use more than {USER_TAGS_MAX} tags per created media ({} given).", tags.len()),
        ));
    }
    let mut usernames = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.as_object().ok_or_else(malformed)?;
        let username = tag
            .get("username")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| IgError::param(format!("(#100) Param user_tags[{i}]['username'] is required and must be a string.")))?;
        let axes = [("x", tag.get("x")), ("y", tag.get("y"))];
        for (axis, coordinate) in axes {
            match (coordinate, position) {
                (None, TagPosition::Required) => {
                    return Err(IgError::param(format!("(#100) Param user_tags[{i}]['{axis}'] is required for images.")));
                }
                (Some(_), TagPosition::Forbidden) => {
                    return Err(IgError::param(format!(
                        "(#100) Param user_tags[{i}]['{axis}'] is not supported for videos: tag them by username only."
                    )));
                }
                (Some(number), _) if !number.as_f64().is_some_and(|n| (0.0..=1.0).contains(&n)) => {
                    return Err(IgError::param(format!("(#100) Param user_tags[{i}]['{axis}'] must be a number from 0 to 1.")));
                }
                _ => {}
            }
        }
        if axes[0].1.is_some() != axes[1].1.is_some() {
            return Err(IgError::param(format!("(#100) Param user_tags[{i}] needs both x and y, or neither.")));
        }
        usernames.push(username.to_owned());
    }
    Ok((value, usernames))
}

/// `collaborators`: a JSON array of usernames, or usernames separated by commas.
fn parse_collaborators(raw: &str) -> Result<Vec<String>, IgError> {
    let names: Vec<String> = if raw.trim_start().starts_with('[') {
        serde_json::from_str(raw).map_err(|_| {
            IgError::param("(#100) Param collaborators must be a JSON array of usernames, or usernames separated by commas.")
        })?
    } else {
        raw.split(',').map(str::trim).filter(|name| !name.is_empty()).map(str::to_owned).collect()
    };
    if names.len() > COLLABORATORS_MAX {
        return Err(IgError::param(format!(
            "(#100) Param collaborators: at most {COLLABORATORS_MAX} collaborators are allowed per media ({} given).",
            names.len()
        )));
    }
    Ok(names)
}

/// `children`: container ids separated by commas, or (JSON bodies) an array of them.
fn parse_children(raw: &str) -> Result<Vec<String>, IgError> {
    let malformed = || IgError::param("(#100) Param children must be container ids separated by commas, or a JSON array of them.");
    let ids: Vec<String> = if raw.trim_start().starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(raw).map_err(|_| malformed())?;
        values
            .into_iter()
            .map(|value| match value {
                Value::String(id) => Ok(id.trim().to_owned()),
                Value::Number(id) => Ok(id.to_string()),
                _ => Err(malformed()),
            })
            .collect::<Result<_, _>>()?
    } else {
        raw.split(',').map(|id| id.trim().to_owned()).collect()
    };
    if ids.iter().any(String::is_empty) {
        return Err(malformed());
    }
    if !CAROUSEL_CHILDREN.contains(&ids.len()) {
        return Err(IgError::new(
            100,
            Some(2207028),
            format!(
                "(#100) Your post won't be shared as a carousel. Carousels need at least 2 photos/videos and no more than 10 \
                 photos/videos (children has {}).",
                ids.len()
            ),
        ));
    }
    if let Some((at, id)) = ids.iter().enumerate().find(|(at, id)| ids[..*at].contains(id)) {
        return Err(IgError::param(format!("(#100) Invalid children: {id} is listed twice (children[{at}]).")));
    }
    Ok(ids)
}

/// A container's options, checked as far as they can be without the state.
struct Options {
    /// `media_type` and the options sent, as the post will show them.
    shown: Map<String, Value>,
    /// Usernames to check against the accounts: tagged ones, then collaborators.
    tagged: Vec<String>,
    collaborators: Vec<String>,
    /// A carousel parent's child container ids.
    children: Vec<String>,
}

fn parse_options(call: &IgCall, spec: &MediaSpec) -> Result<Options, IgError> {
    let kind = spec.kind;
    if let Some(name) = OPTION_PARAMS.into_iter().find(|name| call.param(name).is_some() && !option_supported(kind, name)) {
        let on = match kind {
            ContainerKind::CarouselImage | ContainerKind::CarouselVideo => "carousel items",
            other => media_type_name(other),
        };
        return Err(IgError::param(format!("(#100) Param {name} is not supported for {on}.")));
    }
    let mut options = Options { shown: Map::new(), tagged: Vec::new(), collaborators: Vec::new(), children: Vec::new() };
    let shown = &mut options.shown;
    shown.insert("media_type".into(), json!(media_type_name(kind)));
    if let (true, Some(url)) = (kind.is_carousel_item(), spec.url) {
        shown.insert("media_url".into(), json!(url));
    }
    if let Some(alt_text) = call.param("alt_text") {
        if alt_text.chars().count() > ALT_TEXT_MAX_CHARS {
            return Err(IgError::param(format!("(#100) Param alt_text must be at most {ALT_TEXT_MAX_CHARS} characters.")));
        }
        shown.insert("alt_text".into(), json!(alt_text));
    }
    if let Some(raw) = call.param("user_tags") {
        let position = match kind {
            ContainerKind::Story => TagPosition::Optional,
            _ if spec.video => TagPosition::Forbidden,
            _ => TagPosition::Required,
        };
        let (tags, usernames) = parse_user_tags(raw, position)?;
        shown.insert("user_tags".into(), tags);
        options.tagged = usernames;
    }
    if let Some(raw) = call.param("collaborators") {
        options.collaborators = parse_collaborators(raw)?;
        shown.insert("collaborators".into(), json!(options.collaborators));
    }
    if let Some(location) = call.param("location_id") {
        if location.len() > 32 || !location.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IgError::param("(#100) Param location_id must be the numeric id of a Facebook Page with a location."));
        }
        shown.insert("location_id".into(), json!(location));
    }
    if let Some(value) = call.param("share_to_feed") {
        shown.insert("share_to_feed".into(), json!(parse_bool("share_to_feed", value)?));
    }
    if let Some(cover) = call.param("cover_url") {
        shown.insert("cover_url".into(), json!(cover));
    }
    if let Some(value) = call.param("thumb_offset") {
        let offset: u64 =
            value.parse().map_err(|_| IgError::param("(#100) Param thumb_offset must be a whole number of milliseconds, 0 or more."))?;
        shown.insert("thumb_offset".into(), json!(offset));
    }
    if let Some(audio) = call.param("audio_name") {
        shown.insert("audio_name".into(), json!(audio));
    }
    match (kind, call.param("children")) {
        (ContainerKind::Carousel, Some(raw)) => options.children = parse_children(raw)?,
        (ContainerKind::Carousel, None) => return Err(IgError::param("(#100) The parameter children is required.")),
        _ => {}
    }
    Ok(options)
}

/// Whether `name` has the shape of an Instagram username: 1 to 30 letters (any case: usernames
/// are case-insensitive), digits, `.` or `_`.
pub(crate) fn valid_username(name: &str) -> bool {
    (1..=30).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_'))
}

/// Whether an Instagram account has this username: one added with `POST
/// /_sandbox/instagram/users`, or the username of a user the sandbox knows (the caller, a
/// token's user, a container's owner).
fn username_exists(state: &World, ig_user_id: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let is_user = |id: &str| username_of(id) == name;
    state.instagram_usernames.contains(&name)
        || is_user(ig_user_id)
        || state
            .tokens
            .iter()
            .any(|((platform, _), record)| *platform == Platform::Instagram && record.user_id.as_deref().is_some_and(is_user))
        || state.containers.values().any(|container| is_user(&container.ig_user_id))
}

/// Tags and collaborators must name existing accounts. The Graph API's error for one that does
/// not is undocumented: plain `100`, naming the user and the parameter.
fn check_usernames(state: &World, ig_user_id: &str, options: &Options) -> Result<(), IgError> {
    let named =
        options.tagged.iter().map(|name| ("user_tags", name)).chain(options.collaborators.iter().map(|name| ("collaborators", name)));
    for (param, name) in named {
        if !valid_username(name) {
            return Err(IgError::param(format!(
                "(#100) Param {param}: {name:?} is not an Instagram username (1 to 30 letters, digits, '.' or '_', without '@')."
            )));
        }
        if !username_exists(state, ig_user_id, name) {
            let role = if param == "user_tags" { "tagged" } else { "invited as a collaborator" };
            return Err(IgError::param(format!(
                "(#100) The user @{name} cannot be {role} ({param}): no Instagram account has that username."
            )));
        }
    }
    Ok(())
}

/// A carousel parent's children must be this user's unused, processed carousel items. Refusals
/// that no waiting can cure come first; then an unprocessed child is the "not ready" error, so
/// a client polls the children and creates the carousel again.
fn check_children(state: &World, ig_user_id: &str, children: &[String], now: Instant) -> Result<(), IgError> {
    let invalid = |message: String| IgError::param(format!("(#100) Invalid children: {message}"));
    let mut found = Vec::with_capacity(children.len());
    for id in children {
        let child = state
            .containers
            .get(id)
            .filter(|child| child.ig_user_id == ig_user_id)
            .ok_or_else(|| invalid(format!("{id} is not a media container of this Instagram user.")))?;
        if !child.kind.is_carousel_item() {
            return Err(invalid(format!("{id} is not a carousel item (create it with is_carousel_item=true).")));
        }
        if child.carousel_parent.is_some() {
            return Err(invalid(format!("{id} is already part of another carousel.")));
        }
        match child.status(now) {
            ContainerStatus::Error(_) => return Err(invalid(format!("the carousel item {id} failed processing (status_code ERROR)."))),
            ContainerStatus::Expired => return Err(invalid(format!("the carousel item {id} has expired."))),
            status => found.push((id, status)),
        }
    }
    if let Some((id, _)) = found.iter().find(|(_, status)| *status != ContainerStatus::Finished) {
        return Err(IgError::new(
            9007,
            Some(2207027),
            format!("Media ID is not available: the carousel item {id} is still being processed (status_code IN_PROGRESS)."),
        )
        .titled("The media is not ready for publishing, please wait for a moment"));
    }
    Ok(())
}

/// The error code a container's processing fails with when a processing-error fault matches
/// one of its media URLs (for a carousel parent: its children's).
fn processing_error(state: &World, urls: &[(&str, bool)]) -> Option<u32> {
    urls.iter()
        .find(|(url, _)| state.instagram_processing_errors.iter().any(|part| url.contains(part.as_str())))
        .map(|(_, video)| if *video { 2207026 } else { 2207052 })
}

/// `POST /{ig-user-id}/media`: validates like the platform would, without
/// fetching anything except media hosted by this sandbox.
fn create_container(shared: &Shared, call: &IgCall, ig_user_id: &str) -> Result<Value, IgError> {
    let spec = media_spec(call)?;
    // Stories and carousel items take no caption: the platform ignores one.
    let takes_caption = matches!(spec.kind, ContainerKind::Image | ContainerKind::Reel | ContainerKind::Carousel);
    let caption = if takes_caption { call.param("caption").unwrap_or_default() } else { "" };
    if caption.chars().count() > CAPTION_MAX_CHARS {
        return Err(IgError::new(
            36004,
            Some(2207010),
            format!("The caption is too long: at most {CAPTION_MAX_CHARS} characters are allowed."),
        )
        .titled("Caption too long"));
    }
    let options = parse_options(call, &spec)?;

    let mut state = shared.lock();
    let now = Instant::now();
    if let Some(url) = spec.url {
        check_media(media::resolve(&state, call.host.as_deref(), url), if spec.video { MediaCheck::Video } else { MediaCheck::Image })?;
    }
    if let Some(cover) = call.param("cover_url") {
        check_media(media::resolve(&state, call.host.as_deref(), cover), MediaCheck::Image)?;
    }
    check_usernames(&state, ig_user_id, &options)?;
    check_children(&state, ig_user_id, &options.children, now)?;

    let media_urls: Vec<(&str, bool)> = match spec.url {
        Some(url) => vec![(url, spec.video)],
        None => options
            .children
            .iter()
            .filter_map(|id| state.containers.get(id))
            .map(|child| (child.media_url.as_str(), child.kind == ContainerKind::CarouselVideo))
            .collect(),
    };
    let processing_error = processing_error(&state, &media_urls);
    let id = (CONTAINER_ID_BASE + shared.next_id()).to_string();
    for child in &options.children {
        if let Some(child) = state.containers.get_mut(child) {
            child.carousel_parent = Some(id.clone());
        }
    }
    let ready_after = if spec.video { shared.options.video_ready_after } else { shared.options.container_ready_after };
    state.containers.insert(
        id.clone(),
        Container {
            ig_user_id: ig_user_id.to_owned(),
            kind: spec.kind,
            caption: caption.to_owned(),
            media_url: spec.url.unwrap_or_default().to_owned(),
            options: options.shown,
            children: options.children,
            carousel_parent: None,
            processing_error,
            created: now,
            ready_after,
            published_media_id: None,
            published_at: None,
        },
    );
    tracing::debug!(%ig_user_id, container = %id, kind = ?spec.kind, "instagram container created");
    Ok(json!({ "id": id }))
}

/// What the platform expects at a media URL.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MediaCheck {
    Image,
    Video,
}

/// Media checks the platform makes when it downloads the media. Only
/// sandbox-hosted media can be checked; other hosts are trusted.
fn check_media(source: MediaSource, expected: MediaCheck) -> Result<(), IgError> {
    let media = match source {
        MediaSource::Foreign => return Ok(()),
        MediaSource::Own(Some(media)) => media,
        MediaSource::Invalid | MediaSource::Own(None) => {
            return Err(IgError::new(9004, Some(2207052), "Media download has failed. The media URI doesn't meet our requirements.")
                .titled("Media download has failed"));
        }
    };
    match expected {
        MediaCheck::Image if media.mime() != "image/jpeg" => {
            Err(IgError::new(36001, Some(2207005), "The image format is not supported. Only JPEG images can be published.")
                .titled("Unsupported image format"))
        }
        MediaCheck::Image if media.len() > IMAGE_MAX_BYTES => {
            Err(IgError::new(36000, Some(2207004), "The image is too large to download: at most 8 MB is allowed.")
                .titled("Image too large"))
        }
        MediaCheck::Video if !media.is_video() => {
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
/// A carousel publishes one post of its children's media, in order.
fn publish_container(shared: &Shared, call: &IgCall, ig_user_id: &str) -> Result<Value, IgError> {
    let container_id = call.param("creation_id").ok_or_else(|| IgError::param("(#100) The parameter creation_id is required."))?;
    let mut guard = shared.lock();
    let state = &mut *guard;
    let quota_usage = state.instagram_quota_usage(ig_user_id);
    let container = state
        .containers
        .get(container_id)
        .filter(|container| container.ig_user_id == ig_user_id)
        .ok_or_else(|| IgError::unknown_object("post", container_id))?;
    if container.kind.is_carousel_item() {
        return Err(IgError::param(
            "(#100) A carousel item cannot be published on its own: publish the CAROUSEL container it is a child of.",
        ));
    }
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
        ContainerStatus::Error(_) => {
            return Err(IgError::param("(#100) This media container failed processing (status_code ERROR): create a new one."));
        }
    }
    if quota_usage >= state.instagram_quota_total(ig_user_id, shared.options.instagram_quota_total) as usize {
        return Err(IgError::new(
            9,
            Some(2207042),
            "You reached the maximum number of posts that is allowed to be published by Content \
             Publishing API.",
        )
        .titled("Publishing limit reached"));
    }
    let mut options = container.options.clone();
    let media = if container.kind == ContainerKind::Carousel {
        let children: Vec<&Container> = container.children.iter().filter_map(|id| state.containers.get(id)).collect();
        options.insert("children".into(), children.iter().map(|child| Value::Object(child.options.clone())).collect());
        children.iter().map(|child| child.media_url.clone()).collect()
    } else {
        vec![container.media_url.clone()]
    };
    let caption = container.caption.clone();
    let media_id = (MEDIA_ID_BASE + shared.next_id()).to_string();
    if let Some(container) = state.containers.get_mut(container_id) {
        container.published_media_id = Some(media_id.clone());
        container.published_at = Some(Instant::now());
    }
    state.posts.push(PostRecord {
        channel: "instagram",
        platform_user_id: ig_user_id.to_owned(),
        caption,
        media,
        platform_post_id: media_id.clone(),
        received_at: Utc::now(),
        options: Some(Value::Object(options)),
        comments: Some(Vec::new()),
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
        let (usage, total) = {
            let state = shared.lock();
            (state.instagram_quota_usage(&ig_user_id), state.instagram_quota_total(&ig_user_id, shared.options.instagram_quota_total))
        };
        let mut entry = json!({ "quota_usage": usage });
        if call.fields().contains(&"config") {
            entry["config"] = json!({
                "quota_total": total,
                "quota_duration": QUOTA_DURATION_SECS,
            });
        }
        Ok(json!({ "data": [entry] }))
    })
    .await
}

async fn create_comment(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, media_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramCommentCreate, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &body)?;
        let token = call.authenticate(&shared)?;
        let message = call.param("message").ok_or_else(|| IgError::param("(#100) The parameter message is required."))?;
        if message.chars().count() > COMMENT_MAX_CHARS {
            return Err(IgError::param(format!("(#100) Param message must be at most {COMMENT_MAX_CHARS} characters.")));
        }
        let mut state = shared.lock();
        let bound = state.bound_user(Platform::Instagram, token).map(str::to_owned);
        let post = owned_post(&mut state, bound.as_deref(), "post", &media_id)?;
        let id = (COMMENT_ID_BASE + shared.next_id()).to_string();
        post.comments.get_or_insert_default().push(CommentRecord { id: id.clone(), text: message.to_owned(), created_at: Utc::now() });
        tracing::info!(media = %media_id, comment = %id, "instagram comment created");
        Ok(json!({ "id": id }))
    })
    .await
}

/// `GET /{ig-media-id}/comments?fields=id,text`: newest first, as the platform lists them.
/// Without `fields`, each comment has `id`, `text` and `timestamp`, the Graph API's defaults.
async fn list_comments(
    State(shared): State<Arc<Shared>>,
    Extension(trace): Extension<Trace>,
    Path((version, media_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    run(&shared, &trace, Endpoint::InstagramCommentList, || {
        check_version(&version)?;
        let call = IgCall::parse(query.as_deref(), &headers, &[])?;
        let token = call.authenticate(&shared)?;
        let mut state = shared.lock();
        let bound = state.bound_user(Platform::Instagram, token).map(str::to_owned);
        let post = owned_post(&mut state, bound.as_deref(), "get", &media_id)?;
        let asked = call.fields();
        let wants = |field: &str| if asked.is_empty() { matches!(field, "text" | "timestamp") } else { asked.contains(&field) };
        let username = username_of(&post.platform_user_id);
        let data: Vec<Value> = post
            .comments
            .iter()
            .flatten()
            .rev()
            .map(|comment| {
                let mut entry = json!({ "id": comment.id });
                if wants("text") {
                    entry["text"] = json!(comment.text);
                }
                if wants("timestamp") {
                    entry["timestamp"] = json!(comment.created_at.format("%Y-%m-%dT%H:%M:%S%z").to_string());
                }
                if wants("username") {
                    entry["username"] = json!(username);
                }
                entry
            })
            .collect();
        Ok(json!({ "data": data }))
    })
    .await
}

/// The published Instagram media `media_id`, which a token bound to another user may not see
/// (an unbound made-up token may act for any user, as on the publishing paths).
fn owned_post<'a>(state: &'a mut World, bound: Option<&str>, method: &str, media_id: &str) -> Result<&'a mut PostRecord, IgError> {
    state
        .posts
        .iter_mut()
        .find(|post| post.channel == "instagram" && post.platform_post_id == media_id)
        .filter(|post| bound.is_none_or(|user| user == post.platform_user_id))
        .ok_or_else(|| IgError::unknown_object(method, media_id))
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
