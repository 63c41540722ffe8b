//! TikTok Content Posting API (Direct Post): `creator_info/query` (also the token probe),
//! `video/init` with `PULL_FROM_URL` or `content/init` for photos, then `status/fetch` until
//! `PUBLISH_COMPLETE`. Also the Display API's `video/list` (needs the `video.list` scope) and
//! `user/info` (who a token belongs to, to verify an account link).

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

    #[instrument(skip(self, token, title, options, video_url), err(Display))]
    pub async fn init_video(
        &self,
        token: &SecretString,
        title: &str,
        options: &TiktokOptions,
        video_url: &str,
    ) -> Result<Reply<String>, PlatformError> {
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
        let body = json!({
            "post_info": post_info,
            "source_info": { "source": "PULL_FROM_URL", "video_url": video_url },
        });
        let reply: Reply<PublishIdData> = self.send(self.post("/v2/post/publish/video/init/", token).json(&body)).await?;
        Ok(Reply { value: reply.value.publish_id, request_id: reply.request_id })
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
        let status =
            |reason: &str| PublishStatus { status: PublishState::Failed, fail_reason: Some(reason.into()), public_post_ids: vec![] };
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

    #[test]
    fn photo_titles_are_cut_at_90_characters_on_char_boundaries() {
        let caption = "é".repeat(200);
        assert_eq!(photo_title(&caption).chars().count(), 90);
        assert_eq!(photo_title("first line\nsecond"), "first line");
    }
}
