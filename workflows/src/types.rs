//! Types shared by the workflow, the activities and the API. They travel through Temporal as
//! JSON payloads, so every change here must stay readable by running workflows: add fields with
//! `#[serde(default)]`, never rename or remove.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The platform a post goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Instagram,
    Tiktok,
}

impl Channel {
    pub const ALL: [Channel; 2] = [Channel::Instagram, Channel::Tiktok];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Instagram => "instagram",
            Channel::Tiktok => "tiktok",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Channel {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// Where a publish job stands. Mirrors the `publish_jobs.status` check constraint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its publish time.
    Scheduled,
    /// An attempt is talking to the platform.
    Publishing,
    /// The platform accepted the post; final.
    Published,
    /// An attempt failed and another is scheduled at `next_attempt_at`.
    Failed,
    /// The creator must act (reconnect, fix media) or retry; no attempt is scheduled.
    NeedsAttention,
    /// Cancelled by the creator; final, never publishes.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Scheduled,
        JobStatus::Publishing,
        JobStatus::Published,
        JobStatus::Failed,
        JobStatus::NeedsAttention,
        JobStatus::Cancelled,
    ];

    /// The statuses nothing can change any more: the job's workflow has ended.
    pub const FINAL: [JobStatus; 2] = [JobStatus::Published, JobStatus::Cancelled];

    /// Published or cancelled: no command, retry or timer changes the job again.
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// No attempt is due or running: the job is final, waits for a retry, or waits for the
    /// creator. What a caller waiting for an attempt's outcome waits for.
    pub fn is_settled(self) -> bool {
        !matches!(self, JobStatus::Scheduled | JobStatus::Publishing)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Scheduled => "scheduled",
            JobStatus::Publishing => "publishing",
            JobStatus::Published => "published",
            JobStatus::Failed => "failed",
            JobStatus::NeedsAttention => "needs_attention",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown value `{0}`")]
pub struct UnknownValue(pub String);

/// A failure the creator sees: `code` is stable and machine-readable (`instagram.190.463`,
/// `preflight.token_expired`), `message` is for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { code: code.into(), message: message.into() }
    }
}

/// One media item of a post, in posting order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MediaItem {
    pub url: String,
    pub kind: MediaKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    Image,
    Video,
}

/// Input of [`crate::PublishPostWorkflow`]. Ids and schedule only: tokens stay in Postgres.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishJobInput {
    pub job_id: Uuid,
    pub creator_id: String,
    pub channel: Channel,
    pub publish_at: DateTime<Utc>,
    /// Waits before each retry; its length is the number of retries. Fixed when the job is
    /// created, so a configuration change never alters the history of a running workflow.
    pub retry_backoff_ms: Vec<u64>,
    /// The publish activity's heartbeat timeout: how soon a dead worker's attempt is taken over.
    /// Fixed when the job is created, like the retry schedule.
    pub heartbeat_timeout_ms: u64,
    /// How long a `needs_attention` job waits for its creator before its workflow closes (the
    /// row stays `needs_attention`, and a command starts a new run). `None`: forever.
    #[serde(default)]
    pub attention_ttl_ms: Option<u64>,
    /// Commands one run carries out before it continues as new, so that repeated reschedules
    /// cannot grow one history without bound. `None`: only when Temporal suggests it.
    #[serde(default)]
    pub commands_per_run: Option<u32>,
    /// Set when a job that already has a history in Postgres gets a new run: the reconciler's
    /// replacement of a lost run, a continue-as-new, or a command after the attention TTL.
    #[serde(default)]
    pub resume: Option<Resume>,
    /// How the run arms early for its publish (see [`ArmSettings`]). `None`: a run started before
    /// arming existed, which replays the old way: woken at `publish_at`, every step after it an
    /// activity of its own.
    #[serde(default)]
    pub arm: Option<ArmSettings>,
    /// The readiness check at creation runs as a local activity, inside the workflow task that
    /// started the run: no activity task for the server to dispatch, one workflow task fewer.
    /// `false`: a run started before, which replays with its (remote) readiness activity.
    #[serde(default)]
    pub local_readiness: bool,
}

/// Arming: the run wakes `lead_ms` plus a per-job share of `spread_ms` before `publish_at`, and
/// one activity does everything that can be done early, waits on the worker's clock and makes
/// the publishing call at the instant. Fixed when the run starts, like the retry schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmSettings {
    pub lead_ms: u64,
    /// Jobs due at one instant arm over this window rather than all at once.
    pub spread_ms: u64,
}

impl ArmSettings {
    /// This job's share of the spread: fixed by its id, so every replay and every worker agree.
    pub fn offset_ms(&self, job_id: Uuid) -> u64 {
        if self.spread_ms == 0 {
            return 0;
        }
        // The low bits of a v4 UUID are random: an even spread without a clock or an RNG.
        (job_id.as_u128() as u64) % self.spread_ms
    }

    /// When the job arms: `publish_at` minus the lead and its share of the spread.
    pub fn arm_at(&self, job_id: Uuid, publish_at: DateTime<Utc>) -> DateTime<Utc> {
        let before = self.lead_ms.saturating_add(self.offset_ms(job_id)).min(i64::MAX as u64);
        publish_at - chrono::Duration::milliseconds(before as i64)
    }
}

/// How a restarted workflow picks up a job that already has a history in Postgres.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resume {
    /// The mirror's version (`publish_jobs.version`): the new run's transitions continue above it.
    pub version: i64,
    /// Attempts the lost run made: the new run's attempt numbers continue above them.
    pub attempt_count: i32,
    /// The new run's fencing epoch, above every epoch the lost run wrote or fenced with: its
    /// late writes and platform calls are refused.
    pub epoch: i64,
    /// Why the job needs the creator now; `None` resumes the schedule as if nothing happened.
    pub lost: Option<JobError>,
    /// Where the job stood when its own workflow went on in this new run; the run starts there,
    /// writing nothing (the row is already right).
    #[serde(default)]
    pub carried: Option<Carried>,
}

/// The state a job's workflow hands to its next run: a continue-as-new, or a command on a
/// `needs_attention` job whose run closed after the attention TTL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Carried {
    /// `scheduled`, `failed` or `needs_attention`: the states a run waits in.
    pub status: JobStatus,
    /// Retries spent of the current budget.
    pub retries_used: usize,
    /// When a `failed` job's next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The error the row shows, written again if the run closes unattended.
    pub last_error: Option<JobError>,
    /// When a `needs_attention` job stops waiting: counted from when it first needed the
    /// creator, not from each new run.
    pub attention_until: Option<DateTime<Utc>>,
    /// A command accepted by the last run and not yet carried out: the new run carries it out
    /// first, so a command racing a continue-as-new is neither lost nor applied twice.
    #[serde(default)]
    pub pending: Option<JobCommand>,
}

/// The business id of a job's workflow: one workflow per job, found again by the job id alone.
pub fn workflow_id(job_id: Uuid) -> String {
    format!("publish-job:{job_id}")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightRequest {
    pub job_id: Uuid,
}

/// One named readiness check (`account`, `token`, `media`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The result of preflight: every check, and the first failure as the error to surface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PreflightReport {
    pub ok: bool,
    pub checked_at: DateTime<Utc>,
    pub checks: Vec<ReadinessCheck>,
    pub error: Option<JobError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishRequest {
    pub job_id: Uuid,
    /// 1-based attempt number; `publish_attempts` has one row per number.
    pub attempt: i32,
    /// The creator asked to try again after we could not tell whether an earlier attempt went
    /// through: publish calls with an unknown outcome no longer block this attempt.
    pub creator_retry: bool,
    /// The run's fencing epoch (see [`Resume::epoch`]).
    pub epoch: i64,
    /// The mirror's version when the attempt started: a later attempt of the same number (after
    /// an arming a command disarmed) holds a newer lease than the disarmed one. 0 in runs from
    /// before arming.
    #[serde(default)]
    pub version: i64,
}

/// Input of the armed activity: the job's attempt `attempt` at `publish_at`, fenced in Postgres
/// by (`epoch`, `version`): the key a command racing the instant claims too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmRequest {
    pub job_id: Uuid,
    pub epoch: i64,
    /// The mirror's version when the job armed. The activity writes `publishing` at `version + 1`
    /// when it fires and, on success, `published` at `version + 2`.
    pub version: i64,
    /// The attempt number the publish uses if it fires.
    pub attempt: i32,
    pub publish_at: DateTime<Utc>,
}

/// What the armed activity did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "armed", rename_all = "snake_case")]
pub enum ArmOutcome {
    /// Preflight at arm time failed: no attempt was made.
    NotReady { report: PreflightReport },
    /// A command claimed the job's fence first: nothing was published.
    Disarmed,
    /// The fence was the publish's: the attempt ran (and is mirrored up to `publishing`, and
    /// `published` when it succeeded).
    Fired { outcome: AttemptOutcome },
}

/// Who takes a job's fence for one arming: the first claim wins, and every later claim learns
/// the winner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Claimant {
    /// The armed activity, at the instant.
    Publish,
    /// A creator's command or an operator's cancel, before it is acknowledged.
    Command,
}

impl Claimant {
    pub fn as_str(self) -> &'static str {
        match self {
            Claimant::Publish => "publish",
            Claimant::Command => "command",
        }
    }
}

/// A claim of the fence of the arming at (`epoch`, `version`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FenceClaim {
    pub job_id: Uuid,
    pub epoch: i64,
    pub version: i64,
    pub claimant: Claimant,
}

/// What one attempt achieved. Failures are values, not activity errors, so the workflow (not
/// Temporal's activity retry) decides between the retry schedule and `needs_attention`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    Published {
        platform_post_id: String,
        published_at: DateTime<Utc>,
        /// The post asks for a first comment, posted by its own activity after this.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        first_comment: bool,
    },
    Failed {
        error: JobError,
        retryable: bool,
        /// A wait the platform demands (e.g. a daily quota), honoured when longer than ours.
        retry_after_ms: Option<u64>,
        /// The account's publishing quota is used up: the job waits for the window, and the wait
        /// does not count against its retries.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        quota_wait: bool,
    },
}

/// Input of the first-comment activity: the live post to comment on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FirstCommentRequest {
    pub job_id: Uuid,
    pub platform_post_id: String,
}

/// What a post says and shows, as an edit replaces it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobContent {
    pub caption: String,
    pub media: Vec<MediaItem>,
    #[serde(default)]
    pub options: Option<crate::PostOptions>,
}

/// A creator's command to a job, delivered as a Temporal update so the workflow, which owns the
/// job's state, decides whether it is allowed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum JobCommand {
    /// Skip the rest of the wait (`failed`), or run preflight and publish with a fresh retry
    /// budget (`needs_attention`).
    Retry,
    /// Publish at another time; the job's one workflow re-arms its timer.
    Reschedule { publish_at: DateTime<Utc> },
    /// Never publish.
    Cancel,
    /// Publish now instead of at the scheduled time (preflight first).
    PublishNow,
    /// New caption, media and options (validated by the API like a create), in the job's
    /// current plan: what was prepared for the old content is discarded.
    Edit { content: Box<JobContent> },
}

impl JobCommand {
    pub fn name(&self) -> &'static str {
        match self {
            JobCommand::Retry => "retry",
            JobCommand::Reschedule { .. } => "reschedule",
            JobCommand::Cancel => "cancel",
            JobCommand::PublishNow => "publish-now",
            JobCommand::Edit { .. } => "edit",
        }
    }

    /// Whether a job in `status` takes this command, and if not, why.
    pub fn allowed_in(&self, status: JobStatus) -> Result<(), String> {
        use JobStatus::*;
        let allowed: &[JobStatus] = match self {
            JobCommand::Retry => &[Failed, NeedsAttention],
            JobCommand::Reschedule { .. } | JobCommand::Cancel | JobCommand::PublishNow | JobCommand::Edit { .. } => {
                &[Scheduled, Failed, NeedsAttention]
            }
        };
        if allowed.contains(&status) {
            return Ok(());
        }
        let why = match status {
            Publishing => "an attempt is talking to the platform right now",
            Published => "the post is already published",
            Cancelled => "the job was cancelled",
            Scheduled => "the job has not failed; it is waiting for its publish time",
            Failed | NeedsAttention => "it does not apply here",
        };
        Err(format!("cannot {} a job that is {status}: {why}", self.name()))
    }
}

/// A command's answer from the workflow: the job's status and the mirror's version when it was
/// accepted. The command's own transition is mirrored above that version, so the API knows when
/// the mirror shows it, also for a repeated request that Temporal answered from the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAccepted {
    pub status: JobStatus,
    pub version: i64,
}

/// A job state written to Postgres. `version` grows with every transition of the workflow, and
/// the mirror ignores a write whose `version` is not newer than the row's: a late write never
/// moves a job backwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobTransition {
    pub job_id: Uuid,
    /// The writing run's epoch: a replaced run's late writes lose to its replacement's.
    pub epoch: i64,
    pub version: i64,
    pub status: JobStatus,
    pub attempt_count: i32,
    pub last_error: Option<JobError>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub published_at: Option<DateTime<Utc>>,
    pub platform_post_id: Option<String>,
    /// A new publish time (reschedule); `None` keeps the row's.
    #[serde(default)]
    pub publish_at: Option<DateTime<Utc>>,
    /// The run closes after this write: published, cancelled, or `needs_attention` past the
    /// attention TTL. The reconciler leaves such a job alone, and a command on it starts a run.
    #[serde(default)]
    pub closes_workflow: bool,
    /// An edit's new content, written with the transition; `None` keeps the row's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<JobContent>,
}

/// The workflow's result, shown in the Temporal Web UI.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PublishJobResult {
    pub status: JobStatus,
    pub attempt_count: i32,
    pub platform_post_id: Option<String>,
    pub last_error: Option<JobError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_database_names() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn only_published_and_cancelled_are_final() {
        use JobStatus::*;
        let finals: Vec<_> = JobStatus::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [Published, Cancelled]);
        let settled: Vec<_> = JobStatus::ALL.into_iter().filter(|s| s.is_settled()).collect();
        assert_eq!(settled, [Published, Failed, NeedsAttention, Cancelled]);
    }

    #[test]
    fn workflow_id_is_derived_from_the_job_id() {
        let id = Uuid::nil();
        assert_eq!(workflow_id(id), "publish-job:00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn commands_are_allowed_only_in_the_states_the_product_defines() {
        use JobStatus::*;
        let reschedule = JobCommand::Reschedule { publish_at: Utc::now() };
        for (command, allowed) in [
            (JobCommand::Retry, vec![Failed, NeedsAttention]),
            (reschedule, vec![Scheduled, Failed, NeedsAttention]),
            (JobCommand::Cancel, vec![Scheduled, Failed, NeedsAttention]),
            (JobCommand::PublishNow, vec![Scheduled, Failed, NeedsAttention]),
        ] {
            for status in JobStatus::ALL {
                assert_eq!(command.allowed_in(status).is_ok(), allowed.contains(&status), "{command:?} in {status}");
            }
        }
        let refusal = JobCommand::Cancel.allowed_in(Publishing).unwrap_err();
        assert!(refusal.contains("publishing"), "{refusal}");
    }

    #[test]
    fn attempt_outcome_is_tagged_for_readable_histories() {
        let outcome = AttemptOutcome::Failed {
            error: JobError::new("tiktok.internal_error", "boom"),
            retryable: true,
            retry_after_ms: None,
            quota_wait: false,
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["outcome"], "failed");
    }
}
