//! Who is calling. Every `/v1` route takes the creator from a bearer JWT that the product's web
//! app issues: its subject (`sub`) is the creator id. Autopost only verifies tokens (HS256 with a
//! shared secret, or asymmetric keys from a JWKS URL); `autopost token` signs development ones.
//!
//! The creator never comes from a body or a query: handlers take [`Creator`], which only this
//! module's middleware can put on a request.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts},
    middleware::Next,
    response::Response,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};
use url::Url;

use crate::{ApiState, error::ApiError};

/// How tokens are verified: `AUTOPOST_JWT_SECRET` (HS256) or `AUTOPOST_JWKS_URL`, with the
/// optional issuer and audience every token must then carry.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    pub hs256_secret: Option<SecretString>,
    pub jwks_url: Option<Url>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// The longest creator id a token may name; ids are stored and indexed, so they are bounded.
pub const MAX_CREATOR_ID_LEN: usize = 128;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// An unknown `kid` refetches the JWKS at most this often, so a flood of forged kids cannot turn
/// the API into a load generator against the key server.
const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(10);

/// The creator a request acts for, from its verified token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creator(pub String);

impl Creator {
    pub fn id(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Creator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Only `require_creator` inserts it: a route outside the authenticated router that asks
        // for a creator is a wiring bug, refused rather than served anonymously.
        parts.extensions.get::<Creator>().cloned().ok_or_else(|| ApiError::Unauthorized("this route requires a bearer token".into()))
    }
}

/// Middleware on every `/v1` route: a valid bearer token or `401`, and the creator's write
/// quota or `429`.
pub async fn require_creator(State(state): State<ApiState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let creator = state.auth.verify_header(request.headers().get(header::AUTHORIZATION)).await?;
    state.rate_limit.check(&creator, request.method())?;
    request.extensions_mut().insert(creator);
    Ok(next.run(request).await)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Jwks),
}

/// The key server's keys, fetched at start and again when a token names a key not seen yet.
struct Jwks {
    url: Url,
    http: reqwest::Client,
    keys: RwLock<JwkSet>,
    last_fetch: Mutex<Option<Instant>>,
}

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator(Arc<Inner>);

struct Inner {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0.keys {
            Keys::Secret(_) => "hs256",
            Keys::Jwks(_) => "jwks",
        };
        f.debug_struct("Authenticator").field("keys", &kind).field("issuer", &self.0.issuer).field("audience", &self.0.audience).finish()
    }
}

impl Authenticator {
    /// Builds the verifier; with a JWKS URL, fetches the keys once (an unreachable key server
    /// is not fatal: the next token with an unknown key fetches again).
    pub async fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let keys = match (&settings.hs256_secret, &settings.jwks_url) {
            (Some(_), Some(_)) => anyhow::bail!("set AUTOPOST_JWT_SECRET or AUTOPOST_JWKS_URL, not both"),
            (None, None) => anyhow::bail!(
                "the API needs a way to verify tokens: set AUTOPOST_JWT_SECRET (HS256) or AUTOPOST_JWKS_URL (see the README's Security section)"
            ),
            (Some(secret), None) => {
                if secret.expose_secret().len() < 32 {
                    anyhow::bail!("AUTOPOST_JWT_SECRET must be at least 32 characters");
                }
                Keys::Secret(DecodingKey::from_secret(secret.expose_secret().as_bytes())?)
            }
            (None, Some(url)) => {
                let jwks = Jwks {
                    url: url.clone(),
                    http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
                    keys: RwLock::new(JwkSet { keys: Vec::new() }),
                    last_fetch: Mutex::new(None),
                };
                if let Err(e) = jwks.refetch().await {
                    tracing::warn!(error = %e, "fetching the JWKS failed; tokens are refused until it answers");
                }
                Keys::Jwks(jwks)
            }
        };
        Ok(Authenticator(Arc::new(Inner { keys, issuer: settings.issuer.clone(), audience: settings.audience.clone() })))
    }

    /// The creator of an `Authorization: Bearer` header, or `401`. Messages say what is wrong
    /// with the token without repeating it.
    pub async fn verify_header(&self, header: Option<&axum::http::HeaderValue>) -> Result<Creator, ApiError> {
        let header = header.ok_or_else(|| ApiError::Unauthorized("send `Authorization: Bearer <token>`".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?;
        self.verify(token).await
    }

    pub async fn verify(&self, token: &str) -> Result<Creator, ApiError> {
        let invalid = |why: &str| ApiError::Unauthorized(format!("the bearer token is not valid: {why}"));
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed"))?;
        let (key, algorithm) = match &self.0.keys {
            Keys::Secret(key) => {
                if header.alg != Algorithm::HS256 {
                    return Err(invalid("unexpected signing algorithm"));
                }
                (key.clone(), Algorithm::HS256)
            }
            Keys::Jwks(jwks) => {
                if !is_asymmetric(header.alg) {
                    return Err(invalid("unexpected signing algorithm"));
                }
                let kid = header.kid.as_deref().ok_or_else(|| invalid("no key id (`kid`)"))?;
                (jwks.key(kid, header.alg).await.ok_or_else(|| invalid("unknown signing key"))?, header.alg)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        if let Some(issuer) = &self.0.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.0.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            invalid(match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::ImmatureSignature => "not valid yet",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::MissingRequiredClaim(_) => "a required claim (`exp`, `sub`, or the configured `iss`/`aud`) is missing",
                _ => "malformed",
            })
        })?;
        let sub = data.claims.get("sub").and_then(|s| s.as_str()).ok_or_else(|| invalid("`sub` is not a string"))?;
        if !valid_creator_id(sub) {
            return Err(invalid("`sub` must be 1 to 128 printable characters"));
        }
        Ok(Creator(sub.to_owned()))
    }
}

fn is_asymmetric(algorithm: Algorithm) -> bool {
    use Algorithm::*;
    matches!(algorithm, RS256 | RS384 | RS512 | PS256 | PS384 | PS512 | ES256 | ES384 | EdDSA)
}

/// A creator id as tokens may carry it: printable, no surrounding spaces, bounded.
pub fn valid_creator_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CREATOR_ID_LEN && id.trim() == id && !id.chars().any(char::is_control)
}

impl Jwks {
    async fn key(&self, kid: &str, algorithm: Algorithm) -> Option<DecodingKey> {
        if let Some(key) = self.find(kid, algorithm).await {
            return Some(key);
        }
        // A key the server rotated in since the last fetch.
        match self.refetch().await {
            Ok(true) => self.find(kid, algorithm).await,
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(error = %e, "fetching the JWKS failed");
                None
            }
        }
    }

    async fn find(&self, kid: &str, algorithm: Algorithm) -> Option<DecodingKey> {
        let keys = self.keys.read().await;
        let jwk = keys.find(kid)?;
        // A key published for one algorithm is never used with another.
        if let Some(key_algorithm) = jwk.common.key_algorithm
            && key_algorithm.to_string() != format!("{algorithm:?}")
        {
            return None;
        }
        DecodingKey::from_jwk(jwk).ok()
    }

    /// Fetches the keys unless that was done within [`JWKS_REFETCH_AFTER`]; `false` if skipped.
    async fn refetch(&self) -> anyhow::Result<bool> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < JWKS_REFETCH_AFTER) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let set: JwkSet = self.http.get(self.url.clone()).send().await?.error_for_status()?.json().await?;
        tracing::info!(keys = set.keys.len(), "JWKS fetched");
        *self.keys.write().await = set;
        Ok(true)
    }
}

/// Signs an HS256 token for `creator` valid for `ttl`: what `autopost token` prints, and what
/// tests authenticate with. The web app issues its own the same way.
pub fn issue_token(settings: &AuthSettings, creator: &str, ttl: Duration) -> anyhow::Result<String> {
    let secret = settings
        .hs256_secret
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("AUTOPOST_JWT_SECRET is not set: only HS256 tokens can be signed here"))?;
    anyhow::ensure!(valid_creator_id(creator), "the creator id must be 1 to {MAX_CREATOR_ID_LEN} printable characters");
    let now = jsonwebtoken::get_current_timestamp();
    let claims = Claims {
        sub: creator.to_owned(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
    };
    let key = EncodingKey::from_secret(secret.expose_secret().as_bytes())?;
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "an-hs256-secret-of-at-least-32-characters";

    fn settings() -> AuthSettings {
        AuthSettings { hs256_secret: Some(SECRET.into()), ..AuthSettings::default() }
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
    }

    fn message(error: ApiError) -> String {
        match error {
            ApiError::Unauthorized(message) => message,
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_token_from_issue_token_names_its_creator() {
        let auth = Authenticator::new(&settings()).await.unwrap();
        let token = issue_token(&settings(), "creator-1", Duration::from_secs(60)).unwrap();
        assert_eq!(auth.verify(&token).await.unwrap(), Creator("creator-1".into()));
    }

    #[tokio::test]
    async fn expired_forged_and_incomplete_tokens_are_refused_with_the_reason() {
        let auth = Authenticator::new(&settings()).await.unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let cases = [
            (sign(serde_json::json!({"sub": "c", "exp": now - 120}), SECRET), "expired"),
            (sign(serde_json::json!({"sub": "c", "exp": now + 60}), "another-secret-of-at-least-32-chars!!"), "bad signature"),
            (sign(serde_json::json!({"exp": now + 60}), SECRET), "required claim"),
            (sign(serde_json::json!({"sub": "c"}), SECRET), "required claim"),
            (sign(serde_json::json!({"sub": "", "exp": now + 60}), SECRET), "`sub`"),
            (sign(serde_json::json!({"sub": "x".repeat(129), "exp": now + 60}), SECRET), "`sub`"),
            ("not.a.jwt".to_owned(), "malformed"),
        ];
        for (token, why) in cases {
            let message = message(auth.verify(&token).await.unwrap_err());
            assert!(message.contains(why), "{message} should say {why}");
            assert!(!message.contains(&token), "the message repeats the token");
        }
        // `alg: none` and other algorithms are refused before any key is tried.
        let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", "eyJzdWIiOiJjIiwiZXhwIjo5OTk5OTk5OTk5fQ");
        assert!(auth.verify(&unsigned).await.is_err());
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let configured = AuthSettings { issuer: Some("https://app.example".into()), audience: Some("autopost".into()), ..settings() };
        let auth = Authenticator::new(&configured).await.unwrap();
        let good = issue_token(&configured, "c", Duration::from_secs(60)).unwrap();
        assert!(auth.verify(&good).await.is_ok());
        let no_claims = issue_token(&settings(), "c", Duration::from_secs(60)).unwrap();
        assert!(auth.verify(&no_claims).await.is_err());
        let wrong_audience =
            issue_token(&AuthSettings { audience: Some("someone-else".into()), ..configured.clone() }, "c", Duration::from_secs(60))
                .unwrap();
        assert!(message(auth.verify(&wrong_audience).await.unwrap_err()).contains("audience"));
    }

    #[tokio::test]
    async fn the_header_must_be_a_bearer_token() {
        let auth = Authenticator::new(&settings()).await.unwrap();
        assert!(auth.verify_header(None).await.is_err());
        let basic = axum::http::HeaderValue::from_static("Basic dXNlcjpwYXNz");
        assert!(auth.verify_header(Some(&basic)).await.is_err());
    }

    #[tokio::test]
    async fn weak_or_missing_configuration_is_refused_at_start() {
        assert!(Authenticator::new(&AuthSettings::default()).await.is_err());
        assert!(Authenticator::new(&AuthSettings { hs256_secret: Some("short".into()), ..Default::default() }).await.is_err());
    }

    /// An Ed25519 key pair (PKCS#8), made for this test only.
    const ED25519_PRIVATE: &str =
        "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBxF5hx0iYxTfjSJnyOO8Fhn08bNxnrJfpgDncQEf+ZL\n-----END PRIVATE KEY-----\n";

    async fn serve_jwks(set: Arc<std::sync::Mutex<serde_json::Value>>) -> Url {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let set = set.clone();
                async move { axum::Json(set.lock().unwrap().clone()) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}/jwks.json").parse().unwrap()
    }

    #[tokio::test]
    async fn jwks_keys_verify_and_a_new_kid_is_fetched_on_first_sight() {
        let private = EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&private, Algorithm::EdDSA).unwrap();
        jwk.common.key_id = Some("k2".into());
        let set = Arc::new(std::sync::Mutex::new(serde_json::json!({"keys": []})));
        let url = serve_jwks(set.clone()).await;
        let auth = Authenticator::new(&AuthSettings { jwks_url: Some(url), ..Default::default() }).await.unwrap();
        let sign_with = |kid: &str| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.into());
            let exp = jsonwebtoken::get_current_timestamp() + 60;
            jsonwebtoken::encode(&header, &serde_json::json!({"sub": "creator-7", "exp": exp}), &private).unwrap()
        };
        // The key server rotates k2 in after the API fetched: the unknown kid triggers a fetch.
        *set.lock().unwrap() = serde_json::json!({ "keys": [jwk] });
        tokio::time::sleep(JWKS_REFETCH_AFTER).await;
        assert_eq!(auth.verify(&sign_with("k2")).await.unwrap(), Creator("creator-7".into()));
        assert!(message(auth.verify(&sign_with("k3")).await.unwrap_err()).contains("unknown signing key"));
        // An HS256 token is never accepted by a JWKS verifier, whatever its secret.
        let hs = issue_token(&settings(), "creator-7", Duration::from_secs(60)).unwrap();
        assert!(auth.verify(&hs).await.is_err());
    }
}
