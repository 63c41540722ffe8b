//! The REST API the web UI talks to. It reads the Postgres mirror, starts each job's workflow
//! and sends it the creator's commands; it never publishes anything itself.
//!
//! One module per resource, each with its own `router()`; `views` holds what they answer with,
//! `engine` the workflow start shared with the reconciler, and `openapi` collects it all.

mod accounts;
pub mod auth;
pub mod capabilities;
mod commands;
pub mod engine;
pub mod error;
pub mod events;
mod extract;
mod features;
mod health;
mod jobs;
pub mod limits;
mod observability;
pub mod openapi;
mod page;
pub mod validate;
pub mod views;

use std::time::Duration;

use axum::{Router, error_handling::HandleErrorLayer, middleware};
use error::ApiError;
use sqlx::PgPool;
use temporalio_client::Client;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub db: PgPool,
    pub temporal: Client,
    pub settings: std::sync::Arc<ApiSettings>,
    /// Renders the process's Prometheus metrics; `None` serves an empty page.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub auth: auth::Authenticator,
    /// Seals the tokens of linked accounts; the API opens one only to re-seal a kept refresh token
    /// and to read an account's capabilities.
    pub token_keys: std::sync::Arc<autopost_activities::vault::TokenKeys>,
    pub rate_limit: std::sync::Arc<limits::CreatorRateLimit>,
    /// The platforms, asked only whether a token being linked belongs to the account it names.
    pub platforms: std::sync::Arc<Platforms>,
    /// The accounts' capabilities as their platforms last reported them, reused briefly.
    pub capabilities: std::sync::Arc<capabilities::CapabilityCache>,
    /// The process's listener on job transitions, shared by the event streams.
    pub events: events::EventHub,
}

/// The platform clients of the API: it never publishes; it verifies account links and reads
/// accounts' capabilities.
pub struct Platforms {
    pub instagram: autopost_activities::platforms::instagram::InstagramClient,
    pub tiktok: autopost_activities::platforms::tiktok::TiktokClient,
}

#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub task_queue: String,
    /// What is fixed into each run of a job's workflow the API starts.
    pub run: engine::RunSettings,
    pub media_policy: validate::MediaPolicy,
    /// `AUTOPOST_PUBLISH_NOW`: the publish-now endpoint is off unless this is set.
    pub publish_now_enabled: bool,
    /// How long publish-now waits for the attempt's outcome before answering `publishing`.
    pub publish_now_wait: Duration,
    /// How long a command may take before it is answered `202 pending`.
    pub command_timeout: Duration,
    /// A job still `scheduled` or `publishing` this long after its time is reported as stuck.
    pub stuck_after: Duration,
    /// Every request is stopped after this long (`503 timeout`).
    pub request_timeout: Duration,
    /// Requests served at once; more are refused with `503 overloaded`.
    pub max_in_flight: usize,
    /// `AUTOPOST_DEV_SANDBOX_URL`: the sandbox the calendar page may ask for account tokens.
    pub dev_sandbox_url: Option<url::Url>,
}

pub fn router(state: ApiState) -> Router {
    // Every `/v1` route needs a creator's token; health checks and the document stay public.
    let v1 = Router::new()
        .merge(accounts::router())
        .merge(capabilities::router())
        .merge(jobs::router())
        .merge(commands::router())
        .merge(features::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_creator));
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(limits::refused))
        .load_shed()
        .concurrency_limit(state.settings.max_in_flight)
        .timeout(state.settings.request_timeout);
    let routes = Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .merge(page::router())
        .merge(v1)
        // Unknown paths and methods answer in the error format too.
        .fallback(|| async { ApiError::NotFound { what: "route" } })
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn(observability::record_latency))
        .layer(middleware::from_fn(observability::in_request_trace))
        .with_state(state.clone());
    // `Router::layer` wraps each route on its own; the limits wrap the whole router as one
    // service (the only fallback of an outer router), so the concurrency limit is one for all.
    let limited = Router::new().fallback_service(routes).layer(limits);
    // The event stream is open as long as its client reads: outside the timeout and the
    // concurrency limit (its latency is no request's, so not recorded either).
    let streams = events::router()
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_creator))
        .layer(middleware::from_fn(observability::in_request_trace))
        .with_state(state);
    Router::new()
        .merge(streams)
        .fallback_service(limited)
        // Outermost first: take or make the request id, log with it, echo it in the response.
        // The span holds the path, never the query or headers (tokens travel in headers).
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let request_id = observability::request_id(request.headers()).unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn method_not_allowed() -> ApiError {
    ApiError::Invalid {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        field: None,
        message: "this route does not take this method".into(),
    }
}

/// `GET /metrics`, on a listener of its own (`AUTOPOST_METRICS_LISTEN`, loopback by default): job
/// counts are not for the public internet.
pub fn metrics_router(state: ApiState) -> Router {
    observability::router().with_state(state)
}

/// Serves the API until `shutdown` resolves.
/// Serves until `shutdown` resolves; then accepts no new connection and waits for the requests
/// in flight, at most `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let events = state.events.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(grace = ?grace, "API stopping: no new connections, finishing the requests in flight");
        // Event streams never finish on their own: end them, so that they do not hold the grace.
        events.stop();
        let _ = stopping.send(());
    };
    let server = axum::serve(listener, router(state)).with_graceful_shutdown(signal).into_future();
    let deadline = async move {
        match stopped.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        served = server => served?,
        () = deadline => tracing::warn!("requests still in flight after the shutdown grace; stopping anyway"),
    }
    tracing::info!("API stopped");
    Ok(())
}
