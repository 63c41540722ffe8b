-- The first comment of an Instagram post (options.first_comment) is posted after the publish, by
-- its own activity: its id once posted, and the job's warnings (a comment that could not be
-- posted does not fail a published job; it is reported here instead).
ALTER TABLE publish_jobs ADD COLUMN first_comment_id text;
ALTER TABLE publish_jobs ADD COLUMN warnings jsonb NOT NULL DEFAULT '[]'::jsonb;
