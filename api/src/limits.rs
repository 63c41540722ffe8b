//! What keeps one client from taking the API down: a timeout and a concurrency limit on every
//! request, and a per-creator rate limit on writes (creates, links and commands).

use std::{num::NonZeroU32, time::Duration};

use axum::{BoxError, http::Method};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::{auth::Creator, error::ApiError};

/// Writes a creator may make per minute; they may come in one burst.
pub struct CreatorRateLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl CreatorRateLimit {
    /// `0` turns the limit off (the bench creates thousands of jobs for one creator).
    pub fn per_minute(writes: u32) -> Self {
        CreatorRateLimit { limiter: NonZeroU32::new(writes).map(|n| governor::RateLimiter::keyed(Quota::per_minute(n))) }
    }

    /// `429` with the wait when `creator` is over its quota. Reads are never limited.
    pub fn check(&self, creator: &Creator, method: &Method) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        if *method == Method::GET || *method == Method::HEAD {
            return Ok(());
        }
        // The limiter keeps one small entry per creator; forget the idle ones now and then.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&creator.0).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            metrics::counter!("autopost_rate_limited_total").increment(1);
            ApiError::RateLimited { retry_after: wait.max(Duration::from_secs(1)) }
        })
    }
}

/// The answer when the timeout or the concurrency limit of [`crate::router`] stops a request.
pub async fn refused(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        ApiError::Busy { code: "timeout", message: "the request took too long and was stopped; try again" }
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        ApiError::Busy { code: "overloaded", message: "the API is at its request limit; try again in a moment" }
    } else {
        ApiError::Internal(anyhow::anyhow!("request failed: {error}"))
    }
}
