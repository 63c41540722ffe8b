//! `autopost chaos`: randomized fault runs against a real stack of its own, each checked against
//! ground truth (the sandbox's posts) and against Temporal.
//!
//! A run, from its seed: a few jobs due within seconds on both platforms, commands racing their
//! due instant (cancel, reschedule, retry, publish-now), and faults: platform errors before or
//! after the platform acted, slow answers longer than the heartbeat timeout, workers killed
//! (SIGKILL) or stopped (SIGTERM) and started again, the Temporal server killed and restarted on
//! its database file, PostgreSQL restarted, the API killed while a create is in flight. When the
//! faults are over every job must settle, and the checker fails the run on a double post, a
//! cancelled or (outcome-known) needs-attention job that posted, a published job without its
//! post or with the wrong one, a job that never settled, or Postgres and Temporal disagreeing.

mod scenario;
mod stack;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Args;

use crate::progress;
use scenario::{Outcome, run_once};
use stack::{Stack, Tools};

#[derive(Args, Clone, Debug)]
pub struct ChaosArgs {
    /// Runs to make; 0 runs until the time budget is spent.
    #[arg(long, default_value_t = 0)]
    pub runs: usize,
    /// Stop starting new runs after this long.
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    pub time_budget: Duration,
    /// The first run's seed (run i uses seed + i); random when absent. A failing run prints its
    /// seed: `--seed SEED --runs 1` replays it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The Temporal CLI to run the dev server with (default: `temporal` on PATH, then
    /// `temporal-dev/.bin/bin/temporal`).
    #[arg(long, env = "AUTOPOST_TEMPORAL_BIN")]
    pub temporal_bin: Option<PathBuf>,
    /// Keep the stack's folder (logs, cluster, Temporal database) afterwards.
    #[arg(long)]
    pub keep: bool,
}

/// Totals over all runs.
#[derive(Default)]
pub(crate) struct Totals {
    runs: usize,
    jobs: usize,
    faults: BTreeMap<&'static str, usize>,
    violations: BTreeMap<&'static str, usize>,
    outcomes: BTreeMap<&'static str, usize>,
    failing_seeds: Vec<u64>,
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let tools = Tools::find(args.temporal_bin.clone())?;
    let first_seed = args.seed.unwrap_or_else(rand::random);
    progress(format!("chaos: first seed {first_seed}, budget {}", humantime::format_duration(args.time_budget)));
    let mut stack = Stack::start(&tools).await?;
    let started = Instant::now();
    let mut totals = Totals::default();
    let runs = async {
        let mut run = 0;
        while (args.runs == 0 || run < args.runs) && started.elapsed() < args.time_budget {
            let seed = first_seed.wrapping_add(run as u64);
            let outcome: Outcome = run_once(&mut stack, seed, run).await?;
            totals.add(seed, &outcome);
            progress(format!(
                "run {} seed {seed}: {} jobs, faults [{}], {}; so far {} faults, {} violations",
                run + 1,
                outcome.jobs,
                outcome.faults.join(", "),
                if outcome.violations.is_empty() { "ok".to_owned() } else { format!("VIOLATIONS: {}", outcome.violations.join("; ")) },
                totals.faults.values().sum::<usize>(),
                totals.violations.values().sum::<usize>(),
            ));
            run += 1;
        }
        anyhow::Ok(())
    };
    // Ctrl-C or SIGTERM still stops every process of the stack and its cluster.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        result = runs => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let keep = args.keep || !totals.failing_seeds.is_empty() || result.is_err();
    stack.stop(keep).await;
    result?;
    totals.print(started.elapsed());
    if !totals.failing_seeds.is_empty() {
        anyhow::bail!(
            "{} run(s) violated the promise; replay one with --seed SEED --runs 1: {:?}",
            totals.failing_seeds.len(),
            totals.failing_seeds
        );
    }
    Ok(())
}

impl Totals {
    fn add(&mut self, seed: u64, outcome: &Outcome) {
        self.runs += 1;
        self.jobs += outcome.jobs;
        for fault in &outcome.faults {
            *self.faults.entry(scenario::fault_kind(fault)).or_default() += 1;
        }
        for (kind, _) in &outcome.violation_kinds {
            *self.violations.entry(kind).or_default() += 1;
        }
        for status in &outcome.final_statuses {
            *self.outcomes.entry(status).or_default() += 1;
        }
        if !outcome.violations.is_empty() {
            self.failing_seeds.push(seed);
        }
    }

    fn print(&self, elapsed: Duration) {
        println!();
        println!(
            "autopost chaos: {} runs, {} jobs in {}",
            self.runs,
            self.jobs,
            humantime::format_duration(Duration::from_secs(elapsed.as_secs()))
        );
        println!("{:<28}{:>8}", "faults injected", "count");
        for (kind, count) in &self.faults {
            println!("  {kind:<26}{count:>8}");
        }
        println!("{:<28}{:>8}", "jobs ended", "count");
        for (status, count) in &self.outcomes {
            println!("  {status:<26}{count:>8}");
        }
        println!("{:<28}{:>8}", "violations", "count");
        for kind in scenario::VIOLATION_KINDS {
            println!("  {kind:<26}{:>8}", self.violations.get(kind).copied().unwrap_or(0));
        }
        println!("{} passed, {} failed", self.runs - self.failing_seeds.len(), self.failing_seeds.len());
    }
}
