//! Results of a bench: one row per (engine, pipe count), printed as an
//! aligned table with ratios, or as one JSON object.

use std::fmt::Write as _;

use serde_json::json;

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
    /// Client VmRSS with every pipe open.
    pub client_rss_bytes: u64,
    /// (RSS with pipes open - RSS before opening) / pipes; may be negative
    /// when the allocator gave memory back meanwhile.
    pub bytes_per_pipe: f64,
    /// Failed opens + failed or wrong transceives.
    pub errors: u64,
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
            "backend": self.backend,
            "engine_detail": self.engine_detail,
            "pipes_opened": self.pipes_opened,
            "overflows": self.overflows,
            "elapsed_s": (self.elapsed_s * 1e4).round() / 1e4,
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `--json` document: exactly one object, `{"results": [...]}`.
pub fn json(results: &[RunResult]) -> String {
    let rows: Vec<_> = results.iter().map(RunResult::to_json).collect();
    json!({ "results": rows }).to_string()
}

/// The human table, plus a ratio table when several engines ran.
pub fn table(results: &[RunResult]) -> String {
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
    let rows: Vec<Vec<String>> = results
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
    let mut out = aligned(&header, &rows);

    let mut engines: Vec<&str> = results.iter().map(|r| r.engine).collect();
    engines.sort_unstable();
    engines.dedup();
    if engines.len() > 1 {
        let ratio_rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                let mut row = vec![r.engine.to_string(), r.pipes.to_string()];
                for base in ["tokio", "threads"] {
                    let reference = results
                        .iter()
                        .find(|b| b.engine == base && b.pipes == r.pipes);
                    row.push(ratio(
                        r.transceives_per_s,
                        reference.map(|b| b.transceives_per_s),
                    ));
                    row.push(ratio(
                        r.client_cpu_us_per_op,
                        reference.map(|b| b.client_cpu_us_per_op),
                    ));
                }
                row
            })
            .collect();
        out.push('\n');
        out.push_str(&aligned(
            &[
                "engine",
                "pipes",
                "tps vs tokio",
                "CPU/op vs tokio",
                "tps vs threads",
                "CPU/op vs threads",
            ],
            &ratio_rows,
        ));
    }
    out
}

fn ratio(x: f64, base: Option<f64>) -> String {
    match base {
        Some(b) if b > 0.0 => format!("{:.2}x", x / b),
        _ => "-".to_string(),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Left-aligns the first column, right-aligns the others.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
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
            "backend",
        ] {
            assert!(!r[key].is_null(), "missing {key}");
        }
    }
}
