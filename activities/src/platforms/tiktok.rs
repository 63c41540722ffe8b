//! TikTok Content Posting API (Direct Post): `creator_info/query` (also the token probe),
//! `video/init` with `PULL_FROM_URL`, or with `FILE_UPLOAD` and the video's chunks `PUT` to the
//! answer's `upload_url`, or `content/init` for photos, then `status/fetch` until
//! `PUBLISH_COMPLETE`. Also the Display API's `video/list` (needs the `video.list` scope) and
//! `user/info` (who a token belongs to, to verify an account link).

use std::ops::Range;
use std::time::Duration;

use reqwest::{RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use tracing::instrument;

use autopost_workflows::TiktokOptions;

use super::{ErrorClass, PlatformError, PlatformUser, Reply};

const PLATFORM: &str = "tiktok";

#[derive(Clone, Debug)]
pub struct TiktokClient {
    http: reqwest::Client,
    /// e.g. `https://open.tiktokapis.com`, without a trailing slash.
    base: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct CreatorInfo {
    #[serde(default)]
    pub creator_username: Option<String>,
    #[serde(default)]
    pub privacy_level_options: Vec<String>,
    #[serde(default)]
    pub max_video_post_duration_sec: Option<u64>,
    /// Interactions the creator turned off in the app: a post cannot turn them on.
    #[serde(default)]
    pub comment_disabled: bool,
    #[serde(default)]
    pub duet_disabled: bool,
    #[serde(default)]
    pub stitch_disabled: bool,
}

/// Why a post's options cannot go out as the creator's account stands, by `creator_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OptionsRefused {
    /// The chosen privacy level is not among the account's `privacy_level_options`.
    PrivacyLevelNotOffered(String),
    /// The post allows an interaction (`comment`, `duet`, `stitch`) the creator disabled.
    InteractionDisabled(&'static str),
}

impl OptionsRefused {
    /// The error code's last part (`privacy_level_not_offered`, `interaction_disabled`).
    pub fn code(&self) -> &'static str {
        match self {
            OptionsRefused::PrivacyLevelNotOffered(_) => "privacy_level_not_offered",
            OptionsRefused::InteractionDisabled(_) => "interaction_disabled",
        }
    }

    pub fn message(&self, offered: &[String]) -> String {
        match self {
            OptionsRefused::PrivacyLevelNotOffered(level) => format!(
                "the creator's TikTok account no longer offers the privacy level {level} (it offers {}); choose one of those",
                if offered.is_empty() { "none".to_owned() } else { offered.join(", ") }
            ),
            OptionsRefused::InteractionDisabled(what) => {
                format!("the creator disabled {what}s on TikTok, and the post allows them; set disable_{what} to true")
            }
        }
    }
}

impl CreatorInfo {
    /// The post's options against what the account offers now: the first refusal.
    pub fn refuses(&self, options: &TiktokOptions, is_video: bool) -> Option<OptionsRefused> {
        let level = options.privacy_level.as_str();
        if !self.privacy_level_options.iter().any(|offered| offered == level) {
            return Some(OptionsRefused::PrivacyLevelNotOffered(level.to_owned()));
        }
        let allowed_but_disabled = [
            ("comment", self.comment_disabled && !options.disable_comment),
            ("duet", is_video && self.duet_disabled && !options.disable_duet),
            ("stitch", is_video && self.stitch_disabled && !options.disable_stitch),
        ];
        allowed_but_disabled.into_iter().find(|(_, refused)| *refused).map(|(what, _)| OptionsRefused::InteractionDisabled(what))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PublishState {
    ProcessingUpload,
    ProcessingDownload,
    SendToUserInbox,
    PublishComplete,
    Failed,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PublishStatus {
    pub status: PublishState,
    #[serde(default)]
    pub fail_reason: Option<String>,
    /// Spelled as TikTok spells it. Empty for posts that are not public.
    #[serde(default, rename = "publicaly_available_post_id")]
    pub public_post_ids: Vec<serde_json::Value>,
    /// How much of a `FILE_UPLOAD` video TikTok has received.
    #[serde(default)]
    pub uploaded_bytes: Option<u64>,
}

impl PublishStatus {
    pub fn public_post_id(&self) -> Option<String> {
        self.public_post_ids.first().map(|id| match id {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    /// The error a `FAILED` publish stands for, classified by its `fail_reason`.
    pub fn failure(&self, request_id: Option<String>) -> PlatformError {
        let reason = self.fail_reason.clone().unwrap_or_else(|| "unknown".into());
        let class = match reason.as_str() {
            "internal" | "video_pull_failed" | "photo_pull_failed" => ErrorClass::Transient,
            "auth_removed" => ErrorClass::Token,
            _ => ErrorClass::Permanent,
        };
        PlatformError {
            class,
            code: format!("{PLATFORM}.{reason}"),
            message: format!("TikTok could not publish the post: {reason}"),
            request_id,
            retry_after: None,
            certainly_rejected: true,
            answered: true,
        }
    }
}

/// One page of the Display API's List Videos (`/v2/video/list/`).
#[derive(Clone, Debug, Deserialize)]
pub struct VideoPage {
    /// The creator's public videos, newest first.
    #[serde(default)]
    pub videos: Vec<ListedVideo>,
    /// Pass back as `cursor` for the next page (a unix timestamp in milliseconds: the next page
    /// holds videos created before it).
    #[serde(default)]
    pub cursor: Option<i64>,
    #[serde(default)]
    pub has_more: bool,
}

/// A video as List Videos reports it, with the fields [`TiktokClient::list_videos`] asks for.
#[derive(Clone, Debug, Deserialize)]
pub struct ListedVideo {
    /// The post id, the one `status/fetch` reports in `publicaly_available_post_id`.
    pub id: String,
    #[serde(default)]
    pub title: String,
    /// Unix seconds.
    pub create_time: i64,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
    error: ApiError,
}

#[derive(Deserialize)]
struct ApiError {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    log_id: Option<String>,
}

#[derive(Deserialize)]
struct PublishIdData {
    publish_id: String,
}

#[derive(Deserialize)]
struct UploadInitData {
    publish_id: String,
    /// Carries the upload's own token (`upload_token=`): kept secret like the access token.
    upload_url: SecretString,
}

const MB: u64 = 1024 * 1024;
/// The chunk size of uploads: within TikTok's 5 to 64 MB, small enough that a chunk sent again
/// after a failure costs little.
pub const UPLOAD_CHUNK_SIZE: u64 = 10 * MB;
const CHUNK_SIZE_MAX: u64 = 64 * MB;
const CHUNKS_MAX: u64 = 1000;
/// Waits before each new try of a chunk that failed transiently.
const CHUNK_RETRY_DELAYS: [Duration; 3] = [Duration::from_millis(250), Duration::from_millis(750), Duration::from_secs(2)];

/// How a video is cut for `FILE_UPLOAD`, by TikTok's Media Transfer Guide: chunks of
/// `chunk_size` (5 to 64 MB), `total_chunk_count` of them (`video_size / chunk_size` rounded
/// down, 1 to 1000), the last one carrying the remainder (under twice `chunk_size`, so at most
/// TikTok's 128 MB). A video under 5 MB must go whole; one under [`UPLOAD_CHUNK_SIZE`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    pub video_size: u64,
    pub chunk_size: u64,
    pub total_chunk_count: u64,
}

impl ChunkPlan {
    /// The plan for a video of `video_size` bytes: chunks of [`UPLOAD_CHUNK_SIZE`], larger only
    /// when there would be more than 1000.
    pub fn for_size(video_size: u64) -> Result<ChunkPlan, PlatformError> {
        if video_size == 0 {
            return Err(PlatformError::new(ErrorClass::Permanent, "tiktok.video_empty", "the video file is empty"));
        }
        if video_size < UPLOAD_CHUNK_SIZE {
            return Ok(ChunkPlan { video_size, chunk_size: video_size, total_chunk_count: 1 });
        }
        let chunk_size = UPLOAD_CHUNK_SIZE.max(video_size.div_ceil(CHUNKS_MAX));
        if chunk_size > CHUNK_SIZE_MAX {
            return Err(PlatformError::new(
                ErrorClass::Permanent,
                "tiktok.video_too_large",
                format!("the video is {video_size} bytes, more than 1000 chunks of 64 MB can carry to TikTok"),
            ));
        }
        Ok(ChunkPlan { video_size, chunk_size, total_chunk_count: video_size / chunk_size })
    }

    /// The bytes of chunk `index` (from 0).
    pub fn range(&self, index: u64) -> Range<u64> {
        let start = index * self.chunk_size;
        let end = if index + 1 >= self.total_chunk_count { self.video_size } else { start + self.chunk_size };
        start..end
    }

    /// `Content-Range` of chunk `index`: `bytes FIRST-LAST/TOTAL`, both ends included.
    pub fn content_range(&self, index: u64) -> String {
        let range = self.range(index);
        format!("bytes {}-{}/{}", range.start, range.end - 1, self.video_size)
    }
}

/// `user` is optional so that error answers, which carry `"data": {}`, still parse and are
/// classified by their error code.
#[derive(Deserialize)]
struct UserInfoData {
    #[serde(default)]
    user: Option<UserObject>,
}

#[derive(Deserialize)]
struct UserObject {
    open_id: String,
    #[serde(default)]
    display_name: Option<String>,
}

/// Tokens from `POST /v2/oauth/token/`. Lifetimes differ between TikTok's pages, so we keep what
/// each response says, and always the newest refresh token (it may rotate).
#[derive(Deserialize)]
pub struct RefreshedTokens {
    pub access_token: SecretString,
    pub expires_in: i64,
    pub refresh_token: SecretString,
}

/// TikTok's OAuth endpoint answers in its own shape, not the API envelope.
#[derive(Deserialize)]
struct OauthError {
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    log_id: Option<String>,
}

/// The app credentials TikTok's OAuth endpoint needs to refresh a creator's token.
#[derive(Clone)]
pub struct AppCredentials {
    pub client_key: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials").field("client_key", &self.client_key).finish_non_exhaustive()
    }
}

impl TiktokClient {
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self { http, base: base.into().trim_end_matches('/').to_owned() }
    }

    /// Creator info; also the token probe. TikTok asks for it before every post.
    #[instrument(skip_all, err(Display))]
    pub async fn creator_info(&self, token: &SecretString) -> Result<Reply<CreatorInfo>, PlatformError> {
        let request = self.post("/v2/post/publish/creator_info/query/", token).json(&json!({}));
        self.send(request).await
    }

    /// A video TikTok pulls from `video_url`, which must be on a domain verified for the app.
    #[instrument(skip(self, token, title, options, video_url), err(Display))]
    pub async fn init_video(
        &self,
        token: &SecretString,
        title: &str,
        options: &TiktokOptions,
        video_url: &str,
    ) -> Result<Reply<String>, PlatformError> {
        let body = json!({
            "post_info": video_post_info(title, options),
            "source_info": { "source": "PULL_FROM_URL", "video_url": video_url },
        });
        let reply: Reply<PublishIdData> = self.send(self.post("/v2/post/publish/video/init/", token).json(&body)).await?;
        Ok(Reply { value: reply.value.publish_id, request_id: reply.request_id })
    }

    /// A video of `video_size` bytes that we upload (`FILE_UPLOAD`), cut as
    /// [`ChunkPlan::for_size`] says: the `publish_id` and the `upload_url` its chunks go to
    /// ([`Self::upload_chunk`]). TikTok publishes once the last chunk is in.
    #[instrument(skip(self, token, title, options), err(Display))]
    pub async fn init_video_upload(
        &self,
        token: &SecretString,
        title: &str,
        options: &TiktokOptions,
        video_size: u64,
    ) -> Result<Reply<(String, SecretString)>, PlatformError> {
        let plan = ChunkPlan::for_size(video_size)?;
        let body = json!({
            "post_info": video_post_info(title, options),
            "source_info": {
                "source": "FILE_UPLOAD",
                "video_size": plan.video_size,
                "chunk_size": plan.chunk_size,
                "total_chunk_count": plan.total_chunk_count,
            },
        });
        let reply: Reply<UploadInitData> = self.send(self.post("/v2/post/publish/video/init/", token).json(&body)).await?;
        Ok(Reply { value: (reply.value.publish_id, reply.value.upload_url), request_id: reply.request_id })
    }

    /// Every chunk of `video`, in order (see [`Self::upload_chunk`]).
    pub async fn upload_chunks(&self, upload_url: &SecretString, video: &[u8], content_type: &str) -> Result<(), PlatformError> {
        let plan = ChunkPlan::for_size(video.len() as u64)?;
        for index in 0..plan.total_chunk_count {
            self.upload_chunk(upload_url, &plan, index, video, content_type).await?;
        }
        Ok(())
    }

    /// `PUT upload_url` of chunk `index` of `video` with its exact `Content-Range`. A chunk that
    /// fails transiently (5xx, 429, no answer) is sent again, a few times, with a short wait:
    /// TikTok takes a chunk sent twice as once, and nothing is initialised again. The upload
    /// URL authenticates the chunk: no access token goes with it, and it never appears in logs
    /// or errors.
    #[instrument(skip(self, upload_url, plan, video, content_type), fields(video_size = plan.video_size, chunks = plan.total_chunk_count), err(Display))]
    pub async fn upload_chunk(
        &self,
        upload_url: &SecretString,
        plan: &ChunkPlan,
        index: u64,
        video: &[u8],
        content_type: &str,
    ) -> Result<(), PlatformError> {
        let url = self.upload_target(upload_url)?;
        let range = plan.range(index);
        let bytes = usize::try_from(range.start).ok().zip(usize::try_from(range.end).ok()).and_then(|(start, end)| video.get(start..end));
        let Some(chunk) = bytes.filter(|_| video.len() as u64 == plan.video_size) else {
            return Err(PlatformError::new(ErrorClass::Permanent, "tiktok.upload_plan", "the video's size differs from the upload's plan"));
        };
        let mut delays = CHUNK_RETRY_DELAYS.iter();
        loop {
            let error = match self.put_chunk(url.clone(), plan.content_range(index), chunk, content_type).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            match delays.next() {
                Some(delay) if error.retryable() => {
                    tracing::info!(chunk = index, error_code = %error.code, "TikTok upload chunk failed; sending it again");
                    tokio::time::sleep(*delay).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// The upload URL, if it may be sent to: https, or the API base's own origin (the sandbox).
    fn upload_target(&self, upload_url: &SecretString) -> Result<reqwest::Url, PlatformError> {
        let refused = || {
            PlatformError::new(
                ErrorClass::Permanent,
                "tiktok.upload_url_refused",
                "TikTok answered an upload URL that is neither https nor its own",
            )
        };
        let url = reqwest::Url::parse(upload_url.expose_secret()).map_err(|_| refused())?;
        let own_origin = reqwest::Url::parse(&self.base).is_ok_and(|base| base.origin() == url.origin());
        if url.scheme() == "https" || own_origin { Ok(url) } else { Err(refused()) }
    }

    async fn put_chunk(&self, url: reqwest::Url, content_range: String, chunk: &[u8], content_type: &str) -> Result<(), PlatformError> {
        let request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header(reqwest::header::CONTENT_RANGE, content_range)
            .body(chunk.to_vec());
        let response = request.send().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let header_log_id = log_id(&response);
        let body = response.bytes().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        match serde_json::from_slice::<Envelope<serde_json::Value>>(&body) {
            Ok(envelope) => Err(classify(status, envelope.error, header_log_id)),
            Err(_) => Err(PlatformError::unexpected_http(PLATFORM, status, header_log_id)),
        }
    }

    #[instrument(skip(self, token, caption, options, photo_urls), err(Display))]
    pub async fn init_photos(
        &self,
        token: &SecretString,
        caption: &str,
        options: &TiktokOptions,
        photo_urls: &[&str],
    ) -> Result<Reply<String>, PlatformError> {
        let title = options.title.clone().unwrap_or_else(|| photo_title(caption));
        let body = json!({
            "post_info": {
                "title": title,
                "description": caption,
                "privacy_level": options.privacy_level.as_str(),
                "disable_comment": options.disable_comment,
                "auto_add_music": options.auto_add_music,
                "brand_content_toggle": options.brand_content_toggle,
                "brand_organic_toggle": options.brand_organic_toggle,
            },
            "source_info": {
                "source": "PULL_FROM_URL",
                "photo_cover_index": options.photo_cover_index.unwrap_or(0),
                "photo_images": photo_urls,
            },
            "post_mode": "DIRECT_POST",
            "media_type": "PHOTO",
        });
        let reply: Reply<PublishIdData> = self.send(self.post("/v2/post/publish/content/init/", token).json(&body)).await?;
        Ok(Reply { value: reply.value.publish_id, request_id: reply.request_id })
    }

    #[instrument(skip(self, token), err(Display))]
    pub async fn fetch_status(&self, token: &SecretString, publish_id: &str) -> Result<Reply<PublishStatus>, PlatformError> {
        let request = self.post("/v2/post/publish/status/fetch/", token).json(&json!({ "publish_id": publish_id }));
        self.send(request).await
    }

    /// The creator's public videos, newest first (Display API, List Videos). `cursor` is the
    /// previous page's `cursor` (`None` for the newest videos); TikTok allows `max_count` up to 20
    /// and refuses more with `invalid_params`. A token without the `video.list` scope gets
    /// `scope_not_authorized`, a [`ErrorClass::Token`] error.
    #[instrument(skip(self, token), err(Display))]
    pub async fn list_videos(&self, token: &SecretString, cursor: Option<i64>, max_count: u32) -> Result<Reply<VideoPage>, PlatformError> {
        let mut body = json!({ "max_count": max_count });
        if let Some(cursor) = cursor {
            body["cursor"] = json!(cursor);
        }
        let request = self.post("/v2/video/list/?fields=id,title,create_time", token).json(&body);
        self.send(request).await
    }

    /// Who `token` belongs to: `GET /v2/user/info/?fields=open_id,union_id,display_name`
    /// (scope `user.info.basic`). The user's `id` is the `open_id`, the `username` its
    /// `display_name`. An expired or revoked token gets `access_token_invalid`, a
    /// [`ErrorClass::Token`] error.
    #[instrument(skip_all, err(Display))]
    pub async fn user_info(&self, token: &SecretString) -> Result<Reply<PlatformUser>, PlatformError> {
        let request = self
            .http
            .get(format!("{}/v2/user/info/", self.base))
            .query(&[("fields", "open_id,union_id,display_name")])
            .bearer_auth(token.expose_secret());
        let reply: Reply<UserInfoData> = self.send(request).await?;
        let Some(user) = reply.value.user else {
            return Err(PlatformError::malformed(PLATFORM, "user info without a user", reply.request_id));
        };
        Ok(Reply { value: PlatformUser { id: user.open_id, username: user.display_name }, request_id: reply.request_id })
    }

    /// Exchanges a refresh token for new tokens.
    #[instrument(skip_all, err(Display))]
    pub async fn refresh(&self, app: &AppCredentials, refresh_token: &SecretString) -> Result<Reply<RefreshedTokens>, PlatformError> {
        let form = [
            ("client_key", app.client_key.as_str()),
            ("client_secret", app.client_secret.expose_secret()),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        let response = self
            .http
            .post(format!("{}/v2/oauth/token/", self.base))
            .form(&form)
            .send()
            .await
            .map_err(|e| PlatformError::transport(PLATFORM, e))?;
        let header_log_id = log_id(&response);
        let status = response.status();
        let body = response.bytes().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        if status.is_success()
            && let Ok(tokens) = serde_json::from_slice::<RefreshedTokens>(&body)
        {
            return Ok(Reply { value: tokens, request_id: header_log_id });
        }
        match serde_json::from_slice::<OauthError>(&body) {
            Ok(error) => Err(PlatformError {
                // A refresh token that is revoked or expired can only be replaced by reconnecting.
                class: if error.error == "invalid_grant" { ErrorClass::Token } else { ErrorClass::Permanent },
                code: format!("{PLATFORM}.oauth.{}", error.error),
                message: format!("TikTok refused to refresh the token: {}", error.error_description),
                request_id: error.log_id.or(header_log_id),
                retry_after: None,
                certainly_rejected: true,
                answered: true,
            }),
            Err(_) => Err(PlatformError::unexpected_http(PLATFORM, status, header_log_id)),
        }
    }

    fn post(&self, path: &str, token: &SecretString) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(token.expose_secret())
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<Reply<T>, PlatformError> {
        let response = request.send().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        let header_log_id = log_id(&response);
        let status = response.status();
        let body = response.bytes().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        let Ok(envelope) = serde_json::from_slice::<Envelope<T>>(&body) else {
            return Err(if status.is_success() {
                PlatformError::malformed(PLATFORM, "body", header_log_id)
            } else {
                PlatformError::unexpected_http(PLATFORM, status, header_log_id)
            });
        };
        // TikTok may answer HTTP 200 with a non-ok error code (creator_info on spam bans).
        if envelope.error.code != "ok" || !status.is_success() {
            return Err(classify(status, envelope.error, header_log_id));
        }
        let request_id = envelope.error.log_id.or(header_log_id);
        match envelope.data {
            Some(value) => Ok(Reply { value, request_id }),
            None => Err(PlatformError::malformed(PLATFORM, "body without data", request_id)),
        }
    }
}

/// Whether TikTok may pull `url` for this app: its host is one of `domains` (lower case), or
/// under one. TikTok refuses to pull from any other host (`url_ownership_unverified`).
pub fn on_verified_domain(url: &str, domains: &[String]) -> bool {
    let Some(host) = reqwest::Url::parse(url).ok().and_then(|url| url.host_str().map(str::to_ascii_lowercase)) else {
        return false;
    };
    domains.iter().any(|domain| host == *domain || host.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.')))
}

/// A video's `post_info`: the caption as its title, and the post's options.
fn video_post_info(title: &str, options: &TiktokOptions) -> serde_json::Value {
    let mut post_info = json!({
        "title": title,
        "privacy_level": options.privacy_level.as_str(),
        "disable_comment": options.disable_comment,
        "disable_duet": options.disable_duet,
        "disable_stitch": options.disable_stitch,
        "brand_content_toggle": options.brand_content_toggle,
        "brand_organic_toggle": options.brand_organic_toggle,
        "is_aigc": options.is_aigc,
    });
    if let Some(ms) = options.video_cover_timestamp_ms {
        post_info["video_cover_timestamp_ms"] = json!(ms);
    }
    post_info
}

/// Photo titles are capped at 90 characters; the full caption goes into the description.
pub fn photo_title(caption: &str) -> String {
    caption.lines().next().unwrap_or_default().chars().take(autopost_workflows::rules::TIKTOK_PHOTO_TITLE_CHARS).collect()
}

fn log_id(response: &Response) -> Option<String> {
    response.headers().get("x-tt-logid").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// TikTok's daily cap is about 15 posts a day per creator.
const DAILY_CAP_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

fn classify(status: reqwest::StatusCode, error: ApiError, header_log_id: Option<String>) -> PlatformError {
    let (class, retry_after) = match error.code.as_str() {
        "rate_limit_exceeded" | "internal_error" => (ErrorClass::Transient, None),
        "access_token_invalid" | "scope_not_authorized" => (ErrorClass::Token, None),
        // Permanent for this post today; the cap lifts after a day, so we wait rather than give up.
        "spam_risk_too_many_posts" => (ErrorClass::Transient, Some(DAILY_CAP_WAIT)),
        _ if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS => (ErrorClass::Transient, None),
        _ => (ErrorClass::Permanent, None),
    };
    PlatformError {
        class,
        code: format!("{PLATFORM}.{}", error.code),
        message: if error.message.is_empty() { format!("TikTok reported {}", error.code) } else { error.message },
        request_id: error.log_id.or(header_log_id),
        retry_after,
        certainly_rejected: status.is_client_error(),
        answered: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn error(status: u16, code: &str) -> PlatformError {
        classify(
            StatusCode::from_u16(status).unwrap(),
            ApiError { code: code.into(), message: String::new(), log_id: Some("log".into()) },
            None,
        )
    }

    #[test]
    fn error_codes_are_classified_as_platforms_md_lists_them() {
        assert_eq!(error(429, "rate_limit_exceeded").class, ErrorClass::Transient);
        assert_eq!(error(500, "internal_error").class, ErrorClass::Transient);
        assert_eq!(error(401, "access_token_invalid").class, ErrorClass::Token);
        assert_eq!(error(401, "scope_not_authorized").class, ErrorClass::Token);
        for code in [
            "invalid_param",
            "privacy_level_option_mismatch",
            "url_ownership_unverified",
            "unaudited_client_can_only_post_to_private_accounts",
            "spam_risk_user_banned_from_posting",
            "reached_active_user_cap",
        ] {
            assert_eq!(error(403, code).class, ErrorClass::Permanent, "{code}");
        }
        let capped = error(403, "spam_risk_too_many_posts");
        assert_eq!(capped.code, "tiktok.spam_risk_too_many_posts");
        assert_eq!(capped.retry_after, Some(DAILY_CAP_WAIT));
        assert_eq!(capped.request_id.as_deref(), Some("log"));
    }

    #[test]
    fn fail_reasons_are_classified() {
        let status = |reason: &str| PublishStatus {
            status: PublishState::Failed,
            fail_reason: Some(reason.into()),
            public_post_ids: vec![],
            uploaded_bytes: None,
        };
        assert_eq!(status("video_pull_failed").failure(None).class, ErrorClass::Transient);
        assert_eq!(status("auth_removed").failure(None).class, ErrorClass::Token);
        assert_eq!(status("file_format_check_failed").failure(None).class, ErrorClass::Permanent);
        assert_eq!(status("spam_risk_text").failure(None).code, "tiktok.spam_risk_text");
    }

    #[test]
    fn video_list_pages_parse() {
        let body = r#"{"data":{"videos":[
            {"id":"7400000000000000012","title":"Newest","create_time":1700000100},
            {"id":"7400000000000000009","title":"Older","create_time":1700000000}
        ],"cursor":1700000000000,"has_more":true},"error":{"code":"ok","message":"","log_id":"2024"}}"#;
        let envelope: Envelope<VideoPage> = serde_json::from_str(body).unwrap();
        assert_eq!(envelope.error.code, "ok");
        let page = envelope.data.unwrap();
        assert_eq!(page.cursor, Some(1_700_000_000_000));
        assert!(page.has_more);
        let ids: Vec<&str> = page.videos.iter().map(|video| video.id.as_str()).collect();
        assert_eq!(ids, ["7400000000000000012", "7400000000000000009"]);
        assert_eq!(page.videos[0].title, "Newest");
        assert_eq!(page.videos[1].create_time, 1_700_000_000);

        let empty: Envelope<VideoPage> = serde_json::from_str(r#"{"data":{"videos":[],"has_more":false},"error":{"code":"ok"}}"#).unwrap();
        let empty = empty.data.unwrap();
        assert!(empty.videos.is_empty() && empty.cursor.is_none() && !empty.has_more);
        assert_eq!(error(400, "invalid_params").class, ErrorClass::Permanent);
    }

    /// Answers one HTTP request with `status` and `body`; yields the raw request it read.
    async fn answer_once(status: &'static str, body: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0u8; 4096];
            loop {
                let read = socket.read(&mut buffer).await.unwrap();
                request.extend_from_slice(&buffer[..read]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, sent)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0usize);
                    if sent.len() >= length || read == 0 {
                        break;
                    }
                }
            }
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-tt-logid: header-log\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (base, server)
    }

    #[tokio::test]
    async fn list_videos_asks_for_its_fields_and_pages_by_cursor() {
        let body = r#"{"data":{"videos":[{"id":"7400000000000000012","title":"Clip","create_time":1700000100}],"cursor":1700000100000,"has_more":false},"error":{"code":"ok","message":"","log_id":"body-log"}}"#;
        let (base, server) = answer_once("200 OK", body).await;
        let client = TiktokClient::new(reqwest::Client::new(), base);
        let token = SecretString::from("act.secret");
        let reply = client.list_videos(&token, Some(1_700_000_200_000), 5).await.unwrap();
        assert_eq!(reply.request_id.as_deref(), Some("body-log"));
        assert_eq!(reply.value.videos[0].id, "7400000000000000012");
        assert_eq!(reply.value.cursor, Some(1_700_000_100_000));
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /v2/video/list/?fields=id,title,create_time HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("authorization: bearer act.secret\r\n"), "{request}");
        let sent: serde_json::Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(sent, json!({ "max_count": 5, "cursor": 1_700_000_200_000_i64 }));
    }

    #[tokio::test]
    async fn list_videos_without_the_scope_is_a_token_error() {
        let body = r#"{"data":{},"error":{"code":"scope_not_authorized","message":"The user did not authorize the scope required for completing this request.","log_id":"body-log"}}"#;
        let (base, server) = answer_once("401 Unauthorized", body).await;
        let client = TiktokClient::new(reqwest::Client::new(), base);
        let error = client.list_videos(&SecretString::from("act.secret"), None, 20).await.unwrap_err();
        assert_eq!(error.class, ErrorClass::Token);
        assert_eq!(error.code, "tiktok.scope_not_authorized");
        assert_eq!(error.request_id.as_deref(), Some("body-log"));
        let request = server.await.unwrap();
        let sent: serde_json::Value = serde_json::from_str(request.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(sent, json!({ "max_count": 20 }), "no cursor on the first page");
    }

    #[tokio::test]
    async fn user_info_of_an_invalid_token_is_a_token_error() {
        let body = r#"{"data":{},"error":{"code":"access_token_invalid","message":"The access token is invalid or not found in the request.","log_id":"body-log"}}"#;
        let (base, server) = answer_once("401 Unauthorized", body).await;
        let client = TiktokClient::new(reqwest::Client::new(), base);
        let error = client.user_info(&SecretString::from("act.secret")).await.unwrap_err();
        assert_eq!(error.class, ErrorClass::Token);
        assert_eq!(error.code, "tiktok.access_token_invalid");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn user_info_asks_for_the_open_id() {
        let body = r#"{"data":{"user":{"open_id":"-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT","union_id":"u","display_name":"Creator"}},"error":{"code":"ok","message":"","log_id":"body-log"}}"#;
        let (base, server) = answer_once("200 OK", body).await;
        let client = TiktokClient::new(reqwest::Client::new(), base);
        let user = client.user_info(&SecretString::from("act.secret")).await.unwrap();
        assert_eq!(user.value.id, "-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT");
        assert_eq!(user.value.username.as_deref(), Some("Creator"));
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /v2/user/info/?fields=open_id%2Cunion_id%2Cdisplay_name HTTP/1.1\r\n"), "{request}");
        assert!(request.to_ascii_lowercase().contains("authorization: bearer act.secret\r\n"), "{request}");
    }

    /// TikTok's rules (Media Transfer Guide), as the sandbox checks them too.
    fn follows_tiktoks_rules(plan: &ChunkPlan) {
        let ChunkPlan { video_size, chunk_size, total_chunk_count } = *plan;
        if video_size < 5 * MB {
            assert_eq!((chunk_size, total_chunk_count), (video_size, 1), "{plan:?}: a small video goes whole");
        } else {
            assert!((5 * MB..=64 * MB).contains(&chunk_size), "{plan:?}");
        }
        assert_eq!(total_chunk_count, video_size / chunk_size, "{plan:?}");
        assert!((1..=1000).contains(&total_chunk_count), "{plan:?}");
        if video_size > 64 * MB {
            assert!(total_chunk_count >= 2, "{plan:?}");
        }
        let mut next = 0;
        for index in 0..total_chunk_count {
            let range = plan.range(index);
            assert_eq!(range.start, next, "{plan:?}: chunk {index} follows the one before");
            let expected = if index + 1 == total_chunk_count { range.end - range.start } else { chunk_size };
            assert_eq!(range.end - range.start, expected, "{plan:?}: chunk {index}");
            assert!(range.end - range.start <= 128 * MB, "{plan:?}");
            next = range.end;
        }
        assert_eq!(next, video_size, "{plan:?}: the chunks cover the video");
    }

    #[test]
    fn chunk_plans_follow_tiktoks_rules() {
        let plan = |size: u64| ChunkPlan::for_size(size).unwrap();
        assert_eq!(plan(1000), ChunkPlan { video_size: 1000, chunk_size: 1000, total_chunk_count: 1 });
        assert_eq!(plan(7 * MB), ChunkPlan { video_size: 7 * MB, chunk_size: 7 * MB, total_chunk_count: 1 });
        assert_eq!(plan(10 * MB), ChunkPlan { video_size: 10 * MB, chunk_size: 10 * MB, total_chunk_count: 1 });
        // Under two chunks' worth: one chunk carries it all.
        assert_eq!(plan(19 * MB).total_chunk_count, 1);
        let two = plan(25 * MB);
        assert_eq!((two.chunk_size, two.total_chunk_count), (10 * MB, 2));
        assert_eq!((two.range(0), two.range(1)), (0..10 * MB, 10 * MB..25 * MB));
        assert_eq!(two.content_range(1), format!("bytes {}-{}/{}", 10 * MB, 25 * MB - 1, 25 * MB));
        // The guide's own example size: the trailing bytes ride on the last chunk.
        let example = plan(50_000_123);
        assert_eq!((example.chunk_size, example.total_chunk_count), (UPLOAD_CHUNK_SIZE, 4));
        assert_eq!(example.range(3), 3 * UPLOAD_CHUNK_SIZE..50_000_123);
        // Past 1000 chunks of 10 MB, chunks grow.
        let huge = plan(20_000 * MB);
        assert!(huge.chunk_size > UPLOAD_CHUNK_SIZE && huge.total_chunk_count <= 1000, "{huge:?}");
        for size in
            [1, 5 * MB - 1, 5 * MB, 10 * MB - 1, 10 * MB + 1, 20 * MB - 1, 64 * MB, 64 * MB + 1, 4096 * MB, 10_000 * MB + 7, 64_000 * MB]
        {
            follows_tiktoks_rules(&plan(size));
        }
        assert_eq!(ChunkPlan::for_size(0).unwrap_err().code, "tiktok.video_empty");
        assert_eq!(ChunkPlan::for_size(64_000 * MB + 1000 * MB).unwrap_err().code, "tiktok.video_too_large");
    }

    #[test]
    fn verified_domains_cover_their_subdomains_only() {
        let domains = vec!["example.com".to_owned(), "127.0.0.1".to_owned()];
        for url in ["https://example.com/a.mp4", "https://cdn.EXAMPLE.com/a.mp4", "http://127.0.0.1:8090/media/a.mp4"] {
            assert!(on_verified_domain(url, &domains), "{url}");
        }
        for url in ["https://notexample.com/a.mp4", "https://example.com.evil.net/a.mp4", "https://127.0.0.2/a.mp4", "not a url"] {
            assert!(!on_verified_domain(url, &domains), "{url}");
        }
        assert!(!on_verified_domain("https://example.com/a.mp4", &[]));
    }

    /// A sandbox on a free port and a client of its TikTok API.
    async fn sandbox() -> (String, TiktokClient) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sandbox = autopost_sandbox::Sandbox::with_options(autopost_sandbox::SandboxOptions::instant());
        tokio::spawn(async move { sandbox.serve(listener).await });
        let client = TiktokClient::new(reqwest::Client::new(), format!("{base}/tiktok"));
        (base, client)
    }

    async fn sandbox_json(base: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let http = reqwest::Client::new();
        let request = match body {
            Some(body) => http.post(format!("{base}{path}")).json(&body),
            None => http.get(format!("{base}{path}")),
        };
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{path}");
        response.json().await.unwrap()
    }

    fn options() -> TiktokOptions {
        serde_json::from_value(json!({ "privacy_level": "SELF_ONLY" })).unwrap()
    }

    /// 25 MB, two chunks of 10 MB the second with the other 15: the sandbox's 3 s sample
    /// padded with a `free` box.
    fn video() -> Vec<u8> {
        let mut video = include_bytes!("../../../sandbox/assets/sample.mp4").to_vec();
        let padding = 25 * MB as usize - video.len();
        video.extend_from_slice(&u32::try_from(padding).unwrap().to_be_bytes());
        video.extend_from_slice(b"free");
        video.resize(25 * MB as usize, 0);
        video
    }

    #[tokio::test]
    async fn an_upload_sends_every_chunk_and_retries_one_that_failed_transiently() {
        let (base, client) = sandbox().await;
        let token = SecretString::from("alice.at-1");
        let video = video();
        let init = client.init_video_upload(&token, "Uploaded", &options(), video.len() as u64).await.unwrap();
        let (publish_id, upload_url) = init.value;
        assert!(!format!("{:?}", upload_url).contains("upload_token"), "the upload URL is kept secret");
        let fault = json!({ "endpoint": "tiktok.upload", "status": 503 });
        sandbox_json(&base, "/_sandbox/faults", Some(fault)).await;
        client.upload_chunks(&upload_url, &video, "video/mp4").await.unwrap();
        let calls = sandbox_json(&base, "/_sandbox/calls", None).await;
        assert_eq!(calls["calls"]["tiktok.upload"], 3, "two chunks, the first one twice");
        assert_eq!(calls["calls"]["tiktok.video_init"], 1, "nothing initialised again");
        let status = client.fetch_status(&token, &publish_id).await.unwrap().value;
        assert_eq!((status.status, status.uploaded_bytes), (PublishState::PublishComplete, Some(video.len() as u64)));
        let posts = sandbox_json(&base, "/_sandbox/posts", None).await;
        let media = posts["posts"][0]["media"][0].as_str().unwrap().to_owned();
        assert!(media.starts_with("upload:") && media.ends_with(&format!(":{}", video.len())), "{media}");
    }

    #[tokio::test]
    async fn a_refused_chunk_is_not_retried_and_errors_never_show_the_upload_url() {
        let (base, client) = sandbox().await;
        let token = SecretString::from("alice.at-1");
        let video = video();
        let (publish_id, upload_url) = client.init_video_upload(&token, "Refused", &options(), video.len() as u64).await.unwrap().value;
        let plan = ChunkPlan::for_size(video.len() as u64).unwrap();
        // The second chunk first: out of order, refused for good.
        let refused = client.upload_chunk(&upload_url, &plan, 1, &video, "video/mp4").await.unwrap_err();
        assert_eq!((refused.class, refused.code.as_str()), (ErrorClass::Permanent, "tiktok.invalid_param"));
        assert!(refused.certainly_rejected);
        // Failing every time: retried a few times, then given up as transient.
        sandbox_json(&base, "/_sandbox/faults", Some(json!({ "endpoint": "tiktok.upload", "status": 500, "times": 10 }))).await;
        let failed = client.upload_chunk(&upload_url, &plan, 0, &video, "video/mp4").await.unwrap_err();
        assert_eq!((failed.class, failed.code.as_str()), (ErrorClass::Transient, "tiktok.internal_error"));
        let calls = sandbox_json(&base, "/_sandbox/calls", None).await;
        assert_eq!(calls["calls"]["tiktok.upload"], 1 + 4);
        let secret = upload_url.expose_secret().split("upload_token=").nth(1).unwrap().to_owned();
        for error in [&refused, &failed] {
            assert!(!error.to_string().contains(&secret) && !format!("{error:?}").contains(&secret), "{error:?}");
        }
        assert_eq!(client.fetch_status(&token, &publish_id).await.unwrap().value.status, PublishState::ProcessingUpload);

        // An upload URL that is neither https nor the API's own origin is not sent to.
        let elsewhere = SecretString::from("http://198.51.100.7/video/?upload_id=1&upload_token=t".to_owned());
        let error = client.upload_chunk(&elsewhere, &plan, 0, &video, "video/mp4").await.unwrap_err();
        assert_eq!(error.code, "tiktok.upload_url_refused");
        let calls = sandbox_json(&base, "/_sandbox/calls", None).await;
        assert_eq!(calls["calls"]["tiktok.upload"], 5, "nothing sent");
    }

    #[test]
    fn photo_titles_are_cut_at_90_characters_on_char_boundaries() {
        let caption = "é".repeat(200);
        assert_eq!(photo_title(&caption).chars().count(), 90);
        assert_eq!(photo_title("first line\nsecond"), "first line");
    }
}
