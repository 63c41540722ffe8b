//! The reconciler: Postgres says which jobs are not final, Temporal says which workflows run.
//! A job whose workflow is missing or was stopped outside our control is restarted (its time is
//! still ahead) or surfaced as `needs_attention` with `reconcile.workflow_lost`, in a new run
//! that takes the creator's commands. Nothing stays stuck in `scheduled` or `publishing` without
//! anyone knowing.

use std::{collections::HashSet, time::Duration};

use anyhow::Context;
use autopost_api::engine::{self, Start};
use autopost_workflows::{Channel, JobError, JobStatus, PublishJobInput, PublishPostWorkflow, Resume};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;
use temporalio_client::{Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowListOptions, errors::WorkflowInteractionError};
use uuid::Uuid;

use crate::config::Backoff;

#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    pub task_queue: String,
    pub retry_backoff: Backoff,
    /// Jobs younger than this are left alone: their API request may still be starting them.
    pub grace: Duration,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub checked: usize,
    pub restarted: Vec<Uuid>,
    pub surfaced: Vec<Uuid>,
}

struct OpenJob {
    id: Uuid,
    creator_id: String,
    channel: String,
    status: String,
    publish_at: DateTime<Utc>,
    version: i64,
    workflow_id: String,
    attempt_count: i32,
}

/// Runs a pass now and then every `interval`, until the process ends.
pub async fn run(db: PgPool, temporal: Client, settings: ReconcileSettings, interval: Duration) {
    loop {
        match reconcile_once(&db, &temporal, &settings).await {
            Ok(report) if report.restarted.is_empty() && report.surfaced.is_empty() => {
                tracing::debug!(checked = report.checked, "reconciled");
            }
            Ok(report) => tracing::warn!(?report, "reconciler restored lost workflows"),
            Err(error) => tracing::error!(error = %format!("{error:#}"), "reconciliation failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

#[tracing::instrument(skip_all)]
pub async fn reconcile_once(db: &PgPool, temporal: &Client, settings: &ReconcileSettings) -> anyhow::Result<ReconcileReport> {
    let grace = chrono::Duration::from_std(settings.grace).unwrap_or_default();
    let open = sqlx::query_as!(
        OpenJob,
        r#"SELECT id, creator_id, channel, status, publish_at, version, workflow_id,
                  -- The attempt log is written before the mirror: trust the larger count.
                  GREATEST(attempt_count, (SELECT max(attempt_number) FROM publish_attempts a WHERE a.job_id = j.id)) AS "attempt_count!"
           FROM publish_jobs j
           WHERE status <> ALL($1) AND created_at < $2
           ORDER BY publish_at"#,
        &JobStatus::FINAL.map(|s| s.as_str().to_owned()),
        Utc::now() - grace
    )
    .fetch_all(db)
    .await?;
    let mut report = ReconcileReport { checked: open.len(), ..Default::default() };
    if open.is_empty() {
        return Ok(report);
    }
    // One visibility query finds the running ones; only the rest are described one by one.
    let running: HashSet<String> = temporal
        .list_workflows("WorkflowType = 'PublishPostWorkflow' AND ExecutionStatus = 'Running'", WorkflowListOptions::default())
        .map_ok(|w| w.id().to_owned())
        .try_collect()
        .await
        .context("listing running workflows")?;

    for job in open.into_iter().filter(|j| !running.contains(&j.workflow_id)) {
        let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job.workflow_id.clone());
        let lost_because = match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(description) => match description.status() {
                // Visibility lags; the workflow is fine.
                WorkflowExecutionStatus::Running => continue,
                status => format!("its workflow ended outside Autopost ({status:?})"),
            },
            Err(WorkflowInteractionError::NotFound(_)) => "its workflow was never started".to_owned(),
            Err(other) => return Err(other).context("describing a workflow"),
        };
        let ahead = job.status == "scheduled" && job.publish_at > Utc::now();
        let lost = (!ahead).then(|| {
            JobError::new(
                "reconcile.workflow_lost",
                format!("{lost_because} while the job was {}; check the platform, then retry to publish it", job.status),
            )
        });
        let surfaced = lost.is_some();
        match start(temporal, settings, &job, Resume { version: job.version, attempt_count: job.attempt_count, lost }).await? {
            false => continue,
            true if surfaced => report.surfaced.push(job.id),
            true => report.restarted.push(job.id),
        }
        tracing::warn!(job_id = %job.id, status = %job.status, reason = %lost_because, surfaced, "lost workflow replaced");
    }
    Ok(report)
}

/// Starts a new run for the job; `false` if another reconciler (or the API) was first.
async fn start(temporal: &Client, settings: &ReconcileSettings, job: &OpenJob, resume: Resume) -> anyhow::Result<bool> {
    let channel: Channel = job.channel.parse().map_err(|e| anyhow::anyhow!("job {}: {e}", job.id))?;
    let input = PublishJobInput {
        job_id: job.id,
        creator_id: job.creator_id.clone(),
        channel,
        publish_at: job.publish_at,
        retry_backoff_ms: settings.retry_backoff.as_millis(),
        resume: Some(resume),
    };
    match engine::start_publish_workflow(temporal, &settings.task_queue, input).await.context("starting a replacement workflow")? {
        Start::Started => Ok(true),
        Start::AlreadyRunning => Ok(false),
    }
}
