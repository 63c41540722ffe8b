//! Starting a job's workflow: the one place that decides its id, its start policies and what is
//! fixed into each run, shared by the API (a new job, a command on a closed one) and the
//! reconciler (a run replacing a lost one).

use std::time::Duration;

use autopost_workflows::{
    ArmSettings, Channel, CommandAccepted, JobCommand, PublishJobInput, PublishPostWorkflow, Resume, publish::search_attributes_at_start,
    workflow_id,
};
use chrono::{DateTime, Utc};
use temporalio_client::{
    Client, NamespacedClient, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions, WorkflowUpdateWithStartOptions,
    errors::{WorkflowStartError, WorkflowUpdateWithStartError},
    grpc::WorkflowService,
    tonic::{self, IntoRequest},
};
use temporalio_common::protos::temporal::api::{
    enums::v1::{TaskQueueKind, TaskQueueType},
    taskqueue::v1::TaskQueue,
    workflowservice::v1::DescribeTaskQueueRequest,
};
use uuid::Uuid;

/// What each run of a job's workflow is started with. Fixed into the run's input, so a later
/// change of configuration never alters a running job's history.
#[derive(Clone, Debug)]
pub struct RunSettings {
    /// Waits before each retry of a publish; one retry per entry.
    pub retry_backoff: Vec<Duration>,
    /// The publish activity's heartbeat timeout.
    pub heartbeat_timeout: Duration,
    /// How long a `needs_attention` job waits for its creator before its run closes.
    pub attention_ttl: Duration,
    /// Commands one run carries out before it continues as new.
    pub commands_per_run: u32,
    /// How long before `publish_at` a job arms (prepares its publish and waits in-process).
    pub arm_lead: Duration,
    /// Jobs due at one instant arm spread over this window, so arming is not itself a burst.
    pub arm_spread: Duration,
}

impl RunSettings {
    pub fn input(
        &self,
        job_id: Uuid,
        creator_id: String,
        channel: Channel,
        publish_at: DateTime<Utc>,
        resume: Option<Resume>,
    ) -> PublishJobInput {
        PublishJobInput {
            job_id,
            creator_id,
            channel,
            publish_at,
            retry_backoff_ms: self.retry_backoff.iter().map(|d| d.as_millis() as u64).collect(),
            heartbeat_timeout_ms: self.heartbeat_timeout.as_millis() as u64,
            attention_ttl_ms: Some(self.attention_ttl.as_millis().min(u64::MAX as u128) as u64),
            commands_per_run: Some(self.commands_per_run),
            resume,
            arm: Some(ArmSettings { lead_ms: self.arm_lead.as_millis() as u64, spread_ms: self.arm_spread.as_millis() as u64 }),
            local_readiness: true,
        }
    }
}

/// What a start did.
#[derive(Debug, PartialEq, Eq)]
pub enum Start {
    Started,
    /// A run of this job's workflow is already running (another start won): nothing was done.
    AlreadyRunning,
}

/// Starts `publish-job:{job_id}` on `task_queue`. A new job's id is never reused, so a job runs
/// at most once; a replacement (`input.resume` set) may follow a run that ended, never one that
/// still runs.
pub async fn start_publish_workflow(temporal: &Client, task_queue: &str, input: PublishJobInput) -> Result<Start, WorkflowStartError> {
    let reuse = if input.resume.is_some() { WorkflowIdReusePolicy::AllowDuplicate } else { WorkflowIdReusePolicy::RejectDuplicate };
    let options = WorkflowStartOptions::new(task_queue.to_owned(), workflow_id(input.job_id))
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(reuse)
        // Set once here: the run upserts only what changes (its status, a new publish time).
        .search_attributes(search_attributes_at_start(&input))
        .build();
    match temporal.start_workflow(PublishPostWorkflow::run, input, options).await {
        Ok(_) => Ok(Start::Started),
        Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(Start::AlreadyRunning),
        Err(other) => Err(other),
    }
}

/// The identities of the workers polling `task_queue` for workflow tasks: one cheap call that
/// also proves Temporal answers.
pub async fn task_queue_pollers(temporal: &Client, task_queue: &str) -> Result<Vec<String>, tonic::Status> {
    let request = DescribeTaskQueueRequest {
        namespace: temporal.namespace(),
        task_queue: Some(TaskQueue { name: task_queue.to_owned(), kind: TaskQueueKind::Normal as i32, ..Default::default() }),
        task_queue_type: TaskQueueType::Workflow as i32,
        ..Default::default()
    };
    let described = WorkflowService::describe_task_queue(&mut temporal.clone(), request.into_request()).await?;
    Ok(described.into_inner().pollers.into_iter().map(|p| p.identity).collect())
}

/// Sends `command` to the job's workflow, starting a new run with `input` (a carried-on job)
/// if none runs, in one atomic operation: a run that another command started meanwhile takes
/// this command too, as an ordinary update.
pub async fn command_with_start(
    temporal: &Client,
    task_queue: &str,
    input: PublishJobInput,
    command: &JobCommand,
    update_id: Option<String>,
) -> Result<CommandAccepted, WorkflowUpdateWithStartError> {
    let options = WorkflowUpdateWithStartOptions::new(task_queue, workflow_id(input.job_id), WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .maybe_update_id(update_id)
        .search_attributes(search_attributes_at_start(&input))
        .build();
    let run = PublishPostWorkflow::run;
    match command {
        JobCommand::Retry => temporal.execute_update_with_start_workflow(run, input, PublishPostWorkflow::retry, (), options).await,
        JobCommand::Reschedule { publish_at } => {
            temporal.execute_update_with_start_workflow(run, input, PublishPostWorkflow::reschedule, *publish_at, options).await
        }
        JobCommand::Cancel => temporal.execute_update_with_start_workflow(run, input, PublishPostWorkflow::cancel, (), options).await,
        JobCommand::PublishNow => {
            temporal.execute_update_with_start_workflow(run, input, PublishPostWorkflow::publish_now, (), options).await
        }
        JobCommand::Edit { content } => {
            temporal.execute_update_with_start_workflow(run, input, PublishPostWorkflow::edit, content.as_ref().clone(), options).await
        }
    }
}
