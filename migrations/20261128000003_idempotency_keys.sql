-- `Idempotency-Key` of job creation: the same key and body return the same job, never a second.
CREATE TABLE idempotency_keys (
    creator_id text        NOT NULL,
    key        text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- The request as parsed, to tell a retry (same body) from a reused key (another body).
    request    jsonb       NOT NULL,
    job_id     uuid        NOT NULL REFERENCES publish_jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (creator_id, key)
);

-- The `x-request-id` of the API call that created or last commanded the job, so the worker's
-- logs of an attempt can be joined with the API's logs of the request behind it.
ALTER TABLE publish_jobs ADD COLUMN last_request_id text;
