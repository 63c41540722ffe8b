//! `/v1/publish-jobs`: scheduling posts and reading where they stand. A job is created here and
//! handed to its workflow; after that only the workflow changes it.

use autopost_workflows::{Channel, JobStatus, MediaItem, PostOptions, workflow_id};
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    routing::get,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ApiState,
    auth::Creator,
    engine::{self, Start},
    error::{ApiError, ErrorBody, responses},
    extract::{ApiJson, ApiPath, idempotency_key},
    observability, validate,
    views::{AttemptList, AttemptView, JobPage, JobRow, JobView},
};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/publish-jobs", get(list_jobs).post(create_job))
        .route("/v1/publish-jobs/{id}", get(get_job).patch(crate::commands::edit))
        .route("/v1/publish-jobs/{id}/attempts", get(list_attempts))
}

/// A post to schedule.
#[derive(Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    account_id: Uuid,
    publish_at: DateTime<Utc>,
    caption: String,
    media: Vec<MediaItem>,
    /// The creator's choices for the post; `channel` must be the account's. Required for
    /// TikTok (its `privacy_level`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<PostOptions>,
}

/// Validates the post, writes the job and starts its workflow. If the workflow cannot be
/// started the row is removed again and the caller gets 503: nothing is half-created.
///
/// With an `Idempotency-Key` header, a repeated request (same key, same body) returns the job the
/// first one created, never a second job; the same key with another body is refused.
#[utoipa::path(post, path = "/v1/publish-jobs", tag = "publish-jobs", request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        description = "Makes the create safe to retry: the same key with the same body returns the job the first request created (200); with another body it is refused (422 `idempotency_key_reused`). 1 to 255 visible ASCII characters, scoped to the account's creator")),
    responses(
        (status = 201, description = "The job was scheduled and its workflow started", body = JobView),
        (status = 200, description = "A replay: this Idempotency-Key already created this job", body = JobView),
        (status = 400, description = "The body cannot be read (`invalid_body`) or the Idempotency-Key header is malformed (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 415, response = responses::UnsupportedMediaType),
        (status = 422, description = "The post breaks a rule: `unknown_account`, `publish_at_in_past`, `caption_too_long`, `too_many_hashtags`, `too_many_mentions`, `media_missing`, `media_mixed`, `too_many_media`, `media_url_invalid`, `media_url_not_https`, `media_kind_mismatch`, `media_unsupported`; for the options: `privacy_level_required`, `options_channel_mismatch`, `branded_content_private`, `option_not_applicable`, `title_too_long`, `photo_cover_index_out_of_range`, `post_type_media_mismatch`, `options_conflict`, `alt_text_count`, `too_many_collaborators`, `invalid_username`, `invalid_location_id`, `media_index_out_of_range`, `tag_position_required`, `tag_position_out_of_range`, `too_many_user_tags`, `too_long`, `required`; or `idempotency_key_reused` (field `Idempotency-Key`)", body = ErrorBody),
        (status = 503, response = responses::Unavailable),
        (status = 500, response = responses::Internal),
    )
)]
#[tracing::instrument(skip_all, fields(account_id = %body.account_id))]
async fn create_job(
    State(state): State<ApiState>,
    creator: Creator,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    // Another creator's account is as unknown as one that does not exist.
    let account = sqlx::query!(
        "SELECT creator_id, channel FROM social_accounts WHERE id = $1 AND creator_id = $2 AND unlinked_at IS NULL",
        body.account_id,
        creator.id()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::unprocessable("unknown_account", "account_id", "you have no linked account with this id"))?;
    let channel: Channel = account.channel.parse().map_err(|e| anyhow::anyhow!("account {}: {e}", body.account_id))?;
    let idempotency_key = idempotency_key(&headers)?;
    // Validated before anything is read or written with it (Postgres refuses NUL in text).
    validate::post(channel, &body.caption, &body.media, body.options.as_ref(), &state.settings.media_policy)?;
    let request = serde_json::to_value(&body).map_err(anyhow::Error::from)?;
    if let Some(key) = &idempotency_key
        && let Some(job) = replay(&state, &account.creator_id, key, &request).await?
    {
        return Ok((StatusCode::OK, Json(job)));
    }
    if body.publish_at <= Utc::now() {
        return Err(ApiError::unprocessable("publish_at_in_past", "publish_at", "the publish time must be in the future"));
    }

    let job_id = Uuid::new_v4();
    let workflow_id = workflow_id(job_id);
    let media = serde_json::to_value(&body.media).map_err(anyhow::Error::from)?;
    let options = body.options.as_ref().map(serde_json::to_value).transpose().map_err(anyhow::Error::from)?;
    let mut tx = state.db.begin().await?;
    // Held until commit: an unlink of the account waits for this job and then cancels it too,
    // or came first and this create is refused.
    sqlx::query_scalar!("SELECT id FROM social_accounts WHERE id = $1 AND unlinked_at IS NULL FOR SHARE", body.account_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::unprocessable("unknown_account", "account_id", "you have no linked account with this id"))?;
    sqlx::query!(
        r#"INSERT INTO publish_jobs (id, creator_id, account_id, channel, publish_at, caption, media, options, workflow_id, last_request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        job_id,
        account.creator_id,
        body.account_id,
        channel.as_str(),
        body.publish_at,
        body.caption,
        media,
        options,
        workflow_id,
        observability::request_id(&headers),
    )
    .execute(&mut *tx)
    .await?;
    if let Some(key) = &idempotency_key {
        let claimed = sqlx::query!(
            r#"INSERT INTO idempotency_keys (creator_id, key, request, job_id) VALUES ($1, $2, $3, $4)
               ON CONFLICT DO NOTHING"#,
            account.creator_id,
            key,
            request,
            job_id
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !claimed {
            // A concurrent request with the same key won the race: answer as it did.
            tx.rollback().await?;
            let job = replay(&state, &account.creator_id, key, &request).await?;
            return job.map(|j| (StatusCode::OK, Json(j))).ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency key vanished")));
        }
    }
    tx.commit().await?;

    let input = state.settings.run.input(job_id, account.creator_id, channel, body.publish_at, None);
    match engine::start_publish_workflow(&state.temporal, &state.settings.task_queue, input).await {
        Ok(Start::Started) => {}
        // The reconciler found the row first and started it: the job is running, as wanted.
        Ok(Start::AlreadyRunning) => tracing::info!(%job_id, "workflow was already started"),
        Err(error) => {
            // The idempotency key goes with the row (ON DELETE CASCADE), so a retry can try again.
            sqlx::query!("DELETE FROM publish_jobs WHERE id = $1", job_id).execute(&state.db).await?;
            return Err(ApiError::Unavailable(format!("starting the workflow failed: {error}")));
        }
    }
    tracing::info!(%job_id, channel = %channel, publish_at = %body.publish_at, "job scheduled");
    Ok((StatusCode::CREATED, Json(load(&state, &creator, job_id).await?)))
}

/// The job an earlier request with this key created, if any; a different body is refused.
async fn replay(state: &ApiState, creator_id: &str, key: &str, request: &serde_json::Value) -> Result<Option<JobView>, ApiError> {
    let Some(earlier) = sqlx::query!("SELECT request, job_id FROM idempotency_keys WHERE creator_id = $1 AND key = $2", creator_id, key)
        .fetch_optional(&state.db)
        .await?
    else {
        return Ok(None);
    };
    let creator = Creator(creator_id.to_owned());
    if earlier.request != *request {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "Idempotency-Key",
            "this Idempotency-Key was used for a different request; use a new key for a new job",
        ));
    }
    Ok(Some(load(state, &creator, earlier.job_id).await?))
}

/// One job, where it stands.
#[utoipa::path(get, path = "/v1/publish-jobs/{id}", tag = "publish-jobs", params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "The job", body = JobView),
    responses::JobReadErrors,
))]
async fn get_job(State(state): State<ApiState>, creator: Creator, ApiPath(id): ApiPath<Uuid>) -> Result<Json<JobView>, ApiError> {
    Ok(Json(load(&state, &creator, id).await?))
}

/// The creator's job; another creator's is `404`, exactly like one that does not exist.
pub(crate) async fn load(state: &ApiState, creator: &Creator, id: Uuid) -> Result<JobView, ApiError> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT id, account_id, creator_id, channel, status, publish_at, caption, media, options, attempt_count,
                  last_error_code, last_error_message, next_attempt_at, published_at, platform_post_id,
                  workflow_id, readiness, version, created_at, updated_at, first_comment_id, warnings
           FROM publish_jobs WHERE id = $1 AND creator_id = $2"#,
        id,
        creator.id()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound { what: "publish job" })?;
    row.try_into()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this status.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs for this platform.
    #[param(value_type = Option<Channel>)]
    channel: Option<String>,
    /// Jobs whose `publish_at` is at or after this time (inclusive).
    from: Option<DateTime<Utc>>,
    /// Jobs whose `publish_at` is before this time (exclusive).
    to: Option<DateTime<Utc>>,
    /// Page size, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

/// The calendar: the caller's jobs ordered by publish time (then id), optionally filtered, `from` inclusive
/// and `to` exclusive, paginated by a cursor on (publish_at, id).
#[utoipa::path(get, path = "/v1/publish-jobs", tag = "publish-jobs", params(ListQuery), responses(
    (status = 200, description = "One page of jobs, ordered by `publish_at` then `id`", body = JobPage),
    (status = 400, description = "A query parameter is unknown or invalid (`invalid_query`, `field` names it)", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
async fn list_jobs(
    State(state): State<ApiState>,
    creator: Creator,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", None, e.body_text()))?;
    if let Some(status) = &q.status {
        status
            .parse::<JobStatus>()
            .map_err(|_| ApiError::bad_request("invalid_query", Some("status".into()), format!("unknown status `{status}`")))?;
    }
    if let Some(channel) = &q.channel {
        channel
            .parse::<Channel>()
            .map_err(|_| ApiError::bad_request("invalid_query", Some("channel".into()), format!("unknown channel `{channel}`")))?;
    }
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", Some("limit".into()), format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT id, account_id, creator_id, channel, status, publish_at, caption, media, options, attempt_count,
                  last_error_code, last_error_message, next_attempt_at, published_at, platform_post_id,
                  workflow_id, readiness, version, created_at, updated_at, first_comment_id, warnings
           FROM publish_jobs
           WHERE creator_id = $1
             AND ($2::text IS NULL OR status = $2)
             AND ($3::text IS NULL OR channel = $3)
             AND ($4::timestamptz IS NULL OR publish_at >= $4)
             AND ($5::timestamptz IS NULL OR publish_at < $5)
             AND ($6::timestamptz IS NULL OR (publish_at, id) > ($6, $7::uuid))
           ORDER BY publish_at, id
           LIMIT $8"#,
        creator.id(),
        q.status,
        q.channel,
        q.from,
        q.to,
        after.map(|(at, _)| at),
        after.map(|(_, id)| id),
        limit + 1,
    )
    .fetch_all(&state.db)
    .await?;
    let mut jobs = rows.into_iter().map(JobView::try_from).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if jobs.len() as i64 > limit {
        jobs.truncate(limit as usize);
        jobs.last().map(|j| encode_cursor(j.publish_at, j.id))
    } else {
        None
    };
    Ok(Json(JobPage { jobs, next_cursor }))
}

fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", at.timestamp_micros())
}

fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || ApiError::bad_request("invalid_query", Some("cursor".into()), "the cursor is not one this API handed out");
    let (micros, id) = cursor.split_once('_').ok_or_else(invalid)?;
    let at = micros.parse().ok().and_then(DateTime::<Utc>::from_timestamp_micros).ok_or_else(invalid)?;
    Ok((at, id.parse().map_err(|_| invalid())?))
}

/// The job's publish attempts, in order.
#[utoipa::path(get, path = "/v1/publish-jobs/{id}/attempts", tag = "publish-jobs", params(("id" = Uuid, Path, description = "The job's id")), responses(
    (status = 200, description = "One row per attempt, by attempt number", body = AttemptList),
    responses::JobReadErrors,
))]
async fn list_attempts(State(state): State<ApiState>, creator: Creator, ApiPath(id): ApiPath<Uuid>) -> Result<Json<AttemptList>, ApiError> {
    load(&state, &creator, id).await?;
    let rows = sqlx::query!(
        r#"SELECT attempt_number, started_at, finished_at, outcome, error_code, error_message, retryable, platform_request_id,
                  (SELECT reference FROM platform_references r
                   WHERE r.job_id = a.job_id AND r.attempt_number = a.attempt_number ORDER BY r.id DESC LIMIT 1) AS platform_reference
           FROM publish_attempts a WHERE job_id = $1 ORDER BY attempt_number"#,
        id
    )
    .fetch_all(&state.db)
    .await?;
    let attempts = rows
        .into_iter()
        .map(|r| {
            Ok(AttemptView {
                outcome: r.outcome.parse().map_err(|e: String| anyhow::anyhow!("job {id} attempt {}: {e}", r.attempt_number))?,
                attempt_number: r.attempt_number,
                started_at: r.started_at,
                finished_at: r.finished_at,
                error_code: r.error_code,
                error_message: r.error_message,
                retryable: r.retryable,
                platform_request_id: r.platform_request_id,
                platform_reference: r.platform_reference,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Json(AttemptList { attempts }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let at = DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(at, id)).unwrap(), (at, id));
        assert!(decode_cursor("nonsense").is_err());
        assert!(decode_cursor("12_notauuid").is_err());
    }
}
