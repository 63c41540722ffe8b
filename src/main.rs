//! `autopost`: one binary, one subcommand per process kind. The logic is in `autopost-app`.

use anyhow::Context;
use autopost_app::{
    ApiConfig, Config, WorkerConfig,
    config::{AuthSettings, LogFormat, PostgresSettings, SandboxSettings, TemporalSettings, TokenKeySettings},
};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(version, about = "Schedules and publishes Instagram and TikTok posts through Temporal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log output: `json` for machines, `pretty` for people (`dev`'s default). Levels come from `RUST_LOG`.
    #[arg(long, env = "AUTOPOST_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate, then run the API, a worker and the platform sandbox in one process.
    Dev {
        #[command(flatten)]
        config: Box<Config>,
        /// Where `dev` keeps the secrets it generates (JWT secret, token key), so tokens and
        /// stored accounts survive a restart.
        #[arg(long, env = "AUTOPOST_DEV_STATE", default_value = ".autopost-dev")]
        state_dir: std::path::PathBuf,
    },
    /// Serve the REST API.
    Api(ApiConfig),
    /// Run a worker: workflows and activities.
    Worker(WorkerConfig),
    /// Serve the platform sandbox (Instagram and TikTok emulator with media hosting).
    Sandbox(SandboxSettings),
    /// Create the database if needed and apply migrations (encrypting any plain-text tokens an
    /// earlier version stored).
    Migrate {
        #[command(flatten)]
        postgres: PostgresSettings,
        #[command(flatten)]
        token_keys: TokenKeySettings,
    },
    /// Re-encrypt every stored platform token under the first key of AUTOPOST_TOKEN_KEYS.
    RotateTokenKey {
        #[command(flatten)]
        postgres: PostgresSettings,
        #[command(flatten)]
        token_keys: TokenKeySettings,
    },
    /// Replay workflow histories against this build's workflows: files (Temporal CLI or Web UI
    /// JSON, SDK JSON, binary protobuf) or a workflow fetched from the server.
    Replay {
        /// History files; the format is detected.
        files: Vec<std::path::PathBuf>,
        /// Fetch this workflow's latest run from Temporal (TEMPORAL_* settings) and replay it.
        #[arg(long)]
        workflow_id: Option<String>,
        /// With --workflow-id: this run instead of the latest.
        #[arg(long, requires = "workflow_id")]
        run_id: Option<String>,
        /// Replay every workflow this visibility query returns, e.g.
        /// "PublishStatus = 'published' AND StartTime > '2026-11-01T00:00:00Z'".
        #[arg(long)]
        query: Option<String>,
        /// With --query: at most this many workflows.
        #[arg(long)]
        limit: Option<usize>,
        /// With --query: histories fetched at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Keep fetched histories in this folder, as files `replay FILE` reads.
        #[arg(long)]
        save: Option<std::path::PathBuf>,
        /// One JSON object per workflow, for CI.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        temporal: TemporalSettings,
    },
    /// Print a bearer token for a creator, signed with AUTOPOST_JWT_SECRET (development and scripts).
    Token {
        /// The creator the token acts for (its `sub`).
        #[arg(long)]
        creator: String,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        #[command(flatten)]
        auth: AuthSettings,
    },
    /// Measure job creation and a publish burst against a workflow baseline (see docs/benchmark.md).
    Bench {
        #[command(flatten)]
        postgres: PostgresSettings,
        #[command(flatten)]
        temporal: TemporalSettings,
        #[command(flatten)]
        args: autopost_bench::BenchArgs,
    },
    /// Randomized fault runs against a stack of its own, checked against the sandbox's posts.
    Chaos(autopost_bench::chaos::ChaosArgs),
    /// The worker `autopost bench` starts: a worker that also runs the bench's baseline.
    #[command(hide = true)]
    BenchWorker(WorkerConfig),
    /// The sandbox `autopost bench` starts: no processing delays, no practical quota.
    #[command(hide = true)]
    BenchSandbox(SandboxSettings),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, log_format } = Cli::parse();
    // `dev` is for people at a terminal, unless they asked for JSON.
    let default_format = if matches!(command, Command::Dev { .. }) { LogFormat::Pretty } else { LogFormat::Json };
    // `replay` and `token` print their answer on stdout, undisturbed by logs.
    if !matches!(command, Command::Replay { .. } | Command::Token { .. }) {
        autopost_app::telemetry::init(log_format.unwrap_or(default_format), service_name(&command));
    }
    let result = run(command).await;
    autopost_app::telemetry::shutdown();
    result
}

/// How traces name this process, unless `OTEL_SERVICE_NAME` does.
fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Api(_) => "autopost-api",
        Command::Worker(_) => "autopost-worker",
        Command::Dev { .. } => "autopost-dev",
        _ => "autopost",
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate { postgres, token_keys } => {
            autopost_app::migrate(&postgres, &token_keys).await?;
            tracing::info!("migrations applied");
        }
        Command::RotateTokenKey { postgres, token_keys } => {
            let report = autopost_app::rotate_token_key(&postgres, &token_keys).await?;
            println!("re-encrypted {} account(s) under the current key", report.reencrypted);
            if report.changed_meanwhile > 0 {
                println!(
                    "{} account(s) got new tokens meanwhile and were left as written; run again to cover them",
                    report.changed_meanwhile
                );
            }
        }
        Command::Api(config) => {
            let db = autopost_app::connect_db(&config.postgres).await?;
            let listener = bind(config.api.listen).await?;
            autopost_app::run_api(&config, db, listener, shutdown_signal()).await?;
        }
        Command::Worker(config) => {
            let db = autopost_app::connect_db(&config.postgres).await?;
            autopost_app::run_worker(&config, db, shutdown_signal()).await?;
        }
        Command::Sandbox(settings) => {
            autopost_app::run_sandbox(bind(settings.sandbox_listen).await?, shutdown_signal()).await?;
        }
        Command::Bench { postgres, temporal, args } => autopost_bench::run(&postgres, &temporal, args).await?,
        Command::Chaos(args) => autopost_bench::chaos::run(args).await?,
        Command::BenchWorker(config) => autopost_bench::run_worker(&config, shutdown_signal()).await?,
        Command::BenchSandbox(settings) => autopost_bench::run_sandbox(&settings, shutdown_signal()).await?,
        Command::Dev { config, state_dir } => dev(*config, &state_dir).await?,
        Command::Replay { files, workflow_id, run_id, query, limit, concurrency, save, json, temporal } => {
            let fetch = ReplayFetch { workflow_id, run_id, query, limit, concurrency, save };
            replay(files, fetch, json, &temporal).await?
        }
        Command::Token { creator, ttl, auth } => {
            anyhow::ensure!(
                auth.jwt_secret.is_some(),
                "AUTOPOST_JWT_SECRET is not set; `autopost dev` keeps its generated one in .autopost-dev/jwt-secret:\n  \
                 AUTOPOST_JWT_SECRET=$(cat .autopost-dev/jwt-secret) autopost token --creator {creator}"
            );
            println!("{}", autopost_api::auth::issue_token(&auth.verifier(), &creator, ttl)?);
        }
    }
    Ok(())
}

/// Everything in one process, with the platforms pointed at the built-in sandbox.
async fn dev(mut config: Config, state_dir: &std::path::Path) -> anyhow::Result<()> {
    config.check_local()?;
    config.use_sandbox_platforms();
    // Its own task queue: a development worker never takes another stack's jobs.
    if config.temporal.task_queue == autopost_app::config::PRODUCTION_TASK_QUEUE {
        config.temporal.task_queue = "autopost-dev".into();
    }
    // The sandbox accepts any app credentials; real ones come from the environment.
    config.worker.tiktok_client_key.get_or_insert_with(|| "sandbox-client-key".into());
    config.worker.tiktok_client_secret.get_or_insert_with(|| "sandbox-client-secret".into());
    let state = autopost_app::dev_state::DevState::open(state_dir)?;
    if config.auth.jwt_secret.is_none() && config.auth.jwks_url.is_none() {
        config.auth.jwt_secret = Some(state.secret("jwt-secret", autopost_app::dev_state::random_secret)?);
    }
    if config.token_keys.token_keys.is_none() {
        config.token_keys.token_keys = Some(state.secret("token-keys", autopost_activities::vault::TokenKeys::generate_spec)?);
    }
    // The calendar page offers tokens from this sandbox when linking an account.
    if config.api.dev_sandbox_url.is_none() {
        config.api.dev_sandbox_url = Some(config.sandbox.url().parse()?);
    }
    let db = autopost_app::migrate(&config.postgres, &config.token_keys).await?;
    let sandbox = bind(config.sandbox.sandbox_listen).await?;
    let api = bind(config.api.listen).await?;
    tokio::spawn(autopost_app::run_sandbox(sandbox, shutdown_signal()));
    let api_config = config.api_config();
    let api_db = db.clone();
    tokio::spawn(async move {
        if let Err(e) = autopost_app::run_api(&api_config, api_db, api, shutdown_signal()).await {
            tracing::error!(error = %format!("{e:#}"), "API stopped");
        }
    });
    println!("autopost dev: API http://{}  sandbox {}  (Ctrl-C stops)", config.api.listen, config.sandbox.url());
    println!("secrets kept in {}", state.path().display());
    if config.auth.jwt_secret.is_some() {
        let token = autopost_api::auth::issue_token(&config.auth.verifier(), DEMO_CREATOR, std::time::Duration::from_secs(24 * 3600))?;
        println!("a token for the demo creator `{DEMO_CREATOR}` (24 h):\n  export TOKEN={token}");
        // In the fragment, which the browser never sends: the page moves it to sessionStorage.
        println!("the calendar, signed in as `{DEMO_CREATOR}`:\n  http://{}/#token={token}", config.api.listen);
    }
    autopost_app::run_worker(&config.worker_config(), db, shutdown_signal()).await
}

/// What `replay` fetches from the server.
struct ReplayFetch {
    workflow_id: Option<String>,
    run_id: Option<String>,
    query: Option<String>,
    limit: Option<usize>,
    concurrency: usize,
    save: Option<std::path::PathBuf>,
}

/// Replays and prints one line per workflow and a summary; any failure is a non-zero exit.
async fn replay(files: Vec<std::path::PathBuf>, fetch: ReplayFetch, json: bool, temporal: &TemporalSettings) -> anyhow::Result<()> {
    use autopost_app::replay::{self, Verdict};
    anyhow::ensure!(
        !files.is_empty() || fetch.workflow_id.is_some() || fetch.query.is_some(),
        "name history files, --workflow-id or --query"
    );
    let (mut histories, mut outcomes) = replay::read_files(&files);
    if fetch.workflow_id.is_some() || fetch.query.is_some() {
        let client = autopost_app::connect_temporal(temporal).await?;
        let mut fetched = Vec::new();
        if let Some(id) = &fetch.workflow_id {
            let history = replay::fetch(&client, id, fetch.run_id.as_deref()).await?;
            fetched.push(replay::Input { source: format!("workflow {id}"), format: None, history });
        }
        if let Some(query) = &fetch.query {
            let (inputs, failures) = replay::fetch_query(&client, query, fetch.limit, fetch.concurrency).await?;
            fetched.extend(inputs);
            outcomes.extend(failures);
        }
        if let Some(dir) = &fetch.save {
            for input in &fetched {
                let id = input.source.trim_start_matches("workflow ");
                eprintln!("saved {}", replay::save(dir, id, &input.history)?.display());
            }
        }
        histories.extend(fetched);
    }
    outcomes.extend(replay::replay(histories).await?);
    for outcome in &outcomes {
        if json {
            println!("{}", serde_json::to_string(outcome)?);
        } else {
            println!("{outcome}");
        }
    }
    let failed = outcomes.iter().filter(|o| o.result != Verdict::Ok).count();
    eprintln!("{} replayed: {} ok, {failed} failed", outcomes.len(), outcomes.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// The creator `autopost dev` prints a token for.
const DEMO_CREATOR: &str = "demo-creator";

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))
}

/// Ctrl-C or SIGTERM (what an orchestrator sends).
async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
