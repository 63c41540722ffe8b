//! The worker's activities: everything of a publish that does IO. Workflows decide; these act.

mod armed;
mod comments;
pub mod db;
mod media_guard;
pub mod mp4;
pub mod platforms;
mod preflight;
mod publish;
pub mod refresh;
pub mod vault;

use std::{sync::Arc, time::Duration};

use autopost_workflows::{
    ArmOutcome, ArmRequest, AttemptOutcome, Claimant, FenceClaim, FirstCommentRequest, JobTransition, PreflightReport, PreflightRequest,
    PublishRequest, activities as contract,
};
use sqlx::PgPool;
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use platforms::{instagram::InstagramClient, tiktok::TiktokClient};

/// Where the platforms are and how patiently to wait for them.
#[derive(Clone, Debug)]
pub struct PlatformSettings {
    pub instagram_api_base: String,
    pub tiktok_api_base: String,
    /// Between two status reads of a container or publish that is still processing.
    pub poll_interval: Duration,
    /// How long one attempt waits for the platform to finish processing before it gives up.
    pub processing_timeout: Duration,
    /// Per HTTP request to a platform or a media host.
    pub request_timeout: Duration,
    /// How long an attempt waits for a platform to show whether a publish call whose answer was
    /// lost went through, before it reports the outcome unknown.
    pub outcome_wait: Duration,
    /// How long one preflight may take in all (token probe, refresh, every media item).
    pub preflight_deadline: Duration,
    /// Needed to refresh TikTok tokens; without it an expired TikTok token needs a reconnect.
    pub tiktok_app: Option<platforms::tiktok::AppCredentials>,
    /// How long an idle HTTPS connection to a platform is kept for the next call: longer than
    /// the arming lead plus its spread, so the publishing call needs no new handshake.
    pub connection_idle_timeout: Duration,
    /// Origins (scheme, host, port) whose plain-http media is fetched without the address
    /// guard: the sandbox's, and only while a platform base points at it.
    pub http_media_origins: Vec<url::Origin>,
    /// How long a job waits when its Instagram publishing quota is used up.
    pub instagram_quota_recheck: Duration,
    /// Domains verified for this app with TikTok (lower case; each also covers its
    /// subdomains): TikTok pulls videos hosted there (`PULL_FROM_URL`). Any other video the
    /// worker fetches and uploads itself (`FILE_UPLOAD`), since TikTok refuses to pull from an
    /// unverified domain. Empty: every video is uploaded.
    pub tiktok_verified_domains: Vec<String>,
}

/// The IO clients the activities share; registered once per worker.
pub struct WorkerActivities {
    db: PgPool,
    /// Media URLs are the creators' input: fetched only through the SSRF guard.
    media: media_guard::MediaFetcher,
    instagram: InstagramClient,
    tiktok: TiktokClient,
    settings: PlatformSettings,
    /// Opens the stored tokens where a platform call needs them.
    keys: Arc<vault::TokenKeys>,
    refresher: refresh::TokenRefresher,
}

impl WorkerActivities {
    pub fn new(db: PgPool, settings: PlatformSettings, keys: Arc<vault::TokenKeys>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            // An armed job opens its platform connection at arm time and publishes on it at the
            // instant: idle connections must outlive the arming lead and spread (reqwest's
            // default drops them after 90 s).
            .pool_idle_timeout(settings.connection_idle_timeout)
            .user_agent(concat!("autopost/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let refresher = refresh::TokenRefresher::new(
            db.clone(),
            keys.clone(),
            http.clone(),
            &settings.instagram_api_base,
            &settings.tiktok_api_base,
            settings.tiktok_app.clone(),
        );
        Ok(Self {
            instagram: InstagramClient::new(http.clone(), &settings.instagram_api_base),
            tiktok: TiktokClient::new(http.clone(), &settings.tiktok_api_base),
            media: media_guard::MediaFetcher::new(settings.http_media_origins.clone(), settings.request_timeout)?,
            db,
            settings,
            keys,
            refresher,
        })
    }
}

#[activities]
impl WorkerActivities {
    #[activity(definition = contract::Preflight)]
    pub async fn preflight(self: Arc<Self>, ctx: ActivityContext, request: PreflightRequest) -> Result<PreflightReport, ActivityError> {
        let _heartbeats = Heartbeats::start(&ctx);
        self.run_preflight(request.job_id).await.map_err(retry_later)
    }

    #[activity(definition = contract::Publish)]
    pub async fn publish(self: Arc<Self>, ctx: ActivityContext, request: PublishRequest) -> Result<AttemptOutcome, ActivityError> {
        // Heartbeats for as long as the attempt runs, so no slow platform call gets a live
        // execution timed out (and a second one started beside it).
        let _heartbeats = Heartbeats::start(&ctx);
        let outcome = tokio::select! {
            outcome = self.run_attempt(&ctx, request) => outcome,
            // Temporal has given this execution up (timed out, or the worker is stopping): stop
            // here, with no further platform call. The next execution takes the fence and
            // resolves whatever this one left at the platform.
            () = ctx.cancelled() => return Err(ActivityError::cancelled()),
        };
        match outcome {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(ActivityError::application(ApplicationFailure::non_retryable(anyhow::anyhow!(
                "superseded: a newer execution of this attempt holds the job's fence"
            )))),
            // The job row is gone: retrying cannot help, and publishing without it must not happen.
            Err(e @ (db::DbError::JobMissing(_) | db::DbError::Corrupt(..) | db::DbError::AccountUnlinked(_))) => {
                Err(ActivityError::application(ApplicationFailure::non_retryable(e)))
            }
            Err(other) => Err(retry_later(other)),
        }
    }

    #[activity(definition = contract::Arm)]
    pub async fn arm(self: Arc<Self>, ctx: ActivityContext, request: ArmRequest) -> Result<ArmOutcome, ActivityError> {
        let _heartbeats = Heartbeats::start(&ctx);
        let outcome = tokio::select! {
            outcome = self.run_armed(&ctx, request) => outcome,
            // A command won the fence (the workflow cancels this activity to free its slot), the
            // execution timed out, or the worker is stopping: stop here. Before the fire nothing
            // was published; after it, the next execution resolves what this one left.
            () = ctx.cancelled() => return Err(ActivityError::cancelled()),
        };
        outcome.map_err(|e| match e {
            armed::ArmError::Superseded => ActivityError::application(ApplicationFailure::non_retryable(anyhow::anyhow!(
                "superseded: a newer execution of this arming holds the job's fence"
            ))),
            armed::ArmError::Db(e @ (db::DbError::JobMissing(_) | db::DbError::Corrupt(..) | db::DbError::AccountUnlinked(_))) => {
                ActivityError::application(ApplicationFailure::non_retryable(e))
            }
            armed::ArmError::Db(other) => retry_later(other),
        })
    }

    #[activity(definition = contract::ClaimFence)]
    pub async fn claim_fence(self: Arc<Self>, _ctx: ActivityContext, claim: FenceClaim) -> Result<Claimant, ActivityError> {
        let holder = db::claim_fence(&self.db, &claim).await.map_err(retry_later)?;
        tracing::info!(job_id = %claim.job_id, version = claim.version, claimant = claim.claimant.as_str(), holder = holder.as_str(), "fence claimed");
        Ok(holder)
    }

    #[activity(definition = contract::FirstComment)]
    pub async fn first_comment(self: Arc<Self>, ctx: ActivityContext, request: FirstCommentRequest) -> Result<(), ActivityError> {
        let _heartbeats = Heartbeats::start(&ctx);
        self.run_first_comment(request).await.map_err(|e| match e {
            // Nothing to comment for: the job or its account is gone.
            e @ (db::DbError::JobMissing(_) | db::DbError::Corrupt(..) | db::DbError::AccountUnlinked(_)) => {
                ActivityError::application(ApplicationFailure::non_retryable(e))
            }
            other => retry_later(other),
        })
    }

    #[activity(definition = contract::MirrorTransition)]
    pub async fn mirror_transition(self: Arc<Self>, ctx: ActivityContext, transition: JobTransition) -> Result<(), ActivityError> {
        let _heartbeats = Heartbeats::start(&ctx);
        let applied = db::apply_transition(&self.db, &transition).await.map_err(|e| match e {
            // The row is gone (the API removed a job whose start it believed failed): retrying
            // forever would hide it; failing the workflow shows it to operators.
            db::DbError::JobMissing(_) => ActivityError::application(ApplicationFailure::non_retryable(e)),
            other => retry_later(other),
        })?;
        if applied {
            tracing::info!(job_id = %transition.job_id, status = %transition.status, attempt = transition.attempt_count,
                error_code = transition.last_error.as_ref().map(|e| e.code.as_str()), "job transition");
        } else {
            tracing::info!(job_id = %transition.job_id, version = transition.version, "stale transition ignored");
        }
        Ok(())
    }
}

/// A background ticker that heartbeats an activity until dropped. The SDK sends at most one
/// heartbeat per 0.8 x the heartbeat timeout, so ticking faster costs nothing; a cancellation
/// (timeout, shutdown) reaches the activity in a heartbeat's answer.
struct Heartbeats(tokio::task::JoinHandle<()>);

impl Heartbeats {
    fn start(ctx: &ActivityContext) -> Self {
        let ctx = ctx.clone();
        let every = ctx.info().heartbeat_timeout.map_or(Duration::from_secs(5), |t| (t / 4).max(Duration::from_millis(100)));
        Heartbeats(tokio::spawn(async move {
            loop {
                // A failed heartbeat only means Temporal did not hear from us this time.
                let _ = ctx.record_heartbeat(()).await;
                tokio::time::sleep(every).await;
            }
        }))
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn retry_later(error: impl Into<anyhow::Error>) -> ActivityError {
    ActivityError::application(ApplicationFailure::new(error.into()))
}
