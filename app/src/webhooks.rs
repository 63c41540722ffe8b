//! Outbound webhooks: every job transition, POSTed to `AUTOPOST_WEBHOOK_URL` as signed JSON,
//! at least once and in order.
//!
//! The outbox is `job_events`, which a trigger fills in the transaction of each transition, so
//! nothing is written twice and a crash loses nothing. One worker at a time delivers: the one
//! holding a Postgres advisory lock on a connection of its own; when it dies Postgres drops the
//! lock, and another worker takes over within a second. The deliverer reads events in the SSE
//! stream's order (api `events.rs`): (txid, id), below `pg_snapshot_xmin`, so an event that
//! commits late is never passed over. It sends one event at a time and moves the cursor
//! (`webhook_cursor`) only after a 2xx, retrying the same event with doubling waits until then:
//! per job, versions arrive in order; after a crash the last unacknowledged event comes again.
//!
//! Every cursor read and write goes through the lock's connection: a worker whose connection
//! (and so lock) is gone cannot move the cursor, and it checks the connection before each send.

use std::{convert::Infallible, time::Duration};

use anyhow::Context;
use autopost_api::events::{JobEvent, job_event};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::Sha256;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::time::Instant;
use url::Url;

use crate::config::{WorkerOnlySettings, is_loopback};

/// The advisory lock key of the delivering worker ("autohook" in ASCII).
const WEBHOOK_LOCK: i64 = 0x6175_746f_686f_6f6b;
/// How often a worker that does not deliver tries to take over.
const STANDBY_RETRY: Duration = Duration::from_secs(1);
/// How often the deliverer looks for new events when it has none.
const POLL: Duration = Duration::from_millis(500);
/// Events read at once.
const BATCH: i64 = 100;
/// The first wait before a delivery is tried again; it doubles up to the setting's cap.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle deliverer marks the cursor alive (the retention keeps what it has not
/// delivered while it is).
const ALIVE_EVERY: Duration = Duration::from_secs(60);
/// The shortest secret accepted.
const MIN_SECRET_CHARS: usize = 32;

/// What the deliverer needs; built from the worker's settings.
#[derive(Clone)]
pub struct WebhookSettings {
    pub url: Url,
    pub secret: SecretString,
    pub max_backoff: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's path or query may be a credential of its own (many receivers put one there).
        f.debug_struct("WebhookSettings")
            .field("host", &host(&self.url))
            .field("max_backoff", &self.max_backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookSettings {
    /// `None` without `AUTOPOST_WEBHOOK_URL`; an error that says what to fix for a URL without
    /// a (long enough) secret, or a plain-http URL off this machine.
    pub fn from_worker(settings: &WorkerOnlySettings) -> anyhow::Result<Option<Self>> {
        let Some(raw) = &settings.webhook_url else {
            if settings.webhook_secret.is_some() {
                tracing::info!("AUTOPOST_WEBHOOK_SECRET is set without AUTOPOST_WEBHOOK_URL: webhooks are off");
            }
            return Ok(None);
        };
        let Some(secret) = &settings.webhook_secret else {
            anyhow::bail!(
                "AUTOPOST_WEBHOOK_URL is set without AUTOPOST_WEBHOOK_SECRET: every delivery is signed with it; \
                 generate one with `openssl rand -hex 32` and give the receiver the same"
            );
        };
        // The parser's message could quote the URL.
        let url = Url::parse(raw.expose_secret()).map_err(|_| anyhow::anyhow!("AUTOPOST_WEBHOOK_URL is not a URL"))?;
        anyhow::ensure!(
            secret.expose_secret().chars().count() >= MIN_SECRET_CHARS,
            "AUTOPOST_WEBHOOK_SECRET must be at least {MIN_SECRET_CHARS} characters (`openssl rand -hex 32` makes one)"
        );
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            _ => anyhow::bail!(
                "AUTOPOST_WEBHOOK_URL must be an https URL (plain http only to a loopback address); its host is {}",
                host(&url)
            ),
        }
        anyhow::ensure!(!settings.webhook_max_backoff.is_zero(), "AUTOPOST_WEBHOOK_MAX_BACKOFF must be above zero");
        anyhow::ensure!(!settings.webhook_timeout.is_zero(), "AUTOPOST_WEBHOOK_TIMEOUT must be above zero");
        Ok(Some(WebhookSettings {
            url,
            secret: secret.clone(),
            max_backoff: settings.webhook_max_backoff,
            timeout: settings.webhook_timeout,
        }))
    }
}

/// The URL's host (and port), the only part of it that is logged.
fn host(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => "(none)".to_owned(),
    }
}

/// `Autopost-Signature`'s `v1`: hex HMAC-SHA256 under the secret of `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The wait after `failures` failed attempts of one delivery: 1 s, doubling, at most `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1))).min(cap)
}

/// A delivery's JSON body.
#[derive(Serialize)]
struct Body<'a> {
    /// The event id, as the SSE `id:`.
    id: i64,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: DateTime<Utc>,
    /// What the SSE `data:` carries.
    data: &'a JobEvent,
}

/// Where the deliverer is: every event up to (`txid`, `id`) in the stream's order, and those
/// in `ahead` after it, were acknowledged.
#[derive(Clone, Debug)]
struct Cursor {
    txid: i64,
    id: i64,
    ahead: Vec<i64>,
}

struct Row {
    id: i64,
    txid: i64,
    job_id: uuid::Uuid,
    version: i64,
    job: serde_json::Value,
    created_at: DateTime<Utc>,
}

/// Delivers for as long as the process runs: stands by while another worker delivers, takes
/// over when it stops.
pub async fn run(db: PgPool, settings: WebhookSettings) {
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .user_agent(concat!("autopost/", env!("CARGO_PKG_VERSION")))
        // A signed body goes to the configured receiver, never where a redirect points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "webhooks are off: the HTTP client cannot be built");
            return;
        }
    };
    tracing::info!(host = %host(&settings.url), "webhooks on");
    metrics::gauge!("autopost_webhook_delivering").set(0.0);
    let mut lock: Option<PgConnection> = None;
    let mut unreachable_logged = false;
    loop {
        let led = async {
            if lock.is_none() {
                // Not from the pool: the lock lives as long as this connection.
                lock = Some(PgConnection::connect_with(&db.connect_options()).await?);
            }
            let conn = lock.as_mut().expect("connected above");
            let locked = sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock($1) AS "locked!""#, WEBHOOK_LOCK).fetch_one(&mut *conn).await?;
            if !locked {
                return Ok::<(), anyhow::Error>(());
            }
            deliver(conn, &http, &settings).await.map(|never| match never {})
        }
        .await;
        if let Err(e) = led {
            metrics::gauge!("autopost_webhook_delivering").set(0.0);
            // Dropping the connection drops the lock with it, if the lock was still held.
            lock = None;
            if !unreachable_logged {
                tracing::warn!(error = %format!("{e:#}"), "webhook deliveries stopped on this worker; trying again");
            }
            unreachable_logged = true;
        } else {
            unreachable_logged = false;
        }
        tokio::time::sleep(STANDBY_RETRY).await;
    }
}

/// Delivers while this worker holds the lock on `conn`; returns only on a database error.
///
/// The stream's (txid, id) order can put a job's later event first: a transaction that took its
/// transaction id before another's, then waited for that one's row lock on the job. Events of one job are
/// in id order (the trigger takes the id under the row lock), and a job's event is only visible
/// once its earlier ones are. So before an event, its job's earlier undelivered ones are sent,
/// and remembered in `ahead` until the stream reaches them.
async fn deliver(conn: &mut PgConnection, http: &reqwest::Client, settings: &WebhookSettings) -> anyhow::Result<Infallible> {
    // The first deliverer starts at the horizon: every transition that commits from now on.
    let start = sqlx::query!(
        r#"INSERT INTO webhook_cursor (txid, event_id) VALUES (pg_snapshot_xmin(pg_current_snapshot()), 0)
           ON CONFLICT (singleton) DO UPDATE SET alive_at = now()
           RETURNING txid::text::bigint AS "txid!", event_id, ahead"#
    )
    .fetch_one(&mut *conn)
    .await
    .context("placing the webhook cursor")?;
    let mut cursor = Cursor { txid: start.txid, id: start.event_id, ahead: start.ahead };
    tracing::info!(host = %host(&settings.url), after_event = cursor.id, "this worker delivers the webhooks");
    metrics::gauge!("autopost_webhook_delivering").set(1.0);
    let mut alive = Instant::now();
    loop {
        let rows = sqlx::query_as!(
            Row,
            r#"SELECT id, txid::text::bigint AS "txid!", job_id, version, job, created_at FROM job_events
               WHERE (txid, id) > ($1::bigint::text::xid8, $2)
                 AND txid < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY txid, id
               LIMIT $3"#,
            cursor.txid,
            cursor.id,
            BATCH
        )
        .fetch_all(&mut *conn)
        .await
        .context("reading job events")?;
        if rows.is_empty() {
            metrics::gauge!("autopost_webhook_lag_seconds").set(0.0);
            if alive.elapsed() >= ALIVE_EVERY {
                sqlx::query!("UPDATE webhook_cursor SET alive_at = now()").execute(&mut *conn).await?;
                alive = Instant::now();
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        for row in rows {
            if !cursor.ahead.contains(&row.id) {
                let earlier = sqlx::query_as!(
                    Row,
                    r#"SELECT id, txid::text::bigint AS "txid!", job_id, version, job, created_at FROM job_events
                       WHERE job_id = $1 AND id < $2 AND (txid, id) > ($3::bigint::text::xid8, $4) AND id <> ALL($5)
                       ORDER BY id"#,
                    row.job_id,
                    row.id,
                    cursor.txid,
                    cursor.id,
                    &cursor.ahead
                )
                .fetch_all(&mut *conn)
                .await
                .context("reading a job's earlier events")?;
                for early in earlier {
                    deliver_one(conn, http, settings, &early).await?;
                    cursor.ahead.push(early.id);
                    save(conn, &cursor).await?;
                }
                deliver_one(conn, http, settings, &row).await?;
            }
            cursor.ahead.retain(|id| *id != row.id);
            (cursor.txid, cursor.id) = (row.txid, row.id);
            save(conn, &cursor).await?;
            alive = Instant::now();
        }
    }
}

/// Stores the cursor; only the lock's holder writes it, so a cursor further on than this one
/// means two deliverers, and this one stops.
async fn save(conn: &mut PgConnection, cursor: &Cursor) -> anyhow::Result<()> {
    let saved = sqlx::query!(
        r#"UPDATE webhook_cursor SET txid = $1::bigint::text::xid8, event_id = $2, ahead = $3, alive_at = now()
           WHERE (txid, event_id) <= ($1::bigint::text::xid8, $2)"#,
        cursor.txid,
        cursor.id,
        &cursor.ahead
    )
    .execute(&mut *conn)
    .await
    .context("moving the webhook cursor")?;
    anyhow::ensure!(saved.rows_affected() == 1, "the webhook cursor was moved by another deliverer");
    Ok(())
}

/// Sends one event until the receiver answers 2xx. Errors only when the lock's connection fails.
async fn deliver_one(conn: &mut PgConnection, http: &reqwest::Client, settings: &WebhookSettings, row: &Row) -> anyhow::Result<()> {
    let body = match job_event(row.version, row.job.clone())
        .and_then(|data| Ok(serde_json::to_vec(&Body { id: row.id, kind: "job.updated", created_at: row.created_at, data: &data })?))
    {
        Ok(body) => body,
        Err(e) => {
            // A row this code cannot show (a bug): skipped, as the event stream skips it.
            tracing::error!(event_id = row.id, error = %e, "a job event cannot be shown; its webhook is skipped");
            metrics::counter!("autopost_webhook_deliveries_total", "outcome" => "skipped").increment(1);
            return Ok(());
        }
    };
    let mut failures = 0u32;
    loop {
        // Still the deliverer: a worker that lost its lock must not send what another now sends.
        sqlx::query!("SELECT 1 AS one").fetch_one(&mut *conn).await.context("checking the webhook lock's connection")?;
        let lag = (Utc::now() - row.created_at).num_milliseconds().max(0) as f64 / 1000.0;
        metrics::gauge!("autopost_webhook_lag_seconds").set(lag);
        let timestamp = Utc::now().timestamp();
        let sent = http
            .post(settings.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Autopost-Event-Id", row.id.to_string())
            .header("Autopost-Timestamp", timestamp.to_string())
            .header(
                "Autopost-Signature",
                format!("t={timestamp},v1={}", signature(settings.secret.expose_secret().as_bytes(), timestamp, &body)),
            )
            .body(body.clone())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => {
                metrics::counter!("autopost_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                tracing::debug!(event_id = row.id, "webhook delivered");
                return Ok(());
            }
            Ok(response) => {
                metrics::counter!("autopost_webhook_deliveries_total", "outcome" => "rejected").increment(1);
                format!("the receiver answered {}", response.status())
            }
            Err(e) => {
                metrics::counter!("autopost_webhook_deliveries_total", "outcome" => "unreachable").increment(1);
                describe(e)
            }
        };
        failures += 1;
        let wait = backoff(failures, settings.max_backoff);
        tracing::warn!(
            event_id = row.id,
            host = %host(&settings.url),
            failures,
            retry_in = ?wait,
            "webhook not delivered: {outcome}"
        );
        tokio::time::sleep(wait).await;
    }
}

/// A request error in words, without the URL (its path may be a credential).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let what = if e.is_timeout() { "timed out" } else { "failed" };
    let mut words = format!("the request {what}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        words.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() {
        // From `printf '1700000000.{"id":42,"type":"job.updated"}' | openssl dgst -sha256 -hmac whsec_test_secret`.
        assert_eq!(
            signature(b"whsec_test_secret", 1_700_000_000, br#"{"id":42,"type":"job.updated"}"#),
            "7e34d757eadff37b66029d6e17e54d3a9f2081875cca59a0d3c6a6bfda8f77f0"
        );
        assert_ne!(
            signature(b"another_secret", 1_700_000_000, br#"{"id":42,"type":"job.updated"}"#),
            signature(b"whsec_test_secret", 1_700_000_000, br#"{"id":42,"type":"job.updated"}"#)
        );
    }

    #[test]
    fn retries_wait_1s_doubling_up_to_the_cap() {
        let cap = Duration::from_secs(10);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n, cap).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff(u32::MAX, cap), cap, "no overflow however long the receiver is down");
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        worker: WorkerOnlySettings,
    }

    fn settings(args: &[&str]) -> anyhow::Result<Option<WebhookSettings>> {
        let cli = Cli::try_parse_from(std::iter::once("worker").chain(args.iter().copied())).unwrap();
        WebhookSettings::from_worker(&cli.worker)
    }

    const SECRET: &str = "--webhook-secret=0123456789abcdef0123456789abcdef";

    #[test]
    fn a_webhook_url_needs_a_long_secret_and_https_unless_on_this_machine() {
        assert!(settings(&[]).unwrap().is_none());
        assert!(settings(&[SECRET]).unwrap().is_none(), "a secret alone turns nothing on");
        let missing = settings(&["--webhook-url=https://app.example/hooks"]).unwrap_err().to_string();
        assert!(missing.contains("AUTOPOST_WEBHOOK_SECRET"), "{missing}");
        let short = settings(&["--webhook-url=https://app.example/hooks", "--webhook-secret=short-secret"]).unwrap_err().to_string();
        assert!(short.contains("32 characters") && !short.contains("short-secret"), "{short}");
        assert!(settings(&["--webhook-url=https://app.example/hooks", SECRET]).unwrap().is_some());
        assert!(settings(&["--webhook-url=http://127.0.0.1:9000/hooks", SECRET]).unwrap().is_some());
        let plain = settings(&["--webhook-url=http://app.example/hooks/s3cr3t-path", SECRET]).unwrap_err().to_string();
        assert!(plain.contains("https") && plain.contains("app.example") && !plain.contains("s3cr3t-path"), "{plain}");
    }

    #[test]
    fn only_the_host_of_the_url_is_shown() {
        let webhook = settings(&["--webhook-url=https://user:pw@hooks.example:8443/t/s3cr3t?key=k3y", SECRET]).unwrap().unwrap();
        let shown = format!("{webhook:?}");
        assert!(shown.contains("hooks.example:8443"), "{shown}");
        for secret in ["pw", "s3cr3t", "k3y", "0123456789abcdef"] {
            assert!(!shown.contains(secret), "{shown} shows {secret}");
        }
    }
}
