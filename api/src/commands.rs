//! `/v1/publish-jobs/{id}/{retry,reschedule,cancel,publish-now}`: a creator's commands. Each is a
//! Temporal update to the job's one workflow, which validates it against the job's true state:
//! two concurrent commands cannot both win, and none can race a publish into a second post.

use std::time::{Duration, Instant};

use autopost_workflows::{
    Carried, Channel, CommandAccepted, JobCommand, JobContent, JobError, JobStatus, MediaItem, PostOptions, PublishJobInput,
    PublishPostWorkflow, Resume,
};
use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowQueryOptions,
    errors::{WorkflowUpdateError, WorkflowUpdateWithStartError},
};
use uuid::Uuid;

use crate::{
    ApiState,
    auth::Creator,
    engine,
    error::{ApiError, ErrorBody, responses},
    extract::{ApiJson, ApiPath, idempotency_key},
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

/// The new publish time.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reschedule {
    publish_at: DateTime<Utc>,
}

/// Retries a `failed` job now, or a `needs_attention` one with a fresh retry budget (preflight first).
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/retry", tag = "commands", params(("id" = Uuid, Path, description = "The job's id"), IdempotencyKey), responses(
    (status = 400, response = responses::InvalidId),
    responses::CommandResponses,
))]
async fn retry(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<CommandReply, ApiError> {
    run(&state, &creator, id, JobCommand::Retry, &headers).await
}

/// Moves a `scheduled`, `failed` or `needs_attention` job to another publish time.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/reschedule", tag = "commands", request_body = Reschedule, params(("id" = Uuid, Path, description = "The job's id"), IdempotencyKey), responses(
    (status = 400, description = "The id is not a UUID (`invalid_id`) or the body cannot be read (`invalid_body`)", body = ErrorBody),
    (status = 415, response = responses::UnsupportedMediaType),
    (status = 422, description = "The new time is not in the future (`publish_at_in_past`)", body = ErrorBody),
    responses::CommandResponses,
))]
async fn reschedule(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Reschedule>,
) -> Result<CommandReply, ApiError> {
    if body.publish_at <= Utc::now() {
        return Err(ApiError::unprocessable("publish_at_in_past", "publish_at", "the new publish time must be in the future"));
    }
    run(&state, &creator, id, JobCommand::Reschedule { publish_at: body.publish_at }, &headers).await
}

/// Cancels a `scheduled`, `failed` or `needs_attention` job: it will never publish.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/cancel", tag = "commands", params(("id" = Uuid, Path, description = "The job's id"), IdempotencyKey), responses(
    (status = 400, response = responses::InvalidId),
    responses::CommandResponses,
))]
async fn cancel(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<CommandReply, ApiError> {
    run(&state, &creator, id, JobCommand::Cancel, &headers).await
}

/// Publishes at once (preflight first) and waits a bounded time for the outcome; the job JSON
/// says `publishing` if the platform is still at work when the wait ends.
#[utoipa::path(post, path = "/v1/publish-jobs/{id}/publish-now", tag = "commands", params(("id" = Uuid, Path, description = "The job's id"), IdempotencyKey), responses(
    (status = 200, description = "The job once settled, or `publishing` if the wait ended first", body = JobView),
    (status = 202, response = responses::CommandPending),
    (status = 400, response = responses::InvalidId),
    (status = 403, description = "Publish-now is disabled on this server (`feature_disabled`)", body = ErrorBody),
    (status = 404, response = responses::JobNotFound),
    (status = 409, description = "The job's status does not allow this (`invalid_state`; `status` is the job's current one), or its channel cannot publish at once (`publish_now_unsupported`)", body = ErrorBody),
    (status = 503, response = responses::Unavailable),
    (status = 500, response = responses::Internal),
))]
async fn publish_now(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(job_id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<CommandReply, ApiError> {
    if !state.settings.publish_now_enabled {
        return Err(ApiError::Forbidden { code: "feature_disabled", message: "publish-now is disabled (AUTOPOST_PUBLISH_NOW)".into() });
    }
    let channel = load(&state, &creator, job_id).await?.channel;
    if !allows_immediate_publish(channel) {
        return Err(ApiError::Conflict {
            code: "publish_now_unsupported",
            message: format!("{channel} does not allow immediate publishing"),
            status: None,
        });
    }
    if let CommandReply::Pending(pending) = run(&state, &creator, job_id, JobCommand::PublishNow, &headers).await? {
        return Ok(CommandReply::Pending(pending));
    }
    let deadline = Instant::now() + state.settings.publish_now_wait;
    loop {
        let job = load(&state, &creator, job_id).await?;
        if job.status.is_settled() || Instant::now() >= deadline {
            return Ok(CommandReply::Done(Box::new(job)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What an edit changes: any of caption, media and options; what is left out stays as it is.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditJob {
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    media: Option<Vec<MediaItem>>,
    /// The whole options object (options are replaced, not merged); `null` removes them.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<PostOptions>)]
    options: Option<Option<PostOptions>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// Changes the caption, media or options of a `scheduled`, `failed` or `needs_attention` job
/// (validated like a create). Its plan stays: a scheduled job publishes at its time with the
/// new content, and whatever was prepared for the old content is discarded.
#[utoipa::path(patch, path = "/v1/publish-jobs/{id}", tag = "publish-jobs", request_body = EditJob, params(("id" = Uuid, Path, description = "The job's id"), IdempotencyKey), responses(
    (status = 400, description = "The id is not a UUID (`invalid_id`) or the body cannot be read (`invalid_body`)", body = ErrorBody),
    (status = 415, response = responses::UnsupportedMediaType),
    (status = 422, description = "The edited post breaks a rule, with the same codes as a create", body = ErrorBody),
    responses::CommandResponses,
))]
pub(crate) async fn edit(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<EditJob>,
) -> Result<CommandReply, ApiError> {
    let job = load(&state, &creator, id).await?;
    let content = JobContent {
        caption: body.caption.unwrap_or(job.caption),
        media: body.media.unwrap_or(job.media),
        options: body.options.unwrap_or(job.options),
    };
    crate::validate::post(job.channel, &content.caption, &content.media, content.options.as_ref(), &state.settings.media_policy)?;
    run(&state, &creator, id, JobCommand::Edit { content: Box::new(content) }, &headers).await
}

/// Both platforms' publishing APIs post at once when asked; a channel whose adapter cannot
/// (one that only schedules on the platform's side, say) would answer `false`.
fn allows_immediate_publish(channel: Channel) -> bool {
    match channel {
        Channel::Instagram | Channel::Tiktok => true,
    }
}

/// `Idempotency-Key` on a command.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKey {
    /// Makes the command safe to retry: a request with the same key and body is the same
    /// command, applied at most once and answered as the first was. 1 to 255 visible ASCII
    /// characters. Without a key every request is a new command.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255)]
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// A command's answer: the job once the workflow carried the command out, or `202` when the
/// command could not be confirmed within `AUTOPOST_COMMAND_TIMEOUT`.
pub enum CommandReply {
    Done(Box<JobView>),
    Pending(PendingCommand),
}

/// The command was sent but not confirmed in time; it may still apply. `GET
/// /v1/publish-jobs/{id}` tells the outcome; repeating the request with the same
/// `Idempotency-Key` applies it at most once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PendingCommand {
    #[schema(example = "pending")]
    status: &'static str,
    /// `retry`, `reschedule`, `cancel` or `publish-now`.
    command: &'static str,
    job_id: Uuid,
}

impl IntoResponse for CommandReply {
    fn into_response(self) -> Response {
        match self {
            CommandReply::Done(job) => Json(job).into_response(),
            CommandReply::Pending(pending) => (StatusCode::ACCEPTED, Json(pending)).into_response(),
        }
    }
}

/// The update id of a command: with an `Idempotency-Key`, derived from the job, the command,
/// its body and the key, so a retried request is the same update and Temporal applies it once;
/// without one, a new id per request (a new command).
fn update_id(job_id: Uuid, command: &JobCommand, key: Option<&str>) -> Option<String> {
    use sha2::Digest;
    // A digest, not the body itself: an edit's caption alone may be longer than Temporal takes
    // for an id.
    let body = sha2::Sha256::digest(serde_json::to_string(command).unwrap_or_default());
    let body: String = body.iter().map(|b| format!("{b:02x}")).collect();
    key.map(|key| format!("{job_id}:{}:{body}:{key}", command.name()))
}

/// Sends the command to the job's workflow and returns the job once the workflow mirrored it,
/// within the command timeout.
#[tracing::instrument(skip(state, creator, command, headers), fields(command = command.name()))]
async fn run(
    state: &ApiState,
    creator: &Creator,
    job_id: Uuid,
    command: JobCommand,
    headers: &HeaderMap,
) -> Result<CommandReply, ApiError> {
    let key = idempotency_key(headers)?;
    let pending = PendingCommand { status: "pending", command: command.name(), job_id };
    match tokio::time::timeout(state.settings.command_timeout, apply(state, creator, job_id, &command, key.as_deref(), headers)).await {
        Ok(result) => result.map(|job| CommandReply::Done(Box::new(job))),
        Err(_) => {
            tracing::warn!(%job_id, command = command.name(), "command not confirmed in time; answered pending");
            Ok(CommandReply::Pending(pending))
        }
    }
}

async fn apply(
    state: &ApiState,
    creator: &Creator,
    job_id: Uuid,
    command: &JobCommand,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Result<JobView, ApiError> {
    // Ownership first: another creator's job is `404`, and no command reaches its workflow.
    let before = load(state, creator, job_id).await?;
    // The worker logs the attempts this command causes with the request's id.
    if let Some(request_id) = observability::request_id(headers) {
        sqlx::query!("UPDATE publish_jobs SET last_request_id = $2 WHERE id = $1", job_id, request_id).execute(&state.db).await?;
    }
    let update_id = update_id(job_id, command, key);
    let sent = if let Some(carried) = closed_awaiting_creator(state, &before).await? {
        send_with_start(state, carried, command, update_id).await
    } else {
        match send(state, &before.workflow_id, command, update_id.clone()).await {
            // The run closed as the command came (its attention TTL ran out): start the next.
            Err(Refusal::Closed) => match closed_awaiting_creator(state, &before).await? {
                Some(carried) => send_with_start(state, carried, command, update_id).await,
                None => Err(Refusal::Closed),
            },
            other => other,
        }
    };
    let accepted = match sent {
        Ok(accepted) => accepted,
        // The workflow's validator refused: the job's state does not allow the command.
        Err(Refusal::Invalid(message)) => {
            let handle = state.temporal.get_workflow_handle::<PublishPostWorkflow>(before.workflow_id.clone());
            let status = handle.query(PublishPostWorkflow::status, (), WorkflowQueryOptions::default()).await.ok();
            return Err(ApiError::Conflict { code: "invalid_state", message, status: Some(status.unwrap_or(before.status)) });
        }
        // The workflow has ended (published or cancelled).
        Err(Refusal::Closed) => {
            let job = load(state, creator, job_id).await?;
            return Err(ApiError::Conflict {
                code: "invalid_state",
                message: format!("cannot {} a job that is {}: its workflow has finished", command.name(), job.status),
                status: Some(job.status),
            });
        }
        Err(Refusal::Unavailable(error)) => return Err(ApiError::Unavailable(format!("{} failed: {error}", command.name()))),
    };
    // The workflow mirrors every command it carries out, above the version it was accepted at;
    // wait for it so the answer is current (a repeated request's was mirrored long ago).
    loop {
        let job = load(state, creator, job_id).await?;
        if job.version > accepted.version {
            tracing::info!(%job_id, status = %job.status, "command applied");
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why a command was not accepted.
enum Refusal {
    /// The workflow's validator refused it: the job's state does not allow it.
    Invalid(String),
    /// No run of the job's workflow is open.
    Closed,
    /// Temporal could not be asked.
    Unavailable(String),
}

impl From<WorkflowUpdateError> for Refusal {
    fn from(error: WorkflowUpdateError) -> Self {
        match error {
            WorkflowUpdateError::Failed(failure) => Refusal::Invalid(failure.message),
            WorkflowUpdateError::NotFound(_) => Refusal::Closed,
            other => Refusal::Unavailable(other.to_string()),
        }
    }
}

/// Sends the command to the job's open run, as a Temporal update.
async fn send(state: &ApiState, workflow_id: &str, command: &JobCommand, update_id: Option<String>) -> Result<CommandAccepted, Refusal> {
    let handle = state.temporal.get_workflow_handle::<PublishPostWorkflow>(workflow_id.to_owned());
    let options = WorkflowExecuteUpdateOptions::builder().maybe_update_id(update_id).build();
    Ok(match command {
        JobCommand::Retry => handle.execute_update(PublishPostWorkflow::retry, (), options).await?,
        JobCommand::Reschedule { publish_at } => handle.execute_update(PublishPostWorkflow::reschedule, *publish_at, options).await?,
        JobCommand::Cancel => handle.execute_update(PublishPostWorkflow::cancel, (), options).await?,
        JobCommand::PublishNow => handle.execute_update(PublishPostWorkflow::publish_now, (), options).await?,
        JobCommand::Edit { content } => handle.execute_update(PublishPostWorkflow::edit, content.as_ref().clone(), options).await?,
    })
}

/// Starts the job's next run, carrying its state, with the command (update-with-start).
async fn send_with_start(
    state: &ApiState,
    input: PublishJobInput,
    command: &JobCommand,
    update_id: Option<String>,
) -> Result<CommandAccepted, Refusal> {
    let job_id = input.job_id;
    match engine::command_with_start(&state.temporal, &state.settings.task_queue, input, command, update_id).await {
        Ok(accepted) => {
            tracing::info!(%job_id, command = command.name(), "a closed job's workflow runs again for a command");
            Ok(accepted)
        }
        Err(WorkflowUpdateWithStartError::Update(error)) => Err(error.into()),
        Err(other) => Err(Refusal::Unavailable(other.to_string())),
    }
}

/// The input of the next run of a `needs_attention` job whose run closed after the attention
/// TTL (`None` for any other job): it starts waiting for the creator where the last one stopped.
async fn closed_awaiting_creator(state: &ApiState, job: &JobView) -> Result<Option<PublishJobInput>, ApiError> {
    let row = sqlx::query!(
        r#"SELECT status, version, attempt_count, GREATEST(epoch, lease_epoch) AS "epoch!", last_error_code, last_error_message
           FROM publish_jobs WHERE id = $1 AND workflow_closed_at IS NOT NULL"#,
        job.id
    )
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row.filter(|row| row.status == JobStatus::NeedsAttention.as_str()) else { return Ok(None) };
    let last_error = row.last_error_code.map(|code| JobError::new(code, row.last_error_message.unwrap_or_default()));
    let carried = Carried {
        status: JobStatus::NeedsAttention,
        retries_used: 0,
        next_attempt_at: None,
        last_error,
        attention_until: None,
        pending: None,
    };
    let resume = Resume { version: row.version, attempt_count: row.attempt_count, epoch: row.epoch, lost: None, carried: Some(carried) };
    Ok(Some(state.settings.run.input(job.id, job.creator_id.clone(), job.channel, job.publish_at, Some(resume))))
}

/// Cancels a job of an account being unlinked and answers its status after: `cancelled`, or
/// `publishing` when its attempt is already at the platform (it finishes), or the final status
/// it had reached.
pub(crate) async fn cancel_for_unlink(state: &ApiState, creator: &Creator, job_id: Uuid) -> Result<JobStatus, ApiError> {
    let no_headers = HeaderMap::new();
    // A job created just before the unlink may not have its workflow started yet: try again
    // briefly while the answer is an open status the cancel should have changed.
    for _ in 0..10 {
        // A fixed key: repeating the unlink repeats the same update, which Temporal applies once.
        let cancel = apply(state, creator, job_id, &JobCommand::Cancel, Some("account-unlinked"), &no_headers);
        match tokio::time::timeout(state.settings.command_timeout, cancel).await {
            Ok(Ok(job)) => return Ok(job.status),
            Ok(Err(ApiError::Conflict { status: Some(status), .. })) if status.is_final() || status == JobStatus::Publishing => {
                return Ok(status);
            }
            Ok(Err(ApiError::Conflict { .. })) => tokio::time::sleep(Duration::from_millis(300)).await,
            Ok(Err(other)) => return Err(other),
            Err(_) => return Err(ApiError::Unavailable(format!("cancelling job {job_id} was not confirmed in time"))),
        }
    }
    Err(ApiError::Unavailable(format!("job {job_id} could not be cancelled yet; repeat the unlink")))
}
