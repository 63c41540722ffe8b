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
    search_attributes::{SearchAttributeKey, SearchAttributes, Timestamp},
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, CancellableFuture, ContinueAsNewOptions, LocalActivityOptions, WorkflowCancellationToken,
    WorkflowContext, WorkflowContextView, WorkflowResult, WorkflowTermination,
};

use crate::{
    activities::PublishActivities,
    types::{
        ArmOutcome, ArmRequest, AttemptOutcome, Carried, Claimant, CommandAccepted, FenceClaim, FirstCommentRequest, JobCommand,
        JobContent, JobError, JobStatus, JobTransition, PreflightReport, PreflightRequest, PublishJobInput, PublishJobResult,
        PublishRequest, Resume,
    },
};

/// A refusal from an update handler, as Temporal reports it to the caller.
type Refusal = Box<dyn Error + Send + Sync>;

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
    /// When a `failed` job's next attempt is due, as the row shows it.
    next_attempt_at: Option<DateTime<Utc>>,
    /// When a `needs_attention` job stops waiting for its creator; set when the wait starts.
    attention_until: Option<DateTime<Utc>>,
    /// Commands this run carried out, against `input.commands_per_run`.
    commands_applied: u32,
    /// The armed activity runs, fenced at this mirror version: a command must claim the fence in
    /// Postgres before it is accepted, because the activity fires on its own at the instant.
    armed: Option<i64>,
    /// A command's claim of the fence is in flight: other commands wait for its outcome.
    claiming: bool,
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
    /// `scheduled`, inside the arming lead: the armed activity prepares and fires at the instant.
    Armed,
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
            next_attempt_at: carried.as_ref().and_then(|c| c.next_attempt_at),
            attention_until: carried.as_ref().and_then(|c| c.attention_until),
            commands_applied: 0,
            armed: None,
            claiming: false,
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
                check_readiness_unless_arming(ctx).await?;
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
                    let wake_at = arm_at(ctx).unwrap_or(ctx.state(|s| s.publish_at));
                    match wait_for_time_or_command(ctx, Some(wake_at)).await? {
                        Wake::Time if arm_at(ctx).is_some() => Phase::Armed,
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
                Phase::Armed => armed(ctx).await?,
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
    pub async fn retry(ctx: &mut WorkflowContext<Self>, _: ()) -> Result<CommandAccepted, Refusal> {
        accept(ctx, JobCommand::Retry).await
    }

    #[update_validator(reschedule)]
    fn validate_reschedule(&self, _ctx: &WorkflowContextView, publish_at: &DateTime<Utc>) -> Result<(), Box<dyn Error + Send + Sync>> {
        // The API refuses times in the past; the workflow clock is not readable here.
        self.validate(&JobCommand::Reschedule { publish_at: *publish_at })
    }

    #[update]
    pub async fn reschedule(ctx: &mut WorkflowContext<Self>, publish_at: DateTime<Utc>) -> Result<CommandAccepted, Refusal> {
        accept(ctx, JobCommand::Reschedule { publish_at }).await
    }

    #[update_validator(edit)]
    fn validate_edit(&self, _ctx: &WorkflowContextView, content: &JobContent) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::Edit { content: Box::new(content.clone()) })
    }

    /// See [`JobCommand::Edit`]; the API validated the content like a create.
    #[update]
    pub async fn edit(ctx: &mut WorkflowContext<Self>, content: JobContent) -> Result<CommandAccepted, Refusal> {
        accept(ctx, JobCommand::Edit { content: Box::new(content) }).await
    }

    #[update_validator(cancel)]
    fn validate_cancel(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::Cancel)
    }

    #[update]
    pub async fn cancel(ctx: &mut WorkflowContext<Self>, _: ()) -> Result<CommandAccepted, Refusal> {
        accept(ctx, JobCommand::Cancel).await
    }

    #[update_validator(publish_now)]
    fn validate_publish_now(&self, _ctx: &WorkflowContextView, _: &()) -> Result<(), Box<dyn Error + Send + Sync>> {
        self.validate(&JobCommand::PublishNow)
    }

    #[update]
    pub async fn publish_now(ctx: &mut WorkflowContext<Self>, _: ()) -> Result<CommandAccepted, Refusal> {
        accept(ctx, JobCommand::PublishNow).await
    }
}

impl PublishPostWorkflow {
    /// One command at a time, and only in the states that allow it: two concurrent commands
    /// cannot both win, and none can slip in while an attempt talks to the platform.
    fn validate(&self, command: &JobCommand) -> Result<(), Refusal> {
        if let Some(pending) = &self.pending {
            return Err(format!("cannot {}: a {} command is being applied", command.name(), pending.name()).into());
        }
        if self.claiming {
            return Err(format!("cannot {}: another command is being applied", command.name()).into());
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

/// Accepts a validated command. While the job is armed its activity fires on its own at the
/// instant, so the command first claims the job's fence in Postgres: of the command and the
/// publish, the first to claim wins, and a command that lost is refused with the truth.
async fn accept(ctx: &mut WorkflowContext<PublishPostWorkflow>, command: JobCommand) -> Result<CommandAccepted, Refusal> {
    // Validated again: updates of one workflow task pass their validators before any handler
    // runs, so a second command's validator cannot yet see the first one's.
    ctx.state(|s| s.validate(&command))?;
    if ctx.state(|s| s.armed.is_some()) {
        ctx.state_mut(|s| s.claiming = true);
        let winner = claim_fence(ctx).await;
        ctx.state_mut(|s| s.claiming = false);
        match winner {
            Ok(Claimant::Command) => {}
            Ok(Claimant::Publish) => {
                // The post is at the platform: the job is publishing, whatever the mirror says yet.
                ctx.state_mut(|s| s.status = JobStatus::Publishing);
                return Err(command.allowed_in(JobStatus::Publishing).err().unwrap_or_default().into());
            }
            Err(e) => return Err(format!("cannot {} now: the job's fence could not be taken ({e}); try again", command.name()).into()),
        }
    }
    Ok(ctx.state_mut(|s| s.accept(command)))
}

/// Claims the fence of the current arming for a command (or an operator's cancel).
async fn claim_fence(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> Result<Claimant, temporalio_sdk::ActivityExecutionError> {
    let claim = ctx.state(|s| FenceClaim {
        job_id: s.input.job_id,
        epoch: s.epoch,
        version: s.armed.unwrap_or(s.version),
        claimant: Claimant::Command,
    });
    ctx.execute_local_activity(PublishActivities::claim_fence, claim, fence_claim_options()).await
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
            check_readiness_unless_arming(ctx).await?;
            Phase::AwaitPublishTime
        }
        // New content in the same plan: the job waits where it waited, and what was prepared
        // for the old content is discarded with the write (the re-arming prepares afresh).
        JobCommand::Edit { content } => {
            let (last_error, next_attempt_at) = ctx.state(|s| (s.last_error.clone(), s.next_attempt_at));
            mirror(ctx, Change { last_error, next_attempt_at, content: Some(*content), ..Change::to(status) }).await?;
            match (status, next_attempt_at) {
                (JobStatus::Failed, Some(at)) => Phase::AwaitRetry { at },
                (JobStatus::NeedsAttention, _) => Phase::AwaitCreator,
                _ => {
                    check_readiness_unless_arming(ctx).await?;
                    Phase::AwaitPublishTime
                }
            }
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
    let version = ctx.state(|s| s.version);
    let outcome = run_attempt(ctx, PublishRequest { job_id, attempt, creator_retry, epoch, version }).await;
    attempt_ended(ctx, outcome, Mirrored::No).await
}

/// Whether the attempt's activity already mirrored a publish it made (the armed one does).
#[derive(PartialEq)]
enum Mirrored {
    No,
    Published,
}

/// After an attempt: done when it published, else the retry schedule or the creator.
async fn attempt_ended(
    ctx: &mut WorkflowContext<PublishPostWorkflow>,
    outcome: AttemptOutcome,
    mirrored: Mirrored,
) -> WorkflowResult<Phase> {
    match outcome {
        // A publish that went through wins over a cancel that arrived while it was in flight.
        AttemptOutcome::Published { platform_post_id, published_at, first_comment } => {
            let change = Change {
                published_at: Some(published_at),
                platform_post_id: Some(platform_post_id.clone()),
                ..Change::to(JobStatus::Published)
            };
            let result = if mirrored == Mirrored::Published { finished_by_activity(ctx, change) } else { finish(ctx, change).await? };
            if first_comment {
                post_first_comment(ctx, platform_post_id).await;
            }
            Ok(Phase::Done(result))
        }
        AttemptOutcome::Failed { .. } if engine_cancelled(ctx) => cancelled_by_operator(ctx).await,
        // The window is the platform's, not a failure of ours: waited out without a retry spent.
        AttemptOutcome::Failed { error, retryable: true, retry_after_ms: Some(wait_ms), quota_wait: true } => {
            let at = now(ctx)? + chrono::Duration::milliseconds(wait_ms.min(i64::MAX as u64) as i64);
            mirror(ctx, Change { last_error: Some(error), next_attempt_at: Some(at), ..Change::to(JobStatus::Failed) }).await?;
            Ok(Phase::AwaitRetry { at })
        }
        AttemptOutcome::Failed { error, retryable, retry_after_ms, .. } => {
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

/// The first comment, after the job is mirrored `published`: the post is live whatever becomes
/// of it, so its failure (recorded on the job by the activity) never changes the job's outcome.
async fn post_first_comment(ctx: &mut WorkflowContext<PublishPostWorkflow>, platform_post_id: String) {
    let job_id = ctx.state(|s| s.input.job_id);
    let options = first_comment_activity_options(heartbeat_timeout(ctx));
    let _ = ctx.execute_activity(PublishActivities::first_comment, FirstCommentRequest { job_id, platform_post_id }, options).await;
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
            quota_wait: false,
        })
}

/// When the job arms (`None`: runs from before arming wake at `publish_at` itself).
fn arm_at(ctx: &WorkflowContext<PublishPostWorkflow>) -> Option<DateTime<Utc>> {
    ctx.state(|s| s.input.arm.map(|arm| arm.arm_at(s.input.job_id, s.publish_at)))
}

/// The early readiness check, unless the job arms at once (the armed activity's preflight
/// stores readiness itself).
async fn check_readiness_unless_arming(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<()> {
    if arm_at(ctx).is_some_and(|at| at <= now(ctx).unwrap_or(at)) {
        return Ok(());
    }
    check_readiness(ctx).await;
    Ok(())
}

/// Armed: one activity prepares the publish and fires it at the instant on its own, while the
/// run waits for its outcome or a command (which claims the fence before it is accepted).
async fn armed(ctx: &mut WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<Phase> {
    // A command accepted as the arming time came was accepted unarmed: it goes first.
    if let Some(command) = ctx.state_mut(|s| s.pending.take()) {
        return apply(ctx, command).await;
    }
    if engine_cancelled(ctx) {
        return cancelled_by_operator(ctx).await;
    }
    let request = ctx.state_mut(|s| {
        s.armed = Some(s.version);
        ArmRequest { job_id: s.input.job_id, epoch: s.epoch, version: s.version, attempt: s.attempt_count + 1, publish_at: s.publish_at }
    });
    let until_instant = (request.publish_at - now(ctx)?).to_std().unwrap_or_default();
    let options = arm_activity_options(heartbeat_timeout(ctx), until_instant);
    // Its own handle on the context: the run goes on using `ctx` while the activity is pending.
    let activity_ctx = ctx.clone();
    let mut activity = std::pin::pin!(activity_ctx.execute_activity(PublishActivities::arm, request, options));
    let finished = temporalio_sdk::workflows::select! {
        outcome = activity.as_mut() => Some(outcome),
        // A command that won the fence, or an operator's cancel (which ends every wait at once).
        _ = ctx.wait_condition(|s| s.pending.is_some()) => None,
    };
    let outcome = match finished {
        Some(outcome) => outcome,
        None if !engine_cancelled(ctx) => {
            // The command holds the fence: this arming can never publish. Its activity is told to
            // stop only to free its slot; correctness does not wait for that.
            activity.cancel();
            ctx.state_mut(|s| s.armed = None);
            let command = ctx.state_mut(|s| s.pending.take()).ok_or_else(|| ApplicationFailure::new("woken without a command"))?;
            return apply(ctx, command).await;
        }
        None => match claim_fence(ctx).await {
            // The operator's cancel took the fence first: nothing is published.
            Ok(Claimant::Command) => {
                activity.cancel();
                ctx.state_mut(|s| s.armed = None);
                return cancelled_by_operator(ctx).await;
            }
            // The publish is at the platform (or the fence cannot be read): its outcome decides.
            _ => activity.await,
        },
    };
    ctx.state_mut(|s| s.armed = None);
    match outcome {
        Ok(ArmOutcome::NotReady { report }) => {
            if engine_cancelled(ctx) {
                return cancelled_by_operator(ctx).await;
            }
            if let Some(command) = ctx.state_mut(|s| s.pending.take()) {
                return apply(ctx, command).await;
            }
            let error = report.error.unwrap_or_else(|| JobError::new("preflight.failed", "preflight failed without naming a cause"));
            mirror(ctx, Change { last_error: Some(error), ..Change::to(JobStatus::NeedsAttention) }).await?;
            Ok(Phase::AwaitCreator)
        }
        // A command claimed the fence; its handler accepts it in the same step.
        Ok(ArmOutcome::Disarmed) => {
            if ctx.wait_condition(|s| s.pending.is_some()).await.is_err() || engine_cancelled(ctx) {
                return cancelled_by_operator(ctx).await;
            }
            let command = ctx.state_mut(|s| s.pending.take()).ok_or_else(|| ApplicationFailure::new("disarmed without a command"))?;
            apply(ctx, command).await
        }
        Ok(ArmOutcome::Fired { outcome }) => {
            fired(ctx);
            let mirrored = if matches!(outcome, AttemptOutcome::Published { .. }) { Mirrored::Published } else { Mirrored::No };
            attempt_ended(ctx, outcome, mirrored).await
        }
        // Our own infrastructure failed every try; it may have fired. The next attempt resolves
        // whatever it left at the platform before it calls again.
        Err(e) => {
            fired(ctx);
            let error = JobError::new("worker.attempt_failed", format!("the attempt could not run: {e}"));
            attempt_ended(ctx, AttemptOutcome::Failed { error, retryable: true, retry_after_ms: None, quota_wait: false }, Mirrored::No)
                .await
        }
    }
}

/// The armed activity fired: it counted the attempt and mirrored `publishing` itself.
fn fired(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    ctx.state_mut(|s| {
        s.attempt_count += 1;
        s.version += 1;
        s.status = JobStatus::Publishing;
    });
}

/// Readiness for the UI long before the publish time (the activity stores it). Only
/// informative: the preflight at publish time is the gate, so a failure here is ignored.
async fn check_readiness(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    let (job_id, local) = ctx.state(|s| (s.input.job_id, s.input.local_readiness));
    let request = PreflightRequest { job_id };
    if local {
        let _ = ctx.execute_local_activity(PublishActivities::preflight, request, readiness_local_activity_options()).await;
    } else {
        let _ = ctx.execute_activity(PublishActivities::preflight, request, readiness_activity_options(heartbeat_timeout(ctx))).await;
    }
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
    /// An edit's new content.
    content: Option<JobContent>,
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
            content: None,
        }
    }
}

/// Records the transition in the workflow's state at once (commands are validated against it),
/// then mirrors it into Postgres.
async fn mirror(ctx: &mut WorkflowContext<PublishPostWorkflow>, change: Change) -> WorkflowResult<()> {
    let transition = record(ctx, change);
    // Runs that arm write their own mirror as local activities: no round trip through the server
    // for a write that only touches Postgres.
    if ctx.state(|s| s.input.arm.is_some()) {
        ctx.execute_local_activity(PublishActivities::mirror_transition, transition, mirror_local_activity_options()).await?;
    } else {
        let options = mirror_activity_options(heartbeat_timeout(ctx));
        ctx.execute_activity(PublishActivities::mirror_transition, transition, options).await?;
    }
    Ok(())
}

/// The transition in the workflow's state and search attributes, and as the mirror writes it.
fn record(ctx: &mut WorkflowContext<PublishPostWorkflow>, change: Change) -> JobTransition {
    let (job_id, epoch, version, attempt_count) = ctx.state_mut(|s| {
        s.version += 1;
        s.status = change.status;
        s.last_error = change.last_error.clone();
        s.next_attempt_at = change.next_attempt_at;
        // A new state: a later `needs_attention` wait starts its own TTL.
        s.attention_until = None;
        if let Some(at) = change.publish_at {
            s.publish_at = at;
        }
        (s.input.job_id, s.epoch, s.version, s.attempt_count)
    });
    publish_search_attributes_for(ctx, change.publish_at.is_some());
    JobTransition {
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
        content: change.content,
        closes_workflow: change.closes_workflow,
    }
}

/// Keeps the Web UI's view current at the start of a run. Runs that arm were started with every
/// search attribute set ([`search_attributes_at_start`]; a continued run inherits them), so
/// they upsert nothing here.
fn publish_search_attributes(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    if ctx.state(|s| s.input.arm.is_some()) {
        set_details(ctx);
    } else {
        publish_search_attributes_for(ctx, true);
    }
}

/// After a transition: search attributes to filter on, and a sentence per job. Runs that arm
/// write only what changed: the status, and the publish time when it moved.
fn publish_search_attributes_for(ctx: &mut WorkflowContext<PublishPostWorkflow>, publish_at_changed: bool) {
    let (status, publish_at, channel, creator, arms) =
        ctx.state(|s| (s.status, s.publish_at, s.input.channel, s.input.creator_id.clone(), s.input.arm.is_some()));
    let publish_at_value = PUBLISH_AT.value_set(timestamp(publish_at));
    if !arms {
        ctx.upsert_search_attributes([
            PUBLISH_STATUS.value_set(status.to_string()),
            CHANNEL.value_set(channel.to_string()),
            CREATOR_ID.value_set(creator),
            publish_at_value,
        ]);
    } else if publish_at_changed {
        ctx.upsert_search_attributes([PUBLISH_STATUS.value_set(status.to_string()), publish_at_value]);
    } else {
        ctx.upsert_search_attributes([PUBLISH_STATUS.value_set(status.to_string())]);
    }
    set_details(ctx);
}

fn set_details(ctx: &mut WorkflowContext<PublishPostWorkflow>) {
    let (status, publish_at, channel, creator, attempts) =
        ctx.state(|s| (s.status, s.publish_at, s.input.channel, s.input.creator_id.clone(), s.attempt_count));
    ctx.set_current_details(format!("{channel} post by creator {creator}, due {publish_at}: {status} after {attempts} attempt(s)"));
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp::new(at.timestamp(), at.timestamp_subsec_nanos() as i32)
}

/// Every search attribute of a run started with `input`, as its start options carry them: the
/// status it starts in, its channel, creator and publish time.
pub fn search_attributes_at_start(input: &PublishJobInput) -> SearchAttributes {
    let status = match &input.resume {
        Some(Resume { lost: Some(_), .. }) => JobStatus::NeedsAttention,
        Some(Resume { carried: Some(carried), .. }) => carried.status,
        _ => JobStatus::Scheduled,
    };
    SearchAttributes::new([
        PUBLISH_STATUS.value_set(status.to_string()),
        CHANNEL.value_set(input.channel.to_string()),
        CREATOR_ID.value_set(input.creator_id.clone()),
        PUBLISH_AT.value_set(timestamp(input.publish_at)),
    ])
}

/// Mirrors the run's last transition and returns the workflow's result.
async fn finish(ctx: &mut WorkflowContext<PublishPostWorkflow>, mut change: Change) -> WorkflowResult<PublishJobResult> {
    let result = closing(ctx, &mut change);
    mirror(ctx, change).await?;
    Ok(result)
}

/// Marks `change` as the run's last and returns the workflow's result it makes.
fn closing(ctx: &WorkflowContext<PublishPostWorkflow>, change: &mut Change) -> PublishJobResult {
    change.closes_workflow = true;
    PublishJobResult {
        status: change.status,
        attempt_count: ctx.state(|s| s.attempt_count),
        platform_post_id: change.platform_post_id.clone(),
        last_error: change.last_error.clone(),
    }
}

/// The run's last transition, which the armed activity mirrored itself (`published`, closing):
/// recorded in the workflow's state, not written again.
fn finished_by_activity(ctx: &mut WorkflowContext<PublishPostWorkflow>, mut change: Change) -> PublishJobResult {
    let result = closing(ctx, &mut change);
    record(ctx, change);
    result
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
        .retry_policy(mirror_retry_policy())
        .cancellation_token(detached())
        .build()
}

/// The same write as a local activity, in the worker that runs the workflow task.
fn mirror_local_activity_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(mirror_retry_policy())
        .cancellation_token(detached())
        .build()
}

/// Without a limit on tries: a mirror write that gave up would lose the job's state.
fn mirror_retry_policy() -> RetryPolicy {
    RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_interval(Duration::from_secs(60)).build()
}

/// A command's claim of the fence is one insert; it is retried briefly, then the command is
/// refused (the creator may try again) rather than left hanging.
fn fence_claim_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .schedule_to_close_timeout(Duration::from_secs(30))
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_millis(200)).maximum_interval(Duration::from_secs(2)).build())
        .cancellation_token(detached())
        .build()
}

/// An activity that heartbeats, detached from the workflow's cancellation, tried up to `tries`
/// times with waits from 1 s growing to `longest_wait`.
fn retried(start_to_close: Duration, heartbeat_timeout: Duration, longest_wait: Duration, tries: u32) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(
            RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_interval(longest_wait).maximum_attempts(tries).build(),
        )
        .cancellation_token(detached())
        .build()
}

/// The armed activity runs from arming until after the instant: its timeout counts the wait. A
/// worker that dies while it is armed is noticed within the heartbeat timeout; the activity is
/// then run again on another worker, which re-arms and fires at once if the instant has passed
/// (the fence and the recorded references make that safe). Short waits between tries, as for
/// the publish activity.
fn arm_activity_options(heartbeat_timeout: Duration, until_instant: Duration) -> ActivityOptions {
    retried(until_instant + PREFLIGHT_DEADLINE_BOUND + PUBLISH_ATTEMPT_TIMEOUT, heartbeat_timeout, Duration::from_secs(5), 10)
}

/// The longest preflight the armed activity runs before it prepares (the preflight activity's
/// own timeout).
const PREFLIGHT_DEADLINE_BOUND: Duration = Duration::from_secs(120);

/// Preflight at publish time: a few tries, then the job says why it cannot go on.
const PREFLIGHT_TRIES: u32 = 5;

fn preflight_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    retried(Duration::from_secs(120), heartbeat_timeout, Duration::from_secs(30), PREFLIGHT_TRIES)
}

/// The early readiness check, in the worker running the workflow task. A killed worker's
/// check is taken over with the workflow task (its 10 s timeout), so no heartbeat is needed; a
/// command arriving meanwhile is accepted at the SDK's next workflow-task heartbeat (within
/// 8 s) and carried out once the check returns, as with the remote check. Bounded by the
/// preflight's own deadline (60 s by default).
fn readiness_local_activity_options() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(120))
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_attempts(3).build())
        .cancellation_token(detached())
        .build()
}

/// The early readiness check as an activity (runs started before `local_readiness`): worth a
/// few tries, not a delay of the publish.
fn readiness_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .heartbeat_timeout(heartbeat_timeout)
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_attempts(3).build())
        .cancellation_token(detached())
        .build()
}

/// The comment activity makes its own few platform tries and records their end itself; its
/// executions are retried only while our own infrastructure fails (a worker dies, Postgres is
/// down), and each looks for the comment before it posts.
fn first_comment_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    retried(Duration::from_secs(120), heartbeat_timeout, Duration::from_secs(30), 10)
}

/// A worker that died mid-attempt is noticed within `heartbeat_timeout` (the activity heartbeats
/// from a ticker for as long as it runs); the attempt is then re-executed, and the re-execution
/// takes the job's fence and resolves what the dead one left at the platform before calling.
/// The waits between executions stay short (the post is due now): a frozen worker's open polls
/// can swallow several re-executions in a row, each lost for a heartbeat timeout, and a long
/// backoff after each would add up to minutes.
fn publish_activity_options(heartbeat_timeout: Duration) -> ActivityOptions {
    retried(PUBLISH_ATTEMPT_TIMEOUT, heartbeat_timeout, Duration::from_secs(5), 10)
}
