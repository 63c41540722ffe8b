//! What the API answers with: jobs, attempts and accounts as the web UI sees them, built from
//! their rows. Statuses, channels and media are typed here, so a row the code cannot read is an
//! internal error (logged) rather than a string passed through unchecked.

use autopost_workflows::{Channel, JobError, JobStatus, MediaItem, PostOptions};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;

/// A publish job as the API shows it.
// In the views, `Option` fields are always present (null when unset): `required` says so.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub account_id: Uuid,
    pub creator_id: String,
    pub channel: Channel,
    pub status: JobStatus,
    pub publish_at: DateTime<Utc>,
    pub caption: String,
    pub media: Vec<MediaItem>,
    /// The creator's choices for the post, as sent (null when none were sent).
    #[schema(required)]
    pub options: Option<PostOptions>,
    pub attempt_count: i32,
    #[schema(required)]
    pub last_error: Option<JobError>,
    #[schema(required)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub published_at: Option<DateTime<Utc>>,
    #[schema(required)]
    pub platform_post_id: Option<String>,
    pub workflow_id: String,
    /// The latest preflight: `{ok, checked_at, checks: [{name, ok, detail}]}`; null until checked.
    #[schema(required, value_type = Option<Readiness>)]
    pub readiness: Option<serde_json::Value>,
    /// The first comment's Instagram id, once posted (`options.first_comment`).
    #[schema(required)]
    pub first_comment_id: Option<String>,
    /// What went wrong without failing the job, e.g. a first comment that could not be posted
    /// (`instagram.first_comment_failed`, `instagram.first_comment_skipped`).
    pub warnings: Vec<JobWarning>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The mirror's version: it grows with every transition the workflow writes.
    #[serde(skip)]
    pub version: i64,
}

/// A `publish_jobs` row as the queries read it.
pub struct JobRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub creator_id: String,
    pub channel: String,
    pub status: String,
    pub publish_at: DateTime<Utc>,
    pub caption: String,
    pub media: serde_json::Value,
    pub options: Option<serde_json::Value>,
    pub attempt_count: i32,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub published_at: Option<DateTime<Utc>>,
    pub platform_post_id: Option<String>,
    pub workflow_id: String,
    pub readiness: Option<serde_json::Value>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub first_comment_id: Option<String>,
    pub warnings: serde_json::Value,
}

/// Something that went wrong without failing a job.
#[derive(Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobWarning {
    /// Stable, like an error's code.
    pub code: String,
    pub message: String,
    pub at: DateTime<Utc>,
}

impl TryFrom<JobRow> for JobView {
    type Error = ApiError;

    fn try_from(r: JobRow) -> Result<Self, ApiError> {
        let unreadable =
            |what: &str, e: &dyn std::fmt::Display| ApiError::Internal(anyhow::anyhow!("job {}: unreadable {what}: {e}", r.id));
        let last_error = match (r.last_error_code, r.last_error_message) {
            (Some(code), Some(message)) => Some(JobError { code, message }),
            _ => None,
        };
        Ok(JobView {
            channel: r.channel.parse().map_err(|e| unreadable("channel", &e))?,
            status: r.status.parse().map_err(|e| unreadable("status", &e))?,
            media: serde_json::from_value(r.media).map_err(|e| unreadable("media", &e))?,
            options: r.options.map(serde_json::from_value).transpose().map_err(|e| unreadable("options", &e))?,
            id: r.id,
            account_id: r.account_id,
            creator_id: r.creator_id,
            publish_at: r.publish_at,
            caption: r.caption,
            attempt_count: r.attempt_count,
            last_error,
            next_attempt_at: r.next_attempt_at,
            published_at: r.published_at,
            platform_post_id: r.platform_post_id,
            workflow_id: r.workflow_id,
            readiness: r.readiness,
            first_comment_id: r.first_comment_id,
            warnings: serde_json::from_value(r.warnings).map_err(|e| unreadable("warnings", &e))?,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// One page of the calendar.
#[derive(Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last page.
    #[schema(required)]
    pub next_cursor: Option<String>,
}

/// The latest preflight of a job: whether it can publish as it stands. Stored as JSON by the
/// worker; this type documents its shape.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// Every check passed.
    ok: bool,
    checked_at: DateTime<Utc>,
    checks: Vec<ReadinessCheck>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadinessCheck {
    name: ReadinessCheckName,
    ok: bool,
    /// What was found, for humans.
    detail: String,
}

/// What a readiness check looked at.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessCheckName {
    Account,
    Token,
    Media,
    /// The checks as a whole, when they ran out of time (`preflight.timeout`).
    Preflight,
}

/// How a publish attempt ended; `in_progress` until it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    InProgress,
    Success,
    Failed,
}

impl std::str::FromStr for AttemptOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "in_progress" => Ok(AttemptOutcome::InProgress),
            "success" => Ok(AttemptOutcome::Success),
            "failed" => Ok(AttemptOutcome::Failed),
            other => Err(format!("unknown attempt outcome `{other}`")),
        }
    }
}

/// One publish attempt.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    /// 1-based.
    pub attempt_number: i32,
    pub started_at: DateTime<Utc>,
    /// Null while the attempt is in progress.
    #[schema(required)]
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: AttemptOutcome,
    #[schema(required)]
    pub error_code: Option<String>,
    #[schema(required)]
    pub error_message: Option<String>,
    #[schema(required)]
    pub retryable: Option<bool>,
    #[schema(required)]
    pub platform_request_id: Option<String>,
    #[schema(required)]
    pub platform_reference: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
}

/// An account as the API shows it: everything but the tokens.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountView {
    pub id: Uuid,
    pub creator_id: String,
    pub channel: Channel,
    pub platform_user_id: String,
    pub token_expires_at: DateTime<Utc>,
    pub has_refresh_token: bool,
    pub health: AccountHealth,
    /// When the creator unlinked it; its tokens are erased and it publishes nothing more.
    #[schema(required)]
    pub unlinked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Whether the account can publish as it stands: its token's state, from the last refresh.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountHealth {
    /// `ok`, `refresh_failed` (the platform refused to renew the token: reconnect) or
    /// `expired` (past `token_expires_at`), or `unlinked`.
    #[schema(example = "ok")]
    pub status: String,
    /// Why, when not `ok`.
    #[schema(required)]
    pub detail: Option<String>,
}

/// The creator's linked accounts.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

/// What unlinking did.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UnlinkedAccount {
    pub account: AccountView,
    /// Open jobs of the account that were cancelled.
    pub cancelled_jobs: Vec<Uuid>,
    /// Jobs whose attempt was already talking to the platform: it finishes; they publish
    /// nothing more after it.
    pub publishing_jobs: Vec<Uuid>,
}
