//! Platform tokens encrypted at rest: AES-256-GCM under the keys of `AUTOPOST_TOKEN_KEYS`.
//!
//! The spec is `kid:base64key,...`: the first key encrypts, every key decrypts, so a new key is
//! put first and the old ones stay until `autopost rotate-token-key` has re-encrypted every row.
//! A ciphertext is the 12-byte random nonce followed by AES-GCM's output, and is bound by its
//! associated data to its account and field: copied to another row or field, it does not open.
//!
//! This module is the only place that turns a ciphertext back into a token.

use std::fmt;

use aes_gcm::{
    Aes256Gcm, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use uuid::Uuid;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
const KID_MAX: usize = 32;

/// The keys tokens are sealed and opened with. Its `Debug` shows key ids only.
#[derive(Clone)]
pub struct TokenKeys {
    /// In the spec's order: the first is the current key.
    keys: Vec<(String, Aes256Gcm)>,
}

/// Which token of an account a ciphertext holds; part of the associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenField {
    Access,
    Refresh,
}

impl TokenField {
    fn as_str(self) -> &'static str {
        match self {
            TokenField::Access => "access_token",
            TokenField::Refresh => "refresh_token",
        }
    }
}

impl fmt::Display for TokenField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sealed token as stored: the id of the key that sealed it, and nonce || ciphertext || tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed").field("key_id", &self.key_id).field("len", &self.ciphertext.len()).finish()
    }
}

/// Why keys could not be read or a token not opened. Never holds key or token bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VaultError {
    #[error("AUTOPOST_TOKEN_KEYS holds no key; expected `kid:base64key,...`")]
    NoKeys,
    #[error("AUTOPOST_TOKEN_KEYS entry {position} is not `kid:base64key`")]
    MalformedEntry { position: usize },
    #[error("AUTOPOST_TOKEN_KEYS entry {position}: the key id must be 1 to 32 of A-Z, a-z, 0-9, `_`, `-`")]
    BadKeyId { position: usize },
    #[error("AUTOPOST_TOKEN_KEYS: key id `{0}` appears twice")]
    DuplicateKeyId(String),
    #[error("AUTOPOST_TOKEN_KEYS: key `{0}` is not valid base64")]
    BadBase64(String),
    #[error("AUTOPOST_TOKEN_KEYS: key `{kid}` is {len} bytes; an AES-256 key is 32 bytes")]
    BadKeyLength { kid: String, len: usize },
    #[error("the {field} of account {account_id} is sealed under key `{kid}`, which AUTOPOST_TOKEN_KEYS does not hold")]
    UnknownKey { account_id: Uuid, field: TokenField, kid: String },
    #[error(
        "the {field} of account {account_id} does not open with key `{kid}`: wrong key, or the ciphertext was altered or belongs to another row"
    )]
    Undecryptable { account_id: Uuid, field: TokenField, kid: String },
}

impl TokenKeys {
    /// Reads `kid:base64key,...` (standard base64, 32-byte keys). Errors name the entry, never
    /// its key.
    pub fn parse(spec: &str) -> Result<TokenKeys, VaultError> {
        let mut keys: Vec<(String, Aes256Gcm)> = Vec::new();
        for (index, entry) in spec.split(',').map(str::trim).enumerate() {
            let position = index + 1;
            if entry.is_empty() {
                continue;
            }
            let (kid, encoded) = entry.split_once(':').ok_or(VaultError::MalformedEntry { position })?;
            let kid = kid.trim();
            if !valid_kid(kid) {
                return Err(VaultError::BadKeyId { position });
            }
            if keys.iter().any(|(k, _)| k == kid) {
                return Err(VaultError::DuplicateKeyId(kid.to_owned()));
            }
            let bytes = SecretSlice::from(STANDARD.decode(encoded.trim()).map_err(|_| VaultError::BadBase64(kid.to_owned()))?);
            let cipher = Aes256Gcm::new_from_slice(bytes.expose_secret())
                .map_err(|_| VaultError::BadKeyLength { kid: kid.to_owned(), len: bytes.expose_secret().len() })?;
            keys.push((kid.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(VaultError::NoKeys);
        }
        Ok(TokenKeys { keys })
    }

    /// One fresh `kid:base64key` entry, its id `k` and the UTC time it was made.
    pub fn generate_spec() -> String {
        let key = Aes256Gcm::generate_key(OsRng);
        debug_assert_eq!(key.len(), KEY_LEN);
        format!("k{}:{}", chrono::Utc::now().format("%Y%m%dT%H%M%S"), STANDARD.encode(key))
    }

    /// The id of the key that seals new tokens.
    pub fn current_kid(&self) -> &str {
        &self.keys[0].0
    }

    /// Every key id, the current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(kid, _)| kid.as_str())
    }

    /// Seals `token` for `field` of `account_id` under the current key, with a fresh nonce (so
    /// two seals of one token differ, and a ciphertext identifies the write that made it).
    pub fn seal(&self, account_id: Uuid, field: TokenField, token: &SecretString) -> Sealed {
        let (kid, cipher) = &self.keys[0];
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(account_id, field);
        let sealed = cipher
            .encrypt(&nonce, Payload { msg: token.expose_secret().as_bytes(), aad: &aad })
            // AES-GCM fails only for inputs over 64 GiB.
            .expect("AES-GCM encryption of a token");
        let mut ciphertext = Vec::with_capacity(NONCE_LEN + sealed.len());
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        Sealed { key_id: kid.clone(), ciphertext }
    }

    /// Opens what [`TokenKeys::seal`] made for the same account and field.
    pub fn open(&self, account_id: Uuid, field: TokenField, sealed: &Sealed) -> Result<SecretString, VaultError> {
        let cipher = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == sealed.key_id)
            .map(|(_, cipher)| cipher)
            .ok_or_else(|| VaultError::UnknownKey { account_id, field, kid: sealed.key_id.clone() })?;
        let undecryptable = || VaultError::Undecryptable { account_id, field, kid: sealed.key_id.clone() };
        if sealed.ciphertext.len() < NONCE_LEN + TAG_LEN {
            return Err(undecryptable());
        }
        let (nonce, body) = sealed.ciphertext.split_at(NONCE_LEN);
        let aad = associated_data(account_id, field);
        let plain = cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: &aad }).map_err(|_| undecryptable())?;
        let token = String::from_utf8(plain).map_err(|_| undecryptable())?;
        Ok(SecretString::from(token))
    }
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys").field("key_ids", &self.key_ids().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=KID_MAX).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Binds a ciphertext to its row and column; versioned so the binding can change later.
fn associated_data(account_id: Uuid, field: TokenField) -> Vec<u8> {
    format!("autopost-token:v1:{account_id}:{}", field.as_str()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    const KEY_B: &str = "b:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

    fn token(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn a_sealed_token_opens_to_itself_and_holds_no_plain_bytes() {
        let keys = TokenKeys::parse(KEY_A).unwrap();
        let account = Uuid::new_v4();
        let sealed = keys.seal(account, TokenField::Access, &token("IGQVJ-secret-token"));
        assert_eq!(sealed.key_id, "a");
        assert_eq!(sealed.ciphertext.len(), NONCE_LEN + "IGQVJ-secret-token".len() + TAG_LEN);
        assert!(!sealed.ciphertext.windows(6).any(|w| w == b"secret"));
        assert_eq!(keys.open(account, TokenField::Access, &sealed).unwrap().expose_secret(), "IGQVJ-secret-token");
        // A fresh nonce per seal: the same token never seals the same twice.
        assert_ne!(keys.seal(account, TokenField::Access, &token("IGQVJ-secret-token")), sealed);
    }

    #[test]
    fn a_ciphertext_does_not_open_under_another_key_row_or_field_or_when_altered() {
        let keys = TokenKeys::parse(KEY_A).unwrap();
        let account = Uuid::new_v4();
        let sealed = keys.seal(account, TokenField::Access, &token("t"));

        let other_key = TokenKeys::parse("a:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        assert!(matches!(other_key.open(account, TokenField::Access, &sealed), Err(VaultError::Undecryptable { .. })));
        assert!(matches!(keys.open(Uuid::new_v4(), TokenField::Access, &sealed), Err(VaultError::Undecryptable { .. })));
        assert!(matches!(keys.open(account, TokenField::Refresh, &sealed), Err(VaultError::Undecryptable { .. })));
        for index in [0, NONCE_LEN, sealed.ciphertext.len() - 1] {
            let mut tampered = sealed.clone();
            tampered.ciphertext[index] ^= 1;
            assert!(keys.open(account, TokenField::Access, &tampered).is_err(), "byte {index} altered");
        }
        let truncated = Sealed { key_id: "a".into(), ciphertext: sealed.ciphertext[..NONCE_LEN + 3].to_vec() };
        assert!(keys.open(account, TokenField::Access, &truncated).is_err());
        let unknown = Sealed { key_id: "gone".into(), ..sealed };
        assert_eq!(
            keys.open(account, TokenField::Access, &unknown).unwrap_err(),
            VaultError::UnknownKey { account_id: account, field: TokenField::Access, kid: "gone".into() }
        );
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let account = Uuid::new_v4();
        let old = TokenKeys::parse(KEY_A).unwrap();
        let sealed_old = old.seal(account, TokenField::Refresh, &token("r"));
        let rotated = TokenKeys::parse(&format!("{KEY_B}, {KEY_A}")).unwrap();
        assert_eq!(rotated.current_kid(), "b");
        assert_eq!(rotated.key_ids().collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(rotated.open(account, TokenField::Refresh, &sealed_old).unwrap().expose_secret(), "r");
        let sealed_new = rotated.seal(account, TokenField::Refresh, &token("r"));
        assert_eq!(sealed_new.key_id, "b");
        assert!(matches!(old.open(account, TokenField::Refresh, &sealed_new), Err(VaultError::UnknownKey { .. })));
    }

    #[test]
    fn bad_specs_are_refused_with_the_problem_and_without_key_bytes() {
        let cases = [
            ("", VaultError::NoKeys),
            (" , ", VaultError::NoKeys),
            ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", VaultError::MalformedEntry { position: 1 }),
            ("bad kid:AAAA", VaultError::BadKeyId { position: 1 }),
            (&format!("{}:AAAA", "k".repeat(33)), VaultError::BadKeyId { position: 1 }),
            (&format!("{KEY_A},:AAAA"), VaultError::BadKeyId { position: 2 }),
            (&format!("{KEY_A},a:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="), VaultError::DuplicateKeyId("a".into())),
            ("k1:not*base64!", VaultError::BadBase64("k1".into())),
            ("k1:AAAAAAAAAAAAAAAAAAAAAA==", VaultError::BadKeyLength { kid: "k1".into(), len: 16 }),
        ];
        for (spec, expected) in cases {
            let error = TokenKeys::parse(spec).unwrap_err();
            assert_eq!(error, expected, "spec {spec:?}");
            assert!(!error.to_string().contains("AAAA"), "{error} echoes key material");
        }
    }

    #[test]
    fn a_generated_spec_parses_and_debug_shows_only_key_ids() {
        let spec = TokenKeys::generate_spec();
        let keys = TokenKeys::parse(&spec).unwrap();
        assert!(keys.current_kid().starts_with('k'));
        let key_b64 = spec.split_once(':').unwrap().1;
        let debug = format!("{keys:?}");
        assert!(debug.contains(keys.current_kid()) && !debug.contains(key_b64), "{debug}");
        assert_ne!(TokenKeys::generate_spec(), spec);
    }
}
