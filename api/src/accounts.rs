//! `/v1/accounts`: the creator's Instagram and TikTok accounts. Tokens go in, never out: they
//! are checked with the platform (does this token belong to this account?), sealed with the
//! current token key and stored; the API decrypts one only to re-seal it or to read the
//! account's capabilities (`capabilities`).

use autopost_activities::{
    platforms::{self, ErrorClass},
    vault::{Sealed, TokenField},
};
use autopost_workflows::{Channel, JobStatus};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    ApiState,
    auth::Creator,
    commands,
    error::{ApiError, ErrorBody, responses},
    extract::{ApiJson, ApiPath},
    validate,
    views::{AccountHealth, AccountList, AccountView, UnlinkedAccount},
};

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/v1/accounts", post(link_account).get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account).delete(unlink_account))
}

/// Longest token accepted; real ones are a few hundred characters.
const MAX_TOKEN_LEN: usize = 4096;

/// Jobs cancelled at once when an account is unlinked.
const CANCELS_AT_ONCE: usize = 8;

/// An account to link, with its tokens; they are stored encrypted, never returned.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkAccount {
    /// Optional: the creator is the token's subject; if sent, it must be the same.
    #[serde(default)]
    creator_id: Option<String>,
    channel: Channel,
    /// Instagram: the numeric IG user id; TikTok: the `open_id`.
    platform_user_id: String,
    #[schema(value_type = String)]
    access_token: SecretString,
    token_expires_at: DateTime<Utc>,
    /// Without one, a re-link keeps the refresh token stored before.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    refresh_token: Option<SecretString>,
}

/// Links an account after checking with the platform that the token belongs to it, or replaces
/// the tokens of one the caller linked before (201, 200).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = LinkAccount, responses(
    (status = 201, description = "The account was linked", body = AccountView),
    (status = 200, description = "The caller had linked this platform account before: its tokens were replaced", body = AccountView),
    (status = 400, description = "The body cannot be read (`invalid_body`)", body = ErrorBody),
    (status = 403, description = "`creator_id` is not the token's subject (`creator_mismatch`)", body = ErrorBody),
    (status = 409, description = "Another creator linked this platform account (`account_linked_elsewhere`)", body = ErrorBody),
    (status = 415, response = responses::UnsupportedMediaType),
    (status = 422, description = "A value breaks a rule (`required`, `too_long`, `invalid_characters`, `invalid_platform_user_id`, `token_expired`), the platform refused the token (`account_token_invalid`) or says it belongs to another account (`account_token_mismatch`)", body = ErrorBody),
    (status = 503, description = "The platform could not be asked now (`platform_unavailable`); nothing was stored", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
#[tracing::instrument(skip_all, fields(creator_id = %creator.id(), channel = %body.channel))]
async fn link_account(
    State(state): State<ApiState>,
    creator: Creator,
    ApiJson(body): ApiJson<LinkAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    if let Some(claimed) = &body.creator_id
        && claimed != creator.id()
    {
        return Err(ApiError::Forbidden { code: "creator_mismatch", message: "creator_id must be the creator your token names".into() });
    }
    validate_link(&body)?;
    verify_with_platform(&state, &body).await?;

    let mut tx = state.db.begin().await?;
    let existing = sqlx::query!(
        r#"SELECT id, creator_id, token_key_id, refresh_token_ciphertext FROM social_accounts
           WHERE channel = $1 AND platform_user_id = $2 AND unlinked_at IS NULL FOR UPDATE"#,
        body.channel.as_str(),
        body.platform_user_id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(existing) = &existing
        && existing.creator_id != creator.id()
    {
        return Err(linked_elsewhere(body.channel));
    }
    let id = existing.as_ref().map_or_else(Uuid::new_v4, |e| e.id);
    let keys = &state.token_keys;
    let access = keys.seal(id, TokenField::Access, &body.access_token);
    // Both tokens of a row are under one key: a kept refresh token is sealed again with the new
    // access token's key.
    let refresh: Option<Sealed> = match (&body.refresh_token, &existing) {
        (Some(token), _) => Some(keys.seal(id, TokenField::Refresh, token)),
        (None, Some(e)) => match (&e.token_key_id, &e.refresh_token_ciphertext) {
            (Some(key_id), Some(ciphertext)) => {
                let stored = Sealed { key_id: key_id.clone(), ciphertext: ciphertext.clone() };
                let token = keys.open(id, TokenField::Refresh, &stored).map_err(|e| anyhow::anyhow!("account {id}: {e}"))?;
                Some(keys.seal(id, TokenField::Refresh, &token))
            }
            _ => None,
        },
        (None, None) => None,
    };
    let status = if existing.is_some() {
        sqlx::query!(
            r#"UPDATE social_accounts
               SET access_token_ciphertext = $2, refresh_token_ciphertext = $3, token_key_id = $4, token_expires_at = $5,
                   token_status = 'ok', token_status_detail = NULL, updated_at = now()
               WHERE id = $1"#,
            id,
            access.ciphertext,
            refresh.as_ref().map(|r| r.ciphertext.clone()),
            access.key_id,
            body.token_expires_at,
        )
        .execute(&mut *tx)
        .await?;
        StatusCode::OK
    } else {
        sqlx::query!(
            r#"INSERT INTO social_accounts
                   (id, creator_id, channel, platform_user_id, access_token_ciphertext, refresh_token_ciphertext, token_key_id, token_expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
            id,
            creator.id(),
            body.channel.as_str(),
            body.platform_user_id,
            access.ciphertext,
            refresh.as_ref().map(|r| r.ciphertext.clone()),
            access.key_id,
            body.token_expires_at,
        )
        .execute(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
            // Another request linked it between our read and this insert.
            Some(code) if code == "23505" => ApiError::Conflict {
                code: "account_linked_elsewhere",
                message: format!("this {} account was linked by another request just now; try again", body.channel),
                status: None,
            },
            _ => e.into(),
        })?;
        StatusCode::CREATED
    };
    tx.commit().await?;
    tracing::info!(account_id = %id, relinked = existing.is_some(), "account linked");
    Ok((status, Json(load(&state, &creator, id).await?)))
}

fn linked_elsewhere(channel: Channel) -> ApiError {
    ApiError::Conflict {
        code: "account_linked_elsewhere",
        message: format!("this {channel} account is linked to another creator"),
        status: None,
    }
}

fn validate_link(body: &LinkAccount) -> Result<(), ApiError> {
    if body.platform_user_id.trim().is_empty() {
        return Err(ApiError::unprocessable("required", "platform_user_id", "platform_user_id must not be empty"));
    }
    validate::bounded("platform_user_id", &body.platform_user_id, 128)?;
    // It goes into URL paths of platform calls: only the platform's own id format passes.
    if !platforms::valid_platform_user_id(body.channel, &body.platform_user_id) {
        return Err(ApiError::unprocessable(
            "invalid_platform_user_id",
            "platform_user_id",
            format!("not a {} account id (Instagram: the numeric IG user id; TikTok: the open_id)", body.channel),
        ));
    }
    for (field, token) in [("access_token", Some(&body.access_token)), ("refresh_token", body.refresh_token.as_ref())] {
        let Some(token) = token else { continue };
        let token = token.expose_secret();
        if token.trim().is_empty() {
            return Err(ApiError::unprocessable("required", field, format!("{field} must not be empty")));
        }
        // The messages never repeat the token.
        if token.len() > MAX_TOKEN_LEN {
            return Err(ApiError::unprocessable("too_long", field, format!("{field} must be at most {MAX_TOKEN_LEN} characters")));
        }
        if token.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ApiError::unprocessable("invalid_characters", field, format!("{field} contains spaces or control characters")));
        }
    }
    if body.token_expires_at <= Utc::now() {
        return Err(ApiError::unprocessable(
            "token_expired",
            "token_expires_at",
            "the token has already expired; reconnect to get a fresh one",
        ));
    }
    Ok(())
}

/// Asks the platform whom the token belongs to: a token for another account must not be able
/// to post as this one.
async fn verify_with_platform(state: &ApiState, body: &LinkAccount) -> Result<(), ApiError> {
    let owner = match body.channel {
        Channel::Instagram => state.platforms.instagram.user(&body.access_token, &body.platform_user_id).await,
        Channel::Tiktok => state.platforms.tiktok.user_info(&body.access_token).await,
    };
    let mismatch = || {
        ApiError::unprocessable(
            "account_token_mismatch",
            "access_token",
            format!("{} says this token does not belong to account {}", body.channel, body.platform_user_id),
        )
    };
    match owner {
        Ok(reply) if reply.value.id == body.platform_user_id => Ok(()),
        Ok(_) => Err(mismatch()),
        Err(e) if e.class == ErrorClass::Token => Err(ApiError::unprocessable(
            "account_token_invalid",
            "access_token",
            format!("{} refused the token ({}); reconnect the account", body.channel, e.code),
        )),
        Err(e) if e.class == ErrorClass::Permanent => {
            tracing::info!(code = %e.code, "platform refused the account check");
            Err(mismatch())
        }
        Err(e) => {
            tracing::warn!(code = %e.code, "platform could not check the account link");
            Err(ApiError::Busy {
                code: "platform_unavailable",
                message: "the platform could not be asked about this account now; try again",
            })
        }
    }
}

/// The caller's linked accounts, without tokens, with their expiry and health.
#[utoipa::path(get, path = "/v1/accounts", tag = "accounts", responses(
    (status = 200, description = "The caller's linked accounts (unlinked ones are not listed)", body = AccountList),
    (status = 500, response = responses::Internal),
))]
async fn list_accounts(State(state): State<ApiState>, creator: Creator) -> Result<Json<AccountList>, ApiError> {
    let ids = sqlx::query_scalar!(
        "SELECT id FROM social_accounts WHERE creator_id = $1 AND unlinked_at IS NULL ORDER BY created_at, id",
        creator.id()
    )
    .fetch_all(&state.db)
    .await?;
    let mut accounts = Vec::with_capacity(ids.len());
    for id in ids {
        accounts.push(load(&state, &creator, id).await?);
    }
    Ok(Json(AccountList { accounts }))
}

/// One of the caller's accounts, without its tokens.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path, description = "The account's id")), responses(
    (status = 200, description = "The account", body = AccountView),
    (status = 400, response = responses::InvalidId),
    (status = 404, description = "The caller has no account with this id (`not_found`)", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
async fn get_account(State(state): State<ApiState>, creator: Creator, ApiPath(id): ApiPath<Uuid>) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(load(&state, &creator, id).await?))
}

/// Unlinks an account: its open jobs are cancelled (an attempt already talking to the platform
/// finishes), its tokens are erased, and its jobs' history is kept. Repeating it is harmless.
#[utoipa::path(delete, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path, description = "The account's id")), responses(
    (status = 200, description = "Unlinked: what happened to its jobs", body = UnlinkedAccount),
    (status = 400, response = responses::InvalidId),
    (status = 404, description = "The caller has no account with this id (`not_found`)", body = ErrorBody),
    (status = 503, description = "Temporal could not be reached to cancel every job (`unavailable`); the account is unlinked, repeat the request to finish", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
#[tracing::instrument(skip_all, fields(creator_id = %creator.id(), account_id = %id))]
async fn unlink_account(
    State(state): State<ApiState>,
    creator: Creator,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<UnlinkedAccount>, ApiError> {
    // First, no new job may use it and no new attempt may start with it.
    sqlx::query_scalar!(
        r#"UPDATE social_accounts SET unlinked_at = coalesce(unlinked_at, now()), updated_at = now()
           WHERE id = $1 AND creator_id = $2 RETURNING id"#,
        id,
        creator.id()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound { what: "account" })?;
    let open = sqlx::query_scalar!(
        "SELECT id FROM publish_jobs WHERE account_id = $1 AND creator_id = $2 AND status NOT IN ('published', 'cancelled') ORDER BY publish_at",
        id,
        creator.id()
    )
    .fetch_all(&state.db)
    .await?;
    let outcomes: Vec<(Uuid, Result<JobStatus, ApiError>)> = futures::stream::iter(open)
        .map(|job_id| {
            let (state, creator) = (state.clone(), creator.clone());
            async move { (job_id, commands::cancel_for_unlink(&state, &creator, job_id).await) }
        })
        .buffer_unordered(CANCELS_AT_ONCE)
        .collect()
        .await;
    let (mut cancelled_jobs, mut publishing_jobs) = (Vec::new(), Vec::new());
    for (job_id, outcome) in outcomes {
        match outcome? {
            JobStatus::Cancelled => cancelled_jobs.push(job_id),
            JobStatus::Publishing => publishing_jobs.push(job_id),
            _ => {}
        }
    }
    // Last, the tokens: an attempt in flight already holds what it needs.
    sqlx::query!(
        r#"UPDATE social_accounts SET access_token_ciphertext = NULL, refresh_token_ciphertext = NULL, token_key_id = NULL
           WHERE id = $1"#,
        id
    )
    .execute(&state.db)
    .await?;
    tracing::info!(cancelled = cancelled_jobs.len(), publishing = publishing_jobs.len(), "account unlinked");
    Ok(Json(UnlinkedAccount { account: load(&state, &creator, id).await?, cancelled_jobs, publishing_jobs }))
}

/// The caller's account; another creator's is `404`, like one that does not exist.
async fn load(state: &ApiState, creator: &Creator, id: Uuid) -> Result<AccountView, ApiError> {
    let row = sqlx::query!(
        r#"SELECT id, creator_id, channel, platform_user_id, token_expires_at,
                  refresh_token_ciphertext IS NOT NULL AS "has_refresh_token!", token_status, token_status_detail,
                  unlinked_at, created_at, updated_at
           FROM social_accounts WHERE id = $1 AND creator_id = $2"#,
        id,
        creator.id()
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound { what: "account" })?;
    let health = if row.unlinked_at.is_some() {
        AccountHealth { status: "unlinked".into(), detail: Some("the creator unlinked this account; its tokens are erased".into()) }
    } else if row.token_status != "ok" {
        AccountHealth { status: row.token_status, detail: row.token_status_detail }
    } else if row.token_expires_at <= Utc::now() {
        AccountHealth { status: "expired".into(), detail: Some("the token has expired; reconnect the account".into()) }
    } else {
        AccountHealth { status: "ok".into(), detail: None }
    };
    Ok(AccountView {
        channel: row.channel.parse().map_err(|e| anyhow::anyhow!("account {id}: {e}"))?,
        id: row.id,
        creator_id: row.creator_id,
        platform_user_id: row.platform_user_id,
        token_expires_at: row.token_expires_at,
        has_refresh_token: row.has_refresh_token,
        health,
        unlinked_at: row.unlinked_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
