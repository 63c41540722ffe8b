//! The reconciler: Postgres says which jobs are not final, Temporal says which workflows run.
//! A job whose workflow is missing or was stopped outside our control is restarted (its time is
//! still ahead) or surfaced as `needs_attention` with `reconcile.workflow_lost`, in a new run
//! that takes the creator's commands. A job whose workflow runs but which is still `scheduled`
//! or `publishing` well past its time is reported as stuck. Nothing stays stuck without anyone
//! knowing.
//!
//! One reconciler runs at a time across all workers (a Postgres advisory lock), and it pages
//! through the jobs. It never starts a run for a job whose row is final: the row is read again
//! after Temporal is asked, because a job can finish between the two reads.

use std::{collections::HashSet, time::Duration};

use anyhow::Context;
use autopost_api::engine::{self, Start};
use autopost_workflows::{Channel, JobError, JobStatus, PublishPostWorkflow, Resume};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::PgPool;
use temporalio_client::{Client, WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowListOptions, errors::WorkflowInteractionError};
use uuid::Uuid;

use crate::config::ScheduleSettings;

/// The advisory lock key that makes one reconciler pass run at a time ("autopost" in ASCII).
const RECONCILER_LOCK: i64 = 0x6175_746f_706f_7374;
/// Jobs read from Postgres per page.
const PAGE: i64 = 500;

#[derive(Clone, Debug)]
pub struct ReconcileSettings {
    pub task_queue: String,
    pub schedule: ScheduleSettings,
    /// Jobs younger than this are left alone: their API request may still be starting them.
    pub grace: Duration,
    /// A job still `scheduled` or `publishing` this long after its publish time is stuck.
    pub stuck_after: Duration,
}

/// What one pass did, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// `false` when another worker's reconciler held the lock, so this one did nothing.
    pub ran: bool,
    pub checked: usize,
    pub restarted: Vec<Uuid>,
    pub surfaced: Vec<Uuid>,
    /// Running workflows whose job is still `scheduled` or `publishing` past `stuck_after`.
    pub stuck: Vec<Uuid>,
}

struct OpenJob {
    id: Uuid,
    creator_id: String,
    channel: String,
    status: String,
    publish_at: DateTime<Utc>,
    workflow_id: String,
    created_at: DateTime<Utc>,
}

/// Runs a pass now and then every `interval`, until the process ends.
pub async fn run(db: PgPool, temporal: Client, settings: ReconcileSettings, interval: Duration) {
    loop {
        match reconcile_once(&db, &temporal, &settings).await {
            Ok(report) if report.restarted.is_empty() && report.surfaced.is_empty() => {
                tracing::debug!(checked = report.checked, ran = report.ran, stuck = report.stuck.len(), "reconciled");
            }
            Ok(report) => tracing::warn!(?report, "reconciler restored lost workflows"),
            Err(error) => tracing::error!(error = %format!("{error:#}"), "reconciliation failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

/// One pass, if no other reconciler is running one.
#[tracing::instrument(skip_all)]
pub async fn reconcile_once(db: &PgPool, temporal: &Client, settings: &ReconcileSettings) -> anyhow::Result<ReconcileReport> {
    let Some(report) = crate::exclusively(db, RECONCILER_LOCK, pass(db, temporal, settings)).await? else {
        return Ok(ReconcileReport::default());
    };
    metrics::gauge!("autopost_jobs_stuck").set(report.stuck.len() as f64);
    Ok(report)
}

async fn pass(db: &PgPool, temporal: &Client, settings: &ReconcileSettings) -> anyhow::Result<ReconcileReport> {
    let mut report = ReconcileReport { ran: true, ..Default::default() };
    let grace = chrono::Duration::from_std(settings.grace).unwrap_or_default();
    let stuck_after = chrono::Duration::from_std(settings.stuck_after).unwrap_or_default();
    let finals = JobStatus::FINAL.map(|s| s.as_str().to_owned());
    let mut after: Option<(DateTime<Utc>, Uuid)> = None;
    let mut running: Option<HashSet<String>> = None;
    loop {
        let page = sqlx::query_as!(
            OpenJob,
            r#"SELECT id, creator_id, channel, status, publish_at, workflow_id, created_at
               FROM publish_jobs
               WHERE status <> ALL($1) AND created_at < $2
                 -- Closed on purpose: a `needs_attention` job past its attention TTL.
                 AND workflow_closed_at IS NULL
                 AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
               ORDER BY created_at, id
               LIMIT $5"#,
            &finals,
            Utc::now() - grace,
            after.map(|(at, _)| at),
            after.map(|(_, id)| id),
            PAGE,
        )
        .fetch_all(db)
        .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id));
        report.checked += page.len();
        // One visibility query finds the running ones; only the rest are described one by one.
        if running.is_none() {
            running = Some(list_running(temporal).await?);
        }
        let running = running.as_ref().expect("listed above");
        for job in page {
            if running.contains(&job.workflow_id) {
                let late = Utc::now() - job.publish_at > stuck_after;
                if late && ["scheduled", "publishing"].contains(&job.status.as_str()) {
                    tracing::warn!(job_id = %job.id, status = %job.status, publish_at = %job.publish_at, "job stuck: its workflow runs but it is still not published");
                    report.stuck.push(job.id);
                }
                continue;
            }
            match replace_if_lost(db, temporal, settings, &job).await? {
                Replaced::No => {}
                Replaced::Restarted => report.restarted.push(job.id),
                Replaced::Surfaced => report.surfaced.push(job.id),
            }
        }
    }
    Ok(report)
}

async fn list_running(temporal: &Client) -> anyhow::Result<HashSet<String>> {
    temporal
        .list_workflows("WorkflowType = 'PublishPostWorkflow' AND ExecutionStatus = 'Running'", WorkflowListOptions::default())
        .map_ok(|w| w.id().to_owned())
        .try_collect()
        .await
        .context("listing running workflows")
}

enum Replaced {
    No,
    Restarted,
    Surfaced,
}

/// The row as it is now, read again after Temporal was asked.
struct Current {
    status: String,
    version: i64,
    attempt_count: i32,
    next_epoch: i64,
}

async fn replace_if_lost(db: &PgPool, temporal: &Client, settings: &ReconcileSettings, job: &OpenJob) -> anyhow::Result<Replaced> {
    let handle = temporal.get_workflow_handle::<PublishPostWorkflow>(job.workflow_id.clone());
    let lost_because = match handle.describe(WorkflowDescribeOptions::default()).await {
        Ok(description) => match description.status() {
            // Visibility lags; the workflow is fine. A completed or cancelled run wrote its
            // final transition before it closed: the row read earlier was just older.
            WorkflowExecutionStatus::Running | WorkflowExecutionStatus::Completed | WorkflowExecutionStatus::Canceled => {
                return Ok(Replaced::No);
            }
            status => format!("its workflow ended outside Autopost ({status:?})"),
        },
        Err(WorkflowInteractionError::NotFound(_)) => "its workflow was never started".to_owned(),
        Err(other) => return Err(other).context("describing a workflow"),
    };
    let current = sqlx::query_as!(
        Current,
        r#"SELECT status, version,
                  -- The attempt log is written before the mirror: trust the larger count.
                  GREATEST(attempt_count, (SELECT max(attempt_number) FROM publish_attempts a WHERE a.job_id = j.id)) AS "attempt_count!",
                  GREATEST(epoch, lease_epoch) + 1 AS "next_epoch!"
           FROM publish_jobs j WHERE id = $1"#,
        job.id
    )
    .fetch_optional(db)
    .await?;
    let Some(current) = current else { return Ok(Replaced::No) };
    if current.status.parse::<JobStatus>().is_ok_and(JobStatus::is_final) {
        return Ok(Replaced::No);
    }
    let ahead = current.status == "scheduled" && job.publish_at > Utc::now();
    let lost = (!ahead).then(|| {
        JobError::new(
            "reconcile.workflow_lost",
            format!("{lost_because} while the job was {}; check the platform, then retry to publish it", current.status),
        )
    });
    let surfaced = lost.is_some();
    // The new run fences with a higher epoch: the lost run's late writes and calls are refused.
    let resume = Resume { version: current.version, attempt_count: current.attempt_count, epoch: current.next_epoch, lost, carried: None };
    let channel: Channel = job.channel.parse().map_err(|e| anyhow::anyhow!("job {}: {e}", job.id))?;
    let input = settings.schedule.run_settings().input(job.id, job.creator_id.clone(), channel, job.publish_at, Some(resume));
    match engine::start_publish_workflow(temporal, &settings.task_queue, input).await.context("starting a replacement workflow")? {
        Start::Started => {
            tracing::warn!(job_id = %job.id, status = %current.status, reason = %lost_because, surfaced, "lost workflow replaced");
            Ok(if surfaced { Replaced::Surfaced } else { Replaced::Restarted })
        }
        // Another reconciler (or the API) was first.
        Start::AlreadyRunning => Ok(Replaced::No),
    }
}
