-- Accounts a creator linked, with the tokens the worker publishes with. Tokens are read only by
-- activities; the API never returns them.
CREATE TABLE social_accounts (
    id               uuid PRIMARY KEY,
    creator_id       text        NOT NULL CHECK (creator_id <> ''),
    channel          text        NOT NULL CHECK (channel IN ('instagram', 'tiktok')),
    platform_user_id text        NOT NULL CHECK (platform_user_id <> ''),
    access_token     text        NOT NULL CHECK (access_token <> ''),
    token_expires_at timestamptz NOT NULL,
    refresh_token    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Linking the same platform account again refreshes its tokens instead of duplicating it.
    UNIQUE (channel, platform_user_id)
);
CREATE INDEX social_accounts_creator_idx ON social_accounts (creator_id);

-- One row per scheduled post. The workflow `publish-job:{id}` owns the state; this table is its
-- mirror for the API, written only by the workflow's mirror activity after creation.
CREATE TABLE publish_jobs (
    id                 uuid PRIMARY KEY,
    creator_id         text        NOT NULL,
    account_id         uuid        NOT NULL REFERENCES social_accounts (id),
    channel            text        NOT NULL CHECK (channel IN ('instagram', 'tiktok')),
    status             text        NOT NULL DEFAULT 'scheduled'
        CHECK (status IN ('scheduled', 'publishing', 'published', 'failed', 'needs_attention', 'cancelled')),
    publish_at         timestamptz NOT NULL,
    caption            text        NOT NULL,
    -- [{"url": "...", "kind": "image" | "video"}], in posting order.
    media              jsonb       NOT NULL CHECK (jsonb_typeof(media) = 'array'),
    attempt_count      integer     NOT NULL DEFAULT 0 CHECK (attempt_count >= 0),
    last_error_code    text,
    last_error_message text,
    next_attempt_at    timestamptz,
    published_at       timestamptz,
    platform_post_id   text,
    workflow_id        text        NOT NULL UNIQUE,
    -- Sequence number of the last mirrored transition: a write with an older one is ignored.
    version            bigint      NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((last_error_code IS NULL) = (last_error_message IS NULL)),
    CHECK (status <> 'published' OR (published_at IS NOT NULL AND platform_post_id IS NOT NULL))
);
-- The calendar: a creator's jobs in a time range, and the same filtered by status.
CREATE INDEX publish_jobs_calendar_idx ON publish_jobs (creator_id, publish_at, id);
CREATE INDEX publish_jobs_status_idx ON publish_jobs (status, publish_at, id);
CREATE INDEX publish_jobs_account_idx ON publish_jobs (account_id);

-- One row per publish attempt against the platform.
CREATE TABLE publish_attempts (
    job_id              uuid        NOT NULL REFERENCES publish_jobs (id) ON DELETE CASCADE,
    attempt_number      integer     NOT NULL CHECK (attempt_number > 0),
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    outcome             text        NOT NULL DEFAULT 'in_progress'
        CHECK (outcome IN ('in_progress', 'success', 'failed')),
    error_code          text,
    error_message       text,
    retryable           boolean,
    -- The platform's id of the last request (Instagram fbtrace_id, TikTok log_id), for support.
    platform_request_id text,
    -- What the platform created for this attempt (Instagram container id, TikTok publish_id),
    -- recorded before the publish step so a later attempt can ask whether it went through.
    platform_reference  text,
    PRIMARY KEY (job_id, attempt_number),
    CHECK ((outcome = 'in_progress') = (finished_at IS NULL))
);
