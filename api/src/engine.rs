//! Starting a job's workflow: the one place that decides its id and start policies, shared by
//! the API (a new job) and the reconciler (a run replacing a lost one).

use autopost_workflows::{PublishJobInput, PublishPostWorkflow, workflow_id};
use temporalio_client::{Client, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError};

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
        .build();
    match temporal.start_workflow(PublishPostWorkflow::run, input, options).await {
        Ok(_) => Ok(Start::Started),
        Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(Start::AlreadyRunning),
        Err(other) => Err(other),
    }
}
