-- The live event stream (`GET /v1/events`): one row per mirrored transition of a job, written
-- by a trigger, so every mirror write (each bumps `version`, or `epoch` for a replacement run)
-- is caught without the writers knowing.
CREATE TABLE job_events (
    -- The SSE `id:`.
    id         bigserial   PRIMARY KEY,
    job_id     uuid        NOT NULL,
    creator_id text        NOT NULL,
    version    bigint      NOT NULL,
    -- The writing transaction. Ids are taken before commit, so they can commit out of order; the
    -- stream emits in (txid, id) order, and only rows of transactions older than every one still
    -- running (`pg_snapshot_xmin`), a set that no later commit can add to.
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- The job as the transition left it, without the fencing columns: what the event shows.
    job        jsonb       NOT NULL,
    -- Events are kept 7 days (the API calls `prune_job_events` hourly).
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_stream_idx ON job_events (creator_id, txid, id);
-- The API's safety-net scan (rows that became visible since its last look) and the retention.
CREATE INDEX job_events_txid_idx ON job_events (txid);
CREATE INDEX job_events_created_at_idx ON job_events (created_at);

-- As the owner, like `prune_job_events`: roles that write jobs need no rights on `job_events`
-- (a trigger function cannot be called directly). The fixed path keeps a caller's temporary
-- tables out.
CREATE FUNCTION record_job_event() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO job_events (job_id, creator_id, version, job)
    VALUES (NEW.id, NEW.creator_id, NEW.version,
            to_jsonb(NEW) - ARRAY['lease_epoch', 'lease_attempt', 'lease_execution', 'lease_version', 'epoch',
                                  'last_request_id', 'workflow_closed_at']);
    -- Delivered at commit; the payload lets each API process wake only that creator's streams.
    PERFORM pg_notify('job_events', NEW.creator_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER publish_jobs_created AFTER INSERT ON publish_jobs
    FOR EACH ROW EXECUTE FUNCTION record_job_event();
CREATE TRIGGER publish_jobs_transitioned AFTER UPDATE ON publish_jobs
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.epoch IS DISTINCT FROM NEW.epoch)
    EXECUTE FUNCTION record_job_event();

-- The retention: deletes the events older than 7 days, how many it deleted.
CREATE FUNCTION prune_job_events() RETURNS bigint LANGUAGE sql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH deleted AS (DELETE FROM job_events WHERE created_at < now() - interval '7 days' RETURNING 1)
    SELECT count(*) FROM deleted
$$;
