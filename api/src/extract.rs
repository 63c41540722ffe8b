//! Extractors whose rejections are in our error format and name the offending field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{HeaderMap, header, request::Parts},
};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
        if !is_json {
            return Err(ApiError::Invalid {
                status: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: "unsupported_media_type",
                field: None,
                message: "send the body as JSON with `Content-Type: application/json`".into(),
            });
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| ApiError::bad_request("invalid_body", None, e.body_text()))?;
        parse(&bytes).map(ApiJson)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        let inner = e.into_inner();
        // A lone UTF-16 surrogate (`"\ud800"`) is valid JSON syntax but no character: the value
        // is unacceptable, not the body unreadable.
        if inner.to_string().contains("surrogate") {
            return ApiError::Invalid {
                status: axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                code: "invalid_characters",
                field,
                message: "a string contains an unpaired UTF-16 surrogate".into(),
            };
        }
        let message = if inner.is_syntax() || inner.is_eof() { format!("the body is not valid JSON: {inner}") } else { inner.to_string() };
        ApiError::bad_request("invalid_body", field, message)
    })
}

/// A path parameter (`{id}`) parsed into `T`; a malformed one is a 400 naming the field
/// (`invalid_id`) instead of axum's plain-text rejection or a misleading 404.
pub struct ApiPath<T>(pub T);

impl<T: std::str::FromStr, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_id", Some("id".into()), e.body_text()))?;
        raw.parse().map(ApiPath).map_err(|_| ApiError::bad_request("invalid_id", Some("id".into()), format!("`{raw}` is not a valid id")))
    }
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let invalid = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            Some("Idempotency-Key".into()),
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )
    };
    let key = value.to_str().map_err(|_| invalid())?.trim();
    if key.is_empty() || key.len() > 255 {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}
