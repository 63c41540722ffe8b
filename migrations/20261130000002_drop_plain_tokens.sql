-- The plain-text token columns go. `autopost migrate` has encrypted and cleared every row before
-- this runs; a plain token still here means it did not (no AUTOPOST_TOKEN_KEYS, or another tool
-- applied the migrations), and dropping the column would lose it: refuse instead.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM social_accounts WHERE access_token IS NOT NULL OR refresh_token IS NOT NULL) THEN
        RAISE EXCEPTION 'social_accounts still holds plain-text tokens; run `autopost migrate` with AUTOPOST_TOKEN_KEYS set, which encrypts them before this migration';
    END IF;
END $$;

ALTER TABLE social_accounts DROP COLUMN access_token, DROP COLUMN refresh_token;
