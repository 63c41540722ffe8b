//! `autopost bench`: what happens when thousands of posts fall due in the same second.
//!
//! The bench starts its own system from the `autopost` binary, as separate processes (so each has
//! its own /proc peak memory): an instant sandbox, the API and a worker that also runs the
//! baseline workflow, on free loopback ports, with a fresh database and a fresh task queue on the
//! given Temporal server ([`system`]). Then it runs its [`scenarios`] and prints a [`report`].
//!
//! None of this is part of the product: production workers never register the baseline, and the
//! sandbox's instant mode is only reachable from here.

mod baseline;
pub mod chaos;
mod floor;
mod report;
mod scenarios;
mod sleeping;
mod system;

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use autopost_app::{
    WorkerConfig,
    config::{PostgresSettings, SandboxSettings, TemporalSettings},
};
use clap::{Args, ValueEnum};
use serde::Serialize;

pub use baseline::{BenchActivities, BenchBaselineWorkflow};

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Jobs (and baseline workflows) per scenario.
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Concurrent REST clients creating jobs (also concurrent baseline starts).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// The platform the posts go to; `mixed` alternates between both.
    #[arg(long, value_enum, default_value = "tiktok")]
    pub channel: BenchChannel,
    /// Slack between the expected end of a scenario's creates and the instant its jobs are due.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub margin: Duration,
    /// Longest wait for a scenario's jobs to finish after their instant.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the database and the processes' logs afterwards, for investigation.
    #[arg(long)]
    pub keep: bool,
    /// Instead of the other scenarios: create this many jobs due in a day and report the
    /// worker's memory with them asleep, and how soon each job's readiness was known.
    #[arg(long, value_name = "N")]
    pub sleeping: Option<usize>,
    /// How long before its instant a job arms (`AUTOPOST_ARM_LEAD`). Shorter than production's
    /// 2 minutes so the burst, created seconds before its instant, sleeps first and then arms
    /// spread out, as jobs created long before do.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub arm_lead: Duration,
    /// The window the burst's arming is spread over (`AUTOPOST_ARM_SPREAD`).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub arm_spread: Duration,
    /// Creators (one account each) the jobs are spread over; default N/10.
    #[arg(long)]
    pub creators: Option<usize>,
    /// With `--sleeping`: send at most this many creates per second, across all clients (issue
    /// 12's readiness target is stated at 100 per second). Without it they go as fast as the
    /// clients can.
    #[arg(long, value_name = "PER_SECOND", value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// With `--sleeping`: how long to keep watching the worker's memory once every readiness
    /// is known.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
}

/// Where the benchmark's posts go. TikTok by default: the sandbox's `received_at` of a TikTok
/// post is the moment it accepted the publish request, the closest thing to "the platform has
/// it"; an Instagram post is received at `media_publish`, after the container round trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchChannel {
    Tiktok,
    Instagram,
    Mixed,
}

/// The caption prefix of burst posts: tells them apart from the warm-up post in the sandbox.
pub(crate) const BURST_CAPTION: &str = "bench burst";
/// How often the bench looks at Postgres while waiting for a burst.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);

/// Runs the bench against the Temporal server and PostgreSQL server given (it makes a database
/// of its own there, and drops it at the end).
pub async fn run(postgres: &PostgresSettings, temporal: &TemporalSettings, args: BenchArgs) -> anyhow::Result<()> {
    scenarios::run(postgres, temporal, args).await
}

/// The worker the bench starts: a production worker plus the baseline workflow and its activity.
pub async fn run_worker(config: &WorkerConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let db = autopost_app::connect_db(&config.postgres).await?;
    autopost_app::run_worker_with(config, db, shutdown, |options| {
        options.register_workflow::<BenchBaselineWorkflow>()?.register_activities(BenchActivities);
        Ok(())
    })
    .await
}

/// The sandbox the bench starts: no processing delays and no practical Instagram quota, so the
/// figures measure Autopost and Temporal, not the emulator's pretend processing.
pub async fn run_sandbox(settings: &SandboxSettings, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.sandbox_listen)
        .await
        .with_context(|| format!("listening on {}", settings.sandbox_listen))?;
    let options = autopost_sandbox::SandboxOptions { instagram_quota_total: 1_000_000, ..autopost_sandbox::SandboxOptions::instant() };
    autopost_app::run_sandbox_with(listener, options, shutdown).await
}

/// `autopost <subcommand>` (this very binary) configured by `config`, logging JSON to `log`
/// (appended to), killed when its handle is dropped. The bench and the fault suite start every
/// process of their systems with it.
fn autopost_command(subcommand: &str, config: &autopost_app::Config, log: &std::path::Path) -> anyhow::Result<tokio::process::Command> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
    let mut command = tokio::process::Command::new(std::env::current_exe().context("locating the autopost binary")?);
    command
        .arg(subcommand)
        .envs(config.to_env())
        .env("AUTOPOST_LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    Ok(command)
}

fn progress(message: impl std::fmt::Display) {
    eprintln!("[bench] {message}");
}

/// What a bench or chaos stack needs to authenticate like the web app: a JWT secret of its own
/// (unless one is configured), no per-creator write quota (one creator makes every job), and its
/// API metrics on a free port (several stacks, or a `dev` stack, may run at once).
fn prepare_api(config: &mut autopost_app::Config) {
    if config.auth.jwt_secret.is_none() && config.auth.jwks_url.is_none() {
        config.auth.jwt_secret = Some(autopost_app::dev_state::random_secret().into());
    }
    config.api.creator_writes_per_minute = 0;
    config.api.metrics_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
}

/// An HTTP client that acts for `creator` on the stack's API.
fn creator_client(config: &autopost_app::Config, creator: &str, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let token = autopost_api::auth::issue_token(&config.auth.verifier(), creator, Duration::from_secs(24 * 3600))?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    Ok(reqwest::Client::builder().default_headers(headers).timeout(timeout).build()?)
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("`{value}` is not a positive number of creates per second")),
    }
}
