-- Platform tokens encrypted at rest (AES-256-GCM, see activities/src/vault.rs): each ciphertext
-- is nonce || ciphertext || tag, bound to its row and column, and `token_key_id` names the key
-- of AUTOPOST_TOKEN_KEYS that sealed both tokens of the row (they are always written together).
-- The ciphertexts are NULL once an account is unlinked (its tokens erased).
--
-- `autopost migrate` applies this, then encrypts the plain-text rows in Rust and clears their
-- plain columns, then applies the next migration, which drops those columns.
ALTER TABLE social_accounts
    ADD COLUMN access_token_ciphertext  bytea,
    ADD COLUMN refresh_token_ciphertext bytea,
    ADD COLUMN token_key_id             text CHECK (token_key_id ~ '^[A-Za-z0-9_-]{1,32}$'),
    -- Health of the stored tokens: `refresh_failed` when the platform refused to renew them,
    -- with the reason; a successful refresh (or a new link) sets `ok` again.
    ADD COLUMN token_status             text NOT NULL DEFAULT 'ok' CHECK (token_status IN ('ok', 'refresh_failed')),
    ADD COLUMN token_status_detail      text,
    ADD COLUMN token_refreshed_at       timestamptz,
    ADD CONSTRAINT social_accounts_ciphertext_has_key
        CHECK ((access_token_ciphertext IS NULL AND refresh_token_ciphertext IS NULL) OR token_key_id IS NOT NULL);

-- Cleared as each row is encrypted, until the next migration drops it.
ALTER TABLE social_accounts ALTER COLUMN access_token DROP NOT NULL;

-- The periodic refresh looks for tokens that expire soon.
CREATE INDEX social_accounts_token_expiry_idx ON social_accounts (token_expires_at);
