-- The creator's choices for the post beyond caption and media (`PostOptions`, tagged by
-- channel): TikTok's privacy level and interaction and disclosure settings. NULL: none (an
-- Instagram post today). Jobs stored before are development data and keep NULL.
ALTER TABLE publish_jobs ADD COLUMN options jsonb;
