//! `PublishPostWorkflow`: one durable workflow per publish job.
//!
//! It sleeps until `publish_at`, runs preflight, then up to `1 + retries` publish attempts with
//! the configured waits between them, and mirrors every transition into Postgres. All times are
//! computed from the job's own `publish_at` and the workflow clock, never from the wall clock of
//! whichever worker happens to run it.

#![allow(unreachable_pub)]

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use temporalio_common::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::{
    activities::PublishActivities,
    types::{
        AttemptOutcome, JobError, JobStatus, JobTransition, PreflightReport, PreflightRequest,
        PublishJobInput, PublishJobResult, PublishRequest,
    },
};

/// How long one publish attempt may run: long enough for a platform to process a video
/// (Instagram suggests polling for ~5 minutes), bounded so a hung call becomes a failed attempt.
const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A worker that died mid-attempt is noticed this quickly; the attempt is then re-executed,
/// and the re-execution resolves what the dead one left at the platform before calling again.
const PUBLISH_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(15);

/// Patch: preflight also runs when the workflow starts, so readiness shows before publish time.
const READINESS_AT_START: &str = "readiness-at-start";

#[workflow]
pub struct PublishPostWorkflow {
    input: PublishJobInput,
    /// Sequence number of the last mirrored transition.
    seq: i64,
    attempt_count: i32,
}

#[workflow_methods]
impl PublishPostWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, input: PublishJobInput) -> Self {
        Self { input, seq: 0, attempt_count: 0 }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<PublishJobResult> {
        let input = ctx.state(|s| s.input.clone());
        if ctx.patched(READINESS_AT_START) {
            // Readiness for the UI long before the publish time (the activity stores it). Only
            // informative: the preflight at publish time is the gate, so a failure here is ignored.
            let _ = ctx
                .execute_activity(
                    PublishActivities::preflight,
                    PreflightRequest { job_id: input.job_id },
                    readiness_activity_options(),
                )
                .await;
        }
        sleep_until(ctx, input.publish_at).await?;

        let report: PreflightReport = ctx
            .execute_activity(
                PublishActivities::preflight,
                PreflightRequest { job_id: input.job_id },
                infrastructure_activity_options(Duration::from_secs(120)),
            )
            .await?;
        if !report.ok {
            let error = report.error.unwrap_or_else(|| {
                JobError::new("preflight.failed", "preflight failed without naming a cause")
            });
            return finish(ctx, JobStatus::NeedsAttention, Some(error), None, None).await;
        }

        let mut backoff = input.retry_backoff();
        loop {
            let attempt = ctx.state_mut(|s| {
                s.attempt_count += 1;
                s.attempt_count
            });
            mirror(ctx, JobStatus::Publishing, None, None, None, None).await?;

            let outcome = ctx
                .execute_activity(
                    PublishActivities::publish,
                    PublishRequest { job_id: input.job_id, attempt },
                    publish_activity_options(),
                )
                .await
                // The activity reports platform failures as values; an error here means our own
                // infrastructure kept failing (database down, workers crashing), which is transient.
                .unwrap_or_else(|e| AttemptOutcome::Failed {
                    error: JobError::new("worker.attempt_failed", format!("the attempt could not run: {e}")),
                    retryable: true,
                    retry_after_ms: None,
                });

            match outcome {
                AttemptOutcome::Published { platform_post_id, published_at } => {
                    return finish(ctx, JobStatus::Published, None, Some(published_at), Some(platform_post_id))
                        .await;
                }
                AttemptOutcome::Failed { error, retryable, retry_after_ms } => {
                    let wait = match (retryable, backoff.next()) {
                        (true, Some(ours)) => ours.max(Duration::from_millis(retry_after_ms.unwrap_or(0))),
                        _ => return finish(ctx, JobStatus::NeedsAttention, Some(error), None, None).await,
                    };
                    let next_attempt_at = now(ctx)? + chrono::Duration::from_std(wait).unwrap_or_default();
                    mirror(ctx, JobStatus::Failed, Some(error), Some(next_attempt_at), None, None).await?;
                    ctx.timer(wait).await;
                }
            }
        }
    }
}

/// Sleeps on durable timers until `at` (a no-op when it has passed). Loops because a timer
/// may fire a little early relative to the workflow clock after a long sleep.
async fn sleep_until(ctx: &mut WorkflowContext<PublishPostWorkflow>, at: DateTime<Utc>) -> WorkflowResult<()> {
    loop {
        let remaining = at - now(ctx)?;
        let Ok(remaining) = remaining.to_std() else { return Ok(()) };
        if remaining.is_zero() {
            return Ok(());
        }
        ctx.timer(remaining).await;
    }
}

fn now(ctx: &WorkflowContext<PublishPostWorkflow>) -> WorkflowResult<DateTime<Utc>> {
    let time: SystemTime = ctx
        .workflow_time()
        .ok_or_else(|| ApplicationFailure::new("workflow time is not available"))?;
    Ok(DateTime::<Utc>::from(time))
}

async fn mirror(
    ctx: &mut WorkflowContext<PublishPostWorkflow>,
    status: JobStatus,
    last_error: Option<JobError>,
    next_attempt_at: Option<DateTime<Utc>>,
    published_at: Option<DateTime<Utc>>,
    platform_post_id: Option<String>,
) -> WorkflowResult<()> {
    let (job_id, seq, attempt_count) = ctx.state_mut(|s| {
        s.seq += 1;
        (s.input.job_id, s.seq, s.attempt_count)
    });
    let transition = JobTransition {
        job_id,
        seq,
        status,
        attempt_count,
        last_error,
        next_attempt_at,
        published_at,
        platform_post_id,
    };
    ctx.execute_activity(
        PublishActivities::mirror_transition,
        transition,
        infrastructure_activity_options(Duration::from_secs(30)),
    )
    .await?;
    Ok(())
}

async fn finish(
    ctx: &mut WorkflowContext<PublishPostWorkflow>,
    status: JobStatus,
    last_error: Option<JobError>,
    published_at: Option<DateTime<Utc>>,
    platform_post_id: Option<String>,
) -> WorkflowResult<PublishJobResult> {
    mirror(ctx, status, last_error.clone(), None, published_at, platform_post_id.clone()).await?;
    Ok(PublishJobResult {
        status,
        attempt_count: ctx.state(|s| s.attempt_count),
        platform_post_id,
        last_error,
    })
}

/// Options for activities that only touch our own infrastructure (Postgres, the platform's
/// read-only probes): retried until they succeed, because giving up would lose the job.
fn infrastructure_activity_options(timeout: Duration) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(timeout)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(60))
                .build(),
        )
        .build()
}

/// The early readiness check is worth a few tries, not a delay of the publish.
fn readiness_activity_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .retry_policy(RetryPolicy::builder().initial_interval(Duration::from_secs(1)).maximum_attempts(3).build())
        .build()
}

fn publish_activity_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(PUBLISH_ATTEMPT_TIMEOUT)
        .heartbeat_timeout(PUBLISH_HEARTBEAT_TIMEOUT)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(10)
                .build(),
        )
        .build()
}
