-- Outbound webhooks (AUTOPOST_WEBHOOK_URL): `job_events` is their durable outbox, read in the
-- stream's (txid, id) order; this single row is how far the receiver has acknowledged (2xx).
CREATE TABLE webhook_cursor (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The last event the receiver acknowledged; (horizon, 0) before the first one.
    txid       xid8        NOT NULL,
    event_id   bigint      NOT NULL,
    -- Events after that one already acknowledged: a job's earlier event that sorts after a later
    -- one (its transaction id is higher) is sent first, so each job's events go in version order.
    ahead      bigint[]    NOT NULL DEFAULT '{}',
    -- Touched by the delivering worker while it runs: a cursor nobody touched for 7 days
    -- (webhooks turned off) no longer holds back the retention below.
    alive_at   timestamptz NOT NULL DEFAULT now()
);

-- The deliverer's read: everything after the cursor in (txid, id) order.
CREATE INDEX job_events_delivery_idx ON job_events (txid, id);
-- A job's events not yet delivered that precede the next one (by id, which is its version order).
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

-- The retention keeps events the webhook receiver has not acknowledged yet, however old, as long
-- as a deliverer is alive: a receiver down for longer than 7 days still gets every event.
CREATE OR REPLACE FUNCTION prune_job_events() RETURNS bigint LANGUAGE sql
    SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH deleted AS (
        DELETE FROM job_events e
        WHERE e.created_at < now() - interval '7 days'
          AND NOT EXISTS (SELECT 1 FROM webhook_cursor c
                          WHERE c.alive_at > now() - interval '7 days'
                            AND (e.txid, e.id) > (c.txid, c.event_id))
        RETURNING 1)
    SELECT count(*) FROM deleted
$$;
