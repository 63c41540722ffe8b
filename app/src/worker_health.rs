//! The worker's `/healthz` and `/readyz`, on its metrics listener, for an orchestrator's probes.
//!
//! Ready means: this worker polls its task queue (Temporal lists it among the pollers, by its
//! identity), Postgres answers, and the worker's clock agrees with Postgres's within
//! [`MAX_CLOCK_OFFSET`] (attempts are timed by the worker's clock: a skewed one publishes early
//! or late). A stopping worker is not ready. Like the API's, the answer names what failed and
//! never an error's text; the log has the detail.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use autopost_api::engine;
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use temporalio_client::Client;

/// The largest disagreement between the worker's clock and Postgres's that is still ready.
pub const MAX_CLOCK_OFFSET: Duration = Duration::from_secs(2);
/// Each dependency gets this long to answer a probe.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub struct WorkerHealth(Arc<Inner>);

struct Inner {
    db: PgPool,
    temporal: Client,
    task_queue: String,
    identity: String,
    stopping: AtomicBool,
}

#[derive(Serialize)]
struct Ready {
    ready: bool,
    /// This worker is among the task queue's pollers.
    polling: Check,
    postgres: Check,
    temporal: Check,
    clock: ClockCheck,
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Serialize)]
struct ClockCheck {
    ok: bool,
    /// The worker's clock minus Postgres's, when Postgres answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset_ms: Option<i64>,
}

impl WorkerHealth {
    pub fn new(db: PgPool, temporal: Client, task_queue: String, identity: String) -> Self {
        WorkerHealth(Arc::new(Inner { db, temporal, task_queue, identity, stopping: AtomicBool::new(false) }))
    }

    /// The worker has begun to stop: no longer ready.
    pub fn stopping(&self) {
        self.0.stopping.store(true, Ordering::Relaxed);
    }

    pub fn router(&self) -> Router {
        Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(self.clone())
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(health): State<WorkerHealth>) -> (StatusCode, Json<Ready>) {
    let inner = &health.0;
    let (postgres, pollers) = tokio::join!(database_clock(&inner.db), pollers(inner));
    let postgres_check = check(postgres.as_ref().map(drop).map_err(|_| "Postgres did not answer"));
    let offset_ms = postgres.ok().map(|database_now| (Utc::now() - database_now).num_milliseconds());
    let clock_ok = offset_ms.is_some_and(|ms| ms.unsigned_abs() <= MAX_CLOCK_OFFSET.as_millis() as u64);
    let temporal = check(pollers.as_ref().map(drop).map_err(|_| "Temporal did not answer"));
    let stopping = inner.stopping.load(Ordering::Relaxed);
    let polling = match (&pollers, stopping) {
        (_, true) => check(Err("the worker is stopping")),
        (Ok(identities), false) if identities.iter().any(|i| *i == inner.identity) => check(Ok(())),
        (Ok(_), false) => check(Err("this worker is not among the task queue's pollers")),
        (Err(_), false) => check(Err("Temporal did not answer")),
    };
    let ready = polling.ok && postgres_check.ok && temporal.ok && clock_ok;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { ready, polling, postgres: postgres_check, temporal, clock: ClockCheck { ok: clock_ok, offset_ms } }))
}

fn check(result: Result<(), &'static str>) -> Check {
    Check { ok: result.is_ok(), error: result.err() }
}

async fn database_clock(db: &PgPool) -> Result<DateTime<Utc>, ()> {
    let now = sqlx::query_scalar::<_, DateTime<Utc>>("SELECT now()").fetch_one(db);
    match tokio::time::timeout(CHECK_TIMEOUT, now).await {
        Ok(Ok(now)) => Ok(now),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "worker readiness: Postgres did not answer");
            Err(())
        }
        Err(_) => {
            tracing::warn!("worker readiness: Postgres did not answer in time");
            Err(())
        }
    }
}

/// The identities polling the task queue's workflow tasks.
async fn pollers(inner: &Inner) -> Result<Vec<String>, ()> {
    match tokio::time::timeout(CHECK_TIMEOUT, engine::task_queue_pollers(&inner.temporal, &inner.task_queue)).await {
        Ok(Ok(identities)) => Ok(identities),
        Ok(Err(status)) => {
            tracing::warn!(error = %status.message(), "worker readiness: Temporal did not answer");
            Err(())
        }
        Err(_) => {
            tracing::warn!("worker readiness: Temporal did not answer in time");
            Err(())
        }
    }
}
