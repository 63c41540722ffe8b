//! `autopost bench --sleeping N`: what N jobs asleep on their timers cost. N jobs due in a day
//! are created through the REST API; the bench reports the create throughput, how soon each
//! job's readiness (the preflight the workflow runs at creation) was known, and the worker's
//! memory: its resident set when the creates end, when the last readiness is known, and after
//! `--settle` more, with its peak.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    BenchArgs, POLL_EVERY, progress,
    report::{CreateReport, Percentiles},
    system::System,
};

/// Readiness later than this after creation misses the target (issue 12).
const READINESS_TARGET: Duration = Duration::from_secs(60);

#[derive(Serialize)]
pub(crate) struct SleepingReport {
    pub(crate) n: usize,
    pub(crate) concurrency: usize,
    /// `--rate`: the creates' pace, when one was set.
    pub(crate) rate_per_s: Option<f64>,
    pub(crate) build: &'static str,
    pub(crate) create: CreateReport,
    /// From each job's creation to its readiness being recorded.
    pub(crate) readiness_ms: Percentiles,
    /// Jobs whose readiness was known within [`READINESS_TARGET`] of their creation.
    pub(crate) readiness_within_60s: usize,
    pub(crate) worker_rss_kib: WorkerRss,
}

#[derive(Serialize)]
pub(crate) struct WorkerRss {
    pub(crate) after_creates: u64,
    pub(crate) after_readiness: u64,
    pub(crate) after_settle: u64,
    pub(crate) settle_s: f64,
    /// VmHWM: the most it ever held.
    pub(crate) peak: u64,
}

pub(crate) async fn run(system: &System, args: &BenchArgs, n: usize) -> anyhow::Result<SleepingReport> {
    let accounts = system.link_accounts(args.channel, args.creators.unwrap_or(n / 10).max(1)).await?;
    let pace = args.rate.map_or_else(|| "as fast as they go".to_owned(), |rate| format!("at most {rate}/s"));
    progress(format!("sleeping: {n} jobs due in a day, {} clients, {pace}", args.concurrency));
    let far = Utc::now() + chrono::Duration::days(1);
    let started = Instant::now();
    let created = system.create_jobs(&accounts, n, args.concurrency, far, "bench sleeping", args.rate).await?;
    let create = CreateReport::new(&created, started.elapsed());
    let after_creates = system.worker_memory("VmRSS")?;

    let ids: Vec<Uuid> = created.iter().map(|c| c.id).collect();
    let readiness = wait_for_readiness(system, &ids, args.timeout).await?;
    let after_readiness = system.worker_memory("VmRSS")?;
    progress(format!("sleeping: every readiness known; watching the worker for {:?}", args.settle));
    tokio::time::sleep(args.settle).await;
    let after_settle = system.worker_memory("VmRSS")?;
    let peak = system.worker_memory("VmHWM")?;

    let readiness_within_60s = readiness.iter().filter(|ms| **ms <= READINESS_TARGET.as_millis() as f64).count();
    Ok(SleepingReport {
        n,
        concurrency: args.concurrency,
        rate_per_s: args.rate,
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        create,
        readiness_ms: Percentiles::of(readiness),
        readiness_within_60s,
        worker_rss_kib: WorkerRss { after_creates, after_readiness, after_settle, settle_s: args.settle.as_secs_f64(), peak },
    })
}

/// Each job's milliseconds from creation to readiness, once every job has one.
async fn wait_for_readiness(system: &System, ids: &[Uuid], timeout: Duration) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let rows: Vec<(DateTime<Utc>, Option<String>)> =
            sqlx::query_as("SELECT created_at, readiness->>'checked_at' FROM publish_jobs WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(system.db())
                .await
                .context("reading readiness")?;
        let known: Vec<f64> = rows
            .iter()
            .filter_map(|(created, checked)| {
                let checked: DateTime<Utc> = checked.as_deref()?.parse().ok()?;
                Some((checked - *created).num_milliseconds().max(0) as f64)
            })
            .collect();
        if known.len() == ids.len() {
            return Ok(known);
        }
        ensure!(Instant::now() < deadline, "{} of {} jobs have no readiness after {timeout:?}", ids.len() - known.len(), ids.len());
        tokio::time::sleep(POLL_EVERY * 10).await;
    }
}

impl SleepingReport {
    pub(crate) fn print(&self) {
        let mib = |kib: u64| format!("{:.0} MiB", kib as f64 / 1024.0);
        let rss = &self.worker_rss_kib;
        println!();
        let rate = self.rate_per_s.map_or_else(String::new, |rate| format!(" rate={rate}/s"));
        println!("autopost bench --sleeping {}: concurrency={}{rate} {} build", self.n, self.concurrency, self.build);
        println!(
            "create     {:.0} jobs/s, latency p50 {:.1} ms, p99 {:.1} ms",
            self.create.throughput_per_s, self.create.latency_ms.p50, self.create.latency_ms.p99
        );
        println!(
            "readiness  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms after creation; {} of {} within 60 s",
            self.readiness_ms.p50, self.readiness_ms.p99, self.readiness_ms.max, self.readiness_within_60s, self.n
        );
        println!(
            "worker RSS {} after the creates, {} once every readiness is known, {} {:.0} s later; peak {}",
            mib(rss.after_creates),
            mib(rss.after_readiness),
            mib(rss.after_settle),
            rss.settle_s,
            mib(rss.peak)
        );
        let target = |met: bool| if met { "met" } else { "NOT met" };
        println!(
            "targets: worker RSS < 300 MiB with {} sleeping jobs: {}; every readiness within 60 s: {}",
            self.n,
            target(rss.peak < 300 * 1024),
            target(self.readiness_within_60s == self.n)
        );
    }
}
