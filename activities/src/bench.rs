//! The activity of `BenchBaselineWorkflow` (see `autopost_workflows::bench`): a no-op that
//! reports when it ran. Registered on every worker; only `autopost bench` starts workflows that
//! call it, so in production it is never executed.

use std::sync::Arc;

use autopost_workflows::bench as contract;
use chrono::{DateTime, Utc};
use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

pub struct BenchActivities;

#[activities]
impl BenchActivities {
    /// Returns the completion time as the result: the bench reads it through the workflow's
    /// result, so nothing has to be stored anywhere.
    #[activity(definition = contract::RecordCompletion)]
    pub async fn record_completion(
        self: Arc<Self>,
        _ctx: ActivityContext,
        due_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, ActivityError> {
        let now = Utc::now();
        tracing::debug!(%due_at, lag_ms = (now - due_at).num_milliseconds(), "bench baseline activity");
        Ok(now)
    }
}
