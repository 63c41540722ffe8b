//! The periodic token refresh: renews platform tokens before they expire, so a post scheduled
//! months ahead still publishes. Instagram long-lived tokens (60 days) are renewed in their
//! last [`INSTAGRAM_AHEAD`]; TikTok access tokens (24 hours) when they would expire before the
//! next pass. A token the platform refuses to renew marks its account `refresh_failed`, and the
//! readiness of its open jobs says so at once.
//!
//! One pass runs at a time across all workers (a Postgres advisory lock, as the reconciler's).
//! Every store is a compare-and-swap, so a preflight refreshing the same account meanwhile
//! never loses its tokens to this one's, nor the reverse.

use std::{sync::Arc, time::Duration};

use autopost_activities::{
    db,
    refresh::{Refreshed, TokenRefresher},
    vault::TokenKeys,
};
use chrono::Utc;
use sqlx::PgPool;
use uuid::Uuid;

use crate::WorkerConfig;

/// The advisory lock key that makes one refresh pass run at a time ("autotokn" in ASCII).
const TOKEN_REFRESH_LOCK: i64 = 0x6175_746f_746f_6b6e;
/// Accounts read per page.
const PAGE: i64 = 100;
/// Instagram long-lived tokens are renewed in their last 10 days: many chances before expiry.
pub const INSTAGRAM_AHEAD: chrono::Duration = chrono::Duration::days(10);
/// Instagram refuses to renew a long-lived token less than 24 hours old.
const INSTAGRAM_MIN_AGE: chrono::Duration = chrono::Duration::hours(24);
/// TikTok tokens are renewed when they expire before the next pass plus this margin.
const TIKTOK_MARGIN: chrono::Duration = chrono::Duration::minutes(15);

#[derive(Clone, Debug)]
pub struct TokenRefreshSettings {
    pub interval: Duration,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// `false` when another worker's pass held the lock, so this one did nothing.
    pub ran: bool,
    pub refreshed: Vec<Uuid>,
    /// The platform refused: these accounts are now marked `refresh_failed`.
    pub refused: Vec<Uuid>,
    /// The platform could not answer, or the account could not be read: tried again next pass.
    pub failed: Vec<Uuid>,
}

/// The refresher a worker uses, with the same platforms, app credentials and timeouts as its
/// activities.
pub fn refresher(config: &WorkerConfig, db: PgPool, keys: Arc<TokenKeys>) -> anyhow::Result<TokenRefresher> {
    let http = reqwest::Client::builder()
        .timeout(config.worker.platform_request_timeout)
        .user_agent(concat!("autopost/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok(TokenRefresher::new(
        db,
        keys,
        http,
        &config.platforms.instagram_api_base,
        &config.platforms.tiktok_api_base,
        config.worker.tiktok_app(),
    ))
}

/// Runs a pass now and then every `interval`, until the process ends.
pub async fn run(db: PgPool, refresher: TokenRefresher, settings: TokenRefreshSettings) {
    loop {
        match refresh_once(&db, &refresher, &settings).await {
            Ok(report) if report.refused.is_empty() && report.failed.is_empty() => {
                tracing::debug!(ran = report.ran, refreshed = report.refreshed.len(), "token refresh pass");
            }
            Ok(report) => tracing::warn!(
                refreshed = report.refreshed.len(),
                refused = ?report.refused,
                failed = ?report.failed,
                "token refresh pass: some tokens were not renewed"
            ),
            Err(error) => tracing::error!(error = %format!("{error:#}"), "token refresh pass failed"),
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// One pass, if no other worker is running one.
#[tracing::instrument(skip_all)]
pub async fn refresh_once(db: &PgPool, refresher: &TokenRefresher, settings: &TokenRefreshSettings) -> anyhow::Result<RefreshReport> {
    Ok(crate::exclusively(db, TOKEN_REFRESH_LOCK, pass(db, refresher, settings)).await?.unwrap_or_default())
}

async fn pass(db: &PgPool, refresher: &TokenRefresher, settings: &TokenRefreshSettings) -> anyhow::Result<RefreshReport> {
    let mut report = RefreshReport { ran: true, ..Default::default() };
    let now = Utc::now();
    let instagram_before = now + INSTAGRAM_AHEAD;
    let interval = chrono::Duration::from_std(settings.interval).unwrap_or(chrono::Duration::hours(1));
    let tiktok_before = refresher.refreshes_tiktok().then(|| now + interval + TIKTOK_MARGIN);
    let mut after = None;
    loop {
        let page = db::accounts_due_for_refresh(db, instagram_before, now - INSTAGRAM_MIN_AGE, tiktok_before, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(*last);
        for account_id in page {
            // One unreadable account (a key missing from AUTOPOST_TOKEN_KEYS, say) must not stop
            // the others' renewals.
            let account = match db::load_account(db, refresher.keys(), account_id).await {
                Ok(Some(account)) => account,
                Ok(None) | Err(db::DbError::AccountUnlinked(_)) => continue,
                Err(error) => {
                    tracing::error!(%account_id, error = %error, "token refresh: the account cannot be read");
                    report.failed.push(account_id);
                    continue;
                }
            };
            match refresher.refresh(&account).await {
                Ok(Refreshed::Stored(_) | Refreshed::Superseded(_)) => report.refreshed.push(account_id),
                Ok(Refreshed::Refused { .. }) => report.refused.push(account_id),
                Ok(Refreshed::Unavailable(_)) | Err(_) => report.failed.push(account_id),
                Ok(Refreshed::NotRefreshable) => {}
            }
        }
    }
    Ok(report)
}
