//! `BenchBaselineWorkflow`: the floor `autopost bench` compares publishing against.
//!
//! It does the least a scheduled job can do on Temporal: sleep on the workflow clock until an
//! instant, as `PublishPostWorkflow` does, then run one activity that does
//! nothing but note the time it completed. The bench starts N of these due at the same instant
//! and reads each completion time from the workflow's result, so the lag it measures is what
//! Temporal and the SDK cost by themselves; our preflight, publish and mirror costs come on top.

#![allow(unreachable_pub)]

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use temporalio_macros::{activities, activity_definitions, workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, WorkflowContext, WorkflowContextView, WorkflowResult,
    activities::{ActivityContext, ActivityError},
};

#[workflow]
pub struct BenchBaselineWorkflow {
    due_at: DateTime<Utc>,
}

#[workflow_methods]
impl BenchBaselineWorkflow {
    #[init]
    pub fn new(_ctx: &WorkflowContextView, due_at: DateTime<Utc>) -> Self {
        Self { due_at }
    }

    /// Returns when the no-op activity completed, by the worker's clock.
    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<DateTime<Utc>> {
        let due_at = ctx.state(|s| s.due_at);
        // A timer to the instant, re-armed if it fires early against the workflow clock.
        loop {
            let now: SystemTime = ctx.workflow_time().ok_or_else(|| ApplicationFailure::new("workflow time is not available"))?;
            let remaining = (due_at - DateTime::<Utc>::from(now)).to_std().unwrap_or_default();
            if remaining.is_zero() {
                break;
            }
            ctx.timer(remaining).await;
        }
        let completed_at = ctx
            .execute_activity(
                BenchBaselineActivities::record_completion,
                due_at,
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30)).build(),
            )
            .await?;
        Ok(completed_at)
    }
}

/// The activity contract of [`BenchBaselineWorkflow`]; implemented by [`BenchActivities`].
pub struct BenchBaselineActivities;

#[activity_definitions]
impl BenchBaselineActivities {
    /// Does nothing and returns the time it did it. The input is the instant the workflow was
    /// due, so the activity's log can show the lag.
    #[activity(name = "bench_record_completion")]
    pub fn record_completion(due_at: DateTime<Utc>) -> Result<DateTime<Utc>, ActivityError> {
        unimplemented!()
    }
}

/// The implementation, registered only on the workers the bench starts.
pub struct BenchActivities;

#[activities]
impl BenchActivities {
    /// Returns the completion time as the result: the bench reads it through the workflow's
    /// result, so nothing has to be stored anywhere.
    #[activity(definition = bench_baseline_activities::RecordCompletion)]
    pub async fn record_completion(self: Arc<Self>, _ctx: ActivityContext, due_at: DateTime<Utc>) -> Result<DateTime<Utc>, ActivityError> {
        let now = Utc::now();
        tracing::debug!(%due_at, lag_ms = (now - due_at).num_milliseconds(), "bench baseline activity");
        Ok(now)
    }
}
