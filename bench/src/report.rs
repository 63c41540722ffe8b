//! The figures: percentiles, ratios against the baseline, and the printed table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{BenchChannel, system::Created};

#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles: each figure is one of the samples, none is interpolated.
    pub fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            if samples.is_empty() {
                return 0.0;
            }
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples[index.clamp(1, samples.len()) - 1]
        };
        Percentiles { p50: rank(50.0), p99: rank(99.0), max: rank(100.0) }
    }
}

/// `None` when the baseline is zero: no ratio to report, rather than infinity.
pub(crate) fn ratio(ours: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0).then(|| ours / baseline)
}

#[derive(Serialize)]
pub(crate) struct Report {
    pub(crate) n: usize,
    pub(crate) concurrency: usize,
    pub(crate) channel: BenchChannel,
    pub(crate) build: &'static str,
    pub(crate) cpus: usize,
    /// The 1-minute load average before the bench's scenarios started.
    pub(crate) load_average: Option<f64>,
    /// How many creators (each with one account) the jobs were spread over.
    pub(crate) creators: usize,
    pub(crate) arm_lead_s: f64,
    pub(crate) arm_spread_s: f64,
    pub(crate) create: CreateReport,
    pub(crate) burst: BurstReport,
    pub(crate) floor: FloorReport,
    pub(crate) baseline: BaselineReport,
    /// burst / baseline, figure by figure.
    pub(crate) ratios: Ratios,
    /// burst / floor, figure by figure.
    pub(crate) floor_ratios: Ratios,
    pub(crate) memory: Memory,
}

#[derive(Serialize)]
pub(crate) struct CreateReport {
    pub(crate) count: usize,
    pub(crate) elapsed_s: f64,
    pub(crate) throughput_per_s: f64,
    pub(crate) latency_ms: Percentiles,
}

impl CreateReport {
    pub(crate) fn new(created: &[Created], elapsed: Duration) -> Self {
        CreateReport {
            count: created.len(),
            elapsed_s: elapsed.as_secs_f64(),
            throughput_per_s: created.len() as f64 / elapsed.as_secs_f64(),
            latency_ms: Percentiles::of(created.iter().map(|c| c.latency.as_secs_f64() * 1000.0).collect()),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct BurstReport {
    pub(crate) count: usize,
    pub(crate) instant: DateTime<Utc>,
    /// From the instant to the sandbox receiving each post.
    pub(crate) lag_ms: Percentiles,
    /// From the instant to the last job's `published` row in Postgres.
    pub(crate) all_published_s: f64,
    /// Jobs that needed more than one attempt (0 unless something failed under load).
    pub(crate) jobs_retried: usize,
}

/// N publishing calls made straight at the sandbox at the instant, with no engine and no database.
#[derive(Serialize)]
pub(crate) struct FloorReport {
    pub(crate) count: usize,
    pub(crate) instant: DateTime<Utc>,
    /// From the instant to the sandbox receiving each post.
    pub(crate) lag_ms: Percentiles,
}

#[derive(Serialize)]
pub(crate) struct BaselineReport {
    pub(crate) count: usize,
    /// Bare `start_workflow` calls per second, from the same number of concurrent clients.
    pub(crate) starts_per_s: f64,
    pub(crate) instant: DateTime<Utc>,
    /// From the instant to each no-op activity's completion.
    pub(crate) lag_ms: Percentiles,
    /// From the instant to the last completion.
    pub(crate) all_completed_s: f64,
}

#[derive(Serialize, Default)]
pub(crate) struct Ratios {
    pub(crate) lag_p50: Option<f64>,
    pub(crate) lag_p99: Option<f64>,
    pub(crate) lag_max: Option<f64>,
    /// all_published_s / all_completed_s.
    pub(crate) all_done: Option<f64>,
}

#[derive(Serialize, Default)]
pub(crate) struct Memory {
    pub(crate) worker_vm_hwm_kib: Option<u64>,
    pub(crate) api_vm_hwm_kib: Option<u64>,
    pub(crate) sandbox_vm_hwm_kib: Option<u64>,
}

impl Report {
    pub(crate) fn print(&self) {
        let times = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        let mib = |kib: Option<u64>| kib.map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let (c, b, base) = (&self.create, &self.burst, &self.baseline);
        println!();
        let channel = serde_json::to_value(self.channel).unwrap_or_default();
        let load = self.load_average.map_or("?".into(), |l| format!("{l:.2}"));
        println!(
            "autopost bench: n={} concurrency={} channel={} {} build, {} cpus, load average {load} at start",
            self.n,
            self.concurrency,
            channel.as_str().unwrap_or("?"),
            self.build,
            self.cpus
        );
        println!("{:<34}{:>10}{:>10}{:>10}{:>14}", "", "p50 ms", "p99 ms", "max ms", "all done s");
        println!(
            "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14}",
            format!("create  {:.0} jobs/s (latency)", c.throughput_per_s),
            c.latency_ms.p50,
            c.latency_ms.p99,
            c.latency_ms.max,
            format!("{:.2}", c.elapsed_s)
        );
        println!(
            "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14.2}",
            "burst  (publish_at -> platform)", b.lag_ms.p50, b.lag_ms.p99, b.lag_ms.max, b.all_published_s
        );
        println!(
            "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14}",
            "floor  (direct calls -> platform)", self.floor.lag_ms.p50, self.floor.lag_ms.p99, self.floor.lag_ms.max, "-"
        );
        println!(
            "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>14.2}",
            "baseline  (instant -> activity)", base.lag_ms.p50, base.lag_ms.p99, base.lag_ms.max, base.all_completed_s
        );
        println!(
            "{:<34}{:>10}{:>10}{:>10}{:>14}",
            "burst / baseline",
            times(self.ratios.lag_p50),
            times(self.ratios.lag_p99),
            times(self.ratios.lag_max),
            times(self.ratios.all_done)
        );
        println!(
            "{:<34}{:>10}{:>10}{:>10}{:>14}",
            "burst / floor",
            times(self.floor_ratios.lag_p50),
            times(self.floor_ratios.lag_p99),
            times(self.floor_ratios.lag_max),
            "-"
        );
        println!(
            "{} creators with one account each; jobs arm {:.0}s before their instant, spread over {:.0}s more",
            self.creators, self.arm_lead_s, self.arm_spread_s
        );
        println!(
            "peak memory (VmHWM): worker {}, api {}, sandbox {}; burst jobs retried: {}",
            mib(self.memory.worker_vm_hwm_kib),
            mib(self.memory.api_vm_hwm_kib),
            mib(self.memory.sandbox_vm_hwm_kib),
            b.jobs_retried
        );
        // Issue 12's targets that this run measures.
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        let create_vs_start = ratio(c.throughput_per_s, base.starts_per_s);
        println!(
            "target: creates >= 0.8x bare start_workflow ({:.0}/s against {:.0}/s = {}): {}",
            c.throughput_per_s,
            base.starts_per_s,
            times(create_vs_start),
            verdict(create_vs_start.is_some_and(|r| r >= 0.8))
        );
        for (target, met) in self.verdicts() {
            println!("target: {target}: {}", verdict(met));
        }
    }

    /// Issue 12's lag targets that apply to this run's N, each with whether it was met.
    pub(crate) fn verdicts(&self) -> Vec<(String, bool)> {
        let times = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.2}x"));
        let p99 = self.burst.lag_ms.p99;
        let mut verdicts = vec![(
            format!(
                "burst p99 <= 3x the floor's p99 ({p99:.1} ms against {:.1} ms = {})",
                self.floor.lag_ms.p99,
                times(self.floor_ratios.lag_p99)
            ),
            self.floor_ratios.lag_p99.is_some_and(|r| r <= 3.0),
        )];
        if self.n >= 500 {
            verdicts.push((
                format!("burst p99 <= 0.05x the baseline's p99 ({})", times(self.ratios.lag_p99)),
                self.ratios.lag_p99.is_some_and(|r| r <= 0.05),
            ));
        }
        if self.n == 1 {
            verdicts.push((format!("one post alone lands within 50 ms ({p99:.1} ms)"), p99 <= 50.0));
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=100).rev().map(f64::from).collect());
        assert_eq!(p, Percentiles { p50: 50.0, p99: 99.0, max: 100.0 });
        let one = Percentiles::of(vec![7.0]);
        assert_eq!(one, Percentiles { p50: 7.0, p99: 7.0, max: 7.0 });
        assert_eq!(Percentiles::of(vec![]).max, 0.0);
    }

    #[test]
    fn ratios_need_a_baseline() {
        assert_eq!(ratio(30.0, 10.0), Some(3.0));
        assert_eq!(ratio(30.0, 0.0), None);
    }
}
