//! All configuration in one typed struct: flags, each with an environment variable fallback.

use std::{net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};
use secrecy::SecretString;

#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Postgres; the database is created if missing.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/autopost", global = true, hide_env_values = true)]
    pub database_url: SecretString,

    /// Temporal frontend (host:port).
    #[arg(long, env = "TEMPORAL_ADDRESS", default_value = "127.0.0.1:7233", global = true)]
    pub temporal_address: String,

    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default", global = true)]
    pub temporal_namespace: String,

    /// Task queue the API starts workflows on and the worker polls.
    #[arg(long, env = "AUTOPOST_TASK_QUEUE", default_value = "autopost-publish", global = true)]
    pub task_queue: String,

    /// Where the REST API listens.
    #[arg(long, env = "AUTOPOST_LISTEN", default_value = "127.0.0.1:8080", global = true)]
    pub listen: SocketAddr,

    /// Where the platform sandbox listens (`sandbox` and `dev`).
    #[arg(long, env = "AUTOPOST_SANDBOX_LISTEN", default_value = "127.0.0.1:8090", global = true)]
    pub sandbox_listen: SocketAddr,

    /// Instagram Graph API base, version included. `dev` points it at its sandbox.
    #[arg(long, env = "INSTAGRAM_API_BASE", default_value = "https://graph.facebook.com/v25.0", global = true)]
    pub instagram_api_base: String,

    /// TikTok API base. `dev` points it at its sandbox.
    #[arg(long, env = "TIKTOK_API_BASE", default_value = "https://open.tiktokapis.com", global = true)]
    pub tiktok_api_base: String,

    /// TikTok app key, used with the secret to refresh creators' expired TikTok tokens.
    #[arg(long, env = "TIKTOK_CLIENT_KEY", global = true)]
    pub tiktok_client_key: Option<String>,

    #[arg(long, env = "TIKTOK_CLIENT_SECRET", global = true, hide_env_values = true)]
    pub tiktok_client_secret: Option<SecretString>,

    /// Waits before the retries of a failed publish, comma-separated; one retry per entry.
    #[arg(long, env = "AUTOPOST_RETRY_BACKOFF", default_value = "5m,15m,30m", value_parser = parse_backoff, global = true)]
    pub retry_backoff: Backoff,

    /// Between two status reads of a post the platform is still processing.
    #[arg(long, env = "AUTOPOST_PLATFORM_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration, global = true)]
    pub platform_poll_interval: Duration,

    /// How long one attempt waits for the platform to finish processing.
    #[arg(long, env = "AUTOPOST_PLATFORM_PROCESSING_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration, global = true)]
    pub platform_processing_timeout: Duration,

    /// Timeout of each HTTP request to a platform or media host.
    #[arg(long, env = "AUTOPOST_PLATFORM_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub platform_request_timeout: Duration,

    /// Turns on `POST /v1/publish-jobs/{id}/publish-now`.
    #[arg(long, env = "AUTOPOST_PUBLISH_NOW", default_value_t = false, action = clap::ArgAction::Set, global = true)]
    pub publish_now: bool,

    /// How long publish-now waits for the attempt's outcome before answering `publishing`.
    #[arg(long, env = "AUTOPOST_PUBLISH_NOW_WAIT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub publish_now_wait: Duration,

    /// Where the worker serves `GET /metrics` (Prometheus), its own and the Temporal SDK's.
    #[arg(long, env = "AUTOPOST_WORKER_METRICS_LISTEN", default_value = "127.0.0.1:9464", global = true)]
    pub worker_metrics_listen: SocketAddr,

    /// How often the worker compares Postgres with Temporal to find lost workflows.
    #[arg(long, env = "AUTOPOST_RECONCILE_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub reconcile_interval: Duration,

    /// Jobs younger than this are not reconciled: the API may still be starting their workflow.
    #[arg(long, env = "AUTOPOST_RECONCILE_GRACE", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub reconcile_grace: Duration,

    /// Log output: `json` for machines, `pretty` for people. Levels come from `RUST_LOG`.
    #[arg(long, env = "AUTOPOST_LOG_FORMAT", default_value = "json", global = true)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
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

impl Config {
    pub fn temporal_url(&self) -> String {
        if self.temporal_address.contains("://") {
            self.temporal_address.clone()
        } else {
            format!("http://{}", self.temporal_address)
        }
    }

    /// The base URL clients use to reach the sandbox (a wildcard listen address becomes loopback).
    pub fn sandbox_url(&self) -> String {
        let mut addr = self.sandbox_listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}")
    }

    pub fn tiktok_app(&self) -> Option<autopost_activities::platforms::tiktok::AppCredentials> {
        Some(autopost_activities::platforms::tiktok::AppCredentials {
            client_key: self.tiktok_client_key.clone()?,
            client_secret: self.tiktok_client_secret.clone()?,
        })
    }

    /// Points both platforms at the sandbox, as `dev` does.
    pub fn use_sandbox_platforms(&mut self) {
        self.instagram_api_base = format!("{}/instagram/v25.0", self.sandbox_url());
        self.tiktok_api_base = format!("{}/tiktok", self.sandbox_url());
    }

    /// Plain-http media is accepted only from the sandbox, and only while we talk to it.
    pub fn http_media_hosts(&self) -> Vec<String> {
        let sandbox = self.sandbox_url();
        let uses_sandbox = [&self.instagram_api_base, &self.tiktok_api_base].iter().any(|base| base.starts_with(&sandbox));
        if uses_sandbox {
            vec![sandbox.trim_start_matches("http://").to_owned()]
        } else {
            Vec::new()
        }
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
    }

    #[test]
    fn http_media_is_allowed_only_from_the_sandbox_in_use() {
        let mut config = Cli::parse_from(["autopost", "--sandbox-listen", "0.0.0.0:8090", "--instagram-api-base", "https://graph.facebook.com/v25.0", "--tiktok-api-base", "https://open.tiktokapis.com"]).config;
        assert!(config.http_media_hosts().is_empty());
        config.use_sandbox_platforms();
        assert_eq!(config.instagram_api_base, "http://127.0.0.1:8090/instagram/v25.0");
        assert_eq!(config.http_media_hosts(), vec!["127.0.0.1:8090".to_owned()]);
    }
}
