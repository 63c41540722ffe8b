//! The worker's reads and writes of Postgres: the job mirror and the attempt log.

use autopost_workflows::{Channel, JobTransition, MediaItem};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;
use tracing::instrument;
use uuid::Uuid;

/// A job with the account it publishes to, as an attempt needs it.
pub struct JobForPublish {
    pub id: Uuid,
    /// The `x-request-id` of the API call that created or last commanded the job.
    pub last_request_id: Option<String>,
    pub channel: Channel,
    pub publish_at: DateTime<Utc>,
    pub caption: String,
    pub media: Vec<MediaItem>,
    pub account: Account,
}

pub struct Account {
    pub id: Uuid,
    pub platform_user_id: String,
    pub access_token: SecretString,
    pub token_expires_at: DateTime<Utc>,
    pub refresh_token: Option<SecretString>,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("publish job {0} does not exist")]
    JobMissing(Uuid),
    #[error("publish job {0} has unreadable data: {1}")]
    Corrupt(Uuid, String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

#[instrument(skip(db))]
pub async fn load_job(db: &PgPool, job_id: Uuid) -> Result<JobForPublish, DbError> {
    let row = sqlx::query!(
        r#"SELECT j.id, j.last_request_id, j.channel, j.publish_at, j.caption, j.media,
                  a.id AS account_id, a.platform_user_id, a.access_token, a.token_expires_at, a.refresh_token
           FROM publish_jobs j JOIN social_accounts a ON a.id = j.account_id
           WHERE j.id = $1"#,
        job_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(DbError::JobMissing(job_id))?;
    let channel = row.channel.parse().map_err(|e| DbError::Corrupt(job_id, format!("channel: {e}")))?;
    let media = serde_json::from_value(row.media).map_err(|e| DbError::Corrupt(job_id, format!("media: {e}")))?;
    Ok(JobForPublish {
        id: row.id,
        last_request_id: row.last_request_id,
        channel,
        publish_at: row.publish_at,
        caption: row.caption,
        media,
        account: Account {
            id: row.account_id,
            platform_user_id: row.platform_user_id,
            access_token: SecretString::from(row.access_token),
            token_expires_at: row.token_expires_at,
            refresh_token: row.refresh_token.map(SecretString::from),
        },
    })
}

/// Writes a transition unless a newer one is already there: a higher `version` of the same
/// run, or any write of a run with a higher `epoch` (a replacement of a lost run). Returns whether it was applied.
#[instrument(skip(db, transition), fields(job_id = %transition.job_id, version = transition.version, status = %transition.status))]
pub async fn apply_transition(db: &PgPool, transition: &JobTransition) -> Result<bool, DbError> {
    let (error_code, error_message) = match &transition.last_error {
        Some(e) => (Some(e.code.as_str()), Some(e.message.as_str())),
        None => (None, None),
    };
    let applied = sqlx::query!(
        r#"UPDATE publish_jobs
           SET status = $3, attempt_count = $4, last_error_code = $5, last_error_message = $6,
               next_attempt_at = $7, published_at = $8, platform_post_id = $9,
               publish_at = COALESCE($10, publish_at), version = $2, epoch = $11, updated_at = now()
           WHERE id = $1 AND (epoch, version) < ($11, $2)"#,
        transition.job_id,
        transition.version,
        transition.status.as_str(),
        transition.attempt_count,
        error_code,
        error_message,
        transition.next_attempt_at,
        transition.published_at,
        transition.platform_post_id,
        transition.publish_at,
        transition.epoch,
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    if !applied {
        // Either a newer transition won (fine: stale writes are dropped) or the row is gone,
        // which must not pass silently.
        let exists = sqlx::query_scalar!("SELECT 1 AS \"one!\" FROM publish_jobs WHERE id = $1", transition.job_id)
            .fetch_optional(db)
            .await?
            .is_some();
        if !exists {
            return Err(DbError::JobMissing(transition.job_id));
        }
    }
    Ok(applied)
}

/// Who may make a job's platform calls: the run's fencing epoch, the job's attempt number and
/// the activity's execution of that attempt. Ordered in that sequence, a later token wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub job_id: Uuid,
    pub epoch: i64,
    pub attempt: i32,
    pub execution: i32,
}

/// Takes the job's lease for `fence` unless a newer token holds it, in one statement. `false`
/// means a newer execution has taken over: this one must make no further platform call.
#[instrument(skip(db))]
pub async fn take_lease(db: &PgPool, fence: &Fence) -> Result<bool, DbError> {
    Ok(sqlx::query!(
        r#"UPDATE publish_jobs SET lease_epoch = $2, lease_attempt = $3, lease_execution = $4
           WHERE id = $1 AND (lease_epoch, lease_attempt, lease_execution) <= ($2, $3, $4)"#,
        fence.job_id,
        fence.epoch,
        fence.attempt,
        fence.execution
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// A platform reference recorded by an attempt of this job.
pub struct RecordedReference {
    pub attempt_number: i32,
    pub reference: String,
    /// The call that publishes it was sent, and its outcome never learned.
    pub publish_requested: bool,
}

/// Opens the attempt's row (idempotent: a re-executed attempt finds its row again).
#[instrument(skip(db))]
pub async fn begin_attempt(db: &PgPool, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
    sqlx::query!("INSERT INTO publish_attempts (job_id, attempt_number) VALUES ($1, $2) ON CONFLICT DO NOTHING", job_id, attempt)
        .execute(db)
        .await?;
    Ok(())
}

/// Every platform reference this job's attempts recorded, newest first.
#[instrument(skip(db))]
pub async fn recorded_references(db: &PgPool, job_id: Uuid) -> Result<Vec<RecordedReference>, DbError> {
    Ok(sqlx::query_as!(
        RecordedReference,
        r#"SELECT attempt_number, reference, publish_requested_at IS NOT NULL AS "publish_requested!"
           FROM platform_references WHERE job_id = $1 ORDER BY id DESC"#,
        job_id
    )
    .fetch_all(db)
    .await?)
}

/// Records what the platform created, before anything else is asked of it. Append-only: a
/// reference recorded once is never overwritten or removed.
#[instrument(skip(db))]
pub async fn record_reference(db: &PgPool, job_id: Uuid, attempt: i32, reference: &str, request_id: Option<&str>) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    sqlx::query!(
        r#"INSERT INTO platform_references (job_id, attempt_number, reference, platform_request_id)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING"#,
        job_id,
        attempt,
        reference,
        request_id
    )
    .execute(&mut *tx)
    .await?;
    if request_id.is_some() {
        sqlx::query!(
            "UPDATE publish_attempts SET platform_request_id = $3 WHERE job_id = $1 AND attempt_number = $2",
            job_id,
            attempt,
            request_id
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Notes that the call publishing `reference` (Instagram `media_publish`) is about to be sent.
#[instrument(skip(db))]
pub async fn mark_reference_publish_requested(db: &PgPool, job_id: Uuid, reference: &str) -> Result<(), DbError> {
    sqlx::query!("UPDATE platform_references SET publish_requested_at = now() WHERE job_id = $1 AND reference = $2", job_id, reference)
        .execute(db)
        .await?;
    Ok(())
}

/// The platform answered the publish call of `reference`, and did not publish it.
#[instrument(skip(db))]
pub async fn clear_reference_publish_requested(db: &PgPool, job_id: Uuid, reference: &str) -> Result<(), DbError> {
    sqlx::query!("UPDATE platform_references SET publish_requested_at = NULL WHERE job_id = $1 AND reference = $2", job_id, reference)
        .execute(db)
        .await?;
    Ok(())
}

/// Notes that a publish call whose result only its answer reveals (TikTok's init, which creates
/// the reference) is about to be sent.
#[instrument(skip(db))]
pub async fn mark_publish_requested(db: &PgPool, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
    sqlx::query!("UPDATE publish_attempts SET publish_requested_at = now() WHERE job_id = $1 AND attempt_number = $2", job_id, attempt)
        .execute(db)
        .await?;
    Ok(())
}

/// The platform certainly refused the call: nothing is left to resolve.
#[instrument(skip(db))]
pub async fn clear_publish_requested(db: &PgPool, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
    sqlx::query!("UPDATE publish_attempts SET publish_requested_at = NULL WHERE job_id = $1 AND attempt_number = $2", job_id, attempt)
        .execute(db)
        .await?;
    Ok(())
}

/// The creator checked the platform and asked to try again: earlier calls with an unknown
/// outcome stop blocking new attempts (their rows keep their error, for the record).
#[instrument(skip(db))]
pub async fn release_unresolved_publish_requests(db: &PgPool, job_id: Uuid, before_attempt: i32) -> Result<(), DbError> {
    // Only earlier attempts': if this attempt itself is re-run after a crash, its own unknown
    // call must still block it.
    let mut tx = db.begin().await?;
    sqlx::query!(
        r#"UPDATE publish_attempts a SET publish_requested_at = NULL
           WHERE a.job_id = $1 AND a.attempt_number < $2 AND a.publish_requested_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM platform_references r WHERE r.job_id = a.job_id AND r.attempt_number = a.attempt_number)"#,
        job_id,
        before_attempt
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        r#"UPDATE platform_references SET publish_requested_at = NULL
           WHERE job_id = $1 AND attempt_number < $2 AND publish_requested_at IS NOT NULL"#,
        job_id,
        before_attempt
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// When the earliest call that creates the reference (TikTok's init) was sent whose outcome was
/// never learned, if there is one.
#[instrument(skip(db))]
pub async fn unresolved_publish_request_since(db: &PgPool, job_id: Uuid) -> Result<Option<DateTime<Utc>>, DbError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT min(a.publish_requested_at) FROM publish_attempts a
           WHERE a.job_id = $1 AND a.publish_requested_at IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM platform_references r WHERE r.job_id = a.job_id AND r.attempt_number = a.attempt_number)"#,
        job_id
    )
    .fetch_one(db)
    .await?)
}

/// Saves the latest preflight result for the UI, unless a newer one is already there.
#[instrument(skip(db, readiness))]
pub async fn store_readiness(db: &PgPool, job_id: Uuid, checked_at: DateTime<Utc>, readiness: &serde_json::Value) -> Result<(), DbError> {
    sqlx::query!(
        r#"UPDATE publish_jobs SET readiness = $2
           WHERE id = $1 AND (readiness IS NULL OR (readiness->>'checked_at')::timestamptz <= $3)"#,
        job_id,
        readiness,
        checked_at
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores the tokens of a refresh; the newest refresh token replaces the old one.
#[instrument(skip_all, fields(account_id = %account_id))]
pub async fn store_refreshed_tokens(
    db: &PgPool,
    account_id: Uuid,
    access_token: &SecretString,
    expires_at: DateTime<Utc>,
    refresh_token: &SecretString,
) -> Result<(), DbError> {
    use secrecy::ExposeSecret;
    sqlx::query!(
        r#"UPDATE social_accounts
           SET access_token = $2, token_expires_at = $3, refresh_token = $4, updated_at = now()
           WHERE id = $1"#,
        account_id,
        access_token.expose_secret(),
        expires_at,
        refresh_token.expose_secret(),
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How an attempt ended, for its row.
pub struct AttemptEnd<'a> {
    pub success: bool,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub retryable: Option<bool>,
    pub request_id: Option<&'a str>,
}

#[instrument(skip(db, end))]
pub async fn finish_attempt(db: &PgPool, job_id: Uuid, attempt: i32, end: AttemptEnd<'_>) -> Result<(), DbError> {
    sqlx::query!(
        r#"UPDATE publish_attempts
           SET finished_at = now(), outcome = $3, error_code = $4, error_message = $5,
               retryable = $6, platform_request_id = COALESCE($7, platform_request_id)
           WHERE job_id = $1 AND attempt_number = $2"#,
        job_id,
        attempt,
        if end.success { "success" } else { "failed" },
        end.error_code,
        end.error_message,
        end.retryable,
        end.request_id,
    )
    .execute(db)
    .await?;
    Ok(())
}
