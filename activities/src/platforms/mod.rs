//! Adapters for the platforms' real publishing APIs: Instagram's content publishing through the
//! Graph API, and TikTok's Content Posting API. Only the base URL differs between the real hosts
//! and the sandbox emulator (`sandbox/`), which speaks the same paths, payloads and errors.

pub mod instagram;
pub mod tiktok;

use std::time::Duration;

pub use autopost_workflows::{JobError, MediaItem, MediaKind};

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
