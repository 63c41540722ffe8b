//! The armed publish: everything that can be done before the instant is done at arm time, so
//! that at `publish_at` one worker makes one commit and one platform call.
//!
//! Arm time: preflight (which refreshes the token and stores readiness), earlier attempts'
//! references resolved, the Instagram container created and `FINISHED` or TikTok's
//! `creator_info` read (which also opens the HTTPS connection the publishing call reuses). Then
//! the activity sleeps on the worker's clock until the instant, claims the arming's fence in
//! Postgres (a command may have claimed it first: then nothing is published), and makes the call.
//!
//! A re-execution (the worker died, the attempt timed out) starts from what Postgres says: a
//! fence the publish already holds means the call may have gone out, so it runs the full
//! attempt, which resolves every recorded reference before it calls again.

use std::time::Instant;

use autopost_workflows::{ArmOutcome, ArmRequest, Channel, Claimant, JobStatus};
use chrono::Utc;
use temporalio_sdk::activities::ActivityContext;
use tracing::instrument;

use crate::{
    WorkerActivities,
    db::{self, DbError, Fence, Fired, JobForPublish, PublishIntent},
    publish::{AttemptError, Initiated, Prepared, PublishedMirror, TiktokPrepared},
};

/// What the armed activity could not do: the activity fails (and is retried) or stops.
pub(crate) enum ArmError {
    Db(DbError),
    /// A newer execution of this arming holds the job's lease.
    Superseded,
}

impl From<DbError> for ArmError {
    fn from(e: DbError) -> Self {
        ArmError::Db(e)
    }
}

/// The publishing call the arming prepared.
enum Ready {
    /// An earlier attempt's post is live: the job is published without a call.
    AlreadyLive(crate::publish::Published),
    /// Instagram `media_publish` of this `FINISHED` container.
    InstagramContainer(String),
    /// TikTok's init, with the post's options.
    TiktokInit,
    /// Nothing could be prepared (a platform error at arm time, or a TikTok publish still under
    /// way): at the instant the full attempt runs, as an unarmed attempt would.
    FullAttempt,
}

impl WorkerActivities {
    #[instrument(skip(self, ctx), fields(job_id = %request.job_id, attempt = request.attempt, version = request.version))]
    pub(crate) async fn run_armed(&self, ctx: &ActivityContext, request: ArmRequest) -> Result<ArmOutcome, ArmError> {
        let execution = ctx.info().attempt as i32;
        let holder = db::fence_holder(&self.db, request.job_id, request.epoch, request.version).await?;
        if holder == Some(Claimant::Command) {
            return Ok(ArmOutcome::Disarmed);
        }
        // Fired by an earlier execution: the call may be out, so no new gate applies.
        let fired_before = holder == Some(Claimant::Publish);
        if !fired_before {
            let report = self.run_preflight(request.job_id).await?;
            if !report.ok {
                return Ok(ArmOutcome::NotReady { report });
            }
        }
        let job = db::load_job(&self.db, &self.keys, request.job_id).await?;
        let fence = Fence { job_id: job.id, epoch: request.epoch, attempt: request.attempt, version: request.version, execution };
        if !db::take_lease(&self.db, &fence).await? {
            return Err(ArmError::Superseded);
        }
        let published =
            PublishedMirror { job_id: job.id, epoch: request.epoch, version: request.version + 2, attempt_count: request.attempt };
        if fired_before {
            tracing::info!(job_id = %job.id, execution, "re-executing an armed attempt that fired: resolving it");
            let started = Instant::now();
            let result = self.full_attempt(&job, &fence).await;
            return self.armed_outcome(ctx, &job, &fence, result, started, published).await;
        }

        let ready = match self.prepare(&job, &fence).await {
            Ok(ready) => ready,
            Err(AttemptError::Db(e)) => return Err(e.into()),
            Err(AttemptError::Superseded) => return Err(ArmError::Superseded),
            // The post cannot go as it is (bad media, a revoked token, an outcome nobody can
            // tell): that is the attempt's outcome, and the creator hears it now, before the
            // instant rather than at it.
            Err(AttemptError::Platform(error)) if !error.retryable() => {
                match db::fire(&self.db, &fence, PublishIntent::None).await? {
                    Fired::Go => {}
                    Fired::Disarmed => return Ok(ArmOutcome::Disarmed),
                    Fired::Superseded => return Err(ArmError::Superseded),
                }
                return self.armed_outcome(ctx, &job, &fence, Err(AttemptError::Platform(error)), Instant::now(), published).await;
            }
            // Not an outcome yet: the platform may recover by the instant, and the attempt's
            // outcome is decided then, by the same code an unarmed attempt runs.
            Err(AttemptError::Platform(error)) => {
                tracing::info!(job_id = %job.id, error_code = %error.code, "could not prepare at arm time; the full attempt runs at the instant");
                Ready::FullAttempt
            }
        };

        // Nothing to wait for when the post is already live.
        if !matches!(ready, Ready::AlreadyLive(_))
            && let Ok(wait) = (request.publish_at - Utc::now()).to_std()
        {
            tokio::time::sleep(wait).await;
        }

        let intent = match &ready {
            Ready::InstagramContainer(container) => PublishIntent::InstagramContainer(container),
            Ready::TiktokInit => PublishIntent::TiktokInit,
            Ready::AlreadyLive(_) | Ready::FullAttempt => PublishIntent::None,
        };
        match db::fire(&self.db, &fence, intent).await? {
            Fired::Go => tracing::info!(job_id = %job.id, status = %JobStatus::Publishing, attempt = fence.attempt, "job transition"),
            Fired::Disarmed => return Ok(ArmOutcome::Disarmed),
            Fired::Superseded => return Err(ArmError::Superseded),
        }
        let started = Instant::now();
        let result = match ready {
            Ready::AlreadyLive(live) => Ok(live),
            Ready::InstagramContainer(container) => self.instagram_publish(&job, &container).await,
            Ready::TiktokInit => match self.tiktok_init(&job, fence.attempt).await {
                Ok(Initiated::Found(live)) => Ok(live),
                Ok(Initiated::Started(publish_id)) => self.tiktok_await(&job, &publish_id).await,
                Err(e) => Err(e),
            },
            Ready::FullAttempt => self.full_attempt(&job, &fence).await,
        };
        self.armed_outcome(ctx, &job, &fence, result, started, published).await
    }

    /// What can be done before the instant, for the call to make at it.
    async fn prepare(&self, job: &JobForPublish, fence: &Fence) -> Result<Ready, AttemptError> {
        Ok(match job.channel {
            Channel::Instagram => match self.instagram_prepare(job, fence).await? {
                Prepared::Published(live) => Ready::AlreadyLive(live),
                Prepared::Ready(container) => Ready::InstagramContainer(container),
            },
            Channel::Tiktok => match self.tiktok_prepare(job, fence.attempt).await? {
                TiktokPrepared::Published(live) => Ready::AlreadyLive(live),
                // Under way since an earlier attempt: followed from the instant on.
                TiktokPrepared::InFlight(_) => Ready::FullAttempt,
                TiktokPrepared::Ready => Ready::TiktokInit,
            },
        })
    }

    /// The attempt as an unarmed one makes it: every recorded reference resolved first.
    async fn full_attempt(&self, job: &JobForPublish, fence: &Fence) -> Result<crate::publish::Published, AttemptError> {
        match job.channel {
            Channel::Instagram => self.instagram_attempt(job, fence).await,
            Channel::Tiktok => self.tiktok_attempt(job, fence).await,
        }
    }

    async fn armed_outcome(
        &self,
        ctx: &ActivityContext,
        job: &JobForPublish,
        fence: &Fence,
        result: Result<crate::publish::Published, AttemptError>,
        started: Instant,
        published: PublishedMirror,
    ) -> Result<ArmOutcome, ArmError> {
        match self.conclude_attempt(ctx, job, fence, result, started, Some(published)).await? {
            Some(outcome) => Ok(ArmOutcome::Fired { outcome }),
            None => Err(ArmError::Superseded),
        }
    }
}
