//! Instagram Graph API content publishing: create a container, wait for `status_code`
//! `FINISHED`, then `media_publish`; also the user-node read that verifies an account link, and
//! the refresh of long-lived tokens. Tokens travel in the `Authorization` header, never in URLs.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, de::DeserializeOwned};
use tracing::instrument;

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

    /// Step 1: a media container for an image post (one JPEG) or a reel (one video).
    #[instrument(skip(self, token, caption, media), err(Display))]
    pub async fn create_container(
        &self,
        ig_user_id: &str,
        token: &SecretString,
        caption: &str,
        media: &MediaItem,
    ) -> Result<Reply<String>, PlatformError> {
        let mut form = vec![("caption", caption)];
        match media.kind {
            MediaKind::Image => form.push(("image_url", &media.url)),
            MediaKind::Video => {
                form.push(("video_url", &media.url));
                form.push(("media_type", "REELS"));
            }
        }
        let request = self.request(Method::POST, &format!("/{ig_user_id}/media"), token).form(&form);
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

/// The daily publishing limit resets on a rolling 24 h window.
const DAILY_LIMIT_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

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
        assert_eq!(error.retry_after, Some(DAILY_LIMIT_WAIT));
    }

    #[test]
    fn codes_are_stable_and_carry_the_trace_id() {
        let error = graph(190, Some(463));
        assert_eq!(error.code, "instagram.190.463");
        assert_eq!(error.request_id.as_deref(), Some("t"));
        assert_eq!(graph(17, None).code, "instagram.17");
    }
}
