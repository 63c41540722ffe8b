//! Preflight: is the job publishable? Checks the account, its token (expiry and the platform's
//! cheap probe) and every media item, and makes no publish call.

use autopost_workflows::{Channel, JobError, MediaItem, PostOptions, PreflightReport, ReadinessCheck, rules};
use chrono::Utc;
use futures::StreamExt;
use reqwest::{Method, StatusCode, header};
use tracing::instrument;
use uuid::Uuid;

use crate::{
    WorkerActivities,
    db::{self, DbError, JobForPublish},
    media_guard::FetchError,
    platforms::{ErrorClass, PlatformError, tiktok::CreatorInfo},
    refresh::Refreshed,
};

/// How much of a TikTok video preflight reads to find its movie header: enough for any file
/// whose header comes first (web-optimised MP4s); for one that puts it after the media data,
/// the check is left to TikTok.
const DURATION_READ_LIMIT: usize = 16 * 1024 * 1024;

/// Media items checked at once: fast for a 35-photo post, gentle on the media host.
const MEDIA_CHECKS_AT_ONCE: usize = 6;

/// A refreshable token is refreshed when it expires within this margin, so the attempt that
/// follows preflight never meets an expired one.
const REFRESH_AHEAD: chrono::Duration = chrono::Duration::minutes(10);

/// An Instagram token with more than this left is renewed by the worker's periodic refresh
/// (which renews tokens in their last 10 days, hourly) before it expires.
const PERIODIC_RENEWAL_HORIZON: chrono::Duration = chrono::Duration::days(1);

struct Check {
    check: ReadinessCheck,
    error: Option<JobError>,
}

impl Check {
    fn ok(name: &str, detail: impl Into<String>) -> Self {
        Check { check: ReadinessCheck { name: name.into(), ok: true, detail: detail.into() }, error: None }
    }

    fn failed(name: &str, code: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Check { check: ReadinessCheck { name: name.into(), ok: false, detail: detail.clone() }, error: Some(JobError::new(code, detail)) }
    }
}

/// The post's TikTok options against the account as `creator_info` describes it now.
fn check_tiktok_options(job: &JobForPublish, creator: Option<&CreatorInfo>) -> Check {
    let Some(options) = job.options.as_ref().and_then(PostOptions::tiktok) else {
        return Check::failed("options", "preflight.options_missing", "the post has no TikTok options: choose its privacy_level");
    };
    // The token check said why creator_info could not be read; the attempt reads it again.
    let Some(creator) = creator else {
        return Check::ok("options", "could not be checked now; the publish attempt checks them against TikTok");
    };
    match creator.refuses(options, job.is_video()) {
        Some(refused) => {
            Check::failed("options", &format!("preflight.{}", refused.code()), refused.message(&creator.privacy_level_options))
        }
        None => Check::ok("options", format!("TikTok offers {} to this account", options.privacy_level.as_str())),
    }
}

impl WorkerActivities {
    #[instrument(skip(self))]
    pub(crate) async fn run_preflight(&self, job_id: Uuid) -> Result<PreflightReport, DbError> {
        let checks = match db::load_job(&self.db, &self.keys, job_id).await {
            // One deadline for all of it, below the activity's own timeout: a slow platform or
            // media host ends in a clear failure instead of a preflight retried forever.
            Ok(mut job) => match tokio::time::timeout(self.settings.preflight_deadline, self.check_job(&mut job)).await {
                Ok(checks) => checks,
                Err(_) => vec![Check::failed(
                    "preflight",
                    "preflight.timeout",
                    format!(
                        "the checks did not finish within {}s: {} or a media host answers too slowly; retry later",
                        self.settings.preflight_deadline.as_secs(),
                        job.channel
                    ),
                )],
            },
            // Absence of data is a failure with a message, never a silent success.
            Err(DbError::JobMissing(_)) => {
                vec![Check::failed("account", "preflight.job_missing", "the job or its account no longer exists")]
            }
            // Unlinked while this job's attempt was at the platform: it publishes nothing more.
            Err(DbError::AccountUnlinked(_)) => {
                vec![Check::failed("account", "preflight.account_unlinked", "the creator unlinked this account; link it again to publish")]
            }
            Err(other) => return Err(other),
        };
        let error = checks.iter().find_map(|c| c.error.clone());
        if let Some(error) = &error {
            metrics::counter!("autopost_preflight_failures_total", "reason" => error.code.clone()).increment(1);
            tracing::info!(%job_id, error_code = %error.code, "preflight failed");
        }
        let report =
            PreflightReport { ok: error.is_none(), checked_at: Utc::now(), checks: checks.into_iter().map(|c| c.check).collect(), error };
        let readiness = serde_json::json!({ "ok": report.ok, "checked_at": report.checked_at, "checks": report.checks });
        db::store_readiness(&self.db, job_id, report.checked_at, &readiness).await?;
        Ok(report)
    }

    /// The token's check; for TikTok, `creator` receives the `creator_info` its probe read.
    async fn check_token(&self, job: &mut JobForPublish, creator: &mut Option<CreatorInfo>) -> Check {
        let now = Utc::now();
        let expires_at = job.account.token_expires_at;
        // TikTok tokens live hours: preflight refreshes one about to expire. Instagram's live 60
        // days and are renewed by the worker's periodic refresh, days before they expire.
        let refreshable = self.refresher.can_refresh(&job.account);
        let refreshed_here = refreshable && job.channel == Channel::Tiktok;
        let renewed_in_time = refreshed_here || (refreshable && expires_at > now + PERIODIC_RENEWAL_HORIZON);
        if refreshed_here && expires_at <= now + REFRESH_AHEAD {
            if let Err(check) = self.refresh_token(job).await {
                return check;
            }
        } else if expires_at <= now {
            return Check::failed(
                "token",
                "preflight.token_expired",
                format!("the access token expired at {expires_at}; reconnect the account"),
            );
        } else if expires_at <= job.publish_at && !renewed_in_time {
            let detail = match &job.account.refresh_failed {
                Some(why) => format!("the access token expires at {expires_at}, before the publish time, and {why}"),
                None => format!("the access token expires at {expires_at}, before the publish time; reconnect the account"),
            };
            return Check::failed("token", "preflight.token_expired", detail);
        }
        let token = &job.account.access_token;
        let probe: Result<(), PlatformError> = match job.channel {
            Channel::Instagram => self.instagram.probe(token).await.map(drop),
            Channel::Tiktok => self.tiktok.creator_info(token).await.map(|info| *creator = Some(info.value)),
        };
        match probe {
            Ok(()) if job.account.token_expires_at <= job.publish_at => {
                Check::ok("token", format!("{} accepted the token; it will be refreshed before the publish time", job.channel))
            }
            Ok(()) => Check::ok("token", format!("{} accepted the token", job.channel)),
            Err(e) if e.class == ErrorClass::Token => Check::failed(
                "token",
                "preflight.token_rejected",
                format!("{} rejected the token ({}): {}", job.channel, e.code, e.message),
            ),
            Err(e) if e.class == ErrorClass::Permanent => Check::failed(
                "token",
                "preflight.account_unusable",
                format!("{} refuses posts from this account ({}): {}", job.channel, e.code, e.message),
            ),
            // The platform could not answer now: the attempt itself will meet the same outage
            // and go through the retry schedule, which is the right place for it.
            Err(e) => Check::ok("token", format!("could not be verified now ({}); the publish attempt will retry", e.code)),
        }
    }

    /// Refreshes the account's TikTok token, which is about to expire, and uses the new one.
    async fn refresh_token(&self, job: &mut JobForPublish) -> Result<(), Check> {
        let expires_at = job.account.token_expires_at;
        let when = if expires_at <= Utc::now() { format!("expired at {expires_at}") } else { format!("expires at {expires_at}") };
        match self.refresher.refresh(&job.account).await {
            // Superseded: another refresh stored its tokens first, and those are the live ones.
            Ok(Refreshed::Stored(account) | Refreshed::Superseded(account)) => {
                job.account = account;
                Ok(())
            }
            Ok(Refreshed::NotRefreshable) => Ok(()),
            Ok(Refreshed::Refused { detail }) => {
                Err(Check::failed("token", "preflight.token_expired", format!("the access token {when} and {detail}")))
            }
            Ok(Refreshed::Unavailable(e)) => Err(Check::failed(
                "token",
                "preflight.token_refresh_failed",
                format!("the access token {when} and could not be refreshed now ({}): {}", e.code, e.message),
            )),
            Err(e) => Err(Check::failed(
                "token",
                "preflight.token_refresh_failed",
                format!("the access token {when} and could not be refreshed: {e}"),
            )),
        }
    }

    async fn check_job(&self, job: &mut JobForPublish) -> Vec<Check> {
        let mut checks = vec![Check::ok("account", format!("{} account {} is linked", job.channel, job.account.platform_user_id))];
        let mut creator = None;
        checks.push(self.check_token(job, &mut creator).await);
        if job.channel == Channel::Tiktok {
            checks.push(check_tiktok_options(job, creator.as_ref()));
        }
        let media = self.check_media(job).await;
        let media_ok = media.error.is_none();
        checks.push(media);
        if media_ok
            && let (Some(max), [video]) = (creator.as_ref().and_then(|c| c.max_video_post_duration_sec), job.media.as_slice())
            && video.kind == autopost_workflows::MediaKind::Video
        {
            checks.push(self.check_video_duration(&video.url, max).await);
        }
        checks
    }

    /// The video's length, by its own MP4 header (never the request's word), against the longest
    /// video the creator may post (`creator_info.max_video_post_duration_sec`).
    async fn check_video_duration(&self, url: &str, max_secs: u64) -> Check {
        let unread = |why: String| Check::ok("duration", format!("not read before publishing ({why}); TikTok checks it"));
        let mut response = match self.media.fetch(Method::GET, url).await {
            Ok(response) if response.status().is_success() => response,
            Ok(response) => return unread(format!("HTTP {}", response.status())),
            Err(FetchError::Forbidden(detail) | FetchError::Unreachable(detail)) => return unread(detail),
        };
        let mut head = Vec::new();
        while head.len() < DURATION_READ_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return unread(e.without_url().to_string()),
            }
        }
        match crate::mp4::duration(&head) {
            Ok(length) if length.as_secs_f64() > max_secs as f64 => Check::failed(
                "duration",
                "preflight.video_too_long",
                format!("the video is {:.1} s long; TikTok lets this creator post videos of up to {max_secs} s", length.as_secs_f64()),
            ),
            Ok(length) => Check::ok("duration", format!("{:.1} s, within the creator's {max_secs} s", length.as_secs_f64())),
            Err(e) => unread(e.to_string()),
        }
    }

    /// Every item, a few at a time (a photo post has up to 35); the first failing item in
    /// posting order is the one reported.
    async fn check_media(&self, job: &JobForPublish) -> Check {
        if job.media.is_empty() {
            return Check::failed("media", "preflight.media_missing", "the post has no media");
        }
        // The futures are made up front (they do nothing until polled): a closure inside the
        // stream would trip the compiler's lifetime inference for `Send` activity futures.
        let checks: Vec<_> = job.media.iter().map(|item| self.check_media_item(job.channel, item)).collect();
        let results: Vec<_> = futures::stream::iter(checks).buffered(MEDIA_CHECKS_AT_ONCE).collect().await;
        for (index, (item, result)) in job.media.iter().zip(results).enumerate() {
            if let Err((code, detail)) = result {
                return Check::failed("media", code, format!("media[{index}] {}: {detail}", item.url));
            }
        }
        Check::ok("media", format!("{} item(s) reachable and of a supported type", job.media.len()))
    }

    async fn check_media_item(&self, channel: Channel, item: &MediaItem) -> Result<(), (&'static str, String)> {
        let missing = |detail: String| ("preflight.media_missing", detail);
        let failed = |error: FetchError| match error {
            FetchError::Forbidden(detail) => ("preflight.media_forbidden_host", detail),
            FetchError::Unreachable(detail) => missing(detail),
        };
        let mut response = self.media.fetch(Method::HEAD, &item.url).await.map_err(failed)?;
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            response = self.media.fetch(Method::GET, &item.url).await.map_err(failed)?;
        }
        if !response.status().is_success() {
            return Err(missing(format!("answered HTTP {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let accepted = rules::accepted_files(channel, item.kind);
        if !accepted.content_types.contains(&content_type.as_str()) {
            return Err((
                "preflight.media_unsupported",
                format!(
                    "content type `{content_type}` is not one of {} for a {channel} {:?}",
                    accepted.content_types.join(", "),
                    item.kind
                ),
            ));
        }
        let length = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if let Some(length) = length.filter(|l| *l > accepted.max_bytes) {
            return Err(("preflight.media_unsupported", format!("{length} bytes is over the {channel} limit of {}", accepted.max_bytes)));
        }
        Ok(())
    }
}
