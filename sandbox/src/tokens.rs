//! What the sandbox knows about tokens: which platform user each belongs to, when it expires,
//! and whether it was revoked. The rules are described in the crate docs ("Identities and
//! tokens").

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ids;
use crate::state::State;

/// The platform a token was issued by or checked on. A made-up token may be used on both, and
/// is bound separately on each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Platform {
    Instagram,
    Tiktok,
}

impl Platform {
    pub fn from_channel(channel: &str) -> Option<Self> {
        match channel {
            "instagram" => Some(Self::Instagram),
            "tiktok" => Some(Self::Tiktok),
            _ => None,
        }
    }

    /// The user id a token has before anything bound it: derived from its subject.
    pub fn derived_user_id(self, token: &str) -> String {
        match self {
            Self::Instagram => ids::instagram_user_id(token),
            Self::Tiktok => ids::tiktok_open_id(token),
        }
    }

    /// Whether `id` has the shape of this platform's user ids: Instagram user ids are numeric,
    /// TikTok `open_id`s are made of letters, digits, `.`, `_` and `-`.
    pub fn valid_user_id(self, id: &str) -> bool {
        match self {
            Self::Instagram => (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()),
            Self::Tiktok => {
                (1..=128).contains(&id.len())
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                    && id.bytes().any(|b| b.is_ascii_alphanumeric())
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Access,
    Refresh,
}

/// A token the sandbox issued, or a made-up one that an identity check bound to a user.
#[derive(Clone, Debug)]
pub(crate) struct TokenRecord {
    pub kind: TokenKind,
    /// The platform user the token belongs to; `None` until an identity check binds it (only
    /// Instagram tokens refreshed from an unbound made-up token start unbound).
    pub user_id: Option<String>,
    /// `None` for made-up tokens, which never expire.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a token cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    /// Empty or with whitespace or control characters.
    Malformed,
    Revoked,
    Expired(DateTime<Utc>),
    /// An issued refresh token used as an access token, or the reverse.
    WrongKind,
}

/// Tokens by platform and value; made-up tokens appear once an identity check binds them.
pub(crate) type Tokens = HashMap<(Platform, String), TokenRecord>;

/// A token and refresh token issued together, with the access token's expiry.
pub(crate) struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl State {
    /// Checks that `token` may be used as `kind` on `platform`: well-formed, not revoked, not
    /// expired, and not an issued token of the other kind. Made-up tokens pass unless revoked.
    pub fn check_token(&self, platform: Platform, token: &str, kind: TokenKind) -> Result<(), TokenProblem> {
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TokenProblem::Malformed);
        }
        if self.is_revoked(token) {
            return Err(TokenProblem::Revoked);
        }
        let Some(record) = self.tokens.get(&(platform, token.to_owned())) else {
            return Ok(());
        };
        if let Some(expires_at) = record.expires_at {
            if expires_at <= Utc::now() {
                return Err(TokenProblem::Expired(expires_at));
            }
            // Only issued tokens have a kind that matters: made-up ones serve as either.
            if record.kind != kind {
                return Err(TokenProblem::WrongKind);
            }
        }
        Ok(())
    }

    /// The user `token` is bound to on `platform`, if any.
    pub fn bound_user(&self, platform: Platform, token: &str) -> Option<&str> {
        self.tokens.get(&(platform, token.to_owned())).and_then(|record| record.user_id.as_deref())
    }

    /// The user `token` acts for: the bound one, else the one derived from its subject.
    pub fn token_user(&self, platform: Platform, token: &str) -> String {
        self.bound_user(platform, token).map_or_else(|| platform.derived_user_id(token), str::to_owned)
    }

    /// An identity check of `token` against `user_id`: a token bound to `user_id` passes, one
    /// bound to someone else fails with that user, and an unbound token is bound to `user_id`.
    pub fn check_identity(&mut self, platform: Platform, token: &str, user_id: &str) -> Result<(), String> {
        let record = self.tokens.entry((platform, token.to_owned())).or_insert(TokenRecord {
            kind: TokenKind::Access,
            user_id: None,
            expires_at: None,
        });
        match &record.user_id {
            Some(bound) if bound == user_id => Ok(()),
            Some(bound) => Err(bound.clone()),
            None => {
                tracing::debug!(?platform, user_id, "token bound to its first checked user");
                record.user_id = Some(user_id.to_owned());
                Ok(())
            }
        }
    }

    /// Issues a token of `kind` on `platform` for `user_id` that lives `lifetime`. Its subject
    /// is `subject` (see [`ids::token_subject`]), so ids derived from it stay the same.
    pub fn issue_token(
        &mut self,
        platform: Platform,
        kind: TokenKind,
        subject: &str,
        user_id: Option<String>,
        lifetime: Duration,
    ) -> (String, DateTime<Utc>) {
        let tag = match (platform, kind) {
            (Platform::Instagram, _) => "ig",
            (Platform::Tiktok, TokenKind::Access) => "at",
            (Platform::Tiktok, TokenKind::Refresh) => "rt",
        };
        let token = format!("{subject}.{tag}-{}", ids::random_token_part());
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        let expires_at = Utc::now().checked_add_signed(lifetime).unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.tokens.insert((platform, token.clone()), TokenRecord { kind, user_id, expires_at: Some(expires_at) });
        (token, expires_at)
    }

    /// Tokens for a new sandbox account (`POST /_sandbox/accounts`): an access token living
    /// `lifetime` and, on TikTok, a refresh token; both bound to `user_id`. Instagram Login has
    /// no refresh tokens: its long-lived access token refreshes itself.
    pub fn issue_account(&mut self, platform: Platform, user_id: &str, lifetime: Duration, refresh_lifetime: Duration) -> Issued {
        let subject = format!("acct-{}", ids::random_token_part());
        let (access_token, expires_at) = self.issue_token(platform, TokenKind::Access, &subject, Some(user_id.to_owned()), lifetime);
        let refresh_token = (platform == Platform::Tiktok)
            .then(|| self.issue_token(platform, TokenKind::Refresh, &subject, Some(user_id.to_owned()), refresh_lifetime).0);
        Issued { access_token, refresh_token, expires_at }
    }

    /// Expires an issued token now, on whichever platform issued it. Made-up tokens never
    /// expire: `false` when no issued token has that value.
    pub fn expire_token(&mut self, token: &str) -> bool {
        let now = Utc::now();
        let mut found = false;
        for ((_, value), record) in &mut self.tokens {
            if value == token && record.expires_at.is_some() {
                record.expires_at = Some(now);
                found = true;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn made_up_tokens_bind_to_the_first_checked_user_per_platform() {
        let mut state = State::default();
        assert_eq!(state.token_user(Platform::Tiktok, "alice"), ids::tiktok_open_id("alice"));
        assert_eq!(state.check_identity(Platform::Instagram, "alice", "1"), Ok(()));
        assert_eq!(state.check_identity(Platform::Instagram, "alice", "1"), Ok(()));
        assert_eq!(state.check_identity(Platform::Instagram, "alice", "2"), Err("1".to_owned()));
        assert_eq!(state.token_user(Platform::Instagram, "alice"), "1");
        // The binding is per platform.
        assert_eq!(state.check_identity(Platform::Tiktok, "alice", "sbx-2"), Ok(()));
        assert_eq!(state.check_token(Platform::Instagram, "alice", TokenKind::Refresh), Ok(()), "made-up tokens serve as either kind");
    }

    #[test]
    fn issued_tokens_expire_and_keep_their_kind() {
        let mut state = State::default();
        let issued = state.issue_account(Platform::Tiktok, "sbx-1", DAY, DAY);
        let refresh = issued.refresh_token.expect("tiktok accounts get a refresh token");
        assert_eq!(state.check_token(Platform::Tiktok, &issued.access_token, TokenKind::Access), Ok(()));
        assert_eq!(state.check_token(Platform::Tiktok, &refresh, TokenKind::Access), Err(TokenProblem::WrongKind));
        assert_eq!(state.check_identity(Platform::Tiktok, &issued.access_token, "sbx-2"), Err("sbx-1".to_owned()));
        assert!(state.expire_token(&issued.access_token));
        assert!(matches!(state.check_token(Platform::Tiktok, &issued.access_token, TokenKind::Access), Err(TokenProblem::Expired(_))));
        assert!(!state.expire_token("made-up"), "made-up tokens never expire");
        assert!(state.issue_account(Platform::Instagram, "1", DAY, DAY).refresh_token.is_none());
    }

    #[test]
    fn user_id_shapes() {
        assert!(Platform::Instagram.valid_user_id("17841400000000001"));
        assert!(Platform::Instagram.valid_user_id(&ids::instagram_user_id("x")));
        assert!(!Platform::Instagram.valid_user_id("ig-1"));
        assert!(!Platform::Instagram.valid_user_id(""));
        assert!(Platform::Tiktok.valid_user_id(&ids::tiktok_open_id("x")));
        assert!(Platform::Tiktok.valid_user_id("-000OkR7Z3hiW9MhJvMl1s8W8x1rJvqrmgbT"));
        assert!(!Platform::Tiktok.valid_user_id(".."));
        assert!(!Platform::Tiktok.valid_user_id("a/b"));
    }
}
