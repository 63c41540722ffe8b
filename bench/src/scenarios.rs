//! The scenarios, each measured on the same system in one run:
//!
//! 1. create: N jobs through the REST API from C concurrent clients (due in a day, so nothing
//!    fires); throughput and latency.
//! 2. burst: N more jobs, all due at one instant chosen after their creation ends; the lag from
//!    that instant to the sandbox accepting each post (the sandbox's own `received_at`), and the
//!    time until Postgres shows all N `published`.
//! 3. floor: N publishing calls made by this process straight at the sandbox at one instant,
//!    prepared beforehand: what the machine can do at best, with no engine and no database.
//! 4. baseline: N `BenchBaselineWorkflow`s due at one instant, each running a single no-op
//!    activity: the same measures, i.e. what Temporal and the SDK cost without our work.
//!
//! Everything the bench started is stopped and its database dropped at the end, also on failure.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use autopost_app::config::{PostgresSettings, TemporalSettings};
use chrono::{DateTime, Utc};

use crate::{
    BURST_CAPTION, BenchArgs, progress,
    report::{CreateReport, Memory, Percentiles, Ratios, Report, ratio},
    system::{ArmTiming, Keep, System, load_average},
};

pub async fn run(postgres: &PostgresSettings, temporal: &TemporalSettings, args: BenchArgs) -> anyhow::Result<()> {
    ensure!(args.n > 0, "--n must be at least 1");
    ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let system = System::start(postgres, temporal, ArmTiming { lead: args.arm_lead, spread: args.arm_spread }).await?;
    if let Some(n) = args.sleeping {
        ensure!(n > 0, "--sleeping must be at least 1");
        let result = tokio::select! {
            result = crate::sleeping::run(&system, &args, n) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        system.stop(Keep { database: args.keep, logs: args.keep || result.is_err() }).await;
        let report = result?;
        report.print();
        if let Some(path) = &args.json {
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(());
    }
    // Ctrl-C must still clean up: without this the database and the sleeping workflows stay.
    let result = tokio::select! {
        result = scenarios(&system, &args) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // Read while the processes still run: VmHWM vanishes with them.
    let memory = system.memory();
    system.stop(Keep { database: args.keep, logs: args.keep || result.is_err() }).await;
    let mut report = result?;
    report.memory = memory?;
    report.print();
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    Ok(())
}

async fn scenarios(system: &System, args: &BenchArgs) -> anyhow::Result<Report> {
    // Other work on the machine skews every figure: record how busy it was.
    let load_average = load_average();
    let creators = args.creators.unwrap_or(args.n / 10).max(1);
    progress(format!("linking {creators} creators' accounts"));
    let accounts = system.link_accounts(args.channel, creators).await?;
    system.warm_up(&accounts[..1]).await?;

    progress(format!("create: {} jobs through the API, {} clients", args.n, args.concurrency));
    // Due in a day so nothing fires during the bench; `stop` terminates their workflows.
    let far = Utc::now() + chrono::Duration::days(1);
    let started = Instant::now();
    let created = system.create_jobs(&accounts, args.n, args.concurrency, far, "bench create", None).await?;
    let create_elapsed = started.elapsed();
    let create = CreateReport::new(&created, create_elapsed);

    // A second round of creates takes about as long as the first; twice that plus the margin
    // leaves every workflow asleep on its timer well before the instant.
    // After the creates, every job sleeps until its arming time, then arms within the spread.
    let instant = due_instant(create_elapsed * 2 + args.margin + args.arm_lead + args.arm_spread);
    progress(format!("burst: {} jobs due at {instant}", args.n));
    let burst_jobs = system.create_jobs(&accounts, args.n, args.concurrency, instant, BURST_CAPTION, None).await?;
    ensure!(Utc::now() < instant, "creating the burst took past its instant {instant}; raise --margin");
    let burst = system.await_burst(instant, &burst_jobs, args.timeout).await?;

    let instant = due_instant(args.margin);
    let floor = crate::floor::run(system, &accounts, args.n, instant).await?;

    let instant = due_instant(create_elapsed * 2 + args.margin);
    progress(format!("baseline: {} workflows due at {instant}", args.n));
    let baseline = system.run_baseline(instant, args.n, args.concurrency, args.timeout).await?;

    let ratios = Ratios {
        lag_p50: ratio(burst.lag_ms.p50, baseline.lag_ms.p50),
        lag_p99: ratio(burst.lag_ms.p99, baseline.lag_ms.p99),
        lag_max: ratio(burst.lag_ms.max, baseline.lag_ms.max),
        all_done: ratio(burst.all_published_s, baseline.all_completed_s),
    };
    let against = |floor: &Percentiles| Ratios {
        lag_p50: ratio(burst.lag_ms.p50, floor.p50),
        lag_p99: ratio(burst.lag_ms.p99, floor.p99),
        lag_max: ratio(burst.lag_ms.max, floor.max),
        all_done: None,
    };
    let floor_ratios = against(&floor.lag_ms);
    Ok(Report {
        n: args.n,
        concurrency: args.concurrency,
        channel: args.channel,
        build: if cfg!(debug_assertions) { "debug" } else { "release" },
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average,
        creators,
        arm_lead_s: args.arm_lead.as_secs_f64(),
        arm_spread_s: args.arm_spread.as_secs_f64(),
        create,
        burst,
        floor,
        baseline,
        ratios,
        floor_ratios,
        memory: Memory::default(),
    })
}

/// `after` from now, rounded up to a whole second, as creators' schedules are.
fn due_instant(after: Duration) -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default() + chrono::Duration::seconds(1);
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}
