//! `autopost bench` with a handful of jobs, so the benchmark keeps working as the code changes.
//! It checks the shape and sanity of the results, never their timings.

use std::process::Command;

use serde_json::Value;

#[test]
fn the_bench_runs_every_scenario_and_writes_its_figures() {
    let json_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-smoke-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_autopost"))
        .args(["bench", "--n", "5", "--concurrency", "2", "--margin", "3s", "--timeout", "90s", "--json"])
        .arg(&json_path)
        // TEMPORAL_ADDRESS and DATABASE_URL pass through; the bench makes its own database.
        .output()
        .expect("running autopost bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\nstderr:\n{stderr}\nstdout:\n{stdout}", output.status);
    assert!(stdout.contains("burst / baseline"), "no result table on stdout:\n{stdout}");
    assert!(stdout.contains("target: creates >= 0.8x bare start_workflow"), "no verdict on the create target:\n{stdout}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("the JSON file")).expect("valid JSON");
    let _ = std::fs::remove_file(&json_path);
    let number =
        |pointer: &str| report.pointer(pointer).and_then(Value::as_f64).unwrap_or_else(|| panic!("no number at {pointer}: {report:#}"));

    assert_eq!(report["n"], 5);
    for scenario in ["create", "burst", "baseline"] {
        assert_eq!(report[scenario]["count"], 5, "{scenario}: {report:#}");
    }
    assert!(number("/create/throughput_per_s") > 0.0);
    assert!(number("/baseline/starts_per_s") > 0.0, "bare start throughput");
    for percentiles in ["/create/latency_ms", "/burst/lag_ms", "/baseline/lag_ms"] {
        let (p50, p99, max) =
            (number(&format!("{percentiles}/p50")), number(&format!("{percentiles}/p99")), number(&format!("{percentiles}/max")));
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{percentiles}: {p50} {p99} {max}");
    }
    // Nothing publishes before its time, and everything published at least as late as it arrived.
    assert!(number("/burst/all_published_s") * 1000.0 >= number("/burst/lag_ms/max"));
    assert!(number("/baseline/all_completed_s") >= 0.0);
    for ratio in ["lag_p50", "lag_p99", "lag_max", "all_done"] {
        assert!(number(&format!("/ratios/{ratio}")) > 0.0, "ratio {ratio}");
    }
    for process in ["worker", "api", "sandbox"] {
        assert!(number(&format!("/memory/{process}_vm_hwm_kib")) > 1000.0, "memory of {process}");
    }
}

#[test]
fn the_sleeping_scenario_reports_readiness_and_the_workers_memory() {
    let json_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-sleeping-{}.json", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_autopost"))
        .args(["bench", "--sleeping", "6", "--concurrency", "2", "--rate", "10", "--settle", "1s", "--timeout", "90s", "--json"])
        .arg(&json_path)
        .output()
        .expect("running autopost bench --sleeping");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "bench failed: {}\n{}\n{stdout}", output.status, String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("targets:"), "no verdict on stdout:\n{stdout}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("the JSON file")).expect("valid JSON");
    let _ = std::fs::remove_file(&json_path);
    assert_eq!((report["n"].as_u64(), report["create"]["count"].as_u64()), (Some(6), Some(6)), "{report:#}");
    // Paced at 10/s, the sixth create waits until 0.5 s: never more than 12 per second.
    assert_eq!(report["rate_per_s"], 10.0, "{report:#}");
    assert!(report["create"]["throughput_per_s"].as_f64().unwrap() <= 12.0, "the rate was not kept: {report:#}");
    let readiness = &report["readiness_ms"];
    assert!(readiness["p50"].as_f64() <= readiness["max"].as_f64(), "{report:#}");
    assert_eq!(report["readiness_within_60s"], 6, "{report:#}");
    let rss = &report["worker_rss_kib"];
    for figure in ["after_creates", "after_readiness", "after_settle", "peak"] {
        assert!(rss[figure].as_u64().is_some_and(|kib| kib > 1000), "{figure}: {report:#}");
    }
    assert!(rss["peak"].as_u64() >= rss["after_settle"].as_u64(), "the peak is the most: {report:#}");
}
