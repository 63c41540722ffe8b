//! The REST API the web UI talks to. It reads the Postgres mirror, starts each job's workflow
//! and sends it the creator's commands; it never publishes anything itself.
//!
//! One module per resource, each with its own `router()`; `views` holds what they answer with,
//! `engine` the workflow start shared with the reconciler, and `openapi` collects it all.

mod accounts;
mod commands;
pub mod engine;
pub mod error;
mod extract;
mod health;
mod jobs;
mod observability;
pub mod openapi;
pub mod validate;
pub mod views;

use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use temporalio_client::Client;
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
}

#[derive(Clone, Debug)]
pub struct ApiSettings {
    pub task_queue: String,
    /// Waits before each retry of a publish, fixed into each job's workflow when it is created.
    pub retry_backoff: Vec<Duration>,
    /// The publish activity's heartbeat timeout, fixed into each job's workflow likewise.
    pub heartbeat_timeout: Duration,
    pub media_policy: validate::MediaPolicy,
    /// `AUTOPOST_PUBLISH_NOW`: the publish-now endpoint is off unless this is set.
    pub publish_now_enabled: bool,
    /// How long publish-now waits for the attempt's outcome before answering `publishing`.
    pub publish_now_wait: Duration,
    /// How long a command may take before it is answered `202 pending`.
    pub command_timeout: Duration,
    /// A job still `scheduled` or `publishing` this long after its time is reported as stuck.
    pub stuck_after: Duration,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(accounts::router())
        .merge(jobs::router())
        .merge(commands::router())
        .merge(openapi::router())
        .merge(observability::router())
        .route_layer(axum::middleware::from_fn(observability::record_latency))
        // Outermost first: take or make the request id, log with it, echo it in the response.
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let request_id = observability::request_id(request.headers()).unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id)
        }))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves the API until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
