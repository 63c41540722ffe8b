//! Renewing an account's tokens with its platform, stored by compare-and-swap: shared by
//! preflight (a token about to expire) and the worker's periodic refresh (tokens that would
//! expire before a post far ahead).

use std::sync::Arc;

use autopost_workflows::Channel;
use chrono::Utc;
use secrecy::SecretString;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    db::{self, Account, DbError},
    platforms::{
        ErrorClass, PlatformError,
        instagram::InstagramClient,
        tiktok::{AppCredentials, TiktokClient},
    },
    vault::TokenKeys,
};

/// Renews tokens: Instagram long-lived tokens with `refresh_access_token`, TikTok access tokens
/// with the refresh token and the app's credentials.
#[derive(Clone)]
pub struct TokenRefresher {
    db: PgPool,
    keys: Arc<TokenKeys>,
    instagram: InstagramClient,
    tiktok: TiktokClient,
    tiktok_app: Option<AppCredentials>,
}

/// What a refresh came to.
pub enum Refreshed {
    /// The new tokens are stored: the account as it is now.
    Stored(Account),
    /// Another refresh (or a new link) stored tokens first: the account with those, which are
    /// the live ones. The platform may already have retired the ones this refresh started from.
    Superseded(Account),
    /// The platform refuses to renew the token (revoked, expired): the account is now marked
    /// `refresh_failed` and its open jobs' readiness fails. `detail` says so for the creator.
    Refused { detail: String },
    /// The platform could not answer now; nothing changed.
    Unavailable(PlatformError),
    /// This account's token cannot be renewed here (see [`TokenRefresher::can_refresh`]).
    NotRefreshable,
}

impl Refreshed {
    fn outcome(&self) -> &'static str {
        match self {
            Refreshed::Stored(_) => "refreshed",
            Refreshed::Superseded(_) => "superseded",
            Refreshed::Refused { .. } => "refused",
            Refreshed::Unavailable(_) => "unavailable",
            Refreshed::NotRefreshable => "not_refreshable",
        }
    }
}

fn platform_name(channel: Channel) -> &'static str {
    match channel {
        Channel::Instagram => "Instagram",
        Channel::Tiktok => "TikTok",
    }
}

impl TokenRefresher {
    pub fn new(
        db: PgPool,
        keys: Arc<TokenKeys>,
        http: reqwest::Client,
        instagram_api_base: &str,
        tiktok_api_base: &str,
        tiktok_app: Option<AppCredentials>,
    ) -> Self {
        TokenRefresher {
            db,
            keys,
            instagram: InstagramClient::new(http.clone(), instagram_api_base),
            tiktok: TiktokClient::new(http, tiktok_api_base),
            tiktok_app,
        }
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// Whether TikTok tokens can be renewed at all (the app's credentials are configured).
    pub fn refreshes_tiktok(&self) -> bool {
        self.tiktok_app.is_some()
    }

    /// Instagram tokens renew themselves; TikTok ones need a refresh token and the app's
    /// credentials. A token the platform already refused to renew waits for a new link.
    pub fn can_refresh(&self, account: &Account) -> bool {
        account.refresh_failed.is_none()
            && match account.channel {
                Channel::Instagram => true,
                Channel::Tiktok => account.refresh_token.is_some() && self.tiktok_app.is_some(),
            }
    }

    /// Asks the platform for new tokens and stores them if the account still holds the ones it
    /// started from. Counted in `autopost_token_refreshes_total{channel, outcome}`.
    #[tracing::instrument(skip_all, fields(account_id = %account.id, channel = %account.channel))]
    pub async fn refresh(&self, account: &Account) -> Result<Refreshed, DbError> {
        let refreshed = self.refresh_uncounted(account).await;
        let outcome = refreshed.as_ref().map_or("error", Refreshed::outcome);
        metrics::counter!("autopost_token_refreshes_total", "channel" => account.channel.as_str(), "outcome" => outcome).increment(1);
        match &refreshed {
            Ok(Refreshed::Stored(now)) => tracing::info!(expires_at = %now.token_expires_at, "token refreshed"),
            Ok(Refreshed::Superseded(_)) => tracing::info!("token refreshed by another process first"),
            Ok(Refreshed::Refused { detail }) => tracing::warn!(%detail, "token refresh refused"),
            Ok(Refreshed::Unavailable(e)) => tracing::warn!(error = %e, "token refresh failed; will try again"),
            Ok(Refreshed::NotRefreshable) => {}
            Err(e) => tracing::warn!(error = %e, "token refresh failed"),
        }
        refreshed
    }

    async fn refresh_uncounted(&self, account: &Account) -> Result<Refreshed, DbError> {
        if !self.can_refresh(account) {
            return Ok(Refreshed::NotRefreshable);
        }
        let renewed: Result<(SecretString, i64, Option<SecretString>), PlatformError> = match account.channel {
            Channel::Instagram => self
                .instagram
                .refresh_long_lived(&account.access_token)
                .await
                // Instagram has no refresh token; a stored one is kept as it is.
                .map(|reply| (reply.value.access_token, reply.value.expires_in, account.refresh_token.clone())),
            Channel::Tiktok => {
                let (Some(app), Some(refresh_token)) = (&self.tiktok_app, &account.refresh_token) else {
                    return Ok(Refreshed::NotRefreshable);
                };
                self.tiktok
                    .refresh(app, refresh_token)
                    .await
                    .map(|reply| (reply.value.access_token, reply.value.expires_in, Some(reply.value.refresh_token)))
            }
        };
        match renewed {
            Ok((access_token, expires_in, refresh_token)) => {
                let expires_at = Utc::now() + chrono::Duration::seconds(expires_in);
                let stored = db::store_refreshed_tokens(
                    &self.db,
                    &self.keys,
                    account.id,
                    &account.version,
                    &access_token,
                    expires_at,
                    refresh_token.as_ref(),
                )
                .await?;
                Ok(match stored {
                    Some(version) => Refreshed::Stored(Account {
                        id: account.id,
                        channel: account.channel,
                        platform_user_id: account.platform_user_id.clone(),
                        access_token,
                        token_expires_at: expires_at,
                        refresh_token,
                        refresh_failed: None,
                        version,
                    }),
                    None => Refreshed::Superseded(self.reload(account.id).await?),
                })
            }
            Err(e) if e.class == ErrorClass::Token => {
                // TikTok rotates refresh tokens: a refresh that came first makes this one's refused.
                let now = self.reload(account.id).await?;
                if now.version != account.version {
                    return Ok(Refreshed::Superseded(now));
                }
                let detail = format!("{} refused to renew the token ({}); reconnect the account", platform_name(account.channel), e.code);
                if db::mark_refresh_failed(&self.db, account.id, &account.version, &detail).await? {
                    Ok(Refreshed::Refused { detail })
                } else {
                    Ok(Refreshed::Superseded(self.reload(account.id).await?))
                }
            }
            Err(e) => Ok(Refreshed::Unavailable(e)),
        }
    }

    async fn reload(&self, account_id: Uuid) -> Result<Account, DbError> {
        db::load_account(&self.db, &self.keys, account_id).await?.ok_or(DbError::AccountUnlinked(account_id))
    }
}
