//! One publish attempt, made idempotent against the platform: before creating anything, the
//! attempt asks the platform about every reference (Instagram container, TikTok `publish_id`)
//! that earlier attempts of the job recorded. A reference that went through is success, one still
//! processing is waited for, and only then is a new post started. The new reference is recorded
//! before the publish step, so a crash at any point leaves enough behind to never post twice.

use std::time::{Duration, Instant};

use autopost_workflows::{
    AttemptOutcome, Channel, InstagramOptions, InstagramPostType, JobStatus, JobTransition, MediaKind, PostOptions, PublishRequest,
    TiktokOptions,
};
use chrono::{DateTime, Utc};
use temporalio_sdk::activities::ActivityContext;
use tracing::instrument;

use crate::{
    WorkerActivities,
    db::{self, AttemptEnd, DbError, Fence, JobForPublish},
    platforms::{
        ErrorClass, PlatformError, Reply,
        instagram::{ContainerRequest, ContainerStatus},
        tiktok::{self as tiktok_api, ChunkPlan, PublishState, PublishStatus},
    },
};

/// An Instagram attempt, ready for its `media_publish`.
pub(crate) enum Prepared {
    /// An earlier attempt's post is live: nothing is to be published.
    Published(Published),
    /// This container is `FINISHED`, and nothing published it yet.
    Ready(String),
}

/// A TikTok attempt, ready for its init.
pub(crate) enum TiktokPrepared {
    /// An earlier attempt's post is live.
    Published(Published),
    /// An earlier attempt's publish is still under way at TikTok: wait for it, start nothing.
    InFlight(String),
    /// Nothing is under way, and the account takes the post's options: init.
    Ready,
}

/// What a TikTok init led to.
pub(crate) enum Initiated {
    Started(String),
    /// The answer was lost, and the post was found on the creator's profile.
    Found(Published),
}

/// A video fetched to be uploaded to TikTok.
struct VideoFile {
    bytes: Vec<u8>,
    /// As its host served it, when TikTok takes that type; else `video/mp4`.
    content_type: String,
}

/// The largest video the worker uploads to TikTok: it holds the whole file in memory while it
/// sends the chunks (TikTok takes up to 4 GB: larger videos belong on a verified domain).
const TIKTOK_UPLOAD_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// The longest video TikTok's API posts (platforms.md): 10 minutes.
const TIKTOK_API_MAX_DURATION: Duration = Duration::from_secs(10 * 60);

/// The `published` transition an armed attempt writes with its attempt's end.
pub(crate) struct PublishedMirror {
    pub(crate) job_id: uuid::Uuid,
    pub(crate) epoch: i64,
    /// The version of the `published` transition (the arming's version + 2).
    pub(crate) version: i64,
    pub(crate) attempt_count: i32,
}

impl PublishedMirror {
    fn transition(&self, platform_post_id: &str, published_at: DateTime<Utc>) -> JobTransition {
        JobTransition {
            job_id: self.job_id,
            epoch: self.epoch,
            version: self.version,
            status: JobStatus::Published,
            attempt_count: self.attempt_count,
            last_error: None,
            next_attempt_at: None,
            published_at: Some(published_at),
            platform_post_id: Some(platform_post_id.to_owned()),
            publish_at: None,
            closes_workflow: true,
            content: None,
        }
    }
}

/// What a bounded wait on a possibly published Instagram container learned.
enum Publication {
    Published(Published),
    /// The container can no longer be published (`ERROR`, `EXPIRED`): the call did not publish.
    NotPublished,
    /// Still `FINISHED` (or unreadable) when the wait ended.
    Unknown,
}

/// A post the platform has published.
pub(crate) struct Published {
    platform_post_id: String,
    request_id: Option<String>,
    /// `platform_post_id` is an Instagram container's id: Instagram's status read does not give
    /// the media id of a post an earlier call published, so nothing can be done with the post.
    container_only: bool,
}

pub(crate) enum AttemptError {
    Platform(PlatformError),
    Db(DbError),
    /// A newer execution of this job's attempts holds the fence: this one stops, with no
    /// further platform call and nothing recorded as its outcome.
    Superseded,
}

impl From<PlatformError> for AttemptError {
    fn from(e: PlatformError) -> Self {
        AttemptError::Platform(e)
    }
}

impl From<DbError> for AttemptError {
    fn from(e: DbError) -> Self {
        AttemptError::Db(e)
    }
}

fn permanent(code: &str, message: impl Into<String>) -> PlatformError {
    PlatformError::new(ErrorClass::Permanent, code, message)
}

/// The stable code of a used-up Instagram publishing quota, from our check or Instagram's `9/2207042`.
pub(crate) const QUOTA_EXHAUSTED: &str = "instagram.quota_exhausted";

fn quota_exhausted(limit: &crate::platforms::instagram::PublishingLimit, request_id: Option<String>) -> PlatformError {
    PlatformError {
        // The wait is set where the attempt ends (`instagram_quota_recheck`).
        retry_after: Some(Duration::from_secs(60 * 60)),
        request_id,
        ..PlatformError::new(
            ErrorClass::Transient,
            QUOTA_EXHAUSTED,
            format!(
                "the account has published {} of the {} posts Instagram allows in {} h: the post waits for the window",
                limit.quota_usage,
                limit.quota_total,
                limit.quota_duration_secs / 3600
            ),
        )
    }
}

/// An error about one item of a carousel, named so the creator knows which media to fix.
fn carousel_item_error(error: PlatformError, index: usize, count: usize) -> PlatformError {
    PlatformError { message: format!("carousel item {} of {count} (media[{index}]): {}", index + 1, error.message), ..error }
}

fn processing_timeout(platform: Channel, waited: std::time::Duration) -> PlatformError {
    PlatformError::new(
        ErrorClass::Transient,
        format!("{platform}.processing_timeout"),
        format!("{platform} was still processing the post after {}s", waited.as_secs()),
    )
}

/// Instagram may have published the container: its `media_publish` was sent, the answer never
/// arrived, and the container's status did not settle within the wait.
fn instagram_outcome_unknown(container: &str) -> PlatformError {
    PlatformError::new(
        ErrorClass::OutcomeUnknown,
        "instagram.publish_outcome_unknown",
        format!(
            "Instagram did not confirm whether it published the post (container {container}); it may be live. \
             Check the Instagram profile, and retry only if the post is not there"
        ),
    )
}

/// TikTok accepted `publish_id` and then refused to say what became of it (a revoked token,
/// say): the post may go live all the same, so the job must not claim a token error or a content
/// error as if nothing had been posted. A transient error is retried, and the retry asks again.
fn unknown_unless_transient(error: PlatformError, publish_id: &str) -> PlatformError {
    if error.retryable() {
        return error;
    }
    PlatformError {
        request_id: error.request_id.clone(),
        ..tiktok_outcome_unknown(&format!("TikTok accepted publish {publish_id}, then answered {} when asked about it", error.code))
    }
}

/// TikTok may have published the post, and offers no way to ask without the `publish_id`.
fn tiktok_outcome_unknown(cause: &str) -> PlatformError {
    PlatformError::new(
        ErrorClass::OutcomeUnknown,
        "tiktok.publish_outcome_unknown",
        format!(
            "TikTok did not confirm whether it accepted the post ({cause}); it may be live. \
             Check the TikTok profile, and retry only if the post is not there"
        ),
    )
}

impl WorkerActivities {
    #[instrument(skip(self, ctx), fields(job_id = %request.job_id, attempt = request.attempt))]
    pub(crate) async fn run_attempt(&self, ctx: &ActivityContext, request: PublishRequest) -> Result<Option<AttemptOutcome>, DbError> {
        let started = Instant::now();
        let job = db::load_job(&self.db, &self.keys, request.job_id).await?;
        let fence = Fence {
            job_id: job.id,
            epoch: request.epoch,
            attempt: request.attempt,
            version: request.version,
            execution: ctx.info().attempt as i32,
        };
        // The fence first: a superseded execution must not even release what a newer one blocks on.
        if !db::take_lease(&self.db, &fence).await? {
            tracing::warn!(job_id = %job.id, attempt = request.attempt, execution = fence.execution, "superseded before it started");
            return Ok(None);
        }
        if request.creator_retry {
            db::release_unresolved_publish_requests(&self.db, job.id, request.attempt).await?;
        }
        db::begin_attempt(&self.db, job.id, request.attempt).await?;
        let result = match job.channel {
            Channel::Instagram => self.instagram_attempt(&job, &fence).await,
            Channel::Tiktok => self.tiktok_attempt(&job, &fence).await,
        };
        self.conclude_attempt(ctx, &job, &fence, result, started, None).await
    }

    /// Records how an attempt ended (its row, metrics, the attempt's log line) and what the
    /// workflow learns of it; `None` when a newer execution took over. With `published`, an
    /// attempt that published also writes that mirror transition, in the same commit.
    pub(crate) async fn conclude_attempt(
        &self,
        ctx: &ActivityContext,
        job: &JobForPublish,
        fence: &Fence,
        result: Result<Published, AttemptError>,
        started: Instant,
        published: Option<PublishedMirror>,
    ) -> Result<Option<AttemptOutcome>, DbError> {
        let attempt = fence.attempt;
        let (outcome, platform_request_id) = match result {
            Ok(done) => {
                let now = Utc::now();
                let end = AttemptEnd {
                    success: true,
                    error_code: None,
                    error_message: None,
                    retryable: None,
                    request_id: done.request_id.as_deref(),
                };
                match published {
                    Some(mirror) => {
                        db::finish_published(&self.db, attempt, end, &mirror.transition(&done.platform_post_id, now)).await?;
                        tracing::info!(job_id = %job.id, status = %JobStatus::Published, attempt, "job transition");
                    }
                    None => db::finish_attempt(&self.db, job.id, attempt, end).await?,
                }
                let lag = (now - job.publish_at).to_std().unwrap_or_default();
                metrics::histogram!("autopost_publish_lag_seconds", "channel" => job.channel.as_str()).record(lag.as_secs_f64());
                let first_comment = autopost_workflows::options::first_comment(job.options.as_ref()).is_some();
                if first_comment && done.container_only {
                    crate::comments::skip_first_comment(&self.db, job.id).await?;
                }
                let outcome = AttemptOutcome::Published {
                    platform_post_id: done.platform_post_id,
                    published_at: now,
                    first_comment: first_comment && !done.container_only,
                };
                (outcome, done.request_id)
            }
            Err(AttemptError::Platform(mut error)) => {
                // Ours or Instagram's 9/2207042: the same wait, the configured one.
                if error.code == QUOTA_EXHAUSTED {
                    error.retry_after = Some(self.settings.instagram_quota_recheck);
                }
                db::finish_attempt(
                    &self.db,
                    job.id,
                    attempt,
                    AttemptEnd {
                        success: false,
                        error_code: Some(&error.code),
                        error_message: Some(&error.message),
                        retryable: Some(error.retryable()),
                        request_id: error.request_id.as_deref(),
                    },
                )
                .await?;
                let outcome = AttemptOutcome::Failed {
                    error: error.to_job_error(),
                    retryable: error.retryable(),
                    retry_after_ms: error.retry_after.map(|d| d.as_millis() as u64),
                    quota_wait: error.code == QUOTA_EXHAUSTED && error.retry_after.is_some(),
                };
                (outcome, error.request_id)
            }
            Err(AttemptError::Db(e)) => return Err(e),
            Err(AttemptError::Superseded) => {
                tracing::warn!(job_id = %job.id, attempt, execution = fence.execution, "superseded by a newer execution; stopped");
                return Ok(None);
            }
        };
        let (status, error_code) = match &outcome {
            AttemptOutcome::Published { .. } => ("published", None),
            AttemptOutcome::Failed { error, .. } => ("failed", Some(error.code.clone())),
        };
        metrics::counter!("autopost_publish_attempts_total",
            "channel" => job.channel.as_str(), "outcome" => status, "error_code" => error_code.clone().unwrap_or_default())
        .increment(1);
        // One line per attempt, with everything needed to follow it across the API, Temporal
        // and the platform's support.
        let info = ctx.info();
        tracing::info!(
            request_id = job.last_request_id.as_deref(),
            job_id = %job.id,
            workflow_id = info.workflow_id.as_deref(),
            run_id = info.workflow_run_id.as_deref(),
            attempt,
            channel = %job.channel,
            status,
            error_code,
            platform_request_id = platform_request_id.as_deref(),
            duration_ms = started.elapsed().as_millis() as u64,
            "publish attempt"
        );
        Ok(Some(outcome))
    }

    /// Takes the job's fence before a call that creates or publishes at the platform.
    pub(crate) async fn fenced(&self, fence: &Fence) -> Result<(), AttemptError> {
        if db::take_lease(&self.db, fence).await? { Ok(()) } else { Err(AttemptError::Superseded) }
    }

    pub(crate) async fn instagram_attempt(&self, job: &JobForPublish, fence: &Fence) -> Result<Published, AttemptError> {
        match self.instagram_prepare(job, fence).await? {
            Prepared::Published(published) => Ok(published),
            Prepared::Ready(container) => {
                self.fenced(fence).await?;
                db::mark_reference_publish_requested(&self.db, job.id, &container).await?;
                self.instagram_publish(job, &container).await
            }
        }
    }

    /// Everything of an Instagram attempt before `media_publish`: earlier attempts' containers
    /// resolved, then a container ready to publish (`FINISHED`), or the post already live.
    pub(crate) async fn instagram_prepare(&self, job: &JobForPublish, fence: &Fence) -> Result<Prepared, AttemptError> {
        let token = &job.account.access_token;

        // Resolve what earlier attempts left at the platform before creating anything new.
        let mut container = None;
        for earlier in db::recorded_references(&self.db, job.id).await? {
            let reply = self.instagram.container_status(token, &earlier.reference).await?;
            match reply.value.0 {
                ContainerStatus::Published => return Ok(Prepared::Published(already_published(earlier.reference, reply.request_id))),
                // Its media_publish was sent and never answered: it may have gone through, so
                // neither a second publish nor a new container until Instagram says.
                ContainerStatus::InProgress | ContainerStatus::Finished if earlier.publish_requested => {
                    match self.resolve_publish_request(job, &earlier.reference).await? {
                        Some(published) => return Ok(Prepared::Published(published)),
                        None => continue,
                    }
                }
                ContainerStatus::InProgress | ContainerStatus::Finished => {
                    container = Some(earlier.reference);
                    break;
                }
                ContainerStatus::Error | ContainerStatus::Expired => continue,
            }
        }
        if container.is_none() {
            // No container of an earlier attempt to go on with: a new one counts against the
            // account's 24 h limit only once published, but creating it when nothing can be
            // published wastes the 400-a-day container cap.
            let limit = self.instagram.publishing_limit(&job.account.platform_user_id, token).await?;
            if limit.value.exhausted() {
                return Err(quota_exhausted(&limit.value, limit.request_id).into());
            }
        }
        let container = match container {
            Some(existing) => {
                // This attempt carries on with an earlier one's container: record it here too.
                db::record_reference(&self.db, job.id, fence.attempt, &existing, None).await?;
                existing
            }
            None => {
                self.fenced(fence).await?;
                let created = self.create_instagram_container(job).await?;
                db::record_reference(&self.db, job.id, fence.attempt, &created.value, created.request_id.as_deref()).await?;
                created.value
            }
        };

        let mut waited = Processing::new();
        loop {
            let reply = self.instagram.container_status(token, &container).await?;
            match reply.value {
                (ContainerStatus::Finished, _) => return Ok(Prepared::Ready(container)),
                (ContainerStatus::Published, _) => return Ok(Prepared::Published(already_published(container, reply.request_id))),
                (ContainerStatus::Error, detail) => {
                    let message = detail.unwrap_or_else(|| "Instagram could not process the media".into());
                    return Err(permanent("instagram.container_error", message).into());
                }
                (ContainerStatus::Expired, _) => {
                    let expired = PlatformError::new(
                        ErrorClass::Transient,
                        "instagram.container_expired",
                        "the media container expired before it was published",
                    );
                    return Err(PlatformError { request_id: reply.request_id, ..expired }.into());
                }
                (ContainerStatus::InProgress, _) => self.wait_while_processing(job.channel, &mut waited).await?,
            }
        }
    }

    /// The container this attempt publishes. A carousel's items get containers of their own
    /// first, each processed to `FINISHED`: Instagram takes a carousel only over finished items.
    /// Items are never recorded as references: only the carousel's container can be published,
    /// and an item left behind by a crash simply expires.
    async fn create_instagram_container(&self, job: &JobForPublish) -> Result<Reply<String>, AttemptError> {
        let token = &job.account.access_token;
        let ig_user = &job.account.platform_user_id;
        let none = InstagramOptions::default();
        let options = job.options.as_ref().and_then(PostOptions::instagram).unwrap_or(&none);
        let post_type = options.post_type(&job.media);
        if post_type != InstagramPostType::Carousel {
            let [media] = job.media.as_slice() else {
                return Err(
                    permanent("instagram.unsupported_post", format!("an Instagram {} is one media item", post_type.as_str())).into()
                );
            };
            let request = ContainerRequest::Single { post_type, caption: &job.caption, media, options };
            return Ok(self.instagram.create_container(ig_user, token, &request).await?);
        }
        let count = job.media.len();
        let mut children = Vec::with_capacity(count);
        for (index, media) in job.media.iter().enumerate() {
            let request = ContainerRequest::CarouselItem { media, index, options };
            let child =
                self.instagram.create_container(ig_user, token, &request).await.map_err(|e| carousel_item_error(e, index, count))?;
            children.push(child.value);
        }
        self.await_carousel_items(job, &children).await?;
        let request = ContainerRequest::Carousel { caption: &job.caption, children: &children, options };
        Ok(self.instagram.create_container(ig_user, token, &request).await?)
    }

    /// Reads the carousel's item containers until every one is `FINISHED`; an item Instagram
    /// could not process fails the attempt, naming the item.
    async fn await_carousel_items(&self, job: &JobForPublish, children: &[String]) -> Result<(), AttemptError> {
        let token = &job.account.access_token;
        let mut pending: Vec<usize> = (0..children.len()).collect();
        let mut waited = Processing::new();
        while !pending.is_empty() {
            let mut still = Vec::with_capacity(pending.len());
            for index in pending {
                let reply = self
                    .instagram
                    .container_status(token, &children[index])
                    .await
                    .map_err(|e| carousel_item_error(e, index, children.len()))?;
                match reply.value {
                    (ContainerStatus::Finished, _) => {}
                    (ContainerStatus::InProgress, _) => still.push(index),
                    (ContainerStatus::Error, detail) => {
                        let detail = detail.unwrap_or_else(|| "Instagram could not process the media".into());
                        let error = permanent("instagram.carousel_item_error", detail);
                        return Err(
                            carousel_item_error(PlatformError { request_id: reply.request_id, ..error }, index, children.len()).into()
                        );
                    }
                    (status @ (ContainerStatus::Expired | ContainerStatus::Published), _) => {
                        let error = PlatformError::new(
                            ErrorClass::Transient,
                            "instagram.carousel_item_unusable",
                            format!("the item's container is {status:?} and cannot join a carousel"),
                        );
                        return Err(carousel_item_error(error, index, children.len()).into());
                    }
                }
            }
            pending = still;
            if !pending.is_empty() {
                self.wait_while_processing(job.channel, &mut waited).await?;
            }
        }
        Ok(())
    }

    /// `media_publish` of a ready container whose call is noted as requested, and what the
    /// answer (or its absence) means.
    pub(crate) async fn instagram_publish(&self, job: &JobForPublish, container: &str) -> Result<Published, AttemptError> {
        let token = &job.account.access_token;
        let ig_user = &job.account.platform_user_id;
        let container = container.to_owned();
        match self.instagram.publish_container(ig_user, token, &container).await {
            Ok(reply) => Ok(Published { platform_post_id: reply.value, request_id: reply.request_id, container_only: false }),
            // No answer: the call may have gone through. Instagram's status decides, within a
            // bounded wait; if it cannot tell, a person must look.
            Err(error) if !error.answered => match self.resolve_publish_request(job, &container).await? {
                Some(published) => Ok(published),
                None => Err(error.into()),
            },
            // Instagram can report an error although the post went live: believe the
            // container's status, not the error.
            Err(error) => match self.instagram.container_status(token, &container).await {
                Ok(reply) if reply.value.0 == ContainerStatus::Published => Ok(already_published(container, reply.request_id)),
                _ => {
                    // It answered, and the container is not published: the call did not publish.
                    db::clear_reference_publish_requested(&self.db, job.id, &container).await?;
                    Err(error.into())
                }
            },
        }
    }

    /// A container whose `media_publish` was sent without an answer: published (`Some`), certainly
    /// not (`None`, and the mark is cleared, so it may be published again), or an error saying
    /// the outcome is unknown.
    async fn resolve_publish_request(&self, job: &JobForPublish, container: &str) -> Result<Option<Published>, AttemptError> {
        match self.await_instagram_publication(&job.account.access_token, container).await? {
            Publication::Published(published) => Ok(Some(published)),
            Publication::NotPublished => {
                db::clear_reference_publish_requested(&self.db, job.id, container).await?;
                Ok(None)
            }
            Publication::Unknown => Err(instagram_outcome_unknown(container).into()),
        }
    }

    /// Reads a container whose `media_publish` may have gone through until Instagram says
    /// `PUBLISHED`, or that it was not (`ERROR`, `EXPIRED`), or the bounded wait ends.
    async fn await_instagram_publication(&self, token: &secrecy::SecretString, container: &str) -> Result<Publication, AttemptError> {
        let deadline = Instant::now() + self.settings.outcome_wait;
        let mut delay = FIRST_POLL_DELAY;
        loop {
            match self.instagram.container_status(token, container).await {
                Ok(reply) => match reply.value.0 {
                    ContainerStatus::Published => {
                        return Ok(Publication::Published(already_published(container.to_owned(), reply.request_id)));
                    }
                    ContainerStatus::Error | ContainerStatus::Expired => return Ok(Publication::NotPublished),
                    ContainerStatus::InProgress | ContainerStatus::Finished => {}
                },
                // A status read that fails is no answer either; keep asking until the deadline.
                Err(error) => tracing::info!(error_code = %error.code, "container status unavailable while confirming a publish"),
            }
            if Instant::now() + delay > deadline {
                return Ok(Publication::Unknown);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.settings.poll_interval);
        }
    }

    pub(crate) async fn tiktok_attempt(&self, job: &JobForPublish, fence: &Fence) -> Result<Published, AttemptError> {
        let publish_id = match self.tiktok_prepare(job, fence.attempt).await? {
            TiktokPrepared::Published(published) => return Ok(published),
            TiktokPrepared::InFlight(publish_id) => publish_id,
            TiktokPrepared::Ready => {
                // TikTok starts publishing as soon as it accepts the init, and only the answer
                // carries the publish_id to ask about it later: note the request before sending.
                self.fenced(fence).await?;
                db::mark_publish_requested(&self.db, job.id, fence.attempt).await?;
                match self.tiktok_init(job, fence.attempt).await? {
                    Initiated::Found(published) => return Ok(published),
                    Initiated::Started(publish_id) => publish_id,
                }
            }
        };
        self.tiktok_await(job, &publish_id).await
    }

    /// Everything of a TikTok attempt before the init: earlier attempts' publishes resolved,
    /// then the post's options checked against `creator_info`, or a publish already under way.
    pub(crate) async fn tiktok_prepare(&self, job: &JobForPublish, attempt: i32) -> Result<TiktokPrepared, AttemptError> {
        let token = &job.account.access_token;
        let mut publish_id = None;
        for earlier in db::recorded_references(&self.db, job.id).await? {
            let reply =
                self.tiktok.fetch_status(token, &earlier.reference).await.map_err(|e| unknown_unless_transient(e, &earlier.reference))?;
            match reply.value.status {
                PublishState::PublishComplete => {
                    return Ok(TiktokPrepared::Published(tiktok_published(&earlier.reference, &reply.value, reply.request_id)));
                }
                PublishState::Failed => continue,
                // An upload whose last chunk was never sent (it is noted first): see
                // `tiktok_upload_abandoned`.
                PublishState::ProcessingUpload if !earlier.publish_requested => {
                    if self.tiktok_upload_abandoned(token, &earlier.reference, &reply.value).await? {
                        tracing::info!(job_id = %job.id, publish_id = %earlier.reference, "an earlier attempt's TikTok upload was abandoned: it can never post");
                        continue;
                    }
                    publish_id = Some(earlier.reference);
                    break;
                }
                _ => {
                    publish_id = Some(earlier.reference);
                    break;
                }
            }
        }
        if let Some(existing) = publish_id {
            db::record_reference(&self.db, job.id, attempt, &existing, None).await?;
            return Ok(TiktokPrepared::InFlight(existing));
        }
        if let Some(requested_at) = db::unresolved_publish_request_since(&self.db, job.id).await? {
            // TikTok cannot be asked about an init by anything but its answer; its list of the
            // creator's public videos may still show the post.
            if let Some(found) = self.find_tiktok_video(job, requested_at, Duration::ZERO).await {
                return Ok(TiktokPrepared::Published(found));
            }
            return Err(tiktok_outcome_unknown("an earlier attempt stopped while TikTok was starting the post").into());
        }
        let options = tiktok_options(job)?;
        // TikTok asks for creator_info before every post; a scheduled retry has no preflight
        // of its own, so the options are checked here as well.
        let info = self.tiktok.creator_info(token).await?.value;
        if let Some(refused) = info.refuses(options, job.is_video()) {
            return Err(permanent(&format!("tiktok.{}", refused.code()), refused.message(&info.privacy_level_options)).into());
        }
        Ok(TiktokPrepared::Ready)
    }

    /// The init (its request already noted), and the reference it created recorded; or the post
    /// found on the creator's profile when the answer was lost. A video TikTok does not pull
    /// (its host is not a verified domain) is fetched first, since the init states its size,
    /// then uploaded once the reference is recorded.
    pub(crate) async fn tiktok_init(&self, job: &JobForPublish, attempt: i32) -> Result<Initiated, AttemptError> {
        let token = &job.account.access_token;
        let options = tiktok_options(job)?;
        let upload = match job.media.as_slice() {
            [video]
                if video.kind == MediaKind::Video
                    && !tiktok_api::on_verified_domain(&video.url, &self.settings.tiktok_verified_domains) =>
            {
                // An upload's init cannot post without the upload URL its answer carries (see
                // below), so it needs no note that it was sent; and a worker that dies while it
                // fetches the video must not leave one behind, which would read as an init with
                // an unknown outcome.
                db::clear_publish_requested(&self.db, job.id, attempt).await?;
                Some(self.fetch_for_upload(&video.url).await?)
            }
            _ => None,
        };
        let requested_at = Utc::now();
        let init = match (job.media.as_slice(), &upload) {
            (_, Some(file)) => self.tiktok.init_video_upload(token, &job.caption, options, file.bytes.len() as u64).await.map(|reply| {
                let (publish_id, upload_url) = reply.value;
                (Reply { value: publish_id, request_id: reply.request_id }, Some(upload_url))
            }),
            ([video], None) if video.kind == MediaKind::Video => {
                self.tiktok.init_video(token, &job.caption, options, &video.url).await.map(|reply| (reply, None))
            }
            (photos, None) if !photos.is_empty() && photos.iter().all(|m| m.kind == MediaKind::Image) => {
                let urls: Vec<&str> = photos.iter().map(|m| m.url.as_str()).collect();
                self.tiktok.init_photos(token, &job.caption, options, &urls).await.map(|reply| (reply, None))
            }
            _ => Err(permanent("tiktok.unsupported_post", "a TikTok post is one video or 1-35 photos")),
        };
        let (started, upload_url) = match init {
            Ok(started) => started,
            // An upload's init that may have gone through is harmless: without the upload URL
            // its answer carried, no chunk can reach that publish, so it can never post.
            Err(error) if error.certainly_rejected || upload.is_some() => {
                db::clear_publish_requested(&self.db, job.id, attempt).await?;
                return Err(error.into());
            }
            Err(error) => {
                if let Some(found) = self.find_tiktok_video(job, requested_at, self.settings.outcome_wait).await {
                    return Ok(Initiated::Found(found));
                }
                return Err(tiktok_outcome_unknown(&format!("{}: {}", error.code, error.message)).into());
            }
        };
        db::record_reference(&self.db, job.id, attempt, &started.value, started.request_id.as_deref()).await?;
        if let (Some(file), Some(upload_url)) = (upload, upload_url) {
            self.tiktok_upload(job, &started.value, &upload_url, &file).await?;
        }
        Ok(Initiated::Started(started.value))
    }

    /// Sends a video's chunks to the publish `publish_id` just initialised. Its last chunk is
    /// what makes TikTok publish, so it is noted on the reference before it is sent, as
    /// Instagram's `media_publish` is: `tiktok_prepare` can then tell an upload that may have
    /// completed from one that never can.
    async fn tiktok_upload(
        &self,
        job: &JobForPublish,
        publish_id: &str,
        upload_url: &secrecy::SecretString,
        file: &VideoFile,
    ) -> Result<(), AttemptError> {
        let plan = ChunkPlan::for_size(file.bytes.len() as u64)?;
        let last = plan.total_chunk_count - 1;
        for index in 0..last {
            self.tiktok.upload_chunk(upload_url, &plan, index, &file.bytes, &file.content_type).await?;
        }
        // A newer publish of the job means another execution took over, found this upload
        // abandoned and started its own (this one was paused, say): its last chunk must never go.
        let newest = db::recorded_references(&self.db, job.id).await?;
        if newest.first().is_some_and(|newest| newest.reference != publish_id) {
            return Err(AttemptError::Superseded);
        }
        db::mark_reference_publish_requested(&self.db, job.id, publish_id).await?;
        match self.tiktok.upload_chunk(upload_url, &plan, last, &file.bytes, &file.content_type).await {
            Ok(()) => Ok(()),
            // Refused: the upload is not complete, and the publish can never post.
            Err(error) if error.certainly_rejected => {
                db::clear_reference_publish_requested(&self.db, job.id, publish_id).await?;
                Err(error.into())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Whether an earlier attempt's upload, still `PROCESSING_UPLOAD` and whose last chunk was
    /// never sent, is abandoned, so that a new init cannot post twice.
    ///
    /// TikTok publishes an upload once it has every chunk, and lets an unfinished one expire
    /// (its upload URL lasts an hour) without posting it. Only the execution that made the init
    /// can send chunks: the upload URL came in the init's answer, carries its own credential,
    /// and is kept nowhere else. That execution notes the reference before the last chunk, so
    /// without the note the last chunk was never sent, and with that execution gone (which is
    /// why another one is here) nobody ever will. One that Temporal gave up on may still be
    /// running, unable to heartbeat, so the publish is watched for `outcome_wait` first: if
    /// bytes arrive or its status moves, it is followed like any publish in flight; and before
    /// its last chunk it checks that no newer publish of the job was recorded (`tiktok_upload`).
    async fn tiktok_upload_abandoned(
        &self,
        token: &secrecy::SecretString,
        publish_id: &str,
        seen: &PublishStatus,
    ) -> Result<bool, AttemptError> {
        let deadline = Instant::now() + self.settings.outcome_wait;
        let mut delay = FIRST_POLL_DELAY;
        while Instant::now() + delay <= deadline {
            tokio::time::sleep(delay).await;
            let reply = self.tiktok.fetch_status(token, publish_id).await.map_err(|e| unknown_unless_transient(e, publish_id))?;
            if reply.value.status != PublishState::ProcessingUpload || reply.value.uploaded_bytes != seen.uploaded_bytes {
                return Ok(false);
            }
            delay = (delay * 2).min(self.settings.poll_interval);
        }
        Ok(true)
    }

    /// The video at `url`, through the SSRF guard, for upload: at most
    /// [`TIKTOK_UPLOAD_MAX_BYTES`] (the worker holds it in memory) and, when its movie header
    /// says so, no longer than TikTok's API takes.
    async fn fetch_for_upload(&self, url: &str) -> Result<VideoFile, PlatformError> {
        let unreachable = |detail: String| {
            PlatformError::new(
                ErrorClass::Transient,
                "tiktok.media_unreachable",
                format!("the video could not be fetched for upload: {detail}"),
            )
        };
        let mut response = match self.media.fetch(reqwest::Method::GET, url).await {
            Ok(response) => response,
            Err(crate::media_guard::FetchError::Forbidden(detail)) => {
                return Err(permanent("tiktok.media_forbidden_host", format!("the video is not fetched: {detail}")));
            }
            Err(crate::media_guard::FetchError::Unreachable(detail)) => return Err(unreachable(detail)),
        };
        let status = response.status();
        if !status.is_success() {
            let class = if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            };
            return Err(PlatformError::new(class, "tiktok.media_unavailable", format!("the video's host answered HTTP {status}")));
        }
        let too_large = |size: u64| {
            permanent(
                "tiktok.upload_too_large",
                format!(
                    "the video has {size} bytes, and the worker uploads at most {TIKTOK_UPLOAD_MAX_BYTES} to TikTok: host it on a domain \
                     verified with TikTok (TIKTOK_VERIFIED_DOMAINS), which TikTok pulls from"
                ),
            )
        };
        let length = response.content_length();
        if let Some(length) = length.filter(|l| *l > TIKTOK_UPLOAD_MAX_BYTES) {
            return Err(too_large(length));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| autopost_workflows::rules::accepted_files(Channel::Tiktok, MediaKind::Video).content_types.contains(&v.as_str()))
            .unwrap_or_else(|| "video/mp4".to_owned());
        let mut bytes = Vec::with_capacity(usize::try_from(length.unwrap_or(0)).unwrap_or(0));
        while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(e.without_url().to_string()))? {
            if (bytes.len() + chunk.len()) as u64 > TIKTOK_UPLOAD_MAX_BYTES {
                return Err(too_large((bytes.len() + chunk.len()) as u64));
            }
            bytes.extend_from_slice(&chunk);
        }
        // A file that is no MP4/MOV, or has no readable header, is TikTok's to judge.
        if let Ok(duration) = crate::mp4::duration(&bytes)
            && duration > TIKTOK_API_MAX_DURATION
        {
            return Err(permanent(
                "tiktok.video_too_long",
                format!(
                    "the video lasts {} s; TikTok's API takes videos of at most {} s",
                    duration.as_secs(),
                    TIKTOK_API_MAX_DURATION.as_secs()
                ),
            ));
        }
        Ok(VideoFile { bytes, content_type })
    }

    /// Reads a started publish's status until TikTok has published it, or says it failed.
    pub(crate) async fn tiktok_await(&self, job: &JobForPublish, publish_id: &str) -> Result<Published, AttemptError> {
        let token = &job.account.access_token;
        let publish_id = publish_id.to_owned();
        let mut waited = Processing::new();
        loop {
            let reply = self.tiktok.fetch_status(token, &publish_id).await.map_err(|e| unknown_unless_transient(e, &publish_id))?;
            match reply.value.status {
                PublishState::PublishComplete => return Ok(tiktok_published(&publish_id, &reply.value, reply.request_id)),
                PublishState::Failed => return Err(reply.value.failure(reply.request_id).into()),
                _ => self.wait_while_processing(job.channel, &mut waited).await?,
            }
        }
    }

    /// Looks for the job's video among the creator's public TikTok videos made since
    /// `requested_at` (by caption), for up to `wait` while TikTok may still be processing it.
    /// `None` never means "not posted": `video.list` shows only public videos, and needs a scope
    /// the creator may not have granted.
    async fn find_tiktok_video(&self, job: &JobForPublish, requested_at: DateTime<Utc>, wait: Duration) -> Option<Published> {
        if !matches!(job.media.as_slice(), [video] if video.kind == MediaKind::Video) {
            return None; // Photo posts are never listed.
        }
        // TikTok's title holds the caption's first 150 characters.
        let title: String = job.caption.chars().take(150).collect();
        // Clocks differ a little between TikTok and us.
        let since = (requested_at - chrono::Duration::seconds(10)).timestamp();
        let deadline = Instant::now() + wait;
        loop {
            let mut cursor = None;
            for _page in 0..5 {
                let page = match self.tiktok.list_videos(&job.account.access_token, cursor, 20).await {
                    Ok(reply) => reply.value,
                    Err(e) => {
                        tracing::info!(job_id = %job.id, error_code = %e.code, "TikTok video list unavailable while resolving an unknown outcome");
                        return None;
                    }
                };
                if let Some(video) = page.videos.iter().find(|v| v.title == title && v.create_time >= since) {
                    tracing::info!(job_id = %job.id, post = %video.id, "found the post of an unknown outcome in TikTok's video list");
                    return Some(Published { platform_post_id: video.id.clone(), request_id: None, container_only: false });
                }
                let older = page.videos.last().is_none_or(|v| v.create_time < since);
                if !page.has_more || older {
                    break;
                }
                cursor = page.cursor;
            }
            if Instant::now() + FIRST_POLL_DELAY > deadline {
                return None;
            }
            tokio::time::sleep(self.settings.poll_interval.min(Duration::from_secs(1))).await;
        }
    }

    /// Sleeps before the next status read (the activity's ticker heartbeats meanwhile). Reads
    /// start fast and slow down to the poll interval: most posts are ready within seconds, and
    /// the platforms rate-limit status reads.
    async fn wait_while_processing(&self, channel: Channel, waited: &mut Processing) -> Result<(), PlatformError> {
        if waited.started.elapsed() >= self.settings.processing_timeout {
            return Err(processing_timeout(channel, waited.started.elapsed()));
        }
        let delay = FIRST_POLL_DELAY.saturating_mul(1 << waited.polls.min(16)).min(self.settings.poll_interval);
        waited.polls += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

const FIRST_POLL_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

/// How long, and how often, an attempt has waited for the platform to process a post.
struct Processing {
    started: Instant,
    polls: u32,
}

impl Processing {
    fn new() -> Self {
        Processing { started: Instant::now(), polls: 0 }
    }
}

/// Instagram's status read does not return the media id of a container published earlier; the
/// container id identifies the post until we look it up.
fn already_published(container_id: String, request_id: Option<String>) -> Published {
    Published { platform_post_id: container_id, request_id, container_only: true }
}

fn tiktok_published(publish_id: &str, status: &PublishStatus, request_id: Option<String>) -> Published {
    // Posts that are not public have no public id; the publish_id still identifies them.
    Published { platform_post_id: status.public_post_id().unwrap_or_else(|| publish_id.to_owned()), request_id, container_only: false }
}

/// The TikTok options the job was created with (the API refuses a TikTok job without them).
fn tiktok_options(job: &JobForPublish) -> Result<&TiktokOptions, PlatformError> {
    job.options
        .as_ref()
        .and_then(PostOptions::tiktok)
        .ok_or_else(|| permanent("tiktok.options_missing", "the job has no TikTok options (privacy_level); edit the post and choose them"))
}
