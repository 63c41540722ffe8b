//! `/v1/publish-jobs/{id}/{retry,reschedule,cancel,publish-now}`: a creator's commands. Each is a
//! Temporal update to the job's one workflow, which validates it against the job's true state:
//! two concurrent commands cannot both win, and none can race a publish into a second post.

use std::time::{Duration, Instant};

use autopost_workflows::{Channel, JobCommand, PublishPostWorkflow};
use axum::{Json, Router, extract::State, http::HeaderMap, routing::post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use temporalio_client::{WorkflowExecuteUpdateOptions, WorkflowQueryOptions, errors::WorkflowUpdateError};
use uuid::Uuid;

use crate::{
    ApiState,
    error::{ApiError, ErrorBody, responses},
    extract::{ApiJson, ApiPath},
    jobs::load,
    observability,
    views::JobView,
};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/publish-jobs/{id}/retry", post(retry))
        .route("/v1/publish-jobs/{id}/reschedule", post(reschedule))
        .route("/v1/publish-jobs/{id}/cancel", post(cancel))
        .route("/v1/publish-jobs/{id}/publish-now", post(publish_now))
}

/// How long a command waits for the workflow to mirror what it did.
const MIRROR_WAIT: Duration = Duration::from_secs(10);

/// The new publish time.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    publish_at: DateTime<Utc>,
}

/// Retries a `failed` job now, or a `needs_attention` one with a fresh retry budget (preflight first).
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/retry", tag = "commands", params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "The job after the command", body = JobView),
    (status = 400, response = responses::InvalidId),
    responses::CommandErrors,
))]
async fn retry(State(state): State<ApiState>, ApiPath(id): ApiPath<Uuid>, headers: HeaderMap) -> Result<Json<JobView>, ApiError> {
    run(&state, id, JobCommand::Retry, &headers).await.map(Json)
}

/// Moves a `scheduled`, `failed` or `needs_attention` job to another publish time.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/reschedule", tag = "commands", request_body = Reschedule, params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "The job after the command", body = JobView),
    (status = 400, description = "The id is not a UUID (`invalid_id`) or the body cannot be read (`invalid_body`)", body = ErrorBody),
    (status = 415, response = responses::UnsupportedMediaType),
    (status = 422, description = "The new time is not in the future (`publish_at_in_past`)", body = ErrorBody),
    responses::CommandErrors,
))]
async fn reschedule(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Reschedule>,
) -> Result<Json<JobView>, ApiError> {
    if body.publish_at <= Utc::now() {
        return Err(ApiError::unprocessable("publish_at_in_past", "publish_at", "the new publish time must be in the future"));
    }
    run(&state, id, JobCommand::Reschedule { publish_at: body.publish_at }, &headers).await.map(Json)
}

/// Cancels a `scheduled`, `failed` or `needs_attention` job: it will never publish.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/cancel", tag = "commands", params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "The job after the command", body = JobView),
    (status = 400, response = responses::InvalidId),
    responses::CommandErrors,
))]
async fn cancel(State(state): State<ApiState>, ApiPath(id): ApiPath<Uuid>, headers: HeaderMap) -> Result<Json<JobView>, ApiError> {
    run(&state, id, JobCommand::Cancel, &headers).await.map(Json)
}

/// Publishes at once (preflight first) and waits a bounded time for the outcome; the job JSON
/// says `publishing` if the platform is still at work when the wait ends.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/publish-now", tag = "commands", params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "The job once settled, or `publishing` if the wait ended first", body = JobView),
    (status = 400, response = responses::InvalidId),
    (status = 403, description = "Publish-now is disabled on this server (`feature_disabled`)", body = ErrorBody),
    (status = 404, response = responses::JobNotFound),
    (status = 409, description = "The job's status does not allow this (`invalid_state`; `status` is the job's current one), or its channel cannot publish at once (`publish_now_unsupported`)", body = ErrorBody),
    (status = 503, response = responses::Unavailable),
    (status = 500, response = responses::Internal),
))]
async fn publish_now(State(state): State<ApiState>, ApiPath(job_id): ApiPath<Uuid>, headers: HeaderMap) -> Result<Json<JobView>, ApiError> {
    if !state.settings.publish_now_enabled {
        return Err(ApiError::Forbidden { code: "feature_disabled", message: "publish-now is disabled (AUTOPOST_PUBLISH_NOW)".into() });
    }
    let channel = load(&state, job_id).await?.channel;
    if !allows_immediate_publish(channel) {
        return Err(ApiError::Conflict {
            code: "publish_now_unsupported",
            message: format!("{channel} does not allow immediate publishing"),
            status: None,
        });
    }
    run(&state, job_id, JobCommand::PublishNow, &headers).await?;
    let deadline = Instant::now() + state.settings.publish_now_wait;
    loop {
        let job = load(&state, job_id).await?;
        if job.status.is_settled() || Instant::now() >= deadline {
            return Ok(Json(job));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both platforms' publishing APIs post at once when asked; a channel whose adapter cannot
/// (one that only schedules on the platform's side, say) would answer `false`.
fn allows_immediate_publish(channel: Channel) -> bool {
    match channel {
        Channel::Instagram | Channel::Tiktok => true,
    }
}

/// Sends the command to the job's workflow and returns the job once the workflow mirrored it.
#[tracing::instrument(skip(state, command), fields(command = command.name()))]
async fn run(state: &ApiState, job_id: Uuid, command: JobCommand, headers: &HeaderMap) -> Result<JobView, ApiError> {
    let before = load(state, job_id).await?;
    // The worker logs the attempts this command causes with the request's id.
    if let Some(request_id) = observability::request_id(headers) {
        sqlx::query!("UPDATE publish_jobs SET last_request_id = $2 WHERE id = $1", job_id, request_id).execute(&state.db).await?;
    }
    let handle = state.temporal.get_workflow_handle::<PublishPostWorkflow>(before.workflow_id.clone());
    let options = WorkflowExecuteUpdateOptions::default;
    let result = match command {
        JobCommand::Retry => handle.execute_update(PublishPostWorkflow::retry, (), options()).await,
        JobCommand::Reschedule { publish_at } => handle.execute_update(PublishPostWorkflow::reschedule, publish_at, options()).await,
        JobCommand::Cancel => handle.execute_update(PublishPostWorkflow::cancel, (), options()).await,
        JobCommand::PublishNow => handle.execute_update(PublishPostWorkflow::publish_now, (), options()).await,
    };
    match result {
        Ok(_) => {}
        // The workflow's validator refused: the job's state does not allow the command.
        Err(WorkflowUpdateError::Failed(failure)) => {
            let status = handle.query(PublishPostWorkflow::status, (), WorkflowQueryOptions::default()).await.ok();
            return Err(ApiError::Conflict {
                code: "invalid_state",
                message: failure.message,
                status: Some(status.unwrap_or(before.status)),
            });
        }
        // The workflow has ended (published or cancelled).
        Err(WorkflowUpdateError::NotFound(_)) => {
            let job = load(state, job_id).await?;
            return Err(ApiError::Conflict {
                code: "invalid_state",
                message: format!("cannot {} a job that is {}: its workflow has finished", command.name(), job.status),
                status: Some(job.status),
            });
        }
        Err(other) => return Err(ApiError::Unavailable(format!("{} failed: {other}", command.name()))),
    }
    // The workflow mirrors every command it carries out; wait for it so the answer is current.
    let deadline = Instant::now() + MIRROR_WAIT;
    loop {
        let job = load(state, job_id).await?;
        if job.version > before.version || Instant::now() >= deadline {
            tracing::info!(%job_id, status = %job.status, "command applied");
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
