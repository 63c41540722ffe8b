//! `autopost`: one binary, one subcommand per process kind.

use anyhow::Context;
use autopost::{Config, config::LogFormat};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(version, about = "Schedules and publishes Instagram and TikTok posts through Temporal")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate, then run the API, a worker and the platform sandbox in one process.
    Dev,
    /// Serve the REST API.
    Api,
    /// Run a worker: workflows and activities.
    Worker,
    /// Serve the platform sandbox (Instagram and TikTok emulator with media hosting).
    Sandbox {
        /// No processing delays and no practical Instagram quota, for `autopost bench`.
        #[arg(long, env = "AUTOPOST_SANDBOX_INSTANT")]
        instant: bool,
    },
    /// Create the database if needed and apply migrations.
    Migrate,
    /// Measure job creation and a publish burst against a workflow baseline (see docs/benchmark.md).
    Bench(autopost::bench::BenchArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command, mut config } = Cli::parse();
    if matches!(command, Command::Dev) && std::env::var_os("AUTOPOST_LOG_FORMAT").is_none() {
        // `dev` is for people at a terminal, unless they asked for JSON.
        config.log_format = LogFormat::Pretty;
    }
    autopost::telemetry::init(config.log_format);
    match command {
        Command::Migrate => {
            autopost::migrate(&config).await?;
            tracing::info!("migrations applied");
        }
        Command::Api => {
            let db = autopost::connect_db(&config).await?;
            let listener = bind(config.listen).await?;
            autopost::run_api(&config, db, listener, ctrl_c()).await?;
        }
        Command::Worker => {
            let db = autopost::connect_db(&config).await?;
            autopost::run_worker(&config, db, ctrl_c()).await?;
        }
        Command::Sandbox { instant } => {
            let options = if instant {
                autopost_sandbox::SandboxOptions { instagram_quota_total: 1_000_000, ..autopost_sandbox::SandboxOptions::instant() }
            } else {
                autopost_sandbox::SandboxOptions::default()
            };
            autopost::run_sandbox_with(bind(config.sandbox_listen).await?, options, ctrl_c()).await?;
        }
        Command::Bench(args) => autopost::bench::run(&config, args).await?,
        Command::Dev => {
            config.use_sandbox_platforms();
            // The sandbox accepts any app credentials; real ones come from the environment.
            config.tiktok_client_key.get_or_insert_with(|| "sandbox-client-key".into());
            config.tiktok_client_secret.get_or_insert_with(|| "sandbox-client-secret".into());
            let db = autopost::migrate(&config).await?;
            let sandbox = bind(config.sandbox_listen).await?;
            let api = bind(config.listen).await?;
            tokio::spawn(autopost::run_sandbox(sandbox, ctrl_c()));
            let api_config = config.clone();
            let api_db = db.clone();
            tokio::spawn(async move {
                if let Err(e) = autopost::run_api(&api_config, api_db, api, ctrl_c()).await {
                    tracing::error!(error = %format!("{e:#}"), "API stopped");
                }
            });
            println!("autopost dev: API http://{}  sandbox {}  (Ctrl-C stops)", config.listen, config.sandbox_url());
            autopost::run_worker(&config, db, ctrl_c()).await?;
        }
    }
    Ok(())
}

async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.with_context(|| format!("listening on {address}"))
}

async fn ctrl_c() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
