//! Configuration: flags with environment variable fallbacks, grouped by what reads them, so each
//! process takes only its own (`autopost api --help` lists what the API reads).
//!
//! [`Config`] holds every group, for the processes that run several parts (`dev`, the tests, the
//! bench); [`Config::to_env`] turns it back into the environment of a child process.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use autopost_api::engine::RunSettings;
use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use temporalio_client::envconfig::{ClientConfigProfile, ConfigError, LoadClientConfigProfileOptions};
use temporalio_common::envconfig::load_client_config_profile;
use url::Url;

/// PostgreSQL, where jobs, attempts and accounts live.
#[derive(Args, Clone, Debug)]
pub struct PostgresSettings {
    /// Postgres. `autopost migrate` creates the database if it is missing and the role may.
    /// For TLS to a managed Postgres add `?sslmode=verify-full&sslrootcert=/path/to/ca.pem`.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/autopost", hide_env_values = true)]
    pub database_url: SecretString,

    /// Connections this process keeps at most. Size Postgres's `max_connections` for every
    /// process: (API processes + workers) x this, plus migrations.
    #[arg(long, env = "AUTOPOST_DB_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_pool_size: u32,

    /// How long a request waits for a free connection before it fails (the API answers 503).
    #[arg(long, env = "AUTOPOST_DB_ACQUIRE_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,

    /// The longest statement Postgres runs for this process (`statement_timeout`), so a stuck
    /// query gives its connection back. Migrations run without it.
    #[arg(long, env = "AUTOPOST_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub db_statement_timeout: Duration,
}

/// The task queue of production workers (`autopost dev` uses its own).
pub const PRODUCTION_TASK_QUEUE: &str = "autopost-publish";

/// The Temporal connection, configured as the Temporal CLI and SDKs configure theirs: a profile
/// from a TOML file (`TEMPORAL_CONFIG_FILE`, else `~/.config/temporalio/temporal.toml`; the
/// profile `TEMPORAL_PROFILE`, else `default`), with these settings on top. One profile serves
/// the CLI, the Web UI and Autopost. Every other `TEMPORAL_*` variable the CLI reads
/// (`TEMPORAL_TLS_*_DATA`, `TEMPORAL_GRPC_META_*`) is honoured too.
#[derive(Args, Clone, Debug)]
pub struct TemporalSettings {
    /// Temporal frontend, host:port or a URL [default: the profile's, else 127.0.0.1:7233].
    #[arg(long, env = "TEMPORAL_ADDRESS")]
    pub temporal_address: Option<String>,

    /// Namespace [default: the profile's, else `default`].
    #[arg(long, env = "TEMPORAL_NAMESPACE")]
    pub temporal_namespace: Option<String>,

    /// API key, sent as `authorization: Bearer <key>`; turns TLS on unless `TEMPORAL_TLS=false`.
    #[arg(long, env = "TEMPORAL_API_KEY", hide_env_values = true)]
    pub temporal_api_key: Option<SecretString>,

    /// `true` or `false`: TLS to the frontend (on by default with an API key or any TLS setting).
    #[arg(long, env = "TEMPORAL_TLS")]
    pub temporal_tls: Option<String>,

    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "TEMPORAL_TLS_CLIENT_CERT_PATH")]
    pub temporal_tls_client_cert_path: Option<std::path::PathBuf>,

    /// The client certificate's private key (PEM).
    #[arg(long, env = "TEMPORAL_TLS_CLIENT_KEY_PATH")]
    pub temporal_tls_client_key_path: Option<std::path::PathBuf>,

    /// CA certificate (PEM) that the frontend's certificate must chain to [default: the system's roots].
    #[arg(long, env = "TEMPORAL_TLS_SERVER_CA_CERT_PATH")]
    pub temporal_tls_server_ca_cert_path: Option<std::path::PathBuf>,

    /// The name the frontend's certificate must carry, when it differs from the address's host.
    #[arg(long, env = "TEMPORAL_TLS_SERVER_NAME")]
    pub temporal_tls_server_name: Option<String>,

    /// Profile in the configuration file [default: `default`].
    #[arg(long, env = "TEMPORAL_PROFILE")]
    pub temporal_profile: Option<String>,

    /// Configuration file [default: `~/.config/temporalio/temporal.toml`]. `temporal-dev` and the
    /// tests point it at an empty file, so that a developer's own profile never reaches them.
    #[arg(long, env = "TEMPORAL_CONFIG_FILE")]
    pub temporal_config_file: Option<std::path::PathBuf>,

    /// Task queue the API starts workflows on and the worker polls.
    #[arg(long, env = "AUTOPOST_TASK_QUEUE", default_value = PRODUCTION_TASK_QUEUE)]
    pub task_queue: String,
}

/// What is fixed into each job's workflow when it starts (by the API, or by the reconciler when
/// it replaces a lost run): a later change of these never alters a running job's history.
#[derive(Args, Clone, Debug)]
pub struct ScheduleSettings {
    /// Waits before the retries of a failed publish, comma-separated; one retry per entry.
    #[arg(long, env = "AUTOPOST_RETRY_BACKOFF", default_value = "5m,15m,30m", value_parser = parse_backoff)]
    pub retry_backoff: Backoff,

    /// How soon an attempt whose worker died is taken over by another (the publish activity's
    /// heartbeat timeout; a live attempt heartbeats throughout, however slow the platform).
    #[arg(long, env = "AUTOPOST_HEARTBEAT_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Duration,

    /// How long a `needs_attention` job waits for its creator before its workflow closes. The
    /// job stays `needs_attention`, and the creator's next command starts a new run.
    #[arg(long, env = "AUTOPOST_ATTENTION_TTL", default_value = "30days", value_parser = humantime::parse_duration)]
    pub attention_ttl: Duration,

    /// Commands one run of a job's workflow carries out before it continues as new (Temporal
    /// may ask for it sooner), so a job rescheduled again and again keeps a small history.
    #[arg(long, env = "AUTOPOST_COMMANDS_PER_RUN", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub commands_per_run: u32,

    /// How long before its publish time a job arms: one activity runs preflight, prepares the
    /// post at the platform (Instagram's container, TikTok's creator info) and makes the
    /// publishing call itself at the instant, on the worker's clock.
    #[arg(long, env = "AUTOPOST_ARM_LEAD", default_value = "2m", value_parser = humantime::parse_duration)]
    pub arm_lead: Duration,

    /// Jobs due at one instant arm spread over this window before the lead (by job id), so a
    /// burst of posts does not arm all at once.
    #[arg(long, env = "AUTOPOST_ARM_SPREAD", default_value = "1m", value_parser = humantime::parse_duration)]
    pub arm_spread: Duration,
}

/// Where the platforms' APIs are. The worker calls them; the API accepts plain-http media only
/// from a platform host reached over plain http, which only the sandbox is.
#[derive(Args, Clone, Debug)]
pub struct PlatformEndpoints {
    /// Instagram Graph API base, version included. `dev` points it at its sandbox.
    #[arg(long, env = "INSTAGRAM_API_BASE", default_value = "https://graph.facebook.com/v25.0")]
    pub instagram_api_base: String,

    /// TikTok API base. `dev` points it at its sandbox.
    #[arg(long, env = "TIKTOK_API_BASE", default_value = "https://open.tiktokapis.com")]
    pub tiktok_api_base: String,
}

/// When a job that is not published by now counts as stuck: the worker's reconciler logs and
/// counts such jobs (`autopost_jobs_stuck`), and the API's `/readyz` lists them.
#[derive(Args, Clone, Debug)]
pub struct StuckSettings {
    /// A job still `scheduled` or `publishing` this long after its publish time is stuck.
    #[arg(long, env = "AUTOPOST_STUCK_AFTER", default_value = "10m", value_parser = humantime::parse_duration)]
    pub stuck_after: Duration,
}

/// The keys that encrypt creators' platform tokens at rest (AES-256-GCM). The API seals the
/// tokens it links, the worker opens them for its platform calls, and `migrate` and
/// `rotate-token-key` re-encrypt stored rows.
#[derive(Args, Clone, Debug)]
pub struct TokenKeySettings {
    /// `kid:base64key,...` with 32-byte keys: the first encrypts, all decrypt. To rotate, put a
    /// new key first, keep the old ones, run `autopost rotate-token-key`, then drop the old.
    #[arg(long, env = "AUTOPOST_TOKEN_KEYS", hide_env_values = true)]
    pub token_keys: Option<SecretString>,
}

/// How the API verifies the bearer tokens of `/v1` requests (see the README's Security section).
#[derive(Args, Clone, Debug)]
pub struct AuthSettings {
    /// HS256 secret shared with the web app that issues the tokens (at least 32 characters).
    #[arg(long, env = "AUTOPOST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// Or: a JWKS URL whose keys (RS/PS/ES/EdDSA) sign the tokens; cached, and fetched again
    /// when a token names an unknown key id.
    #[arg(long, env = "AUTOPOST_JWKS_URL")]
    pub jwks_url: Option<Url>,

    /// When set, every token's `iss` must be this.
    #[arg(long, env = "AUTOPOST_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// When set, every token's `aud` must include this.
    #[arg(long, env = "AUTOPOST_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

/// The REST API process.
#[derive(Args, Clone, Debug)]
pub struct ApiOnlySettings {
    /// Where the REST API listens.
    #[arg(long, env = "AUTOPOST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Turns on `POST /v1/publish-jobs/{id}/publish-now`.
    #[arg(long, env = "AUTOPOST_PUBLISH_NOW", default_value_t = false, action = clap::ArgAction::Set)]
    pub publish_now: bool,

    /// How long publish-now waits for the attempt's outcome before answering `publishing`.
    #[arg(long, env = "AUTOPOST_PUBLISH_NOW_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub publish_now_wait: Duration,

    /// How long a command (retry, reschedule, cancel, publish-now) may take before the API
    /// answers `202` with `{"status": "pending"}`; the job's JSON tells the outcome later.
    #[arg(long, env = "AUTOPOST_COMMAND_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub command_timeout: Duration,

    /// Where the API serves `GET /metrics` (Prometheus): its own listener, loopback by default.
    #[arg(long, env = "AUTOPOST_METRICS_LISTEN", default_value = "127.0.0.1:9463")]
    pub metrics_listen: SocketAddr,

    /// Every request is stopped after this long (`503 timeout`); above the publish-now wait.
    #[arg(long, env = "AUTOPOST_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Requests served at once; more are refused at once with `503 overloaded`.
    #[arg(long, env = "AUTOPOST_MAX_CONCURRENT_REQUESTS", default_value_t = 512)]
    pub max_concurrent_requests: usize,

    /// Writes (links, creates, commands) one creator may make per minute, beyond which they get
    /// `429` with `Retry-After`; `0` turns the limit off.
    #[arg(long, env = "AUTOPOST_CREATOR_WRITES_PER_MINUTE", default_value_t = 120)]
    pub creator_writes_per_minute: u32,

    /// Development only: the platform sandbox whose control API the calendar page at `/` asks
    /// for fresh account tokens (`autopost dev` sets it). Unset in production: the page then
    /// only takes pasted tokens.
    #[arg(long, env = "AUTOPOST_DEV_SANDBOX_URL")]
    pub dev_sandbox_url: Option<url::Url>,
}

/// The worker process: how it talks to the platforms, its metrics and its reconciler.
#[derive(Args, Clone, Debug)]
pub struct WorkerOnlySettings {
    /// TikTok app key, used with the secret to refresh creators' expired TikTok tokens.
    #[arg(long, env = "TIKTOK_CLIENT_KEY")]
    pub tiktok_client_key: Option<String>,

    #[arg(long, env = "TIKTOK_CLIENT_SECRET", hide_env_values = true)]
    pub tiktok_client_secret: Option<SecretString>,

    /// Domains verified for the app in TikTok's developer portal, comma-separated (a domain
    /// also covers its subdomains): TikTok pulls videos hosted there, and the worker uploads
    /// every other video itself (TikTok refuses to pull from an unverified domain). Unset: the
    /// sandbox's host while a platform base points at it, else none.
    #[arg(long, env = "TIKTOK_VERIFIED_DOMAINS", value_delimiter = ',')]
    pub tiktok_verified_domains: Option<Vec<String>>,

    /// How long a job whose Instagram publishing quota is used up waits before it looks again
    /// (the window is rolling: a slot frees when its oldest post turns 24 h old).
    #[arg(long, env = "AUTOPOST_INSTAGRAM_QUOTA_RECHECK", default_value = "1h", value_parser = humantime::parse_duration)]
    pub instagram_quota_recheck: Duration,

    /// Between two status reads of a post the platform is still processing.
    #[arg(long, env = "AUTOPOST_PLATFORM_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub platform_poll_interval: Duration,

    /// How long one attempt waits for the platform to finish processing.
    #[arg(long, env = "AUTOPOST_PLATFORM_PROCESSING_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub platform_processing_timeout: Duration,

    /// Timeout of each HTTP request to a platform or media host.
    #[arg(long, env = "AUTOPOST_PLATFORM_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub platform_request_timeout: Duration,

    /// How long an attempt waits for a platform to show whether a publish whose answer was lost
    /// went through, before the job needs attention with the outcome unknown.
    #[arg(long, env = "AUTOPOST_PLATFORM_OUTCOME_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub platform_outcome_wait: Duration,

    /// How long one preflight may take in all; past it the job needs attention with
    /// `preflight.timeout`. Below the preflight activity's own 2-minute timeout.
    #[arg(long, env = "AUTOPOST_PREFLIGHT_DEADLINE", default_value = "60s", value_parser = parse_preflight_deadline)]
    pub preflight_deadline: Duration,

    /// Where the worker serves `GET /metrics` (Prometheus), its own and the Temporal SDK's.
    #[arg(long, env = "AUTOPOST_WORKER_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub worker_metrics_listen: SocketAddr,

    /// How often the worker compares Postgres with Temporal to find lost workflows.
    #[arg(long, env = "AUTOPOST_RECONCILE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconcile_interval: Duration,

    /// Jobs younger than this are not reconciled: the API may still be starting their workflow.
    #[arg(long, env = "AUTOPOST_RECONCILE_GRACE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub reconcile_grace: Duration,

    /// How often the worker renews platform tokens before they expire (Instagram's in their last
    /// 10 days, TikTok's within the next interval).
    #[arg(long, env = "AUTOPOST_TOKEN_REFRESH_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_refresh_interval: Duration,

    /// Activities this worker runs at once. Every armed job holds one slot from arming (its lead
    /// plus its share of the spread) until its post is out, so a burst of N posts due at one
    /// instant needs N slots across the workers; an idle slot costs a few kilobytes.
    #[arg(long, env = "AUTOPOST_WORKER_ACTIVITY_SLOTS", default_value_t = 3000, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_activity_slots: u32,

    /// Local activities (mirror writes, commands' fence claims) this worker runs at once.
    #[arg(long, env = "AUTOPOST_WORKER_LOCAL_ACTIVITY_SLOTS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_local_activity_slots: u32,

    /// Workflow tasks this worker runs at once.
    #[arg(long, env = "AUTOPOST_WORKER_WORKFLOW_SLOTS", default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..))]
    pub worker_workflow_slots: u32,

    /// Workflows kept in memory between their tasks (sticky). Sleeping workflows fill it too:
    /// with 10,000 asleep, 3,000 cached held 339 MiB of worker RSS and 1,000 held 228 MiB, while
    /// a burst of 500 landed as fast with either (docs/benchmark.md): an evicted armed workflow's
    /// short history replays quickly.
    #[arg(long, env = "AUTOPOST_WORKER_CACHED_WORKFLOWS", default_value_t = 1000)]
    pub worker_cached_workflows: usize,

    /// Concurrent long polls for workflow tasks (at least 2 while workflows are cached).
    #[arg(long, env = "AUTOPOST_WORKER_WORKFLOW_POLLERS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..))]
    pub worker_workflow_pollers: u32,

    /// Concurrent long polls for activity tasks: a burst arms many activities within a minute.
    #[arg(long, env = "AUTOPOST_WORKER_ACTIVITY_POLLERS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_activity_pollers: u32,

    /// How long an idle HTTPS connection to a platform is kept. Above the arming lead plus its
    /// spread: the connection an armed job opens at arm time carries its publishing call.
    #[arg(long, env = "AUTOPOST_WORKER_HTTP_IDLE_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub worker_http_idle_timeout: Duration,

    /// Where every job transition is POSTed as signed JSON (README, Webhooks): https, or http
    /// to a loopback address. Unset: no webhooks. Kept like a secret (receivers often put a
    /// credential in the path): only its host is ever logged.
    #[arg(long, env = "AUTOPOST_WEBHOOK_URL", hide_env_values = true)]
    pub webhook_url: Option<SecretString>,

    /// The HMAC-SHA256 key that signs each delivery (`Autopost-Signature`), shared with the
    /// receiver; at least 32 characters. Required with `AUTOPOST_WEBHOOK_URL`.
    #[arg(long, env = "AUTOPOST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<SecretString>,

    /// The longest wait before trying again a delivery the receiver did not acknowledge with a
    /// 2xx: waits start at 1 s and double up to this.
    #[arg(long, env = "AUTOPOST_WEBHOOK_MAX_BACKOFF", default_value = "5m", value_parser = humantime::parse_duration)]
    pub webhook_max_backoff: Duration,

    /// Timeout of each delivery request; one that takes longer counts as failed and is retried.
    #[arg(long, env = "AUTOPOST_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_timeout: Duration,
}

/// How the API and the worker stop on SIGTERM.
#[derive(Args, Clone, Debug)]
pub struct ShutdownSettings {
    /// How long a stopping process waits: the API for its in-flight requests (it accepts no
    /// new connection), the worker for its running activities (it polls no new task; after
    /// this the SDK cancels them, and Temporal runs them again on another worker). Set the
    /// orchestrator's termination grace period above it.
    #[arg(long, env = "AUTOPOST_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// The platform sandbox process.
#[derive(Args, Clone, Debug)]
pub struct SandboxSettings {
    /// Where the platform sandbox listens (`sandbox` and `dev`).
    #[arg(long, env = "AUTOPOST_SANDBOX_LISTEN", default_value = "127.0.0.1:8090")]
    pub sandbox_listen: SocketAddr,
}

/// What `autopost api` reads.
#[derive(Args, Clone, Debug)]
pub struct ApiConfig {
    #[command(flatten)]
    pub postgres: PostgresSettings,
    #[command(flatten)]
    pub temporal: TemporalSettings,
    #[command(flatten)]
    pub schedule: ScheduleSettings,
    #[command(flatten)]
    pub platforms: PlatformEndpoints,
    #[command(flatten)]
    pub stuck: StuckSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub token_keys: TokenKeySettings,
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
    #[command(flatten)]
    pub api: ApiOnlySettings,
}

/// What `autopost worker` reads.
#[derive(Args, Clone, Debug)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub postgres: PostgresSettings,
    #[command(flatten)]
    pub temporal: TemporalSettings,
    #[command(flatten)]
    pub schedule: ScheduleSettings,
    #[command(flatten)]
    pub platforms: PlatformEndpoints,
    #[command(flatten)]
    pub stuck: StuckSettings,
    #[command(flatten)]
    pub token_keys: TokenKeySettings,
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
    #[command(flatten)]
    pub worker: WorkerOnlySettings,
}

/// Every group: what `autopost dev` reads, and what tests and the bench configure.
#[derive(Args, Clone, Debug)]
pub struct Config {
    #[command(flatten)]
    pub postgres: PostgresSettings,
    #[command(flatten)]
    pub temporal: TemporalSettings,
    #[command(flatten)]
    pub schedule: ScheduleSettings,
    #[command(flatten)]
    pub platforms: PlatformEndpoints,
    #[command(flatten)]
    pub stuck: StuckSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub token_keys: TokenKeySettings,
    #[command(flatten)]
    pub shutdown: ShutdownSettings,
    #[command(flatten)]
    pub api: ApiOnlySettings,
    #[command(flatten)]
    pub worker: WorkerOnlySettings,
    #[command(flatten)]
    pub sandbox: SandboxSettings,
}

/// Whether a URL's host is this machine: `localhost` or a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        // Non-special schemes (`postgres://`) leave even IP addresses as opaque host names.
        Some(url::Host::Domain(domain)) => {
            domain.eq_ignore_ascii_case("localhost")
                || domain.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The preflight deadline must end before the activity's own timeout (2 minutes), or Temporal
/// would cut the activity off first and retry it instead of the job learning why.
fn parse_preflight_deadline(raw: &str) -> Result<Duration, String> {
    let deadline = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    if deadline.is_zero() || deadline > Duration::from_secs(100) {
        return Err("must be between 1s and 100s (the preflight activity times out after 120s)".into());
    }
    Ok(deadline)
}

/// A retry schedule: the wait before each retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff(pub Vec<Duration>);

pub fn parse_backoff(raw: &str) -> Result<Backoff, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        // No retries at all is a legitimate (if harsh) policy.
        return Ok(Backoff(Vec::new()));
    }
    raw.split(',')
        .map(|part| humantime::parse_duration(part.trim()).map_err(|e| format!("`{}`: {e}", part.trim())))
        .collect::<Result<_, _>>()
        .map(Backoff)
}

impl std::fmt::Display for Backoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

/// A child process's environment, as `(variable, value)` pairs.
pub type Env = Vec<(&'static str, String)>;

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl PostgresSettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("DATABASE_URL", self.database_url.expose_secret().to_owned()));
        env.push(("AUTOPOST_DB_POOL_SIZE", self.db_pool_size.to_string()));
        env.push(("AUTOPOST_DB_ACQUIRE_TIMEOUT", duration(self.db_acquire_timeout)));
        env.push(("AUTOPOST_DB_STATEMENT_TIMEOUT", duration(self.db_statement_timeout)));
    }

    /// Settings for `url` with the defaults (tests and tools that make their own databases).
    pub fn for_url(url: impl Into<String>) -> Self {
        PostgresSettings {
            database_url: SecretString::from(url.into()),
            db_pool_size: 10,
            db_acquire_timeout: Duration::from_secs(5),
            db_statement_timeout: Duration::from_secs(30),
        }
    }

    /// The URL without its password, for logs and reports.
    pub fn redacted_url(&self) -> String {
        match Url::parse(self.database_url.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "(an unparsable DATABASE_URL)".into(),
        }
    }
}

/// Where Temporal is when neither the settings nor the profile say (the CLI's `localhost:7233`,
/// on IPv4, where `temporal server start-dev` listens).
pub const DEFAULT_TEMPORAL_ADDRESS: &str = "127.0.0.1:7233";

impl TemporalSettings {
    pub fn to_env(&self, env: &mut Env) {
        for (name, value) in self.variables() {
            env.push((name, value));
        }
        env.push(("AUTOPOST_TASK_QUEUE", self.task_queue.clone()));
    }

    /// Every variable these settings own, each with its value when set.
    fn owned_variables(&self) -> [(&'static str, Option<String>); 10] {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        [
            ("TEMPORAL_ADDRESS", self.temporal_address.clone()),
            ("TEMPORAL_NAMESPACE", self.temporal_namespace.clone()),
            ("TEMPORAL_API_KEY", self.temporal_api_key.as_ref().map(|k| k.expose_secret().to_owned())),
            ("TEMPORAL_TLS", self.temporal_tls.clone()),
            ("TEMPORAL_TLS_CLIENT_CERT_PATH", path(&self.temporal_tls_client_cert_path)),
            ("TEMPORAL_TLS_CLIENT_KEY_PATH", path(&self.temporal_tls_client_key_path)),
            ("TEMPORAL_TLS_SERVER_CA_CERT_PATH", path(&self.temporal_tls_server_ca_cert_path)),
            ("TEMPORAL_TLS_SERVER_NAME", self.temporal_tls_server_name.clone()),
            ("TEMPORAL_PROFILE", self.temporal_profile.clone()),
            ("TEMPORAL_CONFIG_FILE", path(&self.temporal_config_file)),
        ]
    }

    /// The settings that are set, as the `TEMPORAL_*` variables they come from.
    fn variables(&self) -> Vec<(&'static str, String)> {
        self.owned_variables().into_iter().filter_map(|(name, value)| Some((name, value?))).collect()
    }

    /// The profile these settings select, resolved exactly as the Temporal CLI resolves it: the
    /// file's profile, then the variables on top. The variables these settings own come from
    /// the settings (clap read them from the environment, or flags and tests set them); the
    /// process's other `TEMPORAL_*` variables (`TEMPORAL_TLS_*_DATA`, `TEMPORAL_GRPC_META_*`)
    /// are passed through.
    pub fn profile(&self) -> Result<ClientConfigProfile, ConfigError> {
        let owned = self.owned_variables().map(|(name, _)| name);
        let mut env: HashMap<String, String> =
            std::env::vars().filter(|(name, _)| name.starts_with("TEMPORAL_") && !owned.contains(&name.as_str())).collect();
        env.extend(self.variables().into_iter().map(|(name, value)| (name.to_owned(), value)));
        let mut profile = load_client_config_profile(LoadClientConfigProfileOptions::default(), Some(&env))?;
        profile.address.get_or_insert_with(|| DEFAULT_TEMPORAL_ADDRESS.to_owned());
        Ok(profile)
    }
}

impl ShutdownSettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("AUTOPOST_SHUTDOWN_GRACE", duration(self.shutdown_grace)));
    }
}

impl ScheduleSettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("AUTOPOST_RETRY_BACKOFF", self.retry_backoff.to_string()));
        env.push(("AUTOPOST_HEARTBEAT_TIMEOUT", duration(self.heartbeat_timeout)));
        env.push(("AUTOPOST_ATTENTION_TTL", duration(self.attention_ttl)));
        env.push(("AUTOPOST_COMMANDS_PER_RUN", self.commands_per_run.to_string()));
        env.push(("AUTOPOST_ARM_LEAD", duration(self.arm_lead)));
        env.push(("AUTOPOST_ARM_SPREAD", duration(self.arm_spread)));
    }

    /// What the API and the reconciler fix into each run they start.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            retry_backoff: self.retry_backoff.0.clone(),
            heartbeat_timeout: self.heartbeat_timeout,
            attention_ttl: self.attention_ttl,
            commands_per_run: self.commands_per_run,
            arm_lead: self.arm_lead,
            arm_spread: self.arm_spread,
        }
    }
}

impl PlatformEndpoints {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("INSTAGRAM_API_BASE", self.instagram_api_base.clone()));
        env.push(("TIKTOK_API_BASE", self.tiktok_api_base.clone()));
    }

    /// Tokens travel to the platforms: plain http only to a sandbox on this machine (a loopback
    /// address), https everywhere else.
    pub fn check(&self) -> anyhow::Result<()> {
        for (variable, base) in [("INSTAGRAM_API_BASE", &self.instagram_api_base), ("TIKTOK_API_BASE", &self.tiktok_api_base)] {
            let url = Url::parse(base).map_err(|e| anyhow::anyhow!("{variable} is not a URL: {e}"))?;
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(&url) => {}
                _ => anyhow::bail!("{variable} must be an https URL (plain http is accepted only for the sandbox on a loopback address)"),
            }
        }
        Ok(())
    }

    /// Points both platforms at the sandbox at `sandbox_url`, as `dev` does.
    pub fn use_sandbox(&mut self, sandbox_url: &str) {
        self.instagram_api_base = format!("{sandbox_url}/instagram/v25.0");
        self.tiktok_api_base = format!("{sandbox_url}/tiktok");
    }

    /// Origins (scheme, host and port) whose plain-http media is accepted and fetched: a
    /// platform base reached over plain http is the sandbox, and the sandbox serves the media
    /// of development posts. The real platforms are https and fetch media over https only.
    pub fn http_media_origins(&self) -> Vec<url::Origin> {
        let mut origins: Vec<url::Origin> = [&self.instagram_api_base, &self.tiktok_api_base]
            .into_iter()
            .filter_map(|base| Url::parse(base).ok())
            .filter(|url| url.scheme() == "http" && url.has_host())
            .map(|url| url.origin())
            .collect();
        origins.dedup();
        origins
    }
}

impl StuckSettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("AUTOPOST_STUCK_AFTER", duration(self.stuck_after)));
    }
}

impl ApiOnlySettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("AUTOPOST_LISTEN", self.listen.to_string()));
        env.push(("AUTOPOST_PUBLISH_NOW", self.publish_now.to_string()));
        env.push(("AUTOPOST_PUBLISH_NOW_WAIT", duration(self.publish_now_wait)));
        env.push(("AUTOPOST_COMMAND_TIMEOUT", duration(self.command_timeout)));
        env.push(("AUTOPOST_METRICS_LISTEN", self.metrics_listen.to_string()));
        env.push(("AUTOPOST_REQUEST_TIMEOUT", duration(self.request_timeout)));
        env.push(("AUTOPOST_MAX_CONCURRENT_REQUESTS", self.max_concurrent_requests.to_string()));
        env.push(("AUTOPOST_CREATOR_WRITES_PER_MINUTE", self.creator_writes_per_minute.to_string()));
        if let Some(url) = &self.dev_sandbox_url {
            env.push(("AUTOPOST_DEV_SANDBOX_URL", url.to_string()));
        }
    }
}

impl TokenKeySettings {
    pub fn to_env(&self, env: &mut Env) {
        if let Some(keys) = &self.token_keys {
            env.push(("AUTOPOST_TOKEN_KEYS", keys.expose_secret().to_owned()));
        }
    }

    /// A fresh key when none is set: for stacks whose database lives as long as they do (the
    /// bench, the fault suite).
    pub fn generate_if_unset(&mut self) {
        self.token_keys.get_or_insert_with(|| SecretString::from(autopost_activities::vault::TokenKeys::generate_spec()));
    }

    /// The keys, parsed; a missing or malformed setting is an error that says how to fix it.
    pub fn keys(&self) -> anyhow::Result<autopost_activities::vault::TokenKeys> {
        let Some(spec) = &self.token_keys else {
            anyhow::bail!(
                "AUTOPOST_TOKEN_KEYS is not set: it holds the keys that encrypt platform tokens at rest, as `kid:base64key,...` \
                 (32-byte keys, the first encrypts); generate one with `echo \"k1:$(openssl rand -base64 32)\"`"
            );
        };
        Ok(autopost_activities::vault::TokenKeys::parse(spec.expose_secret())?)
    }
}

impl AuthSettings {
    pub fn to_env(&self, env: &mut Env) {
        if let Some(secret) = &self.jwt_secret {
            env.push(("AUTOPOST_JWT_SECRET", secret.expose_secret().to_owned()));
        }
        if let Some(url) = &self.jwks_url {
            env.push(("AUTOPOST_JWKS_URL", url.to_string()));
        }
        if let Some(issuer) = &self.jwt_issuer {
            env.push(("AUTOPOST_JWT_ISSUER", issuer.clone()));
        }
        if let Some(audience) = &self.jwt_audience {
            env.push(("AUTOPOST_JWT_AUDIENCE", audience.clone()));
        }
    }

    /// What the API's verifier takes.
    pub fn verifier(&self) -> autopost_api::auth::AuthSettings {
        autopost_api::auth::AuthSettings {
            hs256_secret: self.jwt_secret.clone(),
            jwks_url: self.jwks_url.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        }
    }
}

impl WorkerOnlySettings {
    pub fn to_env(&self, env: &mut Env) {
        if let Some(key) = &self.tiktok_client_key {
            env.push(("TIKTOK_CLIENT_KEY", key.clone()));
        }
        if let Some(secret) = &self.tiktok_client_secret {
            env.push(("TIKTOK_CLIENT_SECRET", secret.expose_secret().to_owned()));
        }
        if let Some(domains) = &self.tiktok_verified_domains {
            env.push(("TIKTOK_VERIFIED_DOMAINS", domains.join(",")));
        }
        env.push(("AUTOPOST_INSTAGRAM_QUOTA_RECHECK", duration(self.instagram_quota_recheck)));
        env.push(("AUTOPOST_PLATFORM_POLL_INTERVAL", duration(self.platform_poll_interval)));
        env.push(("AUTOPOST_PLATFORM_PROCESSING_TIMEOUT", duration(self.platform_processing_timeout)));
        env.push(("AUTOPOST_PLATFORM_REQUEST_TIMEOUT", duration(self.platform_request_timeout)));
        env.push(("AUTOPOST_PLATFORM_OUTCOME_WAIT", duration(self.platform_outcome_wait)));
        env.push(("AUTOPOST_PREFLIGHT_DEADLINE", duration(self.preflight_deadline)));
        env.push(("AUTOPOST_WORKER_METRICS_LISTEN", self.worker_metrics_listen.to_string()));
        env.push(("AUTOPOST_RECONCILE_INTERVAL", duration(self.reconcile_interval)));
        env.push(("AUTOPOST_RECONCILE_GRACE", duration(self.reconcile_grace)));
        env.push(("AUTOPOST_TOKEN_REFRESH_INTERVAL", duration(self.token_refresh_interval)));
        env.push(("AUTOPOST_WORKER_ACTIVITY_SLOTS", self.worker_activity_slots.to_string()));
        env.push(("AUTOPOST_WORKER_LOCAL_ACTIVITY_SLOTS", self.worker_local_activity_slots.to_string()));
        env.push(("AUTOPOST_WORKER_WORKFLOW_SLOTS", self.worker_workflow_slots.to_string()));
        env.push(("AUTOPOST_WORKER_CACHED_WORKFLOWS", self.worker_cached_workflows.to_string()));
        env.push(("AUTOPOST_WORKER_WORKFLOW_POLLERS", self.worker_workflow_pollers.to_string()));
        env.push(("AUTOPOST_WORKER_ACTIVITY_POLLERS", self.worker_activity_pollers.to_string()));
        env.push(("AUTOPOST_WORKER_HTTP_IDLE_TIMEOUT", duration(self.worker_http_idle_timeout)));
        if let Some(url) = &self.webhook_url {
            env.push(("AUTOPOST_WEBHOOK_URL", url.expose_secret().to_owned()));
        }
        if let Some(secret) = &self.webhook_secret {
            env.push(("AUTOPOST_WEBHOOK_SECRET", secret.expose_secret().to_owned()));
        }
        env.push(("AUTOPOST_WEBHOOK_MAX_BACKOFF", duration(self.webhook_max_backoff)));
        env.push(("AUTOPOST_WEBHOOK_TIMEOUT", duration(self.webhook_timeout)));
    }

    /// The domains TikTok pulls videos from: the setting's, normalised, or by default the
    /// sandbox's host while a platform base points at it (the sandbox counts every domain as
    /// verified unless told otherwise, so its media are pulled, as before uploads existed).
    pub fn tiktok_pull_domains(&self, platforms: &PlatformEndpoints) -> Vec<String> {
        let Some(domains) = &self.tiktok_verified_domains else {
            let sandbox = platforms.http_media_origins().into_iter().filter_map(|origin| match origin {
                url::Origin::Tuple(_, host, _) => Some(host.to_string()),
                url::Origin::Opaque(_) => None,
            });
            let mut hosts: Vec<String> = sandbox.collect();
            hosts.dedup();
            return hosts;
        };
        domains
            .iter()
            .map(|domain| domain.trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|domain| !domain.is_empty())
            .collect()
    }

    pub fn tiktok_app(&self) -> Option<autopost_activities::platforms::tiktok::AppCredentials> {
        Some(autopost_activities::platforms::tiktok::AppCredentials {
            client_key: self.tiktok_client_key.clone()?,
            client_secret: self.tiktok_client_secret.clone()?,
        })
    }
}

impl SandboxSettings {
    pub fn to_env(&self, env: &mut Env) {
        env.push(("AUTOPOST_SANDBOX_LISTEN", self.sandbox_listen.to_string()));
    }

    /// The base URL clients use to reach the sandbox (a wildcard listen address becomes loopback).
    pub fn url(&self) -> String {
        let mut addr = self.sandbox_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }
}

impl Config {
    /// Every setting at its default, or as its environment variable sets it.
    pub fn with_defaults() -> Config {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            config: Config,
        }
        <Defaults as clap::Parser>::parse_from(["autopost"]).config
    }

    /// A development stack must never touch production: its Temporal and Postgres must be on
    /// this machine.
    pub fn check_local(&self) -> anyhow::Result<()> {
        let address = self.temporal.profile().map_err(|e| anyhow::anyhow!("the Temporal settings: {e}"))?.address.unwrap_or_default();
        let url = if address.contains("://") { address.clone() } else { format!("http://{address}") };
        let temporal = Url::parse(&url).map_err(|e| anyhow::anyhow!("TEMPORAL_ADDRESS is not an address: {e}"))?;
        anyhow::ensure!(
            is_loopback(&temporal),
            "`autopost dev` runs only against a Temporal on this machine (TEMPORAL_ADDRESS, or the Temporal profile, says {address}); use `autopost api` and `autopost worker` elsewhere"
        );
        let database = Url::parse(self.postgres.database_url.expose_secret()).map_err(|_| anyhow::anyhow!("DATABASE_URL is not a URL"))?;
        // A URL without a host connects over the local Unix socket.
        let local_socket = database.host().is_none() || database.host_str() == Some("");
        anyhow::ensure!(
            local_socket || is_loopback(&database),
            "`autopost dev` runs only against a Postgres on this machine (DATABASE_URL is {}); use `autopost api` and `autopost worker` elsewhere",
            self.postgres.redacted_url()
        );
        Ok(())
    }

    /// The settings of the API part.
    pub fn api_config(&self) -> ApiConfig {
        ApiConfig {
            postgres: self.postgres.clone(),
            temporal: self.temporal.clone(),
            schedule: self.schedule.clone(),
            platforms: self.platforms.clone(),
            stuck: self.stuck.clone(),
            auth: self.auth.clone(),
            token_keys: self.token_keys.clone(),
            shutdown: self.shutdown.clone(),
            api: self.api.clone(),
        }
    }

    /// The settings of the worker part.
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            postgres: self.postgres.clone(),
            temporal: self.temporal.clone(),
            schedule: self.schedule.clone(),
            platforms: self.platforms.clone(),
            stuck: self.stuck.clone(),
            token_keys: self.token_keys.clone(),
            shutdown: self.shutdown.clone(),
            worker: self.worker.clone(),
        }
    }

    /// Points both platforms at this configuration's sandbox, as `dev` does.
    pub fn use_sandbox_platforms(&mut self) {
        let url = self.sandbox.url();
        self.platforms.use_sandbox(&url);
    }

    /// Every setting as the environment variables that set it: a child process started with
    /// this environment (`autopost api`, `autopost worker`, ...) reads this configuration.
    pub fn to_env(&self) -> Env {
        let mut env = Env::new();
        self.postgres.to_env(&mut env);
        self.temporal.to_env(&mut env);
        self.schedule.to_env(&mut env);
        self.platforms.to_env(&mut env);
        self.stuck.to_env(&mut env);
        self.auth.to_env(&mut env);
        self.token_keys.to_env(&mut env);
        self.shutdown.to_env(&mut env);
        self.api.to_env(&mut env);
        self.worker.to_env(&mut env);
        self.sandbox.to_env(&mut env);
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Config {
        Cli::parse_from(std::iter::once("autopost").chain(args.iter().copied())).config
    }

    #[test]
    fn the_default_retry_schedule_is_exactly_5_15_30_minutes() {
        // Read the declared default, not the parsed value: the environment may override it.
        let declared = Config::augment_args(clap::Command::new("autopost"))
            .get_arguments()
            .find(|a| a.get_id() == "retry_backoff")
            .and_then(|a| a.get_default_values().first().cloned())
            .expect("retry_backoff has a default");
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(parse_backoff(declared.to_str().unwrap()), Ok(Backoff(vec![minutes(5), minutes(15), minutes(30)])));
    }

    #[test]
    fn backoff_lists_are_parsed_and_errors_name_the_bad_part() {
        assert_eq!(parse_backoff("1s, 2s"), Ok(Backoff(vec![Duration::from_secs(1), Duration::from_secs(2)])));
        assert_eq!(parse_backoff(""), Ok(Backoff(vec![])));
        assert!(parse_backoff("1s,soon").unwrap_err().contains("soon"));
        let schedule = Backoff(vec![Duration::from_secs(300), Duration::from_millis(1500)]);
        assert_eq!(parse_backoff(&schedule.to_string()), Ok(schedule), "Display round-trips");
    }

    #[test]
    fn http_media_is_allowed_only_from_the_sandbox_in_use() {
        let mut config = parse(&[
            "--sandbox-listen",
            "0.0.0.0:8090",
            "--instagram-api-base",
            "https://graph.facebook.com/v25.0",
            "--tiktok-api-base",
            "https://open.tiktokapis.com",
        ]);
        assert!(config.platforms.http_media_origins().is_empty());
        config.use_sandbox_platforms();
        assert_eq!(config.platforms.instagram_api_base, "http://127.0.0.1:8090/instagram/v25.0");
        let origins: Vec<String> = config.platforms.http_media_origins().iter().map(|o| o.ascii_serialization()).collect();
        assert_eq!(origins, vec!["http://127.0.0.1:8090".to_owned()]);
    }

    /// `to_env` is how tests and the bench configure child processes: a setting it forgets
    /// would silently fall back to its default there.
    #[test]
    fn to_env_sets_every_variable_and_a_child_reads_the_same_configuration() {
        let config = parse(&[
            "--database-url=postgres://u:pw@db:5433/x",
            "--task-queue=q",
            "--retry-backoff=1s,2m",
            "--publish-now=true",
            "--tiktok-client-key=k",
            "--tiktok-client-secret=s",
            "--tiktok-verified-domains=cdn.example.com,media.example.org",
            "--platform-poll-interval=150ms",
            "--instagram-quota-recheck=90s",
            "--reconcile-grace=3s",
            "--sandbox-listen=127.0.0.1:9999",
            "--jwt-secret=an-hs256-secret-of-at-least-32-characters",
            "--jwks-url=https://auth.example/jwks.json",
            "--jwt-issuer=https://app.example",
            "--jwt-audience=autopost",
            "--token-keys=k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            "--token-refresh-interval=2h",
            "--webhook-url=https://app.example/hooks/autopost",
            "--webhook-secret=a-webhook-secret-of-at-least-32-characters",
            // The Temporal settings are optional (unset: the profile's): set them all.
            "--temporal-address=temporal.example:7233",
            "--temporal-namespace=ns",
            "--temporal-api-key=a-key",
            "--temporal-tls=true",
            "--temporal-tls-client-cert-path=/c.pem",
            "--temporal-tls-client-key-path=/c.key",
            "--temporal-tls-server-ca-cert-path=/ca.pem",
            "--temporal-tls-server-name=temporal.example",
            "--temporal-profile=prod",
            "--temporal-config-file=/dev/null",
            "--dev-sandbox-url=http://127.0.0.1:8090/",
        ]);
        let env = config.to_env();
        let declared: Vec<String> = Config::augment_args(clap::Command::new("autopost"))
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for variable in &declared {
            assert!(env.iter().any(|(name, _)| name == variable), "to_env does not set {variable}");
        }
        // Parsing the environment back gives the same settings.
        let args: Vec<String> = env
            .iter()
            .map(|(name, value)| {
                let flag = Config::augment_args(clap::Command::new("autopost"))
                    .get_arguments()
                    .find(|a| a.get_env().is_some_and(|e| e == *name))
                    .and_then(|a| a.get_long().map(str::to_owned))
                    .unwrap();
                format!("--{flag}={value}")
            })
            .collect();
        let back = parse(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(back.to_env(), env);
    }

    #[test]
    fn tiktok_pulls_from_the_verified_domains_or_by_default_the_sandbox_in_use() {
        let production = parse(&["--tiktok-api-base=https://open.tiktokapis.com", "--instagram-api-base=https://graph.facebook.com/v25.0"]);
        assert!(production.worker.tiktok_pull_domains(&production.platforms).is_empty(), "every video is uploaded");
        let mut dev = parse(&["--sandbox-listen=127.0.0.1:8090"]);
        dev.use_sandbox_platforms();
        assert_eq!(dev.worker.tiktok_pull_domains(&dev.platforms), ["127.0.0.1"]);
        let listed = parse(&["--sandbox-listen=127.0.0.1:8090", "--tiktok-verified-domains= CDN.example.com,.media.example.org,"]);
        assert_eq!(listed.worker.tiktok_pull_domains(&listed.platforms), ["cdn.example.com", "media.example.org"]);
        let mut none_pulled = listed.clone();
        none_pulled.use_sandbox_platforms();
        assert!(!none_pulled.worker.tiktok_pull_domains(&none_pulled.platforms).contains(&"127.0.0.1".to_owned()));
    }

    #[test]
    fn platform_bases_must_be_https_unless_a_sandbox_on_this_machine() {
        assert!(parse(&["--instagram-api-base=https://graph.facebook.com/v25.0"]).platforms.check().is_ok());
        let mut local = parse(&[]);
        local.use_sandbox_platforms();
        assert!(local.platforms.check().is_ok(), "the sandbox on loopback");
        let error = parse(&["--tiktok-api-base=http://open.tiktokapis.com"]).platforms.check().unwrap_err().to_string();
        assert!(error.contains("TIKTOK_API_BASE"), "{error}");
        assert!(parse(&["--instagram-api-base=http://10.0.0.5:8090/instagram/v25.0"]).platforms.check().is_err());
    }

    #[test]
    fn dev_refuses_a_temporal_or_postgres_off_this_machine() {
        assert!(parse(&["--temporal-address=127.0.0.1:7233", "--database-url=postgres://postgres@localhost/x"]).check_local().is_ok());
        assert!(parse(&["--database-url=postgres:///autopost"]).check_local().is_ok(), "the local Unix socket");
        assert!(parse(&["--database-url=postgres://postgres@127.0.0.1:5432/autopost"]).check_local().is_ok());
        assert!(parse(&["--database-url=postgres://postgres@[::1]:5432/autopost"]).check_local().is_ok());
        assert!(parse(&["--database-url=postgres://postgres@10.1.2.3:5432/autopost"]).check_local().is_err());
        let remote_temporal = parse(&["--temporal-address=prod.tmprl.cloud:7233"]).check_local().unwrap_err().to_string();
        assert!(remote_temporal.contains("TEMPORAL_ADDRESS"), "{remote_temporal}");
        let remote_db = parse(&["--temporal-address=127.0.0.1:7233", "--database-url=postgres://app:hunter2@db.internal:5432/autopost"])
            .check_local()
            .unwrap_err()
            .to_string();
        assert!(remote_db.contains("DATABASE_URL") && !remote_db.contains("hunter2"), "{remote_db}");
    }

    #[test]
    fn the_database_password_is_redacted_for_reports() {
        let config = parse(&["--database-url=postgres://app:hunter2@db:5432/autopost"]);
        assert_eq!(config.postgres.redacted_url(), "postgres://app:***@db:5432/autopost");
        assert!(!format!("{:?}", config.postgres).contains("hunter2"));
    }

    #[test]
    fn token_keys_say_how_to_set_them_and_never_show_the_key() {
        let missing = TokenKeySettings { token_keys: None }.keys().unwrap_err().to_string();
        assert!(missing.contains("AUTOPOST_TOKEN_KEYS is not set") && missing.contains("openssl rand"), "{missing}");
        let short = TokenKeySettings { token_keys: Some(SecretString::from("k1:c2hvcnQta2V5")) };
        let error = short.keys().unwrap_err().to_string();
        assert!(error.contains("`k1`") && error.contains("32 bytes") && !error.contains("c2hvcnQta2V5"), "{error}");
        assert!(!format!("{short:?}").contains("c2hvcnQta2V5"));
    }
}
