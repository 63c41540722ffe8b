-- Fencing: at most one execution of a job's attempts may talk to the platform at a time. Before
-- every call that creates or publishes, an execution takes the job's lease with its token
-- (run epoch, attempt number, activity execution), in one statement that succeeds only if no
-- newer token holds it. A call whose token is no longer current is never made.
ALTER TABLE publish_jobs
    ADD COLUMN lease_epoch     bigint  NOT NULL DEFAULT 0,
    ADD COLUMN lease_attempt   integer NOT NULL DEFAULT 0,
    ADD COLUMN lease_execution integer NOT NULL DEFAULT 0,
    -- The run epoch of the last mirrored transition: a run the reconciler started to replace a
    -- lost one has a higher epoch, so the lost run's late writes are ignored whatever their
    -- version.
    ADD COLUMN epoch           bigint  NOT NULL DEFAULT 0;

-- What the platform created for the job's attempts (Instagram container ids, TikTok
-- publish_ids), append-only: an attempt may record several, none is ever overwritten, and every
-- one is asked about before anything new is created.
CREATE TABLE platform_references (
    id                   bigserial   PRIMARY KEY,
    job_id               uuid        NOT NULL REFERENCES publish_jobs (id) ON DELETE CASCADE,
    attempt_number       integer     NOT NULL CHECK (attempt_number > 0),
    reference            text        NOT NULL CHECK (reference <> ''),
    platform_request_id  text,
    -- Set just before the call that publishes this reference (Instagram `media_publish`): a
    -- later execution that finds it set and the reference not published cannot tell whether
    -- the call went through, and must not publish again.
    publish_requested_at timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, attempt_number, reference)
);

INSERT INTO platform_references (job_id, attempt_number, reference, platform_request_id)
SELECT job_id, attempt_number, platform_reference, platform_request_id
FROM publish_attempts WHERE platform_reference IS NOT NULL;

ALTER TABLE publish_attempts DROP COLUMN platform_reference;
