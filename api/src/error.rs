//! The API's one error type. Every error leaves as `{"error":{"code","message","field"}}` with a
//! fitting status; internal details are logged, never returned.

use autopost_workflows::JobStatus;
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400) or well-formed but not acceptable (422).
    #[error("{message}")]
    Invalid { status: StatusCode, code: &'static str, field: Option<String>, message: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request conflicts with the current state; `status` is the job's, where one applies.
    #[error("{message}")]
    Conflict { code: &'static str, message: String, status: Option<JobStatus> },
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// No valid bearer token (`401` with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// The creator sent too many writes; `Retry-After` says when to try again.
    #[error("too many requests: try again in {} s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: std::time::Duration },
    /// The API is at its concurrency limit, or the request ran past its timeout (`503`).
    #[error("{message}")]
    Busy { code: &'static str, message: &'static str },
    /// A dependency (Temporal) is unreachable; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 422: the value parsed but breaks a rule.
    pub fn unprocessable(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid { status: StatusCode::UNPROCESSABLE_ENTITY, code, field: Some(field.into()), message: message.into() }
    }

    /// 400: the value could not be read at all.
    pub fn bad_request(code: &'static str, field: Option<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid { status: StatusCode::BAD_REQUEST, code, field, message: message.into() }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

/// Every error the API answers with.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": {"code": "publish_at_in_past", "message": "the publish time must be in the future", "field": "publish_at"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable, e.g. `invalid_body`, `not_found`, `invalid_state`.
    pub code: String,
    /// For humans.
    pub message: String,
    /// The offending input: a body path (`media[0].url`), a query parameter, `id` or a header.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The job's current status, on conflicts with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<JobStatus>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let job_status = match &self {
            ApiError::Conflict { status, .. } => *status,
            _ => None,
        };
        let (status, code, field) = match &self {
            ApiError::Invalid { status, code, field, .. } => (*status, *code, field.clone()),
            ApiError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, *code, None),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, *code, None),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
            ApiError::Busy { code, .. } => (StatusCode::SERVICE_UNAVAILABLE, *code, None),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match &self {
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "an internal error occurred; it has been logged".to_owned()
            }
            ApiError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                "the publishing engine is unavailable; nothing was changed, try again".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message, field, status: job_status } };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            // RFC 6750: a missing token gets the bare challenge, a bad one says so.
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="autopost", error="invalid_token""#));
            }
            ApiError::RateLimited { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            ApiError::Busy { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
        response
    }
}

/// Reusable OpenAPI responses for the errors many routes share; each is an [`ErrorBody`].
pub mod responses {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder, response::Response};

    fn error_body(description: &str) -> RefOr<Response> {
        let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
        ResponseBuilder::new().description(description).content("application/json", content).build().into()
    }

    macro_rules! error_responses {
        ($($(#[$doc:meta])* $name:ident => $description:literal,)*) => {$(
            $(#[$doc])*
            pub struct $name;
            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), error_body($description))
                }
            }
        )*};
    }

    error_responses! {
        /// 400 on routes whose only 400 is a malformed id in the path.
        InvalidId => "The id is not a UUID (`invalid_id`, field `id`)",
        /// 404 on `/v1/publish-jobs/{id}/...`.
        JobNotFound => "No job has this id (`not_found`)",
        /// 409 on the commands.
        InvalidState => "The job's status does not allow this (`invalid_state`; `status` is the job's current one)",
        /// 415 on routes that take a body.
        UnsupportedMediaType => "The body is not `application/json` (`unsupported_media_type`)",
        /// 503 on routes that talk to Temporal.
        Unavailable => "Temporal is unreachable (`unavailable`); nothing was changed",
        /// 500 everywhere.
        Internal => "Internal error (`internal`), logged",
        /// 401 on every `/v1` route.
        Unauthorized => "No valid bearer token (`unauthorized`); the `WWW-Authenticate: Bearer` header is set",
        /// 429 on the writes (creates and commands).
        RateLimited => "Too many writes by this creator (`rate_limited`); `Retry-After` says how many seconds to wait",
    }

    fn refs(responses: &[(&str, &str)]) -> std::collections::BTreeMap<String, RefOr<Response>> {
        responses.iter().map(|(status, name)| (status.to_string(), RefOr::Ref(Ref::from_response_name(*name)))).collect()
    }

    /// The errors of a route that reads one job: 400, 404, 500.
    pub struct JobReadErrors;

    impl utoipa::IntoResponses for JobReadErrors {
        fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
            refs(&[("400", "InvalidId"), ("404", "JobNotFound"), ("500", "Internal")])
        }
    }

    /// What every command answers besides its own errors: 200 (the job after the command), 202
    /// (not confirmed in time), 404, 409, 503, 500.
    pub struct CommandResponses;

    impl utoipa::IntoResponses for CommandResponses {
        fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
            let mut responses = refs(&[
                ("202", "CommandPending"),
                ("404", "JobNotFound"),
                ("409", "InvalidState"),
                ("503", "Unavailable"),
                ("500", "Internal"),
            ]);
            let job = ContentBuilder::new().schema(Some(Ref::from_schema_name("JobView"))).build();
            let done = ResponseBuilder::new().description("The job after the command").content("application/json", job).build();
            responses.insert("200".into(), done.into());
            responses
        }
    }

    /// 202 on the commands.
    pub struct CommandPending;

    impl<'r> utoipa::ToResponse<'r> for CommandPending {
        fn response() -> (&'r str, RefOr<Response>) {
            let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("PendingCommand"))).build();
            let description = "The command was sent but not confirmed within `AUTOPOST_COMMAND_TIMEOUT`; it may still apply. \
                `GET /v1/publish-jobs/{id}` tells the outcome, and repeating the request with the same `Idempotency-Key` applies it at most once";
            ("CommandPending", ResponseBuilder::new().description(description).content("application/json", content).build().into())
        }
    }
}
