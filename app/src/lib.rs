//! Autopost's processes, wired from their parts: configuration, the database and Temporal
//! connections, and the API, worker and sandbox run loops that the `autopost` binary's
//! subcommands (and the tests and the bench) start.

pub mod config;
pub mod dev_state;
pub mod metrics;
pub mod reconcile;
pub mod replay;
pub mod telemetry;
pub mod token_refresh;
pub mod webhooks;
pub mod worker_health;

use std::{str::FromStr, sync::Arc, time::Duration};

use anyhow::Context;
use autopost_activities::platforms::{instagram::InstagramClient, tiktok::TiktokClient};
use autopost_activities::{PlatformSettings, WorkerActivities};
use autopost_api::{ApiSettings, ApiState, Platforms, auth::Authenticator, limits::CreatorRateLimit, validate::MediaPolicy};
use autopost_workflows::PublishPostWorkflow;
use secrecy::ExposeSecret;
use sqlx::{
    PgPool,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions, runtime::RuntimeOptions};

pub use config::{ApiConfig, Config, WorkerConfig};
use config::{PostgresSettings, TemporalSettings, TokenKeySettings};

/// The migrations, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The migration that adds the encrypted token columns; the plain ones are dropped after it.
pub const ENCRYPTED_TOKENS_MIGRATION: i64 = 20261130000001;

/// The embedded migrations up to and including `version`. Migrations already applied beyond
/// it are fine (it runs against databases of any age).
pub fn migrations_through(version: i64) -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate::Migrator {
        migrations: MIGRATOR.migrations.iter().filter(|m| m.version <= version).cloned().collect(),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    migrator.set_ignore_missing(true);
    migrator
}

/// Runs `pass` unless another process holds the advisory lock `key` (then `None`): how the
/// reconciler and the token refresh run in one worker at a time. A session lock on a connection
/// of its own: released when the pass ends, and by Postgres itself if this process dies mid-pass.
pub async fn exclusively<T>(db: &PgPool, key: i64, pass: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<Option<T>> {
    let mut lock = db.acquire().await?;
    let locked: bool = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, key).fetch_one(&mut *lock).await?;
    if !locked {
        return Ok(None);
    }
    let result = pass.await;
    sqlx::query_scalar!(r#"SELECT pg_advisory_unlock($1) AS "unlocked!""#, key).fetch_one(&mut *lock).await?;
    result.map(Some)
}

/// Creates the database if it is missing and applies every migration. Tokens an older version
/// stored in plain text are encrypted on the way (`token_keys` is needed only if there are any),
/// before the migration that drops the plain columns.
pub async fn migrate(config: &PostgresSettings, token_keys: &TokenKeySettings) -> anyhow::Result<PgPool> {
    let url = config.database_url.expose_secret();
    if !sqlx::Postgres::database_exists(url).await.context("checking the database")? {
        // Two processes may race to create it; losing that race is fine. A role that may not
        // create databases (the usual production role) is told what to do instead.
        if let Err(e) = sqlx::Postgres::create_database(url).await
            && !sqlx::Postgres::database_exists(url).await.unwrap_or(false)
        {
            let denied = matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42501"));
            if denied {
                anyhow::bail!(
                    "the database in DATABASE_URL ({}) does not exist, and its role may not create databases: \
                     create it as its owner (docs/deploy.md), then run `autopost migrate` again",
                    config.redacted_url()
                );
            }
            return Err(e).context("creating the database");
        }
    }
    // Migrations run on their own connection, without the statement timeout: rewriting a large
    // table may take longer than any request should.
    let migrations = connect_with(config, 1, Duration::ZERO).await?;
    migrations_through(ENCRYPTED_TOKENS_MIGRATION).run(&migrations).await.context("applying migrations")?;
    if autopost_activities::db::plain_token_rows(&migrations).await? > 0 {
        let keys = token_keys.keys().context("encrypting the platform tokens an earlier version stored in plain text")?;
        let encrypted = autopost_activities::db::encrypt_plain_tokens(&migrations, &keys).await?;
        tracing::info!(accounts = encrypted, key_id = keys.current_kid(), "plain-text tokens encrypted");
    }
    MIGRATOR.run(&migrations).await.context("applying migrations")?;
    migrations.close().await;
    connect_db(config).await
}

/// `autopost rotate-token-key`: seals every stored token under the current (first) key.
pub async fn rotate_token_key(
    config: &PostgresSettings,
    token_keys: &TokenKeySettings,
) -> anyhow::Result<autopost_activities::db::RotationReport> {
    let keys = token_keys.keys()?;
    let db = connect_db(config).await?;
    Ok(autopost_activities::db::reencrypt_tokens(&db, &keys, 100).await?)
}

/// The process's pool: `AUTOPOST_DB_POOL_SIZE` connections at most, each with the statement
/// timeout. TLS as `DATABASE_URL` asks (`sslmode`, `sslrootcert`).
pub async fn connect_db(config: &PostgresSettings) -> anyhow::Result<PgPool> {
    connect_with(config, config.db_pool_size, config.db_statement_timeout).await
}

async fn connect_with(config: &PostgresSettings, size: u32, statement_timeout: Duration) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(config.database_url.expose_secret())
        .context("DATABASE_URL is not a Postgres URL")?
        // A startup parameter, set on every connection of the pool; 0 means none.
        .options([("statement_timeout", statement_timeout.as_millis().to_string())]);
    PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(config.db_acquire_timeout)
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to Postgres at {}", config.redacted_url()))
}

pub async fn connect_temporal(config: &TemporalSettings) -> anyhow::Result<Client> {
    let profile = config
        .profile()
        .map_err(|e| anyhow::anyhow!("reading the Temporal connection settings (TEMPORAL_*, TEMPORAL_CONFIG_FILE): {e}"))?;
    let namespace = profile.namespace.clone().unwrap_or_else(|| "default".to_owned());
    // Said in errors and logs: where, and how, never the key or the key file's contents.
    let described = describe_connection(&profile);
    let mut options =
        ConnectionOptions::try_from(profile).map_err(|e| anyhow::anyhow!("the Temporal connection settings ({described}): {e}"))?;
    options.identity = identity();
    let connection = Connection::connect(options).await.with_context(|| format!("connecting to Temporal: {described}"))?;
    tracing::debug!(connection = %described, %namespace, "connected to Temporal");
    let options = if telemetry::tracing_enabled() {
        // Traces workflow starts and commands, and (through the workers built on this client)
        // workflows and activities, with the context carried in Temporal headers.
        ClientOptions::new(namespace).plugin(temporalio_sdk::opentelemetry::OpenTelemetryPlugin::builder().build()).build()
    } else {
        ClientOptions::new(namespace).build()
    };
    Ok(Client::new(connection, options)?)
}

/// The connection in words, for messages: the address, the namespace and what TLS uses.
fn describe_connection(profile: &temporalio_client::envconfig::ClientConfigProfile) -> String {
    let address = profile.address.as_deref().unwrap_or(config::DEFAULT_TEMPORAL_ADDRESS);
    let tls = match &profile.tls {
        Some(tls) if tls.disabled == Some(true) => "TLS off".to_owned(),
        Some(tls) => {
            let ca = if tls.server_ca_cert.is_some() { "the configured server CA" } else { "the system's roots" };
            let client = if tls.client_cert.is_some() { ", with a client certificate" } else { "" };
            let name = tls.server_name.as_deref().map(|n| format!(", server name {n}")).unwrap_or_default();
            format!("TLS checked against {ca}{client}{name}")
        }
        None if profile.api_key.is_some() => "TLS checked against the system's roots".to_owned(),
        None => "TLS off".to_owned(),
    };
    let key = if profile.api_key.is_some() { ", with an API key" } else { "" };
    format!("{address} ({tls}{key})")
}

fn identity() -> String {
    format!("autopost-{}@{}", std::process::id(), hostname())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
}

/// Serves the REST API on `listener`, and its metrics on `AUTOPOST_METRICS_LISTEN`, until
/// `shutdown` resolves.
pub async fn run_api(
    config: &ApiConfig,
    db: PgPool,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let metrics_listener = tokio::net::TcpListener::bind(config.api.metrics_listen)
        .await
        .with_context(|| format!("listening on {} for API metrics", config.api.metrics_listen))?;
    run_api_with(config, db, listener, metrics_listener, shutdown).await
}

/// [`run_api`] on listeners the caller bound (tests bind port 0).
pub async fn run_api_with(
    config: &ApiConfig,
    db: PgPool,
    listener: tokio::net::TcpListener,
    metrics_listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.platforms.check()?;
    // Platform calls from the API only check account links: short timeouts, no retries.
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("autopost/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let events = autopost_api::events::EventHub::start(db.clone());
    let state = ApiState {
        db,
        temporal: connect_temporal(&config.temporal).await?,
        settings: Arc::new(ApiSettings {
            task_queue: config.temporal.task_queue.clone(),
            run: config.schedule.run_settings(),
            media_policy: MediaPolicy { http_allowed_origins: config.platforms.http_media_origins() },
            publish_now_enabled: config.api.publish_now,
            publish_now_wait: config.api.publish_now_wait,
            command_timeout: config.api.command_timeout,
            stuck_after: config.stuck.stuck_after,
            request_timeout: config.api.request_timeout,
            max_in_flight: config.api.max_concurrent_requests,
            dev_sandbox_url: config.api.dev_sandbox_url.clone(),
        }),
        metrics: Some(metrics::handle()),
        auth: Authenticator::new(&config.auth.verifier()).await?,
        token_keys: Arc::new(config.token_keys.keys()?),
        rate_limit: Arc::new(CreatorRateLimit::per_minute(config.api.creator_writes_per_minute)),
        platforms: Arc::new(Platforms {
            instagram: InstagramClient::new(http.clone(), &config.platforms.instagram_api_base),
            tiktok: TiktokClient::new(http, &config.platforms.tiktok_api_base),
        }),
        capabilities: Default::default(),
        events,
    };
    tracing::info!(address = %metrics_listener.local_addr()?, "API metrics listening");
    let metrics_app = autopost_api::metrics_router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
            tracing::error!(error = %e, "API metrics stopped");
        }
    });
    tracing::info!(address = %listener.local_addr()?, "API listening");
    autopost_api::serve(listener, state, shutdown, config.shutdown.shutdown_grace).await
}

/// Runs a worker polling the task queue until `shutdown` resolves, then drains it.
///
/// The SDK's worker future is not `Send`: await this on the main task, not in `tokio::spawn`.
pub async fn run_worker(config: &WorkerConfig, db: PgPool, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    run_worker_with(config, db, shutdown, |_| Ok(())).await
}

/// [`run_worker`], with more workflows and activities registered by `register` (the bench's
/// baseline). Production workers register only the product's.
pub async fn run_worker_with(
    config: &WorkerConfig,
    db: PgPool,
    shutdown: impl Future<Output = ()> + Send + 'static,
    register: impl FnOnce(&mut WorkerOptions) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let settings = &config.worker;
    let keys = Arc::new(config.token_keys.keys()?);
    let webhooks = webhooks::WebhookSettings::from_worker(settings)?;
    let sdk_metrics = metrics::SdkMetrics::start()?;
    let metrics_listener = tokio::net::TcpListener::bind(settings.worker_metrics_listen)
        .await
        .with_context(|| format!("listening on {} for worker metrics", settings.worker_metrics_listen))?;
    tracing::info!(address = %metrics_listener.local_addr()?, "worker metrics listening");
    let runtime_options = RuntimeOptions::builder().telemetry_options(sdk_metrics.telemetry.clone()).build().map_err(anyhow::Error::msg)?;
    let runtime = Runtime::from_current_tokio(runtime_options)?;
    metrics::handle();
    let client = connect_temporal(&config.temporal).await?;
    let health = worker_health::WorkerHealth::new(db.clone(), client.clone(), config.temporal.task_queue.clone(), identity());
    let probes = health.router();
    tokio::spawn(async move {
        if let Err(e) = metrics::serve_worker_metrics(metrics_listener, Some(&sdk_metrics), probes).await {
            tracing::error!(error = %format!("{e:#}"), "worker metrics stopped");
        }
    });
    let reconcile = reconcile::ReconcileSettings {
        task_queue: config.temporal.task_queue.clone(),
        schedule: config.schedule.clone(),
        grace: settings.reconcile_grace,
        stuck_after: config.stuck.stuck_after,
    };
    tokio::spawn(reconcile::run(db.clone(), client.clone(), reconcile, settings.reconcile_interval));
    let refresher = token_refresh::refresher(config, db.clone(), keys.clone())?;
    let refresh_settings = token_refresh::TokenRefreshSettings { interval: settings.token_refresh_interval };
    tokio::spawn(token_refresh::run(db.clone(), refresher, refresh_settings));
    if let Some(webhooks) = webhooks {
        tokio::spawn(webhooks::run(db.clone(), webhooks));
    }
    let activities = WorkerActivities::new(
        db,
        PlatformSettings {
            instagram_api_base: config.platforms.instagram_api_base.clone(),
            tiktok_api_base: config.platforms.tiktok_api_base.clone(),
            poll_interval: settings.platform_poll_interval,
            processing_timeout: settings.platform_processing_timeout,
            request_timeout: settings.platform_request_timeout,
            outcome_wait: settings.platform_outcome_wait,
            preflight_deadline: settings.preflight_deadline,
            connection_idle_timeout: settings.worker_http_idle_timeout,
            tiktok_app: settings.tiktok_app(),
            http_media_origins: config.platforms.http_media_origins(),
            tiktok_verified_domains: settings.tiktok_pull_domains(&config.platforms),
            instagram_quota_recheck: settings.instagram_quota_recheck,
        },
        keys,
    )?;
    let grace = config.shutdown.shutdown_grace;
    let mut options = product_worker_options(config.temporal.task_queue.clone(), activities)?;
    size_worker(&mut options, settings);
    // Past the grace the SDK cancels the activities still running; Temporal runs them again
    // on another worker, which resolves what this one left at the platform before calling.
    options.graceful_shutdown_period = Some(grace);
    register(&mut options)?;
    let mut worker = Worker::new(&runtime, client, options)?;
    let stop = worker.shutdown_handle();
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopping_health = health.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping_health.stopping();
        tracing::info!(grace = ?grace, "worker stopping: no new tasks, letting running activities finish");
        stop();
        let _ = stopping.send(());
    });
    tracing::info!(task_queue = %config.temporal.task_queue, "worker polling");
    // The SDK's own drain is bounded by the grace; this bounds it once more, should an activity
    // ignore its cancellation.
    let deadline = async move {
        match stopped.await {
            Ok(()) => tokio::time::sleep(grace + std::time::Duration::from_secs(5)).await,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        ran = worker.run() => ran?,
        () = deadline => tracing::warn!("activities still running after the shutdown grace; exiting"),
    }
    tracing::info!("worker stopped");
    Ok(())
}

/// Slots, cache and pollers from the settings (the SDK's defaults, 100 activity slots and 1,000
/// cached workflows, are far below what a burst of armed jobs needs).
fn size_worker(options: &mut WorkerOptions, settings: &config::WorkerOnlySettings) {
    use temporalio_sdk::runtime::{
        PollerBehavior,
        worker_tuner::{FixedSizeSlotSupplier, TunerHolder},
    };
    options.tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(settings.worker_workflow_slots as usize))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(settings.worker_activity_slots as usize))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(settings.worker_local_activity_slots as usize))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(10))
        .build()
        .into();
    options.max_cached_workflows = settings.worker_cached_workflows;
    options.workflow_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(settings.worker_workflow_pollers as usize));
    options.activity_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(settings.worker_activity_pollers as usize));
}

/// The workflows and activities of a production worker, and nothing else.
pub fn product_worker_options(task_queue: String, activities: WorkerActivities) -> anyhow::Result<WorkerOptions> {
    Ok(WorkerOptions::new(task_queue).register_workflow::<PublishPostWorkflow>()?.register_activities(activities).build())
}

/// Serves the platform sandbox until `shutdown` resolves.
pub async fn run_sandbox(listener: tokio::net::TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    run_sandbox_with(listener, autopost_sandbox::SandboxOptions::default(), shutdown).await
}

/// [`run_sandbox`] with chosen timings and quota (the bench's instant sandbox).
pub async fn run_sandbox_with(
    listener: tokio::net::TcpListener,
    options: autopost_sandbox::SandboxOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    tracing::info!(?options, "sandbox options");
    let sandbox = autopost_sandbox::Sandbox::with_options(options);
    tokio::select! {
        result = sandbox.serve(listener) => result,
        () = shutdown => Ok(()),
    }
}
