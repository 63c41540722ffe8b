//! Instagram Graph API content publishing: create a container, wait for `status_code`
//! `FINISHED`, then `media_publish`; also the user-node read that verifies an account link, and
//! the refresh of long-lived tokens. Tokens travel in the `Authorization` header, never in URLs.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use tracing::instrument;

use autopost_workflows::{InstagramOptions, InstagramPostType};

use super::{ErrorClass, MediaItem, MediaKind, PlatformError, PlatformUser, Reply, valid_platform_user_id};

const PLATFORM: &str = "instagram";

#[derive(Clone, Debug)]
pub struct InstagramClient {
    http: reqwest::Client,
    /// e.g. `https://graph.facebook.com/v25.0`, without a trailing slash.
    base: String,
}

/// `status_code` of a media container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerStatus {
    InProgress,
    Finished,
    Published,
    Error,
    Expired,
}

#[derive(Deserialize)]
struct IdReply {
    id: String,
}

#[derive(Deserialize)]
struct UserReply {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

/// A refreshed long-lived token (`refresh_access_token`): it replaces the old one and lives
/// `expires_in` seconds (about 60 days).
#[derive(Debug, Deserialize)]
pub struct RefreshedToken {
    pub access_token: SecretString,
    pub expires_in: i64,
}

#[derive(Deserialize)]
struct StatusReply {
    status_code: ContainerStatus,
    #[serde(default)]
    status: Option<String>,
}

/// The account's content publishing quota (`content_publishing_limit`): API-published posts in
/// the rolling window, and how many the window allows (50 or 100 depending on the docs page:
/// read, never assumed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PublishingLimit {
    pub quota_usage: u32,
    pub quota_total: u32,
    pub quota_duration_secs: u64,
}

impl PublishingLimit {
    pub fn exhausted(&self) -> bool {
        self.quota_usage >= self.quota_total
    }
}

#[derive(Deserialize)]
struct LimitReply {
    data: Vec<LimitEntry>,
}

#[derive(Deserialize)]
struct LimitEntry {
    quota_usage: u32,
    config: LimitConfig,
}

#[derive(Deserialize)]
struct LimitConfig {
    quota_total: u32,
    quota_duration: u64,
}

/// A comment on a post.
#[derive(Clone, Debug, Deserialize)]
pub struct Comment {
    pub id: String,
    #[serde(default)]
    pub text: String,
}

#[derive(Deserialize)]
struct CommentPage {
    #[serde(default)]
    data: Vec<Comment>,
}

/// A container to create. A feed image, a reel and a story are one container each; a carousel
/// is one container per item (`is_carousel_item`), then the carousel's own over them.
pub enum ContainerRequest<'a> {
    Single { post_type: InstagramPostType, caption: &'a str, media: &'a MediaItem, options: &'a InstagramOptions },
    CarouselItem { media: &'a MediaItem, index: usize, options: &'a InstagramOptions },
    Carousel { caption: &'a str, children: &'a [String], options: &'a InstagramOptions },
}

impl ContainerRequest<'_> {
    fn kind(&self) -> &'static str {
        match self {
            ContainerRequest::Single { post_type, .. } => post_type.as_str(),
            ContainerRequest::CarouselItem { .. } => "carousel_item",
            ContainerRequest::Carousel { .. } => "carousel",
        }
    }

    /// The Graph API's parameters, as the form body sends them (lists and tags as JSON).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form: Vec<(&'static str, String)> = Vec::new();
        let shared = |form: &mut Vec<(&'static str, String)>, options: &InstagramOptions| {
            if !options.collaborators.is_empty() {
                form.push(("collaborators", serde_json::json!(options.collaborators).to_string()));
            }
            if let Some(location) = &options.location_id {
                form.push(("location_id", location.clone()));
            }
        };
        let image = |form: &mut Vec<(&'static str, String)>, media: &MediaItem, index: usize, options: &InstagramOptions| {
            form.push(("image_url", media.url.clone()));
            if let Some(alt) = options.alt_text_of(index) {
                form.push(("alt_text", alt.to_owned()));
            }
            let tags: Vec<_> = options
                .user_tags_of(index)
                .map(|t| serde_json::json!({ "username": t.username, "x": t.x.unwrap_or_default(), "y": t.y.unwrap_or_default() }))
                .collect();
            if !tags.is_empty() {
                form.push(("user_tags", serde_json::Value::from(tags).to_string()));
            }
        };
        match self {
            ContainerRequest::Single { post_type: InstagramPostType::Story, media, .. } => {
                form.push(("media_type", "STORIES".into()));
                match media.kind {
                    MediaKind::Image => form.push(("image_url", media.url.clone())),
                    MediaKind::Video => form.push(("video_url", media.url.clone())),
                }
            }
            ContainerRequest::Single { post_type: InstagramPostType::Reel, caption, media, options } => {
                form.push(("media_type", "REELS".into()));
                form.push(("video_url", media.url.clone()));
                form.push(("caption", caption.to_string()));
                if let Some(share) = options.share_to_feed {
                    form.push(("share_to_feed", share.to_string()));
                }
                if let Some(cover) = &options.cover_url {
                    form.push(("cover_url", cover.clone()));
                }
                if let Some(offset) = options.thumb_offset_ms {
                    form.push(("thumb_offset", offset.to_string()));
                }
                if let Some(audio) = &options.audio_name {
                    form.push(("audio_name", audio.clone()));
                }
                let tags: Vec<_> = options.user_tags_of(0).map(|t| serde_json::json!({ "username": t.username })).collect();
                if !tags.is_empty() {
                    form.push(("user_tags", serde_json::Value::from(tags).to_string()));
                }
                shared(&mut form, options);
            }
            ContainerRequest::Single { caption, media, options, .. } => {
                image(&mut form, media, 0, options);
                form.push(("caption", caption.to_string()));
                shared(&mut form, options);
            }
            ContainerRequest::CarouselItem { media, index, options } => {
                form.push(("is_carousel_item", "true".into()));
                match media.kind {
                    MediaKind::Image => image(&mut form, media, *index, options),
                    MediaKind::Video => {
                        form.push(("media_type", "VIDEO".into()));
                        form.push(("video_url", media.url.clone()));
                    }
                }
            }
            ContainerRequest::Carousel { caption, children, options } => {
                form.push(("media_type", "CAROUSEL".into()));
                form.push(("children", children.join(",")));
                form.push(("caption", caption.to_string()));
                shared(&mut form, options);
            }
        }
        form
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    #[serde(default)]
    message: String,
    code: i64,
    #[serde(default)]
    error_subcode: Option<i64>,
    #[serde(default)]
    fbtrace_id: Option<String>,
}

impl InstagramClient {
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self { http, base: base.into().trim_end_matches('/').to_owned() }
    }

    /// The cheap token probe: `GET /me?fields=id`.
    #[instrument(skip_all, err(Display))]
    pub async fn probe(&self, token: &SecretString) -> Result<Reply<String>, PlatformError> {
        let request = self.request(Method::GET, "/me", token).query(&[("fields", "id")]);
        let reply: Reply<IdReply> = self.send(request).await?;
        Ok(Reply { value: reply.value.id, request_id: reply.request_id })
    }

    /// Reads the user node `GET /{ig_user_id}?fields=id,username`: it answers only if `token`
    /// may act for that user, which is how an account link is verified. A token that cannot see
    /// the user gets Graph error `100/33` (a [`ErrorClass::Permanent`] error with code
    /// `instagram.100.33`); an expired or revoked one a `190` ([`ErrorClass::Token`]). An id that
    /// is not an Instagram user id is refused before any call (`instagram.invalid_user_id`).
    #[instrument(skip(self, token), err(Display))]
    pub async fn user(&self, token: &SecretString, ig_user_id: &str) -> Result<Reply<PlatformUser>, PlatformError> {
        if !valid_platform_user_id(autopost_workflows::Channel::Instagram, ig_user_id) {
            return Err(PlatformError::new(
                ErrorClass::Permanent,
                format!("{PLATFORM}.invalid_user_id"),
                "an Instagram user id is 1 to 32 digits",
            ));
        }
        let request = self.request(Method::GET, &format!("/{ig_user_id}"), token).query(&[("fields", "id,username")]);
        let reply: Reply<UserReply> = self.send(request).await?;
        Ok(Reply { value: PlatformUser { id: reply.value.id, username: reply.value.username }, request_id: reply.request_id })
    }

    /// Refreshes a long-lived Instagram Login token (`grant_type=ig_refresh_token`). The real
    /// endpoint is unversioned, `https://graph.instagram.com/refresh_access_token`, so it is
    /// called on the configured base without its trailing `/vNN.N` segment
    /// (`https://graph.instagram.com/v25.0` becomes `https://graph.instagram.com`). Only tokens
    /// that are still valid can be refreshed: an expired one gets `190/463`, a
    /// [`ErrorClass::Token`] error, and the creator must reconnect.
    #[instrument(skip_all, err(Display))]
    pub async fn refresh_long_lived(&self, token: &SecretString) -> Result<Reply<RefreshedToken>, PlatformError> {
        let url = format!("{}/refresh_access_token", unversioned(&self.base));
        let request = self.http.get(url).query(&[("grant_type", "ig_refresh_token")]).bearer_auth(token.expose_secret());
        self.send(request).await
    }

    /// Step 1: a media container (see [`ContainerRequest`] for what each kind sends).
    #[instrument(skip_all, fields(kind = request.kind()), err(Display))]
    pub async fn create_container(
        &self,
        ig_user_id: &str,
        token: &SecretString,
        request: &ContainerRequest<'_>,
    ) -> Result<Reply<String>, PlatformError> {
        let request = self.request(Method::POST, &format!("/{ig_user_id}/media"), token).form(&request.form());
        let reply: Reply<IdReply> = self.send(request).await?;
        Ok(Reply { value: reply.value.id, request_id: reply.request_id })
    }

    /// Step 2: where the container stands. `PUBLISHED` means an earlier call already published it.
    #[instrument(skip(self, token), err(Display))]
    pub async fn container_status(
        &self,
        token: &SecretString,
        container_id: &str,
    ) -> Result<Reply<(ContainerStatus, Option<String>)>, PlatformError> {
        let request = self.request(Method::GET, &format!("/{container_id}"), token).query(&[("fields", "status_code,status")]);
        let reply: Reply<StatusReply> = self.send(request).await?;
        Ok(Reply { value: (reply.value.status_code, reply.value.status), request_id: reply.request_id })
    }

    /// Step 3: publish a finished container; returns the Instagram media id.
    #[instrument(skip(self, token), err(Display))]
    pub async fn publish_container(
        &self,
        ig_user_id: &str,
        token: &SecretString,
        container_id: &str,
    ) -> Result<Reply<String>, PlatformError> {
        let request = self.request(Method::POST, &format!("/{ig_user_id}/media_publish"), token).form(&[("creation_id", container_id)]);
        let reply: Reply<IdReply> = self.send(request).await?;
        Ok(Reply { value: reply.value.id, request_id: reply.request_id })
    }

    /// The comments on a live post, newest first (`GET /{ig_media_id}/comments?fields=id,text`):
    /// how a retried first comment finds out it was posted already. The first page is enough for
    /// a comment posted moments ago.
    #[instrument(skip(self, token), err(Display))]
    pub async fn comments(&self, token: &SecretString, ig_media_id: &str) -> Result<Reply<Vec<Comment>>, PlatformError> {
        let request = self.request(Method::GET, &format!("/{ig_media_id}/comments"), token).query(&[("fields", "id,text")]);
        let reply: Reply<CommentPage> = self.send(request).await?;
        Ok(Reply { value: reply.value.data, request_id: reply.request_id })
    }

    /// Comments on a live post (`POST /{ig_media_id}/comments`); returns the comment's id.
    #[instrument(skip(self, token, message), err(Display))]
    pub async fn post_comment(&self, token: &SecretString, ig_media_id: &str, message: &str) -> Result<Reply<String>, PlatformError> {
        let request = self.request(Method::POST, &format!("/{ig_media_id}/comments"), token).form(&[("message", message)]);
        let reply: Reply<IdReply> = self.send(request).await?;
        Ok(Reply { value: reply.value.id, request_id: reply.request_id })
    }

    /// The publishing quota: `GET /{ig_user_id}/content_publishing_limit?fields=quota_usage,config`.
    #[instrument(skip(self, token), err(Display))]
    pub async fn publishing_limit(&self, ig_user_id: &str, token: &SecretString) -> Result<Reply<PublishingLimit>, PlatformError> {
        let request =
            self.request(Method::GET, &format!("/{ig_user_id}/content_publishing_limit"), token).query(&[("fields", "quota_usage,config")]);
        let reply: Reply<LimitReply> = self.send(request).await?;
        let entry = reply
            .value
            .data
            .into_iter()
            .next()
            .ok_or_else(|| PlatformError::malformed(PLATFORM, "content_publishing_limit without data", reply.request_id.clone()))?;
        let limit = PublishingLimit {
            quota_usage: entry.quota_usage,
            quota_total: entry.config.quota_total,
            quota_duration_secs: entry.config.quota_duration,
        };
        Ok(Reply { value: limit, request_id: reply.request_id })
    }

    fn request(&self, method: Method, path: &str, token: &SecretString) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token.expose_secret())
    }

    async fn send<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<Reply<T>, PlatformError> {
        let response = request.send().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        let request_id = trace_id(&response);
        let status = response.status();
        let body = response.bytes().await.map_err(|e| PlatformError::transport(PLATFORM, e))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map(|value| Reply { value, request_id: request_id.clone() })
                .map_err(|_| PlatformError::malformed(PLATFORM, "success body", request_id));
        }
        match serde_json::from_slice::<ErrorEnvelope>(&body) {
            Ok(envelope) => Err(classify(status, envelope.error, request_id)),
            Err(_) => Err(PlatformError::unexpected_http(PLATFORM, status, request_id)),
        }
    }
}

/// `base` without a trailing version segment (`/v25.0`, `/v3`), if it has one.
fn unversioned(base: &str) -> &str {
    match base.rsplit_once('/') {
        Some((head, last)) if is_version(last) => head,
        _ => base,
    }
}

fn is_version(segment: &str) -> bool {
    let Some(number) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    match number.split_once('.') {
        Some((major, minor)) => digits(major) && digits(minor),
        None => digits(number),
    }
}

fn trace_id(response: &Response) -> Option<String> {
    response.headers().get("x-fb-trace-id").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Turns a Graph API error into our classification (platforms.md, "Error envelope").
fn classify(status: reqwest::StatusCode, error: GraphError, header_trace_id: Option<String>) -> PlatformError {
    let code = match error.error_subcode {
        // The same code as our own quota check, so a job waits the same way for either.
        Some(2207042) if error.code == 9 => "instagram.quota_exhausted".to_owned(),
        Some(sub) => format!("{PLATFORM}.{}.{sub}", error.code),
        None => format!("{PLATFORM}.{}", error.code),
    };
    let (class, retry_after) = class_of(error.code, error.error_subcode);
    PlatformError {
        class,
        code,
        message: if error.message.is_empty() { "Instagram reported an error".into() } else { error.message },
        request_id: error.fbtrace_id.or(header_trace_id),
        retry_after,
        certainly_rejected: status.is_client_error(),
        answered: true,
    }
}

/// The publishing limit is a rolling 24 h window: a slot frees when the window's oldest post
/// ages out, which can be any time; the job looks again within the hour.
const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(60 * 60);

fn class_of(code: i64, subcode: Option<i64>) -> (ErrorClass, Option<Duration>) {
    use ErrorClass::*;
    match (code, subcode) {
        (9, Some(2207042)) => (Transient, Some(DAILY_LIMIT_WAIT)),
        // A container that is not ready yet: the caller keeps polling, so it is transient.
        (9007, Some(2207027)) => (Transient, None),
        (4, Some(2207051)) => (Permanent, None),
        (1 | 2 | 4 | 17 | 341, _) => (Transient, None),
        (-1, Some(2207001 | 2207032)) | (-2, Some(2207003)) | (24, Some(2207008)) => (Transient, None),
        (190 | 102, _) => (Token, None),
        // The object does not exist or this token may not see it (another account's user node).
        (100, Some(33)) => (Permanent, None),
        (10, _) | (200..=299, _) => (Permanent, None),
        _ => (Permanent, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(code: i64, subcode: Option<i64>) -> PlatformError {
        classify(
            reqwest::StatusCode::BAD_REQUEST,
            GraphError { message: "m".into(), code, error_subcode: subcode, fbtrace_id: Some("t".into()) },
            None,
        )
    }

    #[test]
    fn codes_are_classified_as_platforms_md_lists_them() {
        for (code, sub) in [
            (1, None),
            (2, None),
            (4, None),
            (17, None),
            (341, None),
            (-1, Some(2207001)),
            (-1, Some(2207032)),
            (-2, Some(2207003)),
            (24, Some(2207008)),
        ] {
            assert_eq!(graph(code, sub).class, ErrorClass::Transient, "{code}/{sub:?}");
        }
        for sub in [458, 459, 460, 463, 464, 467, 492] {
            assert_eq!(graph(190, Some(sub)).class, ErrorClass::Token);
        }
        assert_eq!(graph(102, None).class, ErrorClass::Token);
        for (code, sub) in [
            (100, Some(2207023)),
            (100, Some(2207028)),
            (352, Some(2207026)),
            (36000, Some(2207004)),
            (36001, Some(2207005)),
            (36003, Some(2207009)),
            (36004, Some(2207010)),
            (9004, Some(2207052)),
            (4, Some(2207051)),
            (25, Some(2207050)),
            (10, None),
            (200, None),
            (299, None),
        ] {
            assert_eq!(graph(code, sub).class, ErrorClass::Permanent, "{code}/{sub:?}");
        }
    }

    #[test]
    fn an_object_the_token_cannot_see_is_permanent_with_a_stable_code() {
        let error = graph(100, Some(33));
        assert_eq!(error.class, ErrorClass::Permanent);
        assert_eq!(error.code, "instagram.100.33");
    }

    #[test]
    fn the_refresh_endpoint_drops_the_version_segment() {
        assert_eq!(unversioned("https://graph.instagram.com/v25.0"), "https://graph.instagram.com");
        assert_eq!(unversioned("http://127.0.0.1:8090/instagram/v25.0"), "http://127.0.0.1:8090/instagram");
        assert_eq!(unversioned("https://graph.instagram.com/v3"), "https://graph.instagram.com");
        assert_eq!(unversioned("https://graph.instagram.com"), "https://graph.instagram.com");
        assert_eq!(unversioned("http://127.0.0.1:8090/instagram"), "http://127.0.0.1:8090/instagram");
        assert_eq!(unversioned("https://example.com/vapi"), "https://example.com/vapi");
    }

    #[test]
    fn the_daily_limit_waits_for_the_window() {
        let error = graph(9, Some(2207042));
        assert_eq!(error.class, ErrorClass::Transient);
        assert_eq!(error.code, "instagram.quota_exhausted");
        assert_eq!(error.retry_after, Some(DAILY_LIMIT_WAIT));
    }

    #[test]
    fn codes_are_stable_and_carry_the_trace_id() {
        let error = graph(190, Some(463));
        assert_eq!(error.code, "instagram.190.463");
        assert_eq!(error.request_id.as_deref(), Some("t"));
        assert_eq!(graph(17, None).code, "instagram.17");
    }

    fn item(url: &str, kind: MediaKind) -> MediaItem {
        MediaItem { url: url.into(), kind }
    }

    fn keys(form: &[(&'static str, String)]) -> Vec<&'static str> {
        form.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn each_container_kind_sends_the_graph_apis_parameters() {
        let options: InstagramOptions = serde_json::from_value(serde_json::json!({
            "alt_text": ["a cat"], "collaborators": ["ann"], "location_id": "7",
            "user_tags": [{ "username": "bob", "x": 0.25, "y": 0.5 }, { "username": "cy", "media_index": 1, "x": 0.1, "y": 0.9 }]
        }))
        .unwrap();
        let image = item("https://x.test/a.jpg", MediaKind::Image);
        let feed = ContainerRequest::Single { post_type: InstagramPostType::Feed, caption: "c", media: &image, options: &options }.form();
        assert_eq!(keys(&feed), ["image_url", "alt_text", "user_tags", "caption", "collaborators", "location_id"]);
        assert_eq!(feed[2].1, r#"[{"username":"bob","x":0.25,"y":0.5}]"#, "only the first item's tags");
        assert_eq!(feed[4].1, r#"["ann"]"#);
        let second = ContainerRequest::CarouselItem { media: &image, index: 1, options: &options }.form();
        assert_eq!(keys(&second), ["is_carousel_item", "image_url", "user_tags"], "item 1 has a tag and no alt text");
        let video = item("https://x.test/v.mp4", MediaKind::Video);
        let child = ContainerRequest::CarouselItem { media: &video, index: 0, options: &options }.form();
        assert_eq!(child, [("is_carousel_item", "true".to_string()), ("media_type", "VIDEO".into()), ("video_url", video.url.clone())]);
        let children = ["1".to_string(), "2".to_string()];
        let carousel = ContainerRequest::Carousel { caption: "c", children: &children, options: &options }.form();
        assert_eq!(carousel[..2], [("media_type", "CAROUSEL".to_string()), ("children", "1,2".into())]);
        let story =
            ContainerRequest::Single { post_type: InstagramPostType::Story, caption: "ignored", media: &video, options: &options }.form();
        assert_eq!(story, [("media_type", "STORIES".to_string()), ("video_url", video.url.clone())], "no caption, tags or collaborators");
    }

    #[test]
    fn a_reel_sends_its_cover_audio_and_position_free_tags() {
        let options: InstagramOptions = serde_json::from_value(serde_json::json!({
            "share_to_feed": false, "thumb_offset_ms": 1500, "audio_name": "Our song", "user_tags": [{ "username": "bob" }]
        }))
        .unwrap();
        let video = item("https://x.test/v.mp4", MediaKind::Video);
        let reel = ContainerRequest::Single { post_type: InstagramPostType::Reel, caption: "c", media: &video, options: &options }.form();
        assert_eq!(
            reel,
            [
                ("media_type", "REELS".to_string()),
                ("video_url", video.url.clone()),
                ("caption", "c".into()),
                ("share_to_feed", "false".into()),
                ("thumb_offset", "1500".into()),
                ("audio_name", "Our song".into()),
                ("user_tags", r#"[{"username":"bob"}]"#.into()),
            ]
        );
    }
}
