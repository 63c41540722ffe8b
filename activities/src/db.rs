//! The worker's reads and writes of Postgres: the job mirror, the attempt log and the accounts'
//! encrypted tokens.

use autopost_workflows::{Channel, Claimant, FenceClaim, JobTransition, MediaItem, MediaKind, PostOptions};
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::{PgExecutor, PgPool};
use tracing::instrument;
use uuid::Uuid;

use crate::vault::{Sealed, TokenField, TokenKeys, VaultError};

/// A job with the account it publishes to, as an attempt needs it.
pub struct JobForPublish {
    pub id: Uuid,
    /// The `x-request-id` of the API call that created or last commanded the job.
    pub last_request_id: Option<String>,
    pub channel: Channel,
    pub publish_at: DateTime<Utc>,
    pub caption: String,
    pub media: Vec<MediaItem>,
    pub options: Option<PostOptions>,
    pub account: Account,
}

impl JobForPublish {
    pub fn is_video(&self) -> bool {
        self.media.iter().any(|m| m.kind == MediaKind::Video)
    }
}

/// A linked account with its tokens opened, for the platform calls about to be made.
pub struct Account {
    pub id: Uuid,
    pub channel: Channel,
    pub platform_user_id: String,
    pub access_token: SecretString,
    pub token_expires_at: DateTime<Utc>,
    pub refresh_token: Option<SecretString>,
    /// Why the platform refused to renew the token (`token_status = 'refresh_failed'`); `None`
    /// while the token is healthy. Only a new link clears it.
    pub refresh_failed: Option<String>,
    /// The stored tokens this was read from: new tokens are stored only while they are still there.
    pub version: TokenVersion,
}

/// Identifies one write of an account's tokens: the access token's ciphertext. Every write
/// seals the access token afresh with a random nonce, so two writes never share it, and an
/// unlinked account (tokens erased) matches no version.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenVersion(Vec<u8>);

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("publish job {0} does not exist")]
    JobMissing(Uuid),
    #[error("publish job {0} has unreadable data: {1}")]
    Corrupt(Uuid, String),
    /// Its tokens were erased: nothing may be published with it any more.
    #[error("account {0} was unlinked")]
    AccountUnlinked(Uuid),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// An account row's stored tokens, as read.
struct StoredTokens {
    account_id: Uuid,
    access: Option<Vec<u8>>,
    refresh: Option<Vec<u8>>,
    key_id: Option<String>,
}

impl StoredTokens {
    /// Opens the tokens: the one place the worker turns ciphertexts back into tokens.
    fn open(self, keys: &TokenKeys) -> Result<(SecretString, Option<SecretString>, TokenVersion), DbError> {
        let (Some(access), Some(key_id)) = (self.access, self.key_id) else {
            return Err(DbError::AccountUnlinked(self.account_id));
        };
        let open = |field, ciphertext: Vec<u8>| keys.open(self.account_id, field, &Sealed { key_id: key_id.clone(), ciphertext });
        let access_token = open(TokenField::Access, access.clone())?;
        let refresh_token = self.refresh.map(|r| open(TokenField::Refresh, r)).transpose()?;
        Ok((access_token, refresh_token, TokenVersion(access)))
    }
}

fn refresh_failed(status: &str, detail: Option<String>) -> Option<String> {
    (status == "refresh_failed").then(|| detail.unwrap_or_else(|| "the platform refused to renew the token".into()))
}

/// The job and its account, with the account's tokens opened: only the activities that call the
/// platform with them load a job.
#[instrument(skip(db, keys))]
pub async fn load_job(db: &PgPool, keys: &TokenKeys, job_id: Uuid) -> Result<JobForPublish, DbError> {
    let row = sqlx::query!(
        r#"SELECT j.id, j.last_request_id, j.channel, j.publish_at, j.caption, j.media, j.options,
                  a.id AS account_id, a.platform_user_id, a.token_expires_at, a.access_token_ciphertext,
                  a.refresh_token_ciphertext, a.token_key_id, a.token_status, a.token_status_detail
           FROM publish_jobs j JOIN social_accounts a ON a.id = j.account_id
           WHERE j.id = $1"#,
        job_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(DbError::JobMissing(job_id))?;
    let channel = row.channel.parse().map_err(|e| DbError::Corrupt(job_id, format!("channel: {e}")))?;
    let media = serde_json::from_value(row.media).map_err(|e| DbError::Corrupt(job_id, format!("media: {e}")))?;
    let options = row.options.map(serde_json::from_value).transpose().map_err(|e| DbError::Corrupt(job_id, format!("options: {e}")))?;
    let stored = StoredTokens {
        account_id: row.account_id,
        access: row.access_token_ciphertext,
        refresh: row.refresh_token_ciphertext,
        key_id: row.token_key_id,
    };
    let (access_token, refresh_token, version) = stored.open(keys)?;
    Ok(JobForPublish {
        id: row.id,
        last_request_id: row.last_request_id,
        channel,
        publish_at: row.publish_at,
        caption: row.caption,
        media,
        options,
        account: Account {
            id: row.account_id,
            channel,
            platform_user_id: row.platform_user_id,
            access_token,
            token_expires_at: row.token_expires_at,
            refresh_token,
            refresh_failed: refresh_failed(&row.token_status, row.token_status_detail),
            version,
        },
    })
}

/// The account with its tokens opened; `None` if it no longer exists.
#[instrument(skip(db, keys))]
pub async fn load_account(db: &PgPool, keys: &TokenKeys, account_id: Uuid) -> Result<Option<Account>, DbError> {
    let Some(row) = sqlx::query!(
        r#"SELECT channel, platform_user_id, token_expires_at, access_token_ciphertext, refresh_token_ciphertext,
                  token_key_id, token_status, token_status_detail
           FROM social_accounts WHERE id = $1"#,
        account_id
    )
    .fetch_optional(db)
    .await?
    else {
        return Ok(None);
    };
    let channel = row.channel.parse().map_err(|e| DbError::Corrupt(account_id, format!("channel: {e}")))?;
    let stored =
        StoredTokens { account_id, access: row.access_token_ciphertext, refresh: row.refresh_token_ciphertext, key_id: row.token_key_id };
    let (access_token, refresh_token, version) = stored.open(keys)?;
    Ok(Some(Account {
        id: account_id,
        channel,
        platform_user_id: row.platform_user_id,
        access_token,
        token_expires_at: row.token_expires_at,
        refresh_token,
        refresh_failed: refresh_failed(&row.token_status, row.token_status_detail),
        version,
    }))
}

/// Writes a transition unless a newer one is already there: a higher `version` of the same
/// run, or any write of a run with a higher `epoch` (a replacement of a lost run). Returns whether it was applied.
#[instrument(skip(db, transition), fields(job_id = %transition.job_id, version = transition.version, status = %transition.status))]
pub async fn apply_transition(db: &PgPool, transition: &JobTransition) -> Result<bool, DbError> {
    let applied = match &transition.content {
        None => write_transition(db, transition).await?,
        // The new content and the discard of what was prepared for the old, in one commit.
        Some(_) => {
            let mut tx = db.begin().await?;
            let applied = write_transition(&mut *tx, transition).await?;
            if applied {
                sqlx::query!(
                    r#"UPDATE platform_references r SET discarded_at = now()
                       FROM publish_jobs j
                       WHERE r.job_id = $1 AND j.id = r.job_id AND j.channel = 'instagram'
                         AND r.publish_requested_at IS NULL AND r.discarded_at IS NULL"#,
                    transition.job_id
                )
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            applied
        }
    };
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

/// The write of [`apply_transition`], also inside a transaction: whether it was applied.
async fn write_transition<'e>(db: impl PgExecutor<'e>, transition: &JobTransition) -> Result<bool, DbError> {
    let (error_code, error_message) = match &transition.last_error {
        Some(e) => (Some(e.code.as_str()), Some(e.message.as_str())),
        None => (None, None),
    };
    let content = transition.content.as_ref();
    let media =
        content.map(|c| serde_json::to_value(&c.media)).transpose().map_err(|e| DbError::Corrupt(transition.job_id, e.to_string()))?;
    let options = content
        .and_then(|c| c.options.as_ref())
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| DbError::Corrupt(transition.job_id, e.to_string()))?;
    let applied = sqlx::query!(
        r#"UPDATE publish_jobs
           SET status = $3, attempt_count = $4, last_error_code = $5, last_error_message = $6,
               next_attempt_at = $7, published_at = $8, platform_post_id = $9,
               publish_at = COALESCE($10, publish_at), version = $2, epoch = $11, updated_at = now(),
               workflow_closed_at = CASE WHEN $12 THEN now() END,
               caption = COALESCE($13, caption), media = COALESCE($14, media),
               options = CASE WHEN $13::text IS NULL THEN options ELSE $15 END
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
        transition.closes_workflow,
        content.map(|c| c.caption.as_str()),
        media,
        options,
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    Ok(applied)
}

/// Who may make a job's platform calls: the run's fencing epoch, the job's attempt number, the
/// mirror version the attempt started (or armed) at and the activity's execution of it. Ordered
/// in that sequence, a later token wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub job_id: Uuid,
    pub epoch: i64,
    pub attempt: i32,
    pub version: i64,
    pub execution: i32,
}

/// Takes the job's lease for `fence` unless a newer token holds it, in one statement. `false`
/// means a newer execution has taken over: this one must make no further platform call.
#[instrument(skip(db))]
pub async fn take_lease<'e>(db: impl PgExecutor<'e>, fence: &Fence) -> Result<bool, DbError> {
    Ok(sqlx::query!(
        r#"UPDATE publish_jobs SET lease_epoch = $2, lease_attempt = $3, lease_version = $4, lease_execution = $5
           WHERE id = $1 AND (lease_epoch, lease_attempt, lease_version, lease_execution) <= ($2, $3, $4, $5)"#,
        fence.job_id,
        fence.epoch,
        fence.attempt,
        fence.version,
        fence.execution
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// Claims the fence of the arming at (`epoch`, `version`) for `claimant`, and returns who holds
/// it: the first claim wins, and a claim by the side that won (a re-executed activity, a
/// repeated command) learns that it holds it.
#[instrument(skip(db))]
pub async fn claim_fence<'e>(db: impl PgExecutor<'e>, claim: &FenceClaim) -> Result<Claimant, DbError> {
    let winner = sqlx::query_scalar!(
        r#"INSERT INTO publish_fences (job_id, epoch, version, claimed_by) VALUES ($1, $2, $3, $4)
           -- The no-op update returns the winner, even one whose claim committed after this
           -- statement's snapshot was taken.
           ON CONFLICT (job_id, epoch, version) DO UPDATE SET claimed_by = publish_fences.claimed_by
           RETURNING claimed_by"#,
        claim.job_id,
        claim.epoch,
        claim.version,
        claim.claimant.as_str()
    )
    .fetch_one(db)
    .await?;
    claimant(claim.job_id, &winner)
}

/// Who holds the fence of the arming at (`epoch`, `version`), if anyone claimed it yet.
#[instrument(skip(db))]
pub async fn fence_holder(db: &PgPool, job_id: Uuid, epoch: i64, version: i64) -> Result<Option<Claimant>, DbError> {
    let holder = sqlx::query_scalar!(
        "SELECT claimed_by FROM publish_fences WHERE job_id = $1 AND epoch = $2 AND version = $3",
        job_id,
        epoch,
        version
    )
    .fetch_optional(db)
    .await?;
    holder.map(|h| claimant(job_id, &h)).transpose()
}

fn claimant(job_id: Uuid, stored: &str) -> Result<Claimant, DbError> {
    match stored {
        "publish" => Ok(Claimant::Publish),
        "command" => Ok(Claimant::Command),
        other => Err(DbError::Corrupt(job_id, format!("unknown fence holder `{other}`"))),
    }
}

/// What the publishing call about to be made must leave noted before it is sent.
pub enum PublishIntent<'a> {
    /// Nothing: the attempt's own code notes it (it resolves earlier attempts first).
    None,
    /// Instagram's `media_publish` of this container.
    InstagramContainer(&'a str),
    /// TikTok's init, which creates the reference.
    TiktokInit,
}

/// Whether the armed publish may go out.
pub enum Fired {
    /// Go: the call may be sent.
    Go,
    /// A command claimed the fence first.
    Disarmed,
    /// A newer execution of this arming holds the lease.
    Superseded,
}

/// The fire at the instant, in one statement (one round trip and one commit, so a burst of
/// fires queues as little as it can on the pool): it claims the arming's fence for the publish
/// and, only if that claim wins, writes the `publishing` mirror at `version + 1`, opens the
/// attempt's row and notes the call about to be sent. The lease was taken at arm time; here it
/// is only checked, with the job's row locked so that it cannot pass to a newer execution
/// before the statement commits. Nothing is written unless the publish may go.
#[instrument(skip(db, intent))]
pub async fn fire(db: &PgPool, fence: &Fence, intent: PublishIntent<'_>) -> Result<Fired, DbError> {
    let (container, tiktok_init) = match intent {
        PublishIntent::None => (None, false),
        PublishIntent::InstagramContainer(container) => (Some(container), false),
        PublishIntent::TiktokInit => (None, true),
    };
    let row = sqlx::query!(
        r#"WITH job AS (
               SELECT (lease_epoch, lease_attempt, lease_version, lease_execution) = ($2, $3, $4, $5) AS lease_held
               FROM publish_jobs WHERE id = $1 FOR UPDATE
           ),
           claim AS (
               INSERT INTO publish_fences (job_id, epoch, version, claimed_by)
               SELECT $1, $2, $4, 'publish' FROM job WHERE lease_held
               -- The no-op update returns the winner, even one whose claim committed after this
               -- statement's snapshot was taken.
               ON CONFLICT (job_id, epoch, version) DO UPDATE SET claimed_by = publish_fences.claimed_by
               RETURNING claimed_by = 'publish' AS won
           ),
           mirror AS (
               -- Stale when a re-execution finds a later state already mirrored: fine.
               UPDATE publish_jobs
               SET status = 'publishing', attempt_count = $3, last_error_code = NULL, last_error_message = NULL,
                   next_attempt_at = NULL, published_at = NULL, platform_post_id = NULL,
                   version = $4 + 1, epoch = $2, updated_at = now(), workflow_closed_at = NULL
               WHERE id = $1 AND (epoch, version) < ($2, $4 + 1) AND EXISTS (SELECT 1 FROM claim WHERE won)
           ),
           attempt AS (
               INSERT INTO publish_attempts (job_id, attempt_number, publish_requested_at)
               SELECT $1, $3, CASE WHEN $7 THEN now() END FROM claim WHERE won
               ON CONFLICT (job_id, attempt_number) DO UPDATE
                   SET publish_requested_at = COALESCE(EXCLUDED.publish_requested_at, publish_attempts.publish_requested_at)
           ),
           reference AS (
               UPDATE platform_references SET publish_requested_at = now()
               WHERE job_id = $1 AND reference = $6 AND EXISTS (SELECT 1 FROM claim WHERE won)
           )
           SELECT (SELECT lease_held FROM job) AS "lease_held?", (SELECT won FROM claim) AS "won?""#,
        fence.job_id,
        fence.epoch,
        fence.attempt,
        fence.version,
        fence.execution,
        container,
        tiktok_init,
    )
    .fetch_one(db)
    .await?;
    Ok(match (row.lease_held, row.won) {
        (None, _) => return Err(DbError::JobMissing(fence.job_id)),
        (Some(false), _) => Fired::Superseded,
        (Some(true), Some(true)) => Fired::Go,
        (Some(true), Some(false)) => Fired::Disarmed,
        (Some(true), None) => return Err(DbError::Corrupt(fence.job_id, "the fence claim returned no winner".into())),
    })
}

/// Ends an armed attempt that published: its row and the `published` mirror, in one commit.
#[instrument(skip(db, end, published))]
pub async fn finish_published(db: &PgPool, attempt: i32, end: AttemptEnd<'_>, published: &JobTransition) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    finish_attempt(&mut *tx, published.job_id, attempt, end).await?;
    write_transition(&mut *tx, published).await?;
    tx.commit().await?;
    Ok(())
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
pub async fn begin_attempt<'e>(db: impl PgExecutor<'e>, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
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
           FROM platform_references WHERE job_id = $1 AND discarded_at IS NULL ORDER BY id DESC"#,
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
pub async fn mark_reference_publish_requested<'e>(db: impl PgExecutor<'e>, job_id: Uuid, reference: &str) -> Result<(), DbError> {
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
pub async fn mark_publish_requested<'e>(db: impl PgExecutor<'e>, job_id: Uuid, attempt: i32) -> Result<(), DbError> {
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
    // Instagram's containers only: a TikTok upload whose last chunk went out may still be
    // processing, and its status (always readable by its publish_id) says what became of it; a
    // cleared note would make it look abandoned, and a new init would post twice.
    sqlx::query!(
        r#"UPDATE platform_references SET publish_requested_at = NULL
           WHERE job_id = $1 AND attempt_number < $2 AND publish_requested_at IS NOT NULL
             AND EXISTS (SELECT 1 FROM publish_jobs j WHERE j.id = $1 AND j.channel = 'instagram')"#,
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

/// Stores the tokens of a refresh, sealed, if the row still holds the tokens the refresh
/// started from (`previous`): of two refreshes at once only the first is stored, so a token the
/// platform already replaced is never written over a live one. `refresh_token` is the row's
/// refresh token after the refresh (the new one, or the kept one; both are sealed again under
/// the current key). Marks the account healthy. `None`: another write came first; read the
/// account again and use its tokens.
#[instrument(skip_all, fields(account_id = %account_id))]
pub async fn store_refreshed_tokens(
    db: &PgPool,
    keys: &TokenKeys,
    account_id: Uuid,
    previous: &TokenVersion,
    access_token: &SecretString,
    expires_at: DateTime<Utc>,
    refresh_token: Option<&SecretString>,
) -> Result<Option<TokenVersion>, DbError> {
    let access = keys.seal(account_id, TokenField::Access, access_token);
    let refresh = refresh_token.map(|t| keys.seal(account_id, TokenField::Refresh, t));
    let stored = sqlx::query!(
        r#"UPDATE social_accounts
           SET access_token_ciphertext = $3, refresh_token_ciphertext = $4, token_key_id = $5, token_expires_at = $6,
               token_status = 'ok', token_status_detail = NULL, token_refreshed_at = now(), updated_at = now()
           WHERE id = $1 AND access_token_ciphertext = $2"#,
        account_id,
        &previous.0,
        &access.ciphertext,
        refresh.as_ref().map(|r| &r.ciphertext),
        &access.key_id,
        expires_at,
    )
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    Ok(stored.then_some(TokenVersion(access.ciphertext)))
}

/// Marks the account whose token the platform refused to renew, unless its tokens changed since
/// `previous` was read (a newer refresh or a new link), and at once fails the `token` check of
/// every open job of the account, so the creator sees it before the publish time. Returns
/// whether it was marked.
#[instrument(skip(db, previous))]
pub async fn mark_refresh_failed(db: &PgPool, account_id: Uuid, previous: &TokenVersion, detail: &str) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let marked = sqlx::query!(
        r#"UPDATE social_accounts SET token_status = 'refresh_failed', token_status_detail = $3, updated_at = now()
           WHERE id = $1 AND access_token_ciphertext = $2"#,
        account_id,
        &previous.0,
        detail,
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if marked {
        let checked_at = Utc::now();
        let check = serde_json::json!({ "name": "token", "ok": false, "detail": detail });
        // The other checks of the last preflight stand; the token check is replaced in place (or
        // added), and the job is no longer ready.
        sqlx::query!(
            r#"UPDATE publish_jobs j
               SET readiness = jsonb_build_object(
                   'ok', false,
                   'checked_at', $3::jsonb,
                   'checks', CASE
                       WHEN j.readiness->'checks' @> '[{"name": "token"}]' THEN
                           (SELECT jsonb_agg(CASE WHEN c->>'name' = 'token' THEN $4::jsonb ELSE c END ORDER BY n)
                            FROM jsonb_array_elements(j.readiness->'checks') WITH ORDINALITY AS t(c, n))
                       ELSE COALESCE(j.readiness->'checks', '[]'::jsonb) || jsonb_build_array($4::jsonb)
                   END)
               WHERE j.account_id = $1 AND j.status IN ('scheduled', 'needs_attention')
                 AND (j.readiness IS NULL OR (j.readiness->>'checked_at')::timestamptz <= $2)"#,
            account_id,
            checked_at,
            serde_json::json!(checked_at),
            check,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(marked)
}

/// Accounts whose token the periodic refresh should renew now, in id order after `after`:
/// Instagram tokens expiring before `instagram_before` and stored before `instagram_stored_before`
/// (Instagram renews only tokens a day old), TikTok tokens with a refresh token expiring before
/// `tiktok_before` (`None`: TikTok tokens cannot be refreshed here). Accounts already marked
/// `refresh_failed` wait for a new link.
#[instrument(skip(db))]
pub async fn accounts_due_for_refresh(
    db: &PgPool,
    instagram_before: DateTime<Utc>,
    instagram_stored_before: DateTime<Utc>,
    tiktok_before: Option<DateTime<Utc>>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, DbError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT id FROM social_accounts
           WHERE access_token_ciphertext IS NOT NULL AND token_status = 'ok'
             AND ((channel = 'instagram' AND token_expires_at < $1 AND updated_at < $2)
               OR (channel = 'tiktok' AND refresh_token_ciphertext IS NOT NULL AND token_expires_at < $3))
             AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id LIMIT $5"#,
        instagram_before,
        instagram_stored_before,
        tiktok_before,
        after,
        limit,
    )
    .fetch_all(db)
    .await?)
}

/// What re-encrypting under the current key did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RotationReport {
    /// Rows now sealed under the current key by this run.
    pub reencrypted: u64,
    /// Rows whose tokens another process wrote while this ran (a refresh, a new link): left as
    /// they are, and re-encrypted by the next run if they are still under an old key.
    pub changed_meanwhile: u64,
}

/// Seals every account's tokens under the current key that are under another, `batch` rows at a
/// time, each row by compare-and-swap on what was read. Idempotent: a second run finds nothing.
#[instrument(skip(db, keys))]
pub async fn reencrypt_tokens(db: &PgPool, keys: &TokenKeys, batch: i64) -> Result<RotationReport, DbError> {
    let current = keys.current_kid();
    let mut report = RotationReport::default();
    let mut after: Option<Uuid> = None;
    loop {
        let rows = sqlx::query!(
            r#"SELECT id, access_token_ciphertext, refresh_token_ciphertext, token_key_id FROM social_accounts
               WHERE token_key_id IS DISTINCT FROM $1
                 AND (access_token_ciphertext IS NOT NULL OR refresh_token_ciphertext IS NOT NULL)
                 AND ($2::uuid IS NULL OR id > $2)
               ORDER BY id LIMIT $3"#,
            current,
            after,
            batch,
        )
        .fetch_all(db)
        .await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        for row in rows {
            // The CHECK constraint guarantees a key id beside any ciphertext.
            let key_id = row.token_key_id.unwrap_or_default();
            let reseal = |field, ciphertext: &Option<Vec<u8>>| -> Result<Option<Sealed>, VaultError> {
                let Some(ciphertext) = ciphertext else { return Ok(None) };
                let token = keys.open(row.id, field, &Sealed { key_id: key_id.clone(), ciphertext: ciphertext.clone() })?;
                Ok(Some(keys.seal(row.id, field, &token)))
            };
            let access = reseal(TokenField::Access, &row.access_token_ciphertext)?;
            let refresh = reseal(TokenField::Refresh, &row.refresh_token_ciphertext)?;
            let swapped = sqlx::query!(
                r#"UPDATE social_accounts SET access_token_ciphertext = $4, refresh_token_ciphertext = $5, token_key_id = $6
                   WHERE id = $1 AND access_token_ciphertext IS NOT DISTINCT FROM $2 AND refresh_token_ciphertext IS NOT DISTINCT FROM $3"#,
                row.id,
                row.access_token_ciphertext,
                row.refresh_token_ciphertext,
                access.map(|s| s.ciphertext),
                refresh.map(|s| s.ciphertext),
                current,
            )
            .execute(db)
            .await?
            .rows_affected()
                == 1;
            if swapped {
                report.reencrypted += 1;
            } else {
                report.changed_meanwhile += 1;
            }
        }
    }
    Ok(report)
}

/// How many accounts hold a token in plain text (0 once the plain columns are gone).
pub async fn plain_token_rows(db: &PgPool) -> Result<i64, DbError> {
    if !has_plain_token_columns(db).await? {
        return Ok(0);
    }
    Ok(sqlx::query_scalar("SELECT count(*) FROM social_accounts WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL")
        .fetch_one(db)
        .await?)
}

async fn has_plain_token_columns(db: &PgPool) -> Result<bool, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                        WHERE table_schema = current_schema() AND table_name = 'social_accounts' AND column_name = 'access_token')",
    )
    .fetch_one(db)
    .await?)
}

/// Encrypts the tokens an older schema stored in plain text and clears the plain columns, for
/// `autopost migrate` between the migration that adds the ciphertext columns and the one that
/// drops the plain ones. Returns how many rows it encrypted; 0 once the plain columns are gone.
/// (Plain SQL, not the checked macros: the columns it reads no longer exist in the schema the
/// macros check against.)
#[instrument(skip_all)]
pub async fn encrypt_plain_tokens(db: &PgPool, keys: &TokenKeys) -> Result<u64, DbError> {
    if !has_plain_token_columns(db).await? {
        return Ok(0);
    }
    let mut encrypted = 0;
    loop {
        let rows: Vec<(Uuid, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT id, access_token, refresh_token FROM social_accounts
             WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL ORDER BY id LIMIT 500",
        )
        .fetch_all(db)
        .await?;
        if rows.is_empty() {
            return Ok(encrypted);
        }
        for (id, access, refresh) in rows {
            let seal = |field, plain: &Option<String>| plain.as_ref().map(|p| keys.seal(id, field, &SecretString::from(p.clone())));
            let access_sealed = seal(TokenField::Access, &access);
            let refresh_sealed = seal(TokenField::Refresh, &refresh);
            // Compare-and-swap on the plain values read: a row written meanwhile is read again.
            let done = sqlx::query(
                "UPDATE social_accounts
                 SET access_token_ciphertext = $4, refresh_token_ciphertext = $5, token_key_id = $6,
                     access_token = NULL, refresh_token = NULL
                 WHERE id = $1 AND access_token IS NOT DISTINCT FROM $2 AND refresh_token IS NOT DISTINCT FROM $3",
            )
            .bind(id)
            .bind(&access)
            .bind(&refresh)
            .bind(access_sealed.map(|s| s.ciphertext))
            .bind(refresh_sealed.map(|s| s.ciphertext))
            .bind(keys.current_kid())
            .execute(db)
            .await?
            .rows_affected();
            encrypted += done;
        }
    }
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
pub async fn finish_attempt<'e>(db: impl PgExecutor<'e>, job_id: Uuid, attempt: i32, end: AttemptEnd<'_>) -> Result<(), DbError> {
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

/// A warning on a job: something that went wrong without failing it (a first comment that could
/// not be posted). Shown in the job view.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobWarning {
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// The job's first comment, if it was posted: a retried execution looks here first.
#[instrument(skip(db))]
pub async fn first_comment_id(db: &PgPool, job_id: Uuid) -> Result<Option<String>, DbError> {
    let row = sqlx::query!("SELECT first_comment_id FROM publish_jobs WHERE id = $1", job_id).fetch_optional(db).await?;
    Ok(row.and_then(|r| r.first_comment_id))
}

/// Records the posted first comment.
#[instrument(skip(db))]
pub async fn record_first_comment(db: &PgPool, job_id: Uuid, comment_id: &str) -> Result<(), DbError> {
    sqlx::query!("UPDATE publish_jobs SET first_comment_id = $2, updated_at = now() WHERE id = $1", job_id, comment_id).execute(db).await?;
    Ok(())
}

/// Adds a warning to the job, once per code: a re-executed activity does not repeat it.
#[instrument(skip(db, warning), fields(code = %warning.code))]
pub async fn add_warning(db: &PgPool, job_id: Uuid, warning: &JobWarning) -> Result<(), DbError> {
    let value = serde_json::to_value(warning).map_err(|e| DbError::Corrupt(job_id, format!("warning: {e}")))?;
    sqlx::query!(
        r#"UPDATE publish_jobs SET warnings = warnings || jsonb_build_array($2::jsonb), updated_at = now()
           WHERE id = $1 AND NOT warnings @> jsonb_build_array(jsonb_build_object('code', $3::text))"#,
        job_id,
        value,
        warning.code
    )
    .execute(db)
    .await?;
    Ok(())
}
