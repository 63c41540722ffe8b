//! `PublishPostWorkflow`: one durable workflow per publish job.
//!
//! It sleeps until `publish_at`, runs preflight, then up to `1 + retries` publish attempts with
//! the configured waits between them, and mirrors every transition into Postgres. All times are
//! computed from the job's own `publish_at` and the workflow clock, never from the wall clock of
//! whichever worker happens to run it.

#![allow(unreachable_pub)]

use std::{
    error::Error,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use temporalio_common::{
    RetryPolicy,
    search_attributes::{SearchAttributeKey, Timestamp},
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, CancellableFuture, ContinueAsNewOptions, SyncWorkflowContext, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use crate::{
    activities::PublishActivities,
    types::{
        AttemptOutcome, Carried, CommandAccepted, JobCommand, JobError, JobStatus, JobTransition, PreflightReport, PreflightRequest,
        PublishJobInput, PublishJobResult, PublishRequest, Resume,
    },
};

/// How long one publish attempt may run: long enough for a platform to process a video
/// (Instagram suggests polling for ~5 minutes), bounded so a hung call becomes a failed attempt.
const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// Search attributes operators filter on in the Temporal Web UI (`PublishStatus = "failed"`).
/// Keyword and Datetime only: SQL-backed Temporal allows very few Text attributes.
pub const PUBLISH_STATUS: SearchAttributeKey<String> = SearchAttributeKey::keyword("PublishStatus");
pub const CHANNEL: SearchAttributeKey<String> = SearchAttributeKey::keyword("Channel");
pub const CREATOR_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("CreatorId");
pub const PUBLISH_AT: SearchAttributeKey<Timestamp> = SearchAttributeKey::datetime("PublishAt");

#[workflow]
pub struct PublishPostWorkflow {
    input: PublishJobInput,
    /// This run's fencing epoch: 0, or above the lost run's when the reconciler replaced one.
    epoch: i64,
    /// The mirror's version of the last transition written (`publish_jobs.version`).
    version: i64,
    attempt_count: i32,
    /// The job's status as the workflow knows it: set before it is mirrored, so commands are
    /// validated against the truth, not against a mirror that may lag.
    status: JobStatus,
    publish_at: DateTime<Utc>,
    /// Retries spent of the current budget (`input.retry_backoff_ms`).
    retries_used: usize,
    /// A command accepted by an update and not yet carried out by the run loop.
    pending: Option<JobCommand>,
    /// Preflight is running: it talks to no platform in a way that matters, so cancel and
    /// reschedule are taken now and carried out as soon as it returns.
    preflighting: bool,
    /// The error the row shows (kept to write it again when the run closes unattended).
    last_error: Option<JobError>,
    /// When a `needs_attention` job stops waiting for its creator; set when the wait starts.
    attention_until: Option<DateTime<Utc>>,
    /// Commands this run carried out, against `input.commands_per_run`.
    commands_applied: u32,
}

/// Where the run loop stands.
enum Phase {
    /// `scheduled`: waiting for `publish_at`, or a command.
    AwaitPublishTime,
    /// `failed`: waiting for the next attempt, or a command.
    AwaitRetry {
        at: DateTime<Utc>,
    },
    /// `needs_attention`: waiting for the creator's command.
    AwaitCreator,
    /// `publishing`: preflight (unless this is a scheduled retry), then attempts.
    Run {
        preflight: bool,
        creator_retry: bool,
    },
    Done(PublishJobResult),
}

#[workflow_methods]
impl PublishPostWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: PublishJobInput) -> Self {
        let publish_at = input.publish_at;
        // A carried-on run takes its state at once: the command that started it (update-with-
        // start) is validated against it before the run loop begins.
        let carried = input.resume.as_ref().and_then(|r| r.carried.clone());
        Self {
            epoch: input.resume.as_ref().map_or(0, |r| r.epoch),
            version: input.resume.as_ref().map_or(0, |r| r.version),
            attempt_count: input.resume.as_ref().map_or(0, |r| r.attempt_count),
            input,
            status: carried.as_ref().map_or(JobStatus::Scheduled, |c| c.status),
            publish_at,
            retries_used: carried.as_ref().map_or(0, |c| c.retries_used),
            pending: carried.as_ref().and_then(|c| c.pending.clone()),
            preflighting: false,
            last_error: carried.as_ref().and_then(|c| c.last_error.clone()),
            attention_until: carried.as_ref().and_then(|c| c.attention_until),
            commands_applied: 0,
        }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PublishJobResult> {
        let mut phase = match ctx.state(|s| s.input.resume.clone()) {
            // The reconciler restarted a workflow lost outside our control: surface it and
            // wait for the creator, whose retry will resolve what the lost run left behind.
            Some(Resume { lost: Some(error), .. }) => {
                mirror(ctx, Change { last_error: Some(error), ..Change::to(JobStatus::NeedsAttention) }).await?;
                Phase::AwaitCreator
            }
            // The job's own workflow went on in this run: wait where the last one waited.
            Some(Resume { carried: Some(carried), .. }) => {
                publish_search_attributes(ctx);
                match carried.status {
                    JobStatus::Scheduled => Phase::AwaitPublishTime,
                    JobStatus::Failed => Phase::AwaitRetry { at: carried.next_attempt_at.unwrap_or(ctx.state(|s| s.publish_at)) },
                    _ => Phase::AwaitCreator,
                }
            }
            _ => {
                publish_search_attributes(ctx);
                check_readiness(ctx).await;
                Phase::AwaitPublishTime
            }
        };
        loop {
            phase = match phase {
                // Only where the run waits: the next run starts in the same wait, with the command
                // this one took and has not carried out yet, if any.
                Phase::AwaitPublishTime if continue_as_new_due(ctx) => return continue_as_new(ctx, None),
                Phase::AwaitRetry { at } if continue_as_new_due(ctx) => return continue_as_new(ctx, Some(at)),
                Phase::AwaitCreator if continue_as_new_due(ctx) => return continue_as_new(ctx, None),
                Phase::AwaitPublishTime => {
                    let at = ctx.state(|s| s.publish_at);
                    match wait_for_time_or_command(ctx, Some(at)).await? {
                        Wake::Time => Phase::Run { preflight: true, creator_retry: false },
                        Wake::Command(command) => apply(ctx, command).await?,
                        Wake::EngineCancelled => cancelled_by_operator(ctx).await?,
                    }
                }
                Phase::AwaitRetry { at } => match wait_for_time_or_command(ctx, Some(at)).await? {
                    Wake::Time => Phase::Run { preflight: false, creator_retry: false },
                    Wake::Command(command) => apply(ctx, command).await?,
                    Wake::EngineCancelled => cancelled_by_operator(ctx).await?,
                },
                Phase::AwaitCreator => {
                    let until = attention_deadline(ctx)?;
                    match wait_for_time_or_command(ctx, until).await? {
                        Wake::Command(command) => apply(ctx, command).await?,
                        Wake::Time => Phase::Done(close_unattended(ctx).await?),
                        Wake::EngineCancelled => cancelled_by_operator(ctx).await?,
                    }
                }
                Phase::Run { preflight, creator_retry } => publish(ctx, preflight, creator_retry).await?,
                Phase::Done(result) => return Ok(result),
            };
        }
    }

    #[query]
    pub fn status(&self, _ctx: &WorkflowContextView) -> JobStatus {
        self.status
    }

    #[update_validator(retry)]
    fn validate_retry(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::Retry)
    }

    /// See [`JobCommand::Retry`]. Returns the status the command was accepted in.
    #[update]
    pub fn retry(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) -> CommandAccepted {
        self.accept(JobCommand::Retry)
    }

    #[update_validator(reschedule)]
    fn validate_reschedule(&self, _ctx: &WorkflowContextView, publish_at: &DateTime<Utc>) -> Result<(), Box<dyn Error + Send + Sync>> {
        // The API refuses times in the past; the workflow clock is not readable here.
        self.validate(&JobCommand::Reschedule { publish_at: *publish_at })
    }

    #[update]
    pub fn reschedule(&mut self, _ctx: &mut SyncWorkflowContext<Self>, publish_at: DateTime<Utc>) -> CommandAccepted {
        self.accept(JobCommand::Reschedule { publish_at })
    }

    #[update_validator(cancel)]
    fn validate_cancel(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::Cancel)
    }

    #[update]
    pub fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) -> CommandAccepted {
        self.accept(JobCommand::Cancel)
    }

    #[update_validator(publish_now)]
    fn validate_publish_now(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::PublishNow)
    }

    #[update]
    pub fn publish_now(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) -> CommandAccepted {
        self.accept(JobCommand::PublishNow)
    }
}

impl PublishPostWorkflow {
    /// One command at a time, and only in the states that allow it: two concurrent commands
    /// cannot both win, and none can slip in while an attempt talks to the platform.
    fn validate(&self, command: &JobCommand) -> Result<(), Box<dyn Error + Send + Sync>> {
        if let Some(pending) = &self.pending {
            return Err(format!("cannot {}: a {} command is being applied", command.name(), pending.name()).into());
        }
        if self.preflighting && matches!(command, JobCommand::Cancel | JobCommand::Reschedule { .. }) {
            return Ok(());
        }
        command.allowed_in(self.status).map_err(Into::into)
    }

    fn accept(&mut self, command: JobCommand) -> CommandAccepted {
        self.pending = Some(command);
        CommandAccepted { status: self.status, version: self.version }
    }
}

/// What ended a wait.
enum Wake {
    /// The time came.
    Time,
    /// A creator's command was accepted.
    Command(JobCommand),
    /// An operator cancelled the workflow in Temporal (Web UI, CLI).
    EngineCancelled,
}

/// Waits until `at` (forever if `None`), a command or a Temporal cancel, whichever comes first;
/// a command accepted while the timer fired still wins, so a cancelled job never publishes.
async fn wait_for_time_or_command(ctx: &mut WorkflowContext<PublishPostWorkflow>, at: Option<DateTime<Utc>>) -> WorkflowResult<Wake> {
    loop {
        if let Some(command) = ctx.state_mut(|s| s.pending.take()) {
            return Ok(Wake::Command(command));
        }
        // After a Temporal cancel every wait ends at once (timers are cancelled as they are
        // made): checking here first is what keeps this loop from spinning.
        if engine_cancelled(ctx) {
            return Ok(Wake::EngineCancelled);
        }
        let Some(at) = at else {
            // An error means the workflow was cancelled: the check above sees it next.
            let _ = ctx.wait_condition(|s| s.pending.is_some()).await;
            continue;
        };
        let Ok(remaining) = (at - now(ctx)?).to_std() else { return Ok(Wake::Time) };
        if remaining.is_zero() {
            return Ok(Wake::Time);
        }
        let mut timer = std::pin::pin!(ctx.timer(remaining));
        temporalio_sdk::workflows::select! {
            _ = timer.as_mut() => {}
            _ = ctx.wait_condition(|s| s.pending.is_some()) => timer.cancel(),
        }
    }
}

fn engine_cancelled(ctx: &WorkflowContext<PublishPostWorkflow>) -> bool {
    ctx.cancellation_token().is_cancelled()
}

/// An operator cancelled the workflow in Temporal: the job ends `cancelled`, mirrored like the
/// creator's cancel (every activity runs detached from the workflow's cancellation, so the
/// mirror write completes), and the workflow closes as cancelled.
async fn cancelled_by_operator(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<Phase> {
    finish(ctx, Change::to(JobStatus::Cancelled)).await?;
    Err(WorkflowTermination::cancelled())
}

/// When the waiting `needs_attention` job stops waiting (`None`: never). The TTL counts from the
/// first wait, carried across runs.
fn attention_deadline(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<Option<DateTime<Utc>>> {
    let now = now(ctx)?;
    Ok(ctx.state_mut(|s| {
        let ttl = s.input.attention_ttl_ms.map(|ms| chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64));
        if s.attention_until.is_none() {
            s.attention_until = ttl.and_then(|ttl| now.checked_add_signed(ttl));
        }
        s.attention_until
    }))
}

/// Nobody came for the job within the attention TTL: the run closes, the row stays
/// `needs_attention` with its error, and a later command starts a new run (update-with-start).
async fn close_unattended(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<PublishJobResult> {
    let last_error = ctx.state(|s| s.last_error.clone());
    finish(ctx, Change { last_error, ..Change::to(JobStatus::NeedsAttention) }).await
}

/// Whether to go on in a new run now: the run has carried out its share of commands, or
/// Temporal says its history grows large. Never after an operator's cancel, which this run
/// must carry out.
fn continue_as_new_due(ctx: &WorkflowContext<PublishPostWorkflow>) -> bool {
    let spent = ctx.state(|s| s.input.commands_per_run.is_some_and(|limit| s.commands_applied >= limit));
    !engine_cancelled(ctx) && (spent || ctx.continue_as_new_suggested())
}

/// Continues as new with the job's state; `next_attempt_at` when waiting for a retry.
fn continue_as_new(
    ctx: &mut WorkflowContext<PublishPostWorkflow>,
    next_attempt_at: Option<DateTime<Utc>>,
) -> WorkflowResult<PublishJobResult> {
    let input = ctx.state_mut(|s| PublishJobInput {
        publish_at: s.publish_at,
        resume: Some(Resume {
            version: s.version,
            attempt_count: s.attempt_count,
            epoch: s.epoch,
            lost: None,
            carried: Some(Carried {
                status: s.status,
                retries_used: s.retries_used,
                next_attempt_at,
                last_error: s.last_error.clone(),
                attention_until: s.attention_until,
                pending: s.pending.take(),
            }),
        }),
        ..s.input.clone()
    });
    match ctx.continue_as_new(input, ContinueAsNewOptions::default()) {
        Err(termination) => Err(termination),
        Ok(never) => match never {},
    }
}

/// Carries out an accepted command and says what the run loop does next.
async fn apply(ctx: &mut WorkflowContext<PublishPostWorkflow>, command: JobCommand) -> WorkflowResult<Phase> {
    let status = ctx.state_mut(|s| {
        s.commands_applied += 1;
        s.status
    });
    Ok(match command {
        JobCommand::Cancel => {
            let result = finish(ctx, Change::to(JobStatus::Cancelled)).await?;
            Phase::Done(result)
        }
        JobCommand::Reschedule { publish_at } => {
            // A new time is a new plan: a fresh retry budget, and readiness checked again.
            ctx.state_mut(|s| {
                s.publish_at = publish_at;
                s.retries_used = 0;
            });
            mirror(ctx, Change { publish_at: Some(publish_at), ..Change::to(JobStatus::Scheduled) }).await?;
            check_readiness(ctx).await;
            Phase::AwaitPublishTime
        }
        JobCommand::Retry | JobCommand::PublishNow if status == JobStatus::NeedsAttention => {
            // The creator fixed what was wrong (or checked the platform): a fresh retry budget.
            ctx.state_mut(|s| s.retries_used = 0);
            Phase::Run { preflight: true, creator_retry: true }
        }
        JobCommand::Retry | JobCommand::PublishNow => Phase::Run { preflight: status == JobStatus::Scheduled, creator_retry: false },
    })
}

/// Preflight (when asked), then attempts until one publishes or a wait or the creator is due.
async fn publish(ctx: &mut WorkflowContext<PublishPostWorkflow>, preflight: bool, creator_retry: bool) -> WorkflowResult<Phase> {
    let (job_id, epoch) = ctx.state(|s| (s.input.job_id, s.epoch));
    // One `publishing` mirror write per attempt: before preflight when there is one (so a
    // command's caller sees the job taken), otherwise with the attempt's count below.
    if preflight {
        mirror(ctx, Change::to(JobStatus::Publishing)).await?;
        ctx.state_mut(|s| s.preflighting = true);
        let options = preflight_activity_options(heartbeat_timeout(ctx));
        let report = ctx.execute_activity(PublishActivities::preflight, PreflightRequest { job_id }, options).await;
        ctx.state_mut(|s| s.preflighting = false);
        // The activity bounds itself (its deadline is a report, not an error); an error here is
        // our own infrastructure failing every try, and the job must say so rather than wait.
        let report: PreflightReport = match report {
            Ok(report) => report,
            Err(e) => PreflightReport {
                ok: false,
                checked_at: now(ctx)?,
                checks: Vec::new(),
                error: Some(JobError::new("preflight.timeout", format!("preflight could not complete after {PREFLIGHT_TRIES} tries: {e}"))),
            },
        };
        // Taken while preflight ran: nothing has reached the platform yet.
        if engine_cancelled(ctx) {
            return cancelled_by_operator(ctx).await;
        }
        if let Some(command) = ctx.state_mut(|s| s.pending.take()) {
            return apply(ctx, command).await;
        }
        if !report.ok {
            let error = report.error.unwrap_or_else(|| JobError::new("preflight.failed", "preflight failed without naming a cause"));
            mirror(ctx, Change { last_error: Some(error), ..Change::to(JobStatus::NeedsAttention) }).await?;
            return Ok(Phase::AwaitCreator);
        }
    }
    let attempt = ctx.state_mut(|s| {
        s.attempt_count += 1;
        s.attempt_count
    });
    // The attempt count reaches Postgres with the attempt's outcome; the attempt's own row is
    // written by the activity as it starts.
    if !preflight {
        mirror(ctx, Change::to(JobStatus::Publishing)).await?;
    }
    let outcome = run_attempt(ctx, PublishRequest { job_id, attempt, creator_retry, epoch }).await;
    match outcome {
        // A publish that went through wins over a cancel that arrived while it was in flight.
        AttemptOutcome::Published { platform_post_id, published_at } => {
            let change =
                Change { published_at: Some(published_at), platform_post_id: Some(platform_post_id), ..Change::to(JobStatus::Published) };
            Ok(Phase::Done(finish(ctx, change).await?))
        }
        AttemptOutcome::Failed { .. } if engine_cancelled(ctx) => cancelled_by_operator(ctx).await,
        AttemptOutcome::Failed { error, retryable, retry_after_ms } => {
            let ours = ctx.state_mut(|s| {
                let wait = s.input.retry_backoff_ms.get(s.retries_used).copied();
                s.retries_used += usize::from(wait.is_some());
                wait
            });
            match (retryable, ours) {
                (true, Some(ours_ms)) => {
                    let wait = Duration::from_millis(ours_ms.max(retry_after_ms.unwrap_or(0)));
                    let at = now(ctx)? + chrono::Duration::from_std(wait).unwrap_or_default();
                    mirror(ctx, Change { last_error: Some(error), next_attempt_at: Some(at), ..Change::to(JobStatus::Failed) }).await?;
                    Ok(Phase::AwaitRetry { at })
                }
                _ => {
                    mirror(ctx, Change { last_error: Some(error), ..Change::to(JobStatus::NeedsAttention) }).await?;
                    Ok(Phase::AwaitCreator)
                }
            }
        }
    }
}

async fn run_attempt(ctx: &mut WorkflowContext<PublishPostWorkflow>, request: PublishRequest) -> AttemptOutcome {
    let options = publish_activity_options(heartbeat_timeout(ctx));
    ctx.execute_activity(PublishActivities::publish, request, options)
        .await
        // The activity reports platform failures as values; an error here means our own
        // infrastructure kept failing (database down, workers crashing), which is transient.
        .unwrap_or_else(|e| AttemptOutcome::Failed {
            error: JobError::new("worker.attempt_failed", format!("the attempt could not run: {e}")),
            retryable: true,
            retry_after_ms: None,
        })
}

/// Readiness for the UI long before the publish time (the activity stores it). Only
/// informative: the preflight at publish time is the gate, so a failure here is ignored.
async fn check_readiness(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    let job_id = ctx.state(|s| s.input.job_id);
    let options = readiness_activity_options(heartbeat_timeout(ctx));
    let _ = ctx.execute_activity(PublishActivities::preflight, PreflightRequest { job_id }, options).await;
}

fn now(ctx: &WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<DateTime<Utc>> {
    let time: SystemTime = ctx.workflow_time().ok_or_else(|| ApplicationFailure::new("workflow time is not available"))?;
    Ok(DateTime::<Utc>::from(time))
}

/// What a transition changes. Fields left `None` are cleared, except `publish_at`.
struct Change {
    status: JobStatus,
    last_error: Option<JobError>,
    next_attempt_at: Option<DateTime<Utc>>,
    published_at: Option<DateTime<Utc>>,
    platform_post_id: Option<String>,
    publish_at: Option<DateTime<Utc>>,
    /// The run ends after this write (see [`finish`]).
    closes_workflow: bool,
}

impl Change {
    fn to(status: JobStatus) -> Self {
        Change {
            status,
            last_error: None,
            next_attempt_at: None,
            published_at: None,
            platform_post_id: None,
            publish_at: None,
            closes_workflow: false,
        }
    }
}

/// Records the transition in the workflow's state at once (commands are validated against it),
/// then mirrors it into Postgres.
async fn mirror(ctx: &mut WorkflowContext<PublishPostWorkflow>, change: Change) -> WorkflowResult<()> {
    let (job_id, epoch, version, attempt_count) = ctx.state_mut(|s| {
        s.version += 1;
        s.status = change.status;
        s.last_error = change.last_error.clone();
        // A new state: a later `needs_attention` wait starts its own TTL.
        s.attention_until = None;
        if let Some(at) = change.publish_at {
            s.publish_at = at;
        }
        (s.input.job_id, s.epoch, s.version, s.attempt_count)
    });
    publish_search_attributes(ctx);
    let transition = JobTransition {
        job_id,
        epoch,
        version,
        status: change.status,
        attempt_count,
        last_error: change.last_error,
        next_attempt_at: change.next_attempt_at,
        published_at: change.published_at,
        platform_post_id: change.platform_post_id,
        publish_at: change.publish_at,
        closes_workflow: change.closes_workflow,
    };
    let options = mirror_activity_options(heartbeat_timeout(ctx));
    ctx.execute_activity(PublishActivities::mirror_transition, transition, options).await?;
    Ok(())
}

/// Keeps the Web UI's view current: search attributes to filter on, and a sentence per job.
fn publish_search_attributes(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    let (status, publish_at, channel, creator, attempts) =
        ctx.state(|s| (s.status, s.publish_at, s.input.channel, s.input.creator_id.clone(), s.attempt_count));
    ctx.upsert_search_attributes([
        PUBLISH_STATUS.value_set(status.to_string()),
        CHANNEL.value_set(channel.to_string()),
        CREATOR_ID.value_set(creator.clone()),
        PUBLISH_AT.value_set(Timestamp::new(publish_at.timestamp(), publish_at.timestamp_subsec_nanos() as i32)),
    ]);
    ctx.set_current_details(format!("{channel} post by creator {creator}, due {publish_at}: {status} after {attempts} attempt(s)"));
}

/// Mirrors the run's last transition and returns the workflow's result.
async fn finish(ctx: &mut WorkflowContext<PublishPostWorkflow>, mut change: Change) -> WorkflowResult<PublishJobResult> {
    change.closes_workflow = true;
    let result = PublishJobResult {
        status: change.status,
        attempt_count: ctx.state(|s| s.attempt_count),
        platform_post_id: change.platform_post_id.clone(),
        last_error: change.last_error.clone(),
    };
    mirror(ctx, change).await?;
    Ok(result)
}

/// Every activity runs detached from the workflow's cancellation: a Temporal cancel must not
/// abort a publish call in flight (its outcome decides whether the job is published) nor the
/// mirror write that records the cancel. The run loop checks for a cancel between steps.
fn detached() -> WorkflowCancellationToken {
    WorkflowCancellationToken::new()
}

/// Every activity heartbeats from a ticker while it runs, so a worker that dies mid-activity is
/// noticed within the job's heartbeat timeout, not after the activity's whole timeout.
fn heartbeat_timeout(ctx: &WorkflowContext<PublishPostWorkflow>) -> Duration {
    Duration::from_millis(ctx.state(|s| s.input.heartbeat_timeout_ms))
}

/// The mirror write touches only Postgres: retried until it succeeds, because giving up would
/// lose the job's state.
fn mirror_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_interval(Duration::from_secs(60)).build())
        .cancellation_token(detached())
        .build()
}

/// Preflight at publish time: a few tries, then the job says why it cannot go on.
const PREFLIGHT_TRIES: u32 = 5;

fn preflight_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(PREFLIGHT_TRIES)
                .build(),
        )
        .cancellation_token(detached())
        .build()
}

/// The early readiness check is worth a few tries, not a delay of the publish.
fn readiness_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_attempts(3).build())
        .cancellation_token(detached())
        .build()
}

/// A worker that died mid-attempt is noticed within `heartbeat_timeout` (the activity heartbeats
/// from a ticker for as long as it runs); the attempt is then re-executed, and the re-execution
/// takes the job's fence and resolves what the dead one left at the platform before calling.
/// The waits between executions stay short (the post is due now): a frozen worker's open polls
/// can swallow several re-executions in a row, each lost for a heartbeat timeout, and a long
/// backoff after each would add up to minutes.
fn publish_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(PUBLISH_ATTEMPT_TIMEOUT)
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(5))
                .maximum_attempts(10)
                .build(),
        )
        .cancellation_token(detached())
        .build()
}
