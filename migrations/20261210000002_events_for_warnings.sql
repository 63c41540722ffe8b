-- A warning (a first comment Instagram refused, say) and the first comment's id are written by
-- an activity after the transition that published the job, without a new version: the workflow
-- owns the version.
-- It is an event too, so streams and webhooks tell the creator; it carries the version of the
-- transition it follows (clients ignore events *below* the version they hold, not equal).
DROP TRIGGER publish_jobs_transitioned ON publish_jobs;
CREATE TRIGGER publish_jobs_transitioned AFTER UPDATE ON publish_jobs
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.epoch IS DISTINCT FROM NEW.epoch
                       OR OLD.warnings IS DISTINCT FROM NEW.warnings
                       OR OLD.first_comment_id IS DISTINCT FROM NEW.first_comment_id)
    EXECUTE FUNCTION record_job_event();
