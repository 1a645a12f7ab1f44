//! Results of a bench: one row per (engine, pipe count), printed as an
//! aligned table with ratios, or as one JSON object.

use std::fmt::Write as _;

use serde_json::json;

use super::exchange::Call;
use super::measure::Measured;
use super::record::Recorded;
use super::spec::RunSpec;

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// `--engine` name.
    pub engine: &'static str,
    /// How the engine ran (runtime, workers, kernel interface); opipe's
    /// engine: exactly `io_uring` or `epoll`.
    pub backend: String,
    /// opipe's engine: buffers, chain, leftover detection (JSON `engine_detail`).
    pub engine_detail: Option<String>,
    /// Pipes asked for (after the descriptor limit).
    pub pipes: usize,
    /// Pipes whose open handshake succeeded.
    pub pipes_opened: u64,
    /// Request bytes on the wire.
    pub request_size: usize,
    /// Reply bytes on the wire.
    pub reply_size: usize,
    /// MaxOutputResponse.
    pub max_out: usize,
    /// Verified transceives.
    pub transceives: u64,
    /// Transceives whose first read reported STATUS_BUFFER_OVERFLOW.
    pub overflows: u64,
    /// Length of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Verified transceives per second.
    pub transceives_per_s: f64,
    /// Client CPU (user + system, all threads) per transceive, microseconds.
    pub client_cpu_us_per_op: f64,
    /// The service child's CPU (all threads) per transceive, microseconds;
    /// `None` with `--dir` (a service the bench did not start).
    pub service_cpu_us_per_op: Option<f64>,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The client's peak VmRSS over the run (opening the pipes, the
    /// transceives, every pipe still open at the end).
    pub client_rss_bytes: u64,
    /// (peak RSS - RSS before opening) / pipes. Negative only where the
    /// peak cannot be restarted (the end's VmRSS is used then) and the
    /// allocator gave memory back meanwhile.
    pub bytes_per_pipe: f64,
    /// Failed opens + failed or wrong transceives.
    pub errors: u64,
    /// Of those, replies that arrived but failed verification (wrong
    /// length, header, stub pattern or, against samba-rpcd, server name).
    pub verify_failures: u64,
    /// Which round of `--rounds` this run belongs to (1-based).
    pub round: usize,
    /// The pipes' dialect (`illumos` or `samba`).
    pub dialect: &'static str,
    /// What each transceive was: `pattern` (opipe's dcerpc handler) or
    /// `NetrServerGetInfo` (Samba's rpcd_classic).
    pub call: &'static str,
}

impl RunResult {
    /// Combines what the harness asked, what the peer measured and what
    /// its pipes recorded.
    pub fn new(
        engine: &'static str,
        backend: String,
        engine_detail: Option<String>,
        spec: &RunSpec,
        measured: &Measured,
        rec: &Recorded,
    ) -> RunResult {
        let secs = measured.elapsed.as_secs_f64();
        let ops = rec.transceives;
        let per_op = |total: f64| if ops == 0 { 0.0 } else { total / ops as f64 };
        let pct = |q: f64| {
            if rec.latency_ns.is_empty() {
                0.0
            } else {
                rec.latency_ns.value_at_quantile(q) as f64 / 1000.0
            }
        };
        let grown = measured.rss_open_bytes as f64 - measured.rss_before_open_bytes as f64;
        RunResult {
            engine,
            backend,
            engine_detail,
            pipes: spec.pipes,
            pipes_opened: rec.opened,
            request_size: spec.request.wire_bytes,
            reply_size: spec.reply.wire_bytes,
            max_out: spec.max_out,
            transceives: ops,
            overflows: rec.overflows,
            elapsed_s: secs,
            transceives_per_s: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            client_cpu_us_per_op: per_op(measured.client_cpu.as_secs_f64() * 1e6),
            service_cpu_us_per_op: measured.service_cpu.map(|c| per_op(c.as_secs_f64() * 1e6)),
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            client_rss_bytes: measured.rss_open_bytes,
            bytes_per_pipe: grown / spec.pipes.max(1) as f64,
            errors: rec.errors,
            verify_failures: rec.bad_replies,
            round: 1,
            dialect: spec.dialect.as_str(),
            call: match spec.call {
                Call::Pattern => "pattern",
                Call::ServerInfo { .. } => "NetrServerGetInfo",
            },
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "engine": self.engine,
            "pipes": self.pipes,
            "request_size": self.request_size,
            "reply_size": self.reply_size,
            "max_out": self.max_out,
            "transceives": self.transceives,
            "transceives_per_s": round2(self.transceives_per_s),
            "client_cpu_us_per_op": round2(self.client_cpu_us_per_op),
            "service_cpu_us_per_op": self.service_cpu_us_per_op.map(round2),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "p999_us": round2(self.p999_us),
            "client_rss_bytes": self.client_rss_bytes,
            "bytes_per_pipe": round2(self.bytes_per_pipe),
            "errors": self.errors,
            "verify_failures": self.verify_failures,
            "dialect": self.dialect,
            "call": self.call,
            "backend": self.backend,
            "engine_detail": self.engine_detail,
            "pipes_opened": self.pipes_opened,
            "overflows": self.overflows,
            "elapsed_s": (self.elapsed_s * 1e4).round() / 1e4,
            "round": self.round,
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `--json` document: exactly one object, `{"results": [...]}`, one
/// entry per run. With several rounds it also has `"summary"`: per engine
/// and pipe count, the median of each figure over the rounds and the
/// ratios against tokio, threads and the `uring-min` reference (`null` where
/// that one did not run), each computed within a round (median, min, max
/// over the rounds).
pub fn json(results: &[RunResult]) -> String {
    let rows: Vec<_> = results.iter().map(RunResult::to_json).collect();
    if rounds(results) <= 1 {
        return json!({ "results": rows }).to_string();
    }
    let summary: Vec<_> = groups(results)
        .iter()
        .map(|g| {
            let m = g.medians();
            let mut v = json!({
                "engine": g.engine,
                "pipes": g.pipes,
                "rounds": g.runs.len(),
                "transceives_per_s": round2(m.transceives_per_s),
                "client_cpu_us_per_op": round2(m.client_cpu_us_per_op),
                "service_cpu_us_per_op": m.service_cpu_us_per_op.map(round2),
                "p50_us": round2(m.p50_us),
                "p99_us": round2(m.p99_us),
                "p999_us": round2(m.p999_us),
                "bytes_per_pipe": round2(m.bytes_per_pipe),
                "errors": m.errors,
                "verify_failures": m.verify_failures,
            });
            for base in BASES {
                let spread = |f: fn(&RunResult) -> f64| {
                    g.ratios(results, base, f).map(|r| {
                        json!({
                            "median": round3(r.median),
                            "min": round3(r.min),
                            "max": round3(r.max),
                        })
                    })
                };
                v[format!("vs_{}", base.replace('-', "_"))] = json!({
                    "transceives_per_s": spread(|r| r.transceives_per_s),
                    "client_cpu_us_per_op": spread(|r| r.client_cpu_us_per_op),
                    "p50_us": spread(|r| r.p50_us),
                });
            }
            v
        })
        .collect();
    json!({ "results": rows, "summary": summary }).to_string()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The engines every other one is compared with, in the same round
/// (`uring-min` is the reference for the engine's own overhead).
const BASES: [&str; 3] = ["tokio", "threads", "uring-min"];

/// How many rounds the results span.
fn rounds(results: &[RunResult]) -> usize {
    results.iter().map(|r| r.round).max().unwrap_or(0)
}

/// The runs of one engine at one pipe count, one per round.
struct Group<'a> {
    engine: &'static str,
    pipes: usize,
    runs: Vec<&'a RunResult>,
}

/// A ratio's median and range over the rounds.
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Group<'_> {
    /// Each figure's own median over the rounds; errors and transceives summed.
    fn medians(&self) -> RunResult {
        let mut m = self.runs[0].clone();
        let med = |f: fn(&RunResult) -> f64| median(self.runs.iter().map(|r| f(r)).collect());
        m.transceives_per_s = med(|r| r.transceives_per_s);
        m.client_cpu_us_per_op = med(|r| r.client_cpu_us_per_op);
        m.service_cpu_us_per_op = if self.runs.iter().all(|r| r.service_cpu_us_per_op.is_some()) {
            Some(med(|r| r.service_cpu_us_per_op.unwrap_or(0.0)))
        } else {
            None
        };
        m.p50_us = med(|r| r.p50_us);
        m.p99_us = med(|r| r.p99_us);
        m.p999_us = med(|r| r.p999_us);
        m.client_rss_bytes = med(|r| r.client_rss_bytes as f64) as u64;
        m.bytes_per_pipe = med(|r| r.bytes_per_pipe);
        m.errors = self.runs.iter().map(|r| r.errors).sum();
        m.verify_failures = self.runs.iter().map(|r| r.verify_failures).sum();
        m.transceives = self.runs.iter().map(|r| r.transceives).sum();
        m
    }

    /// `f` of this group over `f` of `base` at the same pipe count, taken
    /// round by round (a round where either did not run is left out).
    fn ratios(
        &self,
        results: &[RunResult],
        base: &str,
        f: fn(&RunResult) -> f64,
    ) -> Option<Spread> {
        let mut xs: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| {
                let b = results
                    .iter()
                    .find(|b| b.engine == base && b.pipes == r.pipes && b.round == r.round)?;
                (f(b) > 0.0).then(|| f(r) / f(b))
            })
            .collect();
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        Some(Spread {
            min: xs[0],
            max: xs[xs.len() - 1],
            median: median_of_sorted(&xs),
        })
    }
}

/// The (engine, pipe count) groups, in the order they first ran.
fn groups(results: &[RunResult]) -> Vec<Group<'_>> {
    let mut out: Vec<Group<'_>> = Vec::new();
    for r in results {
        match out
            .iter_mut()
            .find(|g| g.engine == r.engine && g.pipes == r.pipes)
        {
            Some(g) => g.runs.push(r),
            None => out.push(Group {
                engine: r.engine,
                pipes: r.pipes,
                runs: vec![r],
            }),
        }
    }
    out
}

/// The median (the mean of the middle two for an even count); 0 for none.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    median_of_sorted(&xs)
}

/// [`median`] of values already in order.
fn median_of_sorted(xs: &[f64]) -> f64 {
    let n = xs.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The human table, plus a ratio table when several engines ran. With
/// several rounds, one row per engine and pipe count: each figure's median
/// over the rounds, and each ratio's median over the rounds with its range
/// (every ratio taken within one round).
pub fn table(results: &[RunResult]) -> String {
    let n_rounds = rounds(results);
    let groups = groups(results);
    let medians: Vec<RunResult>;
    let shown: &[RunResult] = if n_rounds > 1 {
        medians = groups.iter().map(Group::medians).collect();
        &medians
    } else {
        results
    };
    let header = [
        "engine",
        "pipes",
        "transceives/s",
        "CPU us/op",
        "svc us/op",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "RSS",
        "bytes/pipe",
        "errors",
    ];
    let rows: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.engine.to_string(),
                r.pipes.to_string(),
                format!("{:.0}", r.transceives_per_s),
                format!("{:.2}", r.client_cpu_us_per_op),
                r.service_cpu_us_per_op
                    .map_or_else(|| "-".to_string(), |c| format!("{c:.2}")),
                format!("{:.1}", r.p50_us),
                format!("{:.1}", r.p99_us),
                format!("{:.1}", r.p999_us),
                mib(r.client_rss_bytes),
                format!("{:.0}", r.bytes_per_pipe),
                r.errors.to_string(),
            ]
        })
        .collect();
    let mut out = String::new();
    if n_rounds > 1 {
        let _ = writeln!(
            out,
            "median of {n_rounds} rounds (the engines take turns within each round; \
             errors summed over the rounds)"
        );
    }
    out.push_str(&aligned(&header, &rows));

    let mut engines: Vec<&str> = results.iter().map(|r| r.engine).collect();
    engines.sort_unstable();
    engines.dedup();
    if engines.len() > 1 {
        // Columns for the bases that ran.
        let bases: Vec<&str> = BASES.into_iter().filter(|b| engines.contains(b)).collect();
        let ratio_rows: Vec<Vec<String>> = groups
            .iter()
            .map(|g| {
                let mut row = vec![g.engine.to_string(), g.pipes.to_string()];
                for &base in &bases {
                    for f in [
                        (|r: &RunResult| r.transceives_per_s) as fn(&RunResult) -> f64,
                        |r: &RunResult| r.client_cpu_us_per_op,
                    ] {
                        row.push(match g.ratios(results, base, f) {
                            None => "-".to_string(),
                            Some(s) if g.runs.len() == 1 => format!("{:.2}x", s.median),
                            Some(s) => {
                                format!("{:.2}x ({:.2}-{:.2})", s.median, s.min, s.max)
                            }
                        });
                    }
                }
                row
            })
            .collect();
        let mut header = vec!["engine".to_string(), "pipes".to_string()];
        for base in &bases {
            header.push(format!("tps vs {base}"));
            header.push(format!("CPU/op vs {base}"));
        }
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push('\n');
        out.push_str(&aligned(&header, &ratio_rows));
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Left-aligns the first column, right-aligns the others.
pub(crate) fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (i, cell) in cells.enumerate() {
            if !first {
                out.push_str("  ");
            }
            if i == 0 {
                let _ = write!(out, "{cell:<w$}", w = widths[i]);
            } else {
                let _ = write!(out, "{cell:>w$}", w = widths[i]);
            }
            first = false;
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(engine: &'static str, tps: f64, cpu: f64) -> RunResult {
        RunResult {
            engine,
            backend: "test".into(),
            engine_detail: None,
            pipes: 64,
            pipes_opened: 64,
            request_size: 64,
            reply_size: 64,
            max_out: 4280,
            transceives: 1000,
            overflows: 0,
            elapsed_s: 1.0,
            transceives_per_s: tps,
            client_cpu_us_per_op: cpu,
            service_cpu_us_per_op: Some(1.5),
            p50_us: 10.0,
            p99_us: 20.0,
            p999_us: 30.0,
            client_rss_bytes: 8 << 20,
            bytes_per_pipe: 4096.0,
            errors: 0,
            verify_failures: 0,
            round: 1,
            dialect: "illumos",
            call: "pattern",
        }
    }

    #[test]
    fn table_is_aligned_and_has_ratios() {
        let t = table(&[row("threads", 100_000.0, 4.0), row("tokio", 200_000.0, 2.0)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("engine "));
        // Right-aligned numeric columns end at the same place.
        assert_eq!(lines[1].len(), lines[2].len());
        assert!(t.contains("2.00x"), "{t}");
        assert!(t.contains("0.50x"), "{t}");
    }

    fn in_round(mut r: RunResult, round: usize) -> RunResult {
        r.round = round;
        r
    }

    /// Three rounds where the machine's speed halves and doubles: each
    /// ratio is taken within its round, so it stays put while the raw
    /// figures swing.
    fn three_rounds() -> Vec<RunResult> {
        let mut v = Vec::new();
        for (round, speed) in [(1, 1.0), (2, 0.5), (3, 2.0)] {
            v.push(in_round(
                row("tokio", 100_000.0 * speed, 4.0 / speed),
                round,
            ));
            let ratio = [1.5, 1.2, 1.4][round - 1];
            let mut u = row("uring", 100_000.0 * speed * ratio, 2.0 / speed);
            u.errors = round as u64 - 1;
            v.push(in_round(u, round));
        }
        v
    }

    #[test]
    fn rounds_report_medians_and_in_round_ratios() {
        let t = table(&three_rounds());
        assert!(t.starts_with("median of 3 rounds"), "{t}");
        // One row per engine, not per run.
        assert_eq!(
            t.lines().filter(|l| l.starts_with("uring ")).count(),
            2,
            "{t}"
        );
        // The ratio's median and range come from the rounds' own ratios.
        assert!(t.contains("1.40x (1.20-1.50)"), "{t}");
        assert!(t.contains("0.50x (0.50-0.50)"), "{t}");
        // The figure's median: tokio ran at 50k, 100k and 200k.
        assert!(t.contains(" 100000 "), "{t}");
        // Errors of every round count.
        let uring = t.lines().find(|l| l.starts_with("uring ")).unwrap();
        assert!(uring.ends_with(" 3"), "{uring}");

        let v: serde_json::Value = serde_json::from_str(&json(&three_rounds())).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 6);
        assert_eq!(v["results"][5]["round"], 3);
        let s = &v["summary"][1];
        assert_eq!(s["engine"], "uring");
        assert_eq!(s["rounds"], 3);
        assert_eq!(s["errors"], 3);
        assert_eq!(s["vs_tokio"]["transceives_per_s"]["median"], 1.4);
        assert_eq!(s["vs_tokio"]["transceives_per_s"]["min"], 1.2);
        assert_eq!(s["vs_tokio"]["transceives_per_s"]["max"], 1.5);
        assert!(s["vs_threads"]["transceives_per_s"].is_null());
        assert!(s["vs_uring_min"]["client_cpu_us_per_op"].is_null());
    }

    #[test]
    fn uring_min_is_a_base_when_it_ran() {
        let mut v = three_rounds();
        for (round, p50) in [(1, 40.0), (2, 50.0), (3, 45.0)] {
            let mut m = in_round(row("uring-min", 100_000.0, 1.6), round);
            m.p50_us = p50;
            v.push(m);
        }
        for r in v.iter_mut().filter(|r| r.engine == "uring") {
            r.p50_us = 50.0;
        }
        let t = table(&v);
        assert!(t.contains("CPU/op vs uring-min"), "{t}");
        let doc: serde_json::Value = serde_json::from_str(&json(&v)).unwrap();
        let s = doc["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["engine"] == "uring")
            .unwrap();
        // Client CPU 2.0/speed against 1.6 in rounds of speed 1, 0.5, 2.
        let cpu = &s["vs_uring_min"]["client_cpu_us_per_op"];
        assert_eq!(cpu["median"], 1.25);
        assert_eq!(cpu["min"], 0.625);
        assert_eq!(cpu["max"], 2.5);
        // p50 50 us against 40, 50, 45.
        assert_eq!(s["vs_uring_min"]["p50_us"]["median"], 1.111);
        // Without uring-min in the run, no such column.
        assert!(!table(&three_rounds()).contains("uring-min"));
    }

    #[test]
    fn one_round_has_no_summary() {
        let v: serde_json::Value =
            serde_json::from_str(&json(&[row("tokio", 1.0, 1.0), row("uring", 2.0, 1.0)])).unwrap();
        assert!(v.get("summary").is_none());
        assert!(!table(&[row("tokio", 1.0, 1.0)]).contains("median"));
    }

    #[test]
    fn one_engine_has_no_ratio_table() {
        let t = table(&[row("tokio", 1.0, 1.0)]);
        assert!(!t.contains("vs tokio"), "{t}");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let v: serde_json::Value = serde_json::from_str(&json(&[row("tokio", 1.0, 1.0)])).unwrap();
        let r = &v["results"][0];
        for key in [
            "engine",
            "pipes",
            "request_size",
            "reply_size",
            "max_out",
            "transceives",
            "transceives_per_s",
            "client_cpu_us_per_op",
            "service_cpu_us_per_op",
            "p50_us",
            "p99_us",
            "p999_us",
            "client_rss_bytes",
            "bytes_per_pipe",
            "errors",
            "verify_failures",
            "backend",
        ] {
            assert!(!r[key].is_null(), "missing {key}");
        }
    }
}
