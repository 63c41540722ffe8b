//! `GET /v1/accounts/{id}/capabilities`: what the account can publish now, read live from its
//! platform (TikTok's `creator_info`, Instagram's content publishing quota), for the web UI's post
//! form. Each answer is reused for [`CACHE_TTL`] per account and stored token, so a form rendered
//! again and again does not spend TikTok's 20 `creator_info` calls a minute.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use autopost_activities::{
    platforms::{ErrorClass, PlatformError},
    vault::{Sealed, TokenField},
};
use autopost_workflows::{Channel, InstagramPostType, TiktokPrivacyLevel};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, Utc};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use secrecy::SecretString;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    ApiState, Platforms,
    auth::Creator,
    error::{ApiError, ErrorBody, responses},
    extract::ApiPath,
};

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/accounts/{id}/capabilities", get(get_capabilities))
}

/// How long a platform's answer is reused: TikTok allows 20 `creator_info` calls a minute per
/// token, and the worker's preflight spends some of them too.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

/// What an account can publish, as its platform reports it now.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AccountCapabilities {
    pub account_id: Uuid,
    pub channel: Channel,
    /// When the platform answered; the same answer is reused for up to 30 seconds.
    pub fetched_at: DateTime<Utc>,
    pub capabilities: ChannelCapabilities,
}

/// Tagged by `channel`, the account's.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum ChannelCapabilities {
    Instagram(InstagramCapabilities),
    Tiktok(TiktokCapabilities),
}

/// A TikTok account's `creator_info`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TiktokCapabilities {
    pub post_types: Vec<TiktokPostType>,
    /// The levels a post's `options.privacy_level` may take, in TikTok's order. None is a
    /// default: the creator chooses.
    pub privacy_level_options: Vec<TiktokPrivacyLevel>,
    /// The creator turned comments off in the app: a post must set `disable_comment`.
    pub comment_disabled: bool,
    /// Duets are off: a video must set `disable_duet`.
    pub duet_disabled: bool,
    /// Stitches are off: a video must set `disable_stitch`.
    pub stitch_disabled: bool,
    /// Longest video this creator may post, in seconds; null when TikTok does not say.
    #[schema(required)]
    pub max_video_post_duration_sec: Option<u64>,
    /// The creator's TikTok handle; null when TikTok does not say.
    #[schema(required)]
    pub creator_username: Option<String>,
}

/// What a TikTok post can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TiktokPostType {
    Video,
    Photo,
}

/// An Instagram professional account's publishing quota.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InstagramCapabilities {
    /// What Instagram's API lets a professional account publish.
    pub post_types: Vec<InstagramPostType>,
    pub content_publishing_limit: PublishingQuota,
}

/// Posts published through the API in Instagram's rolling window (`content_publishing_limit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PublishingQuota {
    pub used: u32,
    /// Instagram's `quota_total`: at `used == allowed` it refuses to publish until the window
    /// moves on.
    pub allowed: u32,
    pub window_seconds: u64,
}

/// What the account can publish, read from its platform (briefly cached). Tokens are never
/// returned.
#[utoipa::path(get, path = "/v1/accounts/{id}/capabilities", tag = "accounts", params(("id" = Uuid, Path, description = "The account's id")), responses(
    (status = 200, description = "The account's capabilities. The same answer is reused for up to 30 seconds (`Cache-Control: private, max-age` says how long is left); linking the account again starts afresh", body = AccountCapabilities,
        headers(("Cache-Control" = String, description = "`private, max-age=N`: seconds until the answer is read from the platform again"))),
    (status = 400, response = responses::InvalidId),
    (status = 404, description = "The caller has no linked account with this id (`not_found`)", body = ErrorBody),
    (status = 422, description = "The stored token has expired or the platform refused it (`account_token_invalid`), or the platform refuses this account's requests (`account_unusable`): the creator must reconnect or check the account", body = ErrorBody),
    (status = 503, description = "The platform could not be asked now (`platform_unavailable`)", body = ErrorBody,
        headers(("Retry-After" = u64, description = "Seconds to wait: the platform's own wait when it demands one"))),
    (status = 500, response = responses::Internal),
))]
#[tracing::instrument(skip_all, fields(creator_id = %creator.id(), account_id = %id))]
async fn get_capabilities(State(state): State<ApiState>, creator: Creator, ApiPath(id): ApiPath<Uuid>) -> Result<Response, Refusal> {
    let row = sqlx::query!(
        r#"SELECT channel, platform_user_id, token_expires_at, access_token_ciphertext, token_key_id
           FROM social_accounts WHERE id = $1 AND creator_id = $2 AND unlinked_at IS NULL"#,
        id,
        creator.id()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound { what: "account" })?;
    let channel: Channel = row.channel.parse().map_err(|e| anyhow::anyhow!("account {id}: {e}"))?;
    if row.token_expires_at <= Utc::now() {
        return Err(
            token_invalid(format!("the account's {channel} token expired at {}; reconnect the account", row.token_expires_at)).into()
        );
    }
    let (Some(key_id), Some(ciphertext)) = (row.token_key_id, row.access_token_ciphertext) else {
        return Err(ApiError::Internal(anyhow::anyhow!("linked account {id} has no stored access token")).into());
    };
    let sealed = Sealed { key_id, ciphertext };
    let token = state.token_keys.open(id, TokenField::Access, &sealed).map_err(|e| anyhow::anyhow!("account {id}: {e}"))?;
    // The ciphertext is new at every link and refresh (a fresh nonce each time): an answer read
    // with an older token is never served.
    let key = CacheKey { account_id: id, key_id: sealed.key_id, ciphertext: sealed.ciphertext };
    let platforms = state.platforms.clone();
    let user_id = row.platform_user_id;
    let fetched = state.capabilities.get_or_fetch(key, move || fetch(platforms, channel, user_id, token).boxed()).await;
    let fetched = fetched.map_err(|e| refusal(channel, &e))?;
    let body = AccountCapabilities { account_id: id, channel, fetched_at: fetched.at, capabilities: fetched.capabilities };
    let max_age = state.capabilities.ttl.saturating_sub(fetched.done.elapsed()).as_secs();
    let cache_control = HeaderValue::from_str(&format!("private, max-age={max_age}")).expect("an ASCII header value");
    Ok(([(header::CACHE_CONTROL, cache_control)], Json(body)).into_response())
}

/// Asks the platform; the token stays in this call and the platform client.
async fn fetch(
    platforms: std::sync::Arc<Platforms>,
    channel: Channel,
    platform_user_id: String,
    token: SecretString,
) -> Result<ChannelCapabilities, PlatformError> {
    match channel {
        Channel::Tiktok => {
            let info = platforms.tiktok.creator_info(&token).await?.value;
            // A level this API does not know could not be chosen for a post; it is left out.
            let privacy_level_options = info
                .privacy_level_options
                .iter()
                .filter_map(|offered| {
                    let level = TiktokPrivacyLevel::ALL.into_iter().find(|level| level.as_str() == offered);
                    if level.is_none() {
                        tracing::warn!(level = %offered, "TikTok offers a privacy level this API does not know; left out");
                    }
                    level
                })
                .collect();
            Ok(ChannelCapabilities::Tiktok(TiktokCapabilities {
                post_types: vec![TiktokPostType::Video, TiktokPostType::Photo],
                privacy_level_options,
                comment_disabled: info.comment_disabled,
                duet_disabled: info.duet_disabled,
                stitch_disabled: info.stitch_disabled,
                max_video_post_duration_sec: info.max_video_post_duration_sec,
                creator_username: info.creator_username,
            }))
        }
        Channel::Instagram => {
            let limit = platforms.instagram.publishing_limit(&platform_user_id, &token).await?.value;
            Ok(ChannelCapabilities::Instagram(InstagramCapabilities {
                post_types: vec![InstagramPostType::Feed, InstagramPostType::Reel, InstagramPostType::Story, InstagramPostType::Carousel],
                content_publishing_limit: PublishingQuota {
                    used: limit.quota_usage,
                    allowed: limit.quota_total,
                    window_seconds: limit.quota_duration_secs,
                },
            }))
        }
    }
}

fn token_invalid(message: String) -> ApiError {
    ApiError::Invalid { status: axum::http::StatusCode::UNPROCESSABLE_ENTITY, code: "account_token_invalid", field: None, message }
}

/// The platform's failure as the creator should read it: the stable code, never the platform's
/// message (it may echo what was sent).
fn refusal(channel: Channel, e: &PlatformError) -> Refusal {
    match e.class {
        ErrorClass::Token => {
            tracing::info!(code = %e.code, "platform refused the account's token");
            token_invalid(format!("{channel} refused the account's token ({}); reconnect the account", e.code)).into()
        }
        ErrorClass::Permanent => {
            tracing::info!(code = %e.code, "platform refuses the account");
            ApiError::Invalid {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "account_unusable",
                field: None,
                message: format!("{channel} refuses this account's requests ({}); check the account on {channel}", e.code),
            }
            .into()
        }
        ErrorClass::Transient | ErrorClass::OutcomeUnknown => {
            tracing::warn!(code = %e.code, "platform could not be asked for the account's capabilities");
            Refusal {
                error: ApiError::Busy {
                    code: "platform_unavailable",
                    message: "the platform could not be asked about this account now; try again",
                },
                retry_after: e.retry_after,
            }
        }
    }
}

/// An [`ApiError`], with the platform's `Retry-After` when it demands a longer wait than the
/// default.
struct Refusal {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl<E: Into<ApiError>> From<E> for Refusal {
    fn from(error: E) -> Self {
        Refusal { error: error.into(), retry_after: None }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        if let Some(wait) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
        }
        response
    }
}

/// An account as of one stored token.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub account_id: Uuid,
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

/// A platform's answer and when it came.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub at: DateTime<Utc>,
    done: Instant,
    pub capabilities: ChannelCapabilities,
}

type Flight = Shared<BoxFuture<'static, Result<Fetched, PlatformError>>>;

/// The answers of this process, one per account. A call in flight is shared: concurrent
/// requests for one account make one platform call and all get its outcome, failures included.
/// Failures are not kept: the next request asks again.
pub struct CapabilityCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, Flight>>,
}

impl Default for CapabilityCache {
    fn default() -> Self {
        Self::new(CACHE_TTL)
    }
}

impl CapabilityCache {
    pub fn new(ttl: Duration) -> Self {
        CapabilityCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// The answer for `key`: a fresh one kept, the call in flight, or a new call of `fetch`.
    pub async fn get_or_fetch(
        &self,
        key: CacheKey,
        fetch: impl FnOnce() -> BoxFuture<'static, Result<ChannelCapabilities, PlatformError>>,
    ) -> Result<Fetched, PlatformError> {
        let flight = {
            let mut entries = self.entries.lock().expect("the capability cache's lock");
            match entries.get(&key).filter(|flight| self.usable(flight)) {
                Some(flight) => flight.clone(),
                None => {
                    // One entry per account: another token's and stale answers go.
                    entries.retain(|k, flight| k.account_id != key.account_id && self.usable(flight));
                    let call = fetch();
                    let flight =
                        async move { call.await.map(|capabilities| Fetched { at: Utc::now(), done: Instant::now(), capabilities }) }
                            .boxed()
                            .shared();
                    entries.insert(key, flight.clone());
                    flight
                }
            }
        };
        flight.await
    }

    /// In flight, or answered successfully within the TTL.
    fn usable(&self, flight: &Flight) -> bool {
        match flight.peek() {
            None => true,
            Some(Ok(fetched)) => fetched.done.elapsed() < self.ttl,
            Some(Err(_)) => false,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    fn key(account: u128, ciphertext: &[u8]) -> CacheKey {
        CacheKey { account_id: Uuid::from_u128(account), key_id: "k1".into(), ciphertext: ciphertext.to_vec() }
    }

    fn quota(used: u32) -> ChannelCapabilities {
        ChannelCapabilities::Instagram(InstagramCapabilities {
            post_types: vec![InstagramPostType::Feed],
            content_publishing_limit: PublishingQuota { used, allowed: 50, window_seconds: 86_400 },
        })
    }

    /// A platform that answers `quota(n)` on its n-th call (from 1), after `delay`, and counts.
    fn platform(
        calls: &Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<ChannelCapabilities, PlatformError>> {
        let calls = calls.clone();
        move || {
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(delay).await;
                Ok(quota(n as u32))
            }
            .boxed()
        }
    }

    fn failing(calls: &Arc<AtomicUsize>) -> impl FnOnce() -> BoxFuture<'static, Result<ChannelCapabilities, PlatformError>> {
        let calls = calls.clone();
        move || {
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(PlatformError::new(ErrorClass::Transient, "tiktok.internal_error", "down"))
            }
            .boxed()
        }
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_account_make_one_call() {
        let cache = CapabilityCache::new(Duration::from_secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let requests = (0..20).map(|_| cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::from_millis(100))));
        let answers = futures::future::join_all(requests).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for answer in answers {
            assert_eq!(answer.unwrap().capabilities, quota(1));
        }
        // Kept: a later request within the TTL does not call either.
        assert_eq!(cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::ZERO)).await.unwrap().capabilities, quota(1));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_expires_after_the_ttl() {
        let cache = CapabilityCache::new(Duration::from_millis(200));
        let calls = Arc::new(AtomicUsize::new(0));
        let first = cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::ZERO)).await.unwrap();
        assert_eq!(cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::ZERO)).await.unwrap().at, first.at);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let second = cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::ZERO)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), second.capabilities), (2, quota(2)));
    }

    #[tokio::test]
    async fn another_token_of_the_account_is_asked_afresh_and_replaces_the_old_answer() {
        let cache = CapabilityCache::new(Duration::from_secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        cache.get_or_fetch(key(1, b"old"), platform(&calls, Duration::ZERO)).await.unwrap();
        cache.get_or_fetch(key(2, b"other account"), platform(&calls, Duration::ZERO)).await.unwrap();
        let relinked = cache.get_or_fetch(key(1, b"new"), platform(&calls, Duration::ZERO)).await.unwrap();
        assert_eq!(relinked.capabilities, quota(3));
        assert_eq!(cache.len(), 2, "one entry per account");
        // The other account's answer is still kept.
        assert_eq!(cache.get_or_fetch(key(2, b"other account"), platform(&calls, Duration::ZERO)).await.unwrap().capabilities, quota(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failure_is_shared_by_the_requests_waiting_for_it_and_then_forgotten() {
        let cache = CapabilityCache::new(Duration::from_secs(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let requests = (0..5).map(|_| cache.get_or_fetch(key(1, b"a"), failing(&calls)));
        let answers = futures::future::join_all(requests).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|answer| answer.as_ref().is_err_and(|e| e.code == "tiktok.internal_error")));
        let recovered = cache.get_or_fetch(key(1, b"a"), platform(&calls, Duration::ZERO)).await.unwrap();
        assert_eq!((calls.load(Ordering::SeqCst), recovered.capabilities), (2, quota(2)));
    }

    #[test]
    fn platform_failures_map_to_stable_codes_without_the_platforms_message() {
        let mut token = PlatformError::new(ErrorClass::Token, "tiktok.access_token_invalid", "secret details from the platform");
        token.retry_after = Some(Duration::from_secs(5));
        let permanent = PlatformError::new(ErrorClass::Permanent, "instagram.10", "secret details from the platform");
        let mut limited = PlatformError::new(ErrorClass::Transient, "instagram.9.2207042", "secret details from the platform");
        limited.retry_after = Some(Duration::from_secs(3600));
        let down = PlatformError::new(ErrorClass::Transient, "tiktok.internal_error", "secret details from the platform");
        let cases = [
            (token, 422, "account_token_invalid", None),
            (permanent, 422, "account_unusable", None),
            (limited, 503, "platform_unavailable", Some("3600")),
            (down, 503, "platform_unavailable", Some("1")),
        ];
        for (error, status, code, retry_after) in cases {
            let response = refusal(Channel::Tiktok, &error).into_response();
            assert_eq!(response.status().as_u16(), status, "{}", error.code);
            assert_eq!(response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap()), retry_after, "{}", error.code);
            let Refusal { error: api_error, .. } = refusal(Channel::Tiktok, &error);
            let message = api_error.to_string();
            assert!(!message.contains("secret"), "{message}");
            let body = futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX)).unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(!body.to_string().contains("secret"), "{body}");
        }
    }
}
