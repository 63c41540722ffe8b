-- Set by a run's last mirror write (published, cancelled, or `needs_attention` after the
-- attention TTL), cleared by the next run's first. The reconciler leaves a job whose workflow
-- closed on purpose alone, and a command on a `needs_attention` one starts a new run.
ALTER TABLE publish_jobs ADD COLUMN workflow_closed_at timestamptz;
