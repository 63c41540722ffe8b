-- An edit of a post's content discards the Instagram containers prepared for the old content
-- (never those whose publish was requested: those may be live). The row stays, as every
-- reference does; a discarded one is no longer resolved or published by later attempts.
ALTER TABLE platform_references ADD COLUMN discarded_at timestamptz;
