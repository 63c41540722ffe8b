-- Unlinking an account keeps its row (its jobs' history points at it) with the tokens erased.
-- A platform account is linked once at a time: after an unlink, the same or another creator can
-- link it again as a new row.
ALTER TABLE social_accounts ADD COLUMN unlinked_at timestamptz;
ALTER TABLE social_accounts DROP CONSTRAINT social_accounts_channel_platform_user_id_key;
CREATE UNIQUE INDEX social_accounts_linked_once ON social_accounts (channel, platform_user_id) WHERE unlinked_at IS NULL;
