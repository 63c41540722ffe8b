-- Who won each arming of a job: the armed activity firing at the instant ('publish'), or a
-- creator's command or an operator's cancel that claimed first ('command'). Keyed by the run's
-- epoch and the mirror version the job armed at, so every arming has its own fence; the first
-- insert wins and every later claim reads the winner.
CREATE TABLE publish_fences (
    job_id     uuid        NOT NULL REFERENCES publish_jobs (id) ON DELETE CASCADE,
    epoch      bigint      NOT NULL,
    version    bigint      NOT NULL,
    claimed_by text        NOT NULL CHECK (claimed_by IN ('publish', 'command')),
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, epoch, version)
);

-- The lease orders the executions of a job's attempts. An attempt number armed again after a
-- command disarmed it (a reschedule, say) starts its executions over: the version it armed at
-- keeps the new arming's lease above the old one's.
ALTER TABLE publish_jobs ADD COLUMN lease_version bigint NOT NULL DEFAULT 0;
