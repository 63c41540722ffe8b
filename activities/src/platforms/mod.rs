//! Adapters for the platforms' real publishing APIs: Instagram's content publishing through the
//! Graph API, and TikTok's Content Posting API. Only the base URL differs between the real hosts
//! and the sandbox emulator (`sandbox/`), which speaks the same paths, payloads and errors.

pub mod instagram;
pub mod tiktok;

use std::time::Duration;

pub use autopost_workflows::{JobError, MediaItem, MediaKind};

use autopost_workflows::Channel;

/// A platform account as its platform reports it: who a token belongs to.
#[derive(Clone, Debug)]
pub struct PlatformUser {
    /// Instagram: the IG user id; TikTok: the `open_id`.
    pub id: String,
    /// Instagram: the `username`; TikTok: the `display_name` (the handle needs another scope).
    pub username: Option<String>,
}

/// Longest Instagram user id accepted: real ones have 17 digits (`17841400000000001`), or 16
/// for Instagram Login's app-scoped ids; the margin keeps longer future ids working.
const INSTAGRAM_USER_ID_MAX: usize = 32;
/// Longest TikTok `open_id` accepted: real ones are about 40 characters.
const TIKTOK_OPEN_ID_MAX: usize = 128;

/// Whether `id` has the shape of `channel`'s user ids, checked before it is put into a URL path
/// or sent to the platform. Instagram user ids are numeric: 1 to 32 ASCII digits. TikTok
/// `open_id`s (`-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT`, UUID-like ones, the sandbox's
/// `sbx-<hex>`) are 1 to 128 of `A-Z a-z 0-9 . _ -` with at least one letter or digit, so `.`
/// and `..` never pass.
pub fn valid_platform_user_id(channel: Channel, id: &str) -> bool {
    match channel {
        Channel::Instagram => (1..=INSTAGRAM_USER_ID_MAX).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
        Channel::Tiktok => {
            (1..=TIKTOK_OPEN_ID_MAX).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                && id.bytes().any(|b| b.is_ascii_alphanumeric())
        }
    }
}

/// How a platform failure should be handled, decided from the platform's own codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (5xx, network, timeouts, rate limits, the listed retry-later codes).
    Transient,
    /// The token is expired, revoked or lacks scope: the creator must reconnect.
    Token,
    /// The post itself is not acceptable: the creator must fix it.
    Permanent,
    /// The platform may or may not have published the post, and cannot be asked: trying again
    /// could post twice, so a person must look.
    OutcomeUnknown,
}

/// A failed platform call. `code` is stable (`instagram.190.463`, `tiktok.rate_limit_exceeded`);
/// `message` never contains a token (request URLs are stripped from transport errors).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct PlatformError {
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
    /// The platform's id of the request (`fbtrace_id`, `log_id`), for its support.
    pub request_id: Option<String>,
    /// A wait the platform demands before the next try (daily quotas).
    pub retry_after: Option<Duration>,
    /// The platform certainly did not act on the request: it was never sent, or refused with a
    /// 4xx answer. A timeout or a 5xx leaves the outcome open.
    pub certainly_rejected: bool,
    /// The platform answered (with an error). `false`: the answer was lost (timeout, broken
    /// connection), so the call may have been acted on without our knowing.
    pub answered: bool,
}

impl PlatformError {
    pub fn retryable(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    pub fn to_job_error(&self) -> JobError {
        JobError::new(self.code.clone(), self.message.clone())
    }

    /// A transport failure: no answer, so the outcome of the call is unknown and it is transient.
    fn transport(platform: &str, error: reqwest::Error) -> Self {
        let kind = if error.is_timeout() { "timeout" } else { "network" };
        let certainly_rejected = error.is_connect();
        PlatformError {
            class: ErrorClass::Transient,
            code: format!("{platform}.{kind}"),
            message: format!("{platform} could not be reached: {}", error.without_url()),
            request_id: None,
            retry_after: None,
            certainly_rejected,
            answered: false,
        }
    }

    /// Our own error about a post, not the platform's.
    pub fn new(class: ErrorClass, code: impl Into<String>, message: impl Into<String>) -> Self {
        PlatformError {
            class,
            code: code.into(),
            message: message.into(),
            request_id: None,
            retry_after: None,
            certainly_rejected: true,
            answered: true,
        }
    }

    /// An HTTP answer whose body is not the platform's error envelope (a proxy's 502, say).
    fn unexpected_http(platform: &str, status: reqwest::StatusCode, request_id: Option<String>) -> Self {
        let class = if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        PlatformError {
            class,
            code: format!("{platform}.http_{}", status.as_u16()),
            message: format!("{platform} answered HTTP {status} without an error description"),
            request_id,
            retry_after: None,
            // Without the platform's own envelope we cannot tell who answered (a gateway?) nor
            // whether the platform acted before it did: never proof that nothing was posted.
            certainly_rejected: false,
            answered: true,
        }
    }

    fn malformed(platform: &str, what: &str, request_id: Option<String>) -> Self {
        PlatformError {
            class: ErrorClass::Transient,
            code: format!("{platform}.malformed_response"),
            message: format!("{platform} answered with a malformed {what}"),
            request_id,
            retry_after: None,
            certainly_rejected: false,
            answered: true,
        }
    }
}

/// A successful platform answer and the platform's id of the request.
#[derive(Clone, Debug)]
pub struct Reply<T> {
    pub value: T,
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instagram_user_ids_are_numeric() {
        for id in ["17841400000000001", "1784123456789012", "1", &"9".repeat(32)] {
            assert!(valid_platform_user_id(Channel::Instagram, id), "{id}");
        }
        for id in ["", "u", "ig-1", "1784 1", "1784/media", "../me", "-1", "１２", &"9".repeat(33)] {
            assert!(!valid_platform_user_id(Channel::Instagram, id), "{id}");
        }
    }

    #[test]
    fn tiktok_open_ids_are_url_safe() {
        for id in ["-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT", "723f24d7-e717-40f8-a2b6-cb8464cd23b4", "sbx-cbf29ce484222325", "a.b_c", "x"] {
            assert!(valid_platform_user_id(Channel::Tiktok, id), "{id}");
        }
        let too_long = "a".repeat(129);
        for id in ["", ".", "..", "-", "a/b", "a b", "a?b", "a%2Fb", "é", too_long.as_str()] {
            assert!(!valid_platform_user_id(Channel::Tiktok, id), "{id}");
        }
        assert!(valid_platform_user_id(Channel::Tiktok, &"a".repeat(128)));
    }
}
