//! Endpoint names, call counting and fault injection.
//!
//! Every emulated endpoint runs its operation through [`with_faults`], which
//! counts the call and applies the next pending fault for that endpoint, if any.

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use tokio::time::sleep;

use crate::state::Shared;

/// The endpoints that are counted and can be faulted, by their public names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    InstagramMe,
    InstagramUser,
    InstagramMedia,
    InstagramContainerStatus,
    InstagramMediaPublish,
    InstagramPublishingLimit,
    InstagramRefreshToken,
    InstagramCommentCreate,
    InstagramCommentList,
    TiktokCreatorInfo,
    TiktokUserInfo,
    TiktokVideoInit,
    TiktokUpload,
    TiktokContentInit,
    TiktokStatusFetch,
    TiktokVideoList,
    TiktokOauthToken,
    Media,
}

impl Endpoint {
    const ALL: &[Endpoint] = &[
        Self::InstagramMe,
        Self::InstagramUser,
        Self::InstagramMedia,
        Self::InstagramContainerStatus,
        Self::InstagramMediaPublish,
        Self::InstagramPublishingLimit,
        Self::InstagramRefreshToken,
        Self::InstagramCommentCreate,
        Self::InstagramCommentList,
        Self::TiktokCreatorInfo,
        Self::TiktokUserInfo,
        Self::TiktokVideoInit,
        Self::TiktokUpload,
        Self::TiktokContentInit,
        Self::TiktokStatusFetch,
        Self::TiktokVideoList,
        Self::TiktokOauthToken,
        Self::Media,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::InstagramMe => "instagram.me",
            Self::InstagramUser => "instagram.user",
            Self::InstagramMedia => "instagram.media",
            Self::InstagramContainerStatus => "instagram.container_status",
            Self::InstagramMediaPublish => "instagram.media_publish",
            Self::InstagramPublishingLimit => "instagram.content_publishing_limit",
            Self::InstagramRefreshToken => "instagram.refresh_access_token",
            Self::InstagramCommentCreate => "instagram.comment_create",
            Self::InstagramCommentList => "instagram.comment_list",
            Self::TiktokCreatorInfo => "tiktok.creator_info",
            Self::TiktokUserInfo => "tiktok.user_info",
            Self::TiktokVideoInit => "tiktok.video_init",
            Self::TiktokUpload => "tiktok.upload",
            Self::TiktokContentInit => "tiktok.content_init",
            Self::TiktokStatusFetch => "tiktok.status_fetch",
            Self::TiktokVideoList => "tiktok.video_list",
            Self::TiktokOauthToken => "tiktok.oauth_token",
            Self::Media => "media",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|endpoint| endpoint.name() == name)
    }

    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|endpoint| endpoint.name()).collect()
    }
}

/// `POST /_sandbox/faults` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FaultSpec {
    pub endpoint: String,
    #[serde(default = "one")]
    pub times: u32,
    pub status: Option<u16>,
    pub body: Option<Value>,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub after_accept: bool,
}

fn one() -> u32 {
    1
}

/// A pending fault, consumed one call at a time.
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    pub remaining: u32,
    /// `None`: only delay, then answer normally.
    pub status: Option<StatusCode>,
    pub body: Option<Value>,
    pub delay: Duration,
    pub after_accept: bool,
}

impl Fault {
    /// Validates a spec. A fault with neither status nor delay would do
    /// nothing, so a missing status means 500 unless a delay is given (a pure
    /// "slow answer" fault); a body without status is also sent with 500.
    pub fn from_spec(spec: FaultSpec) -> Result<(Endpoint, Fault), String> {
        let endpoint = Endpoint::from_name(&spec.endpoint)
            .ok_or_else(|| format!("unknown endpoint {:?}; known: {}", spec.endpoint, Endpoint::names().join(", ")))?;
        if spec.times == 0 {
            return Err("times must be at least 1".into());
        }
        let status = match spec.status {
            Some(code) => Some(
                StatusCode::from_u16(code).ok().filter(|s| !s.is_informational()).ok_or_else(|| format!("invalid HTTP status {code}"))?,
            ),
            None if spec.delay_ms == 0 || spec.body.is_some() => Some(StatusCode::INTERNAL_SERVER_ERROR),
            None => None,
        };
        let fault = Fault {
            remaining: spec.times,
            status,
            body: spec.body,
            delay: Duration::from_millis(spec.delay_ms),
            after_accept: spec.after_accept,
        };
        Ok((endpoint, fault))
    }
}

/// Counts a call to `endpoint` and takes one use of its next pending fault.
fn begin_call(shared: &Shared, endpoint: Endpoint) -> Option<Fault> {
    let mut state = shared.lock();
    *state.calls.entry(endpoint.name()).or_default() += 1;
    let queue = state.faults.get_mut(&endpoint)?;
    let front = queue.front_mut()?;
    let taken = front.clone();
    front.remaining -= 1;
    if front.remaining == 0 {
        queue.pop_front();
    }
    Some(taken)
}

/// Runs `operation` for one call to `endpoint`, applying a pending fault:
///
/// - no fault: the operation's answer;
/// - fault without `after_accept`: wait `delay`, then answer with the fault
///   (the operation never runs) or, for a delay-only fault, run the operation;
/// - fault with `after_accept`: run the operation (it takes effect), wait
///   `delay`, then answer with the fault instead of the operation's answer
///   (or, for a delay-only fault, with the operation's answer).
///
/// `fault_response` builds the platform's error answer for a status and an
/// optional caller-supplied body.
pub(crate) async fn with_faults<Op>(
    shared: &Shared,
    endpoint: Endpoint,
    fault_response: impl FnOnce(StatusCode, Option<Value>) -> Response,
    operation: Op,
) -> Response
where
    Op: Future<Output = Response>,
{
    let Some(fault) = begin_call(shared, endpoint) else {
        return operation.await;
    };
    tracing::info!(endpoint = endpoint.name(), ?fault.status, ?fault.delay, fault.after_accept, "injecting fault");
    if fault.after_accept {
        let answer = operation.await;
        sleep(fault.delay).await;
        return match fault.status {
            Some(status) => fault_response(status, fault.body),
            None => answer,
        };
    }
    sleep(fault.delay).await;
    match fault.status {
        Some(status) => fault_response(status, fault.body),
        None => operation.await,
    }
}
