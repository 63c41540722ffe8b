//! `/v1/accounts`: linking a creator's Instagram or TikTok account. Tokens go in, never out.

use autopost_workflows::Channel;
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    ApiState,
    error::{ApiError, ErrorBody, responses},
    extract::{ApiJson, ApiPath},
    views::AccountView,
};

pub fn router() -> Router<ApiState> {
    Router::new().route("/v1/accounts", post(link_account)).route("/v1/accounts/{id}", get(get_account))
}

/// A creator's account to link, with its tokens; they are stored, never returned.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkAccount {
    creator_id: String,
    channel: Channel,
    platform_user_id: String,
    #[schema(value_type = String)]
    access_token: SecretString,
    token_expires_at: DateTime<Utc>,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    refresh_token: Option<SecretString>,
}

/// Links an account, or refreshes the tokens of one the same creator linked before (201, 200).
#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", request_body = LinkAccount, responses(
    (status = 201, description = "The account was linked", body = AccountView),
    (status = 200, description = "The creator had linked this platform account before: its tokens were replaced", body = AccountView),
    (status = 400, description = "The body cannot be read (`invalid_body`)", body = ErrorBody),
    (status = 409, description = "Another creator linked this platform account (`account_linked_elsewhere`)", body = ErrorBody),
    (status = 415, response = responses::UnsupportedMediaType),
    (status = 422, description = "A value breaks a rule (`required`, `token_expired`)", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
#[tracing::instrument(skip_all, fields(creator_id = %body.creator_id, channel = %body.channel))]
async fn link_account(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<LinkAccount>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    for (field, value) in [("creator_id", &body.creator_id), ("platform_user_id", &body.platform_user_id)] {
        if value.trim().is_empty() {
            return Err(ApiError::unprocessable("required", field, format!("{field} must not be empty")));
        }
    }
    if body.access_token.expose_secret().trim().is_empty() {
        return Err(ApiError::unprocessable("required", "access_token", "access_token must not be empty"));
    }
    if body.token_expires_at <= Utc::now() {
        return Err(ApiError::unprocessable(
            "token_expired",
            "token_expires_at",
            "the token has already expired; reconnect to get a fresh one",
        ));
    }
    let existing = sqlx::query!(
        "SELECT id, creator_id FROM social_accounts WHERE channel = $1 AND platform_user_id = $2",
        body.channel.as_str(),
        body.platform_user_id
    )
    .fetch_optional(&state.db)
    .await?;
    if let Some(existing) = &existing
        && existing.creator_id != body.creator_id
    {
        return Err(ApiError::Conflict {
            code: "account_linked_elsewhere",
            message: format!("this {} account is linked to another creator", body.channel),
            status: None,
        });
    }
    let status = if existing.is_some() { StatusCode::OK } else { StatusCode::CREATED };
    let id = sqlx::query_scalar!(
        r#"INSERT INTO social_accounts (id, creator_id, channel, platform_user_id, access_token, token_expires_at, refresh_token)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (channel, platform_user_id) DO UPDATE
           SET access_token = EXCLUDED.access_token, token_expires_at = EXCLUDED.token_expires_at,
               refresh_token = EXCLUDED.refresh_token, updated_at = now()
           WHERE social_accounts.creator_id = EXCLUDED.creator_id
           RETURNING id"#,
        Uuid::new_v4(),
        body.creator_id,
        body.channel.as_str(),
        body.platform_user_id,
        body.access_token.expose_secret(),
        body.token_expires_at,
        body.refresh_token.as_ref().map(|t| t.expose_secret()),
    )
    .fetch_optional(&state.db)
    .await?
    // The conditional upsert returns nothing only if another creator linked it meanwhile.
    .ok_or_else(|| ApiError::Conflict {
        code: "account_linked_elsewhere",
        message: "this account is linked to another creator".into(),
        status: None,
    })?;
    Ok((status, Json(load(&state, id).await?)))
}

/// The account, without its tokens.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = "accounts", params(("id" = Uuid, Path, description = "The account's id")), responses(
    (status = 200, description = "The account", body = AccountView),
    (status = 400, response = responses::InvalidId),
    (status = 404, description = "No account has this id (`not_found`)", body = ErrorBody),
    (status = 500, response = responses::Internal),
))]
async fn get_account(State(state): State<ApiState>, ApiPath(id): ApiPath<Uuid>) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(load(&state, id).await?))
}

async fn load(state: &ApiState, id: Uuid) -> Result<AccountView, ApiError> {
    let row = sqlx::query!(
        r#"SELECT id, creator_id, channel, platform_user_id, token_expires_at,
                  refresh_token IS NOT NULL AS "has_refresh_token!", created_at, updated_at
           FROM social_accounts WHERE id = $1"#,
        id
    )
    .fetch_optional(&state.db)
    .await?
    .ok_or(ApiError::NotFound { what: "account" })?;
    Ok(AccountView {
        channel: row.channel.parse().map_err(|e| anyhow::anyhow!("account {id}: {e}"))?,
        id: row.id,
        creator_id: row.creator_id,
        platform_user_id: row.platform_user_id,
        token_expires_at: row.token_expires_at,
        has_refresh_token: row.has_refresh_token,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}
