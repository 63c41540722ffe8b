//! The first comment of an Instagram post, posted once the post is live, outside the publish
//! fence: it never delays or fails a publish. Its own few tries happen here; what became of it
//! is recorded on the job (the comment's id, or a warning) and counted in
//! `autopost_first_comments_total{outcome}`.

use std::time::Duration;

use autopost_workflows::{FirstCommentRequest, options};
use chrono::Utc;
use sqlx::PgPool;
use tracing::instrument;

use crate::{
    WorkerActivities,
    db::{self, DbError, JobWarning},
    platforms::PlatformError,
};

/// Platform tries per execution, and the waits between them.
const TRIES: [Duration; 3] = [Duration::ZERO, Duration::from_secs(2), Duration::from_secs(10)];

fn counted(outcome: &'static str) {
    metrics::counter!("autopost_first_comments_total", "outcome" => outcome).increment(1);
}

/// The post went live through a call whose answer was lost, so only its container is known and
/// nothing can be commented: the job says so.
pub(crate) async fn skip_first_comment(db: &PgPool, job_id: uuid::Uuid) -> Result<(), DbError> {
    let warning = JobWarning {
        code: "instagram.first_comment_skipped".into(),
        message: "the post is live, but Instagram did not return its media id, so the first comment was not posted: add it on Instagram"
            .into(),
        at: Utc::now(),
    };
    db::add_warning(db, job_id, &warning).await?;
    counted("skipped");
    Ok(())
}

impl WorkerActivities {
    #[instrument(skip(self), fields(job_id = %request.job_id))]
    pub(crate) async fn run_first_comment(&self, request: FirstCommentRequest) -> Result<(), DbError> {
        let job = db::load_job(&self.db, &self.keys, request.job_id).await?;
        let Some(message) = options::first_comment(job.options.as_ref()) else { return Ok(()) };
        if db::first_comment_id(&self.db, job.id).await?.is_some() {
            return Ok(());
        }
        let token = &job.account.access_token;
        let media_id = request.platform_post_id.as_str();
        let mut last_error: Option<PlatformError> = None;
        for wait in TRIES {
            tokio::time::sleep(wait).await;
            // An earlier execution may have posted it and died before recording it.
            let posted = match self.instagram.comments(token, media_id).await {
                Ok(page) => page.value.into_iter().find(|c| c.text == message).map(|c| c.id),
                Err(error) if error.retryable() => {
                    last_error = Some(error);
                    continue;
                }
                Err(error) => {
                    last_error = Some(error);
                    break;
                }
            };
            let result = match posted {
                Some(id) => Ok(id),
                None => self.instagram.post_comment(token, media_id, message).await.map(|r| r.value),
            };
            match result {
                Ok(comment_id) => {
                    db::record_first_comment(&self.db, job.id, &comment_id).await?;
                    counted("posted");
                    tracing::info!(job_id = %job.id, comment = %comment_id, "first comment posted");
                    return Ok(());
                }
                // Not answered: it may have been posted; the next try reads the comments first.
                Err(error) if error.retryable() || !error.answered => last_error = Some(error),
                Err(error) => {
                    last_error = Some(error);
                    break;
                }
            }
        }
        let error = last_error.expect("a failed try leaves its error");
        let warning = JobWarning {
            code: "instagram.first_comment_failed".into(),
            message: format!("the post is live, but its first comment could not be posted ({}: {})", error.code, error.message),
            at: Utc::now(),
        };
        db::add_warning(&self.db, job.id, &warning).await?;
        counted("failed");
        tracing::warn!(job_id = %job.id, error_code = %error.code, "first comment failed");
        Ok(())
    }
}
