//! Results of `opipe bench --smb2`: one row per (server, connections,
//! round), a table of medians, and the opipe/smbd ratios (each taken
//! within one round, then their median and range over the rounds), as
//! text or as one JSON object.

use std::fmt::Write as _;

use serde_json::json;

use super::runner::RunMeasure;
use crate::bench::output::aligned;

/// `opipe smb2`'s name in the results.
pub const OPIPE: &str = "opipe-smb2";
/// smbd's name in the results.
pub const SMBD: &str = "smbd";

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct Row {
    /// [`OPIPE`] or [`SMBD`].
    pub server: &'static str,
    /// Connections asked for.
    pub connections: usize,
    /// Connections set up.
    pub connected: usize,
    /// 1-based round.
    pub round: usize,
    /// The dialect negotiated (`3.1.1`, ...).
    pub dialect: String,
    /// Verified calls.
    pub calls: u64,
    /// Failed setups plus failed or wrong calls.
    pub errors: u64,
    /// Measured phase, seconds.
    pub elapsed_s: f64,
    /// Verified calls per second.
    pub calls_per_s: f64,
    /// The SMB server's CPU per call (all its processes), microseconds.
    pub server_cpu_us_per_call: f64,
    /// The pipe service's CPU per call, microseconds.
    pub service_cpu_us_per_call: Option<f64>,
    /// The load client's CPU per call, microseconds.
    pub client_cpu_us_per_call: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th.
    pub p99_us: f64,
    /// 99.9th.
    pub p999_us: f64,
    /// Processes in the server's group at the end of the run.
    pub server_processes: usize,
}

impl Row {
    /// The row of one run.
    pub fn new(server: &'static str, connections: usize, round: usize, m: &RunMeasure) -> Row {
        let calls = m.recorded.transceives;
        let per_call = |d: std::time::Duration| {
            if calls == 0 {
                0.0
            } else {
                d.as_secs_f64() * 1e6 / calls as f64
            }
        };
        let secs = m.elapsed.as_secs_f64();
        let pct = |q: f64| {
            if m.recorded.latency_ns.is_empty() {
                0.0
            } else {
                m.recorded.latency_ns.value_at_quantile(q) as f64 / 1000.0
            }
        };
        Row {
            server,
            connections,
            connected: m.connected,
            round,
            dialect: m
                .negotiated
                .map(|n| dialect_name(n.dialect))
                .unwrap_or_else(|| "-".into()),
            calls,
            errors: m.recorded.errors,
            elapsed_s: secs,
            calls_per_s: if secs > 0.0 { calls as f64 / secs } else { 0.0 },
            server_cpu_us_per_call: per_call(m.server_cpu),
            service_cpu_us_per_call: m.service_cpu.map(per_call),
            client_cpu_us_per_call: per_call(m.client_cpu),
            p50_us: pct(0.5),
            p99_us: pct(0.99),
            p999_us: pct(0.999),
            server_processes: m.server_processes,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "server": self.server,
            "connections": self.connections,
            "connected": self.connected,
            "round": self.round,
            "dialect": self.dialect,
            "calls": self.calls,
            "errors": self.errors,
            "elapsed_s": (self.elapsed_s * 1e4).round() / 1e4,
            "calls_per_s": round2(self.calls_per_s),
            "server_cpu_us_per_call": round2(self.server_cpu_us_per_call),
            "service_cpu_us_per_call": self.service_cpu_us_per_call.map(round2),
            "client_cpu_us_per_call": round2(self.client_cpu_us_per_call),
            "p50_us": round2(self.p50_us),
            "p99_us": round2(self.p99_us),
            "p999_us": round2(self.p999_us),
            "server_processes": self.server_processes,
        })
    }
}

/// `0x0311` -> `3.1.1`.
fn dialect_name(d: u16) -> String {
    match d {
        0x0202 => "2.0.2".into(),
        0x0210 => "2.1".into(),
        0x0300 => "3.0".into(),
        0x0302 => "3.0.2".into(),
        0x0311 => "3.1.1".into(),
        other => format!("{other:#06x}"),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The median (mean of the middle two for an even count); 0 for none.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// A ratio's median and range over the rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// Median over the rounds.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(xs: Vec<f64>) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        Some(Spread {
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median: median(xs),
        })
    }

    fn text(&self, rounds: usize) -> String {
        if rounds <= 1 {
            format!("{:.2}x", self.median)
        } else {
            format!("{:.2}x ({:.2}-{:.2})", self.median, self.min, self.max)
        }
    }

    fn to_json(self) -> serde_json::Value {
        json!({ "median": round3(self.median), "min": round3(self.min), "max": round3(self.max) })
    }
}

/// The opipe/smbd ratios at one connection count.
#[derive(Debug, Clone)]
pub struct Ratios {
    /// Connections.
    pub connections: usize,
    /// Rounds where both servers ran.
    pub rounds: usize,
    /// Calls/s, opipe over smbd.
    pub calls_per_s: Option<Spread>,
    /// Server CPU per call, opipe over smbd.
    pub server_cpu: Option<Spread>,
    /// p50, opipe over smbd.
    pub p50: Option<Spread>,
    /// p99, opipe over smbd.
    pub p99: Option<Spread>,
}

impl Ratios {
    /// Issue 14's goal at this connection count, on the medians: at 1
    /// connection p50 no worse than smbd's; from 64 on, >= 2x the calls/s
    /// at <= 0.5x the CPU per call with p99 no worse. `None` when a
    /// figure is missing or no goal is set for this count.
    pub fn goal_met(&self) -> Option<bool> {
        let m = |s: Option<Spread>| s.map(|s| s.median);
        match self.connections {
            1 => Some(m(self.p50)? <= 1.0),
            n if n >= 64 => Some(
                m(self.calls_per_s)? >= 2.0 && m(self.server_cpu)? <= 0.5 && m(self.p99)? <= 1.0,
            ),
            _ => None,
        }
    }
}

/// The ratios per connection count, each taken within a round.
pub fn ratios(rows: &[Row]) -> Vec<Ratios> {
    let mut counts: Vec<usize> = rows.iter().map(|r| r.connections).collect();
    counts.sort_unstable();
    counts.dedup();
    counts
        .into_iter()
        .map(|n| {
            let pairs: Vec<(&Row, &Row)> = rows
                .iter()
                .filter(|o| o.server == OPIPE && o.connections == n)
                .filter_map(|o| {
                    let s = rows
                        .iter()
                        .find(|s| s.server == SMBD && s.connections == n && s.round == o.round)?;
                    Some((o, s))
                })
                .collect();
            let spread = |f: fn(&Row) -> f64| {
                Spread::of(
                    pairs
                        .iter()
                        .filter(|(_, s)| f(s) > 0.0)
                        .map(|(o, s)| f(o) / f(s))
                        .collect(),
                )
            };
            Ratios {
                connections: n,
                rounds: pairs.len(),
                calls_per_s: spread(|r| r.calls_per_s),
                server_cpu: spread(|r| r.server_cpu_us_per_call),
                p50: spread(|r| r.p50_us),
                p99: spread(|r| r.p99_us),
            }
        })
        .collect()
}

/// Each (server, connections) group's median row over the rounds, in the
/// order the groups first ran; errors and calls summed.
fn medians(rows: &[Row]) -> Vec<Row> {
    let mut keys: Vec<(&'static str, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.server, r.connections)) {
            keys.push((r.server, r.connections));
        }
    }
    keys.sort_by_key(|&(s, n)| (n, s != OPIPE));
    keys.into_iter()
        .map(|(server, n)| {
            let g: Vec<&Row> = rows
                .iter()
                .filter(|r| r.server == server && r.connections == n)
                .collect();
            let med = |f: fn(&Row) -> f64| median(g.iter().map(|r| f(r)).collect());
            let mut m = g[0].clone();
            m.calls_per_s = med(|r| r.calls_per_s);
            m.server_cpu_us_per_call = med(|r| r.server_cpu_us_per_call);
            m.service_cpu_us_per_call = g
                .iter()
                .all(|r| r.service_cpu_us_per_call.is_some())
                .then(|| med(|r| r.service_cpu_us_per_call.unwrap_or(0.0)));
            m.client_cpu_us_per_call = med(|r| r.client_cpu_us_per_call);
            m.p50_us = med(|r| r.p50_us);
            m.p99_us = med(|r| r.p99_us);
            m.p999_us = med(|r| r.p999_us);
            m.calls = g.iter().map(|r| r.calls).sum();
            m.errors = g.iter().map(|r| r.errors).sum();
            m.connected = g.iter().map(|r| r.connected).min().unwrap_or(0);
            m
        })
        .collect()
}

fn rounds(rows: &[Row]) -> usize {
    rows.iter().map(|r| r.round).max().unwrap_or(0)
}

/// The text report: a line per note, the (median) table, the ratios.
pub fn table(rows: &[Row], pipe_service: &str, notes: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pipe service behind both servers: {pipe_service}");
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    let n_rounds = rounds(rows);
    if n_rounds > 1 {
        let _ = writeln!(
            out,
            "median of {n_rounds} rounds (the servers take turns within each round, \
             the order swapped every round; errors summed)"
        );
    }
    let header = [
        "server",
        "conns",
        "dialect",
        "calls/s",
        "server us/call",
        "svc us/call",
        "client us/call",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "procs",
        "errors",
    ];
    let shown = medians(rows);
    let body: Vec<Vec<String>> = shown
        .iter()
        .map(|r| {
            vec![
                r.server.to_string(),
                if r.connected == r.connections {
                    r.connections.to_string()
                } else {
                    format!("{}/{}", r.connected, r.connections)
                },
                r.dialect.clone(),
                format!("{:.0}", r.calls_per_s),
                format!("{:.2}", r.server_cpu_us_per_call),
                r.service_cpu_us_per_call
                    .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
                format!("{:.2}", r.client_cpu_us_per_call),
                format!("{:.1}", r.p50_us),
                format!("{:.1}", r.p99_us),
                format!("{:.1}", r.p999_us),
                r.server_processes.to_string(),
                r.errors.to_string(),
            ]
        })
        .collect();
    out.push_str(&aligned(&header, &body));
    let ratios = ratios(rows);
    if ratios.iter().any(|r| r.rounds > 0) {
        let header = [
            "opipe/smbd",
            "calls/s",
            "server CPU/call",
            "p50",
            "p99",
            "issue 14 goal",
        ];
        let body: Vec<Vec<String>> = ratios
            .iter()
            .filter(|r| r.rounds > 0)
            .map(|r| {
                let cell = |s: Option<Spread>| s.map_or_else(|| "-".into(), |s| s.text(r.rounds));
                vec![
                    format!("{} conns", r.connections),
                    cell(r.calls_per_s),
                    cell(r.server_cpu),
                    cell(r.p50),
                    cell(r.p99),
                    match r.goal_met() {
                        Some(true) => "met".into(),
                        Some(false) => "not met".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&aligned(&header, &body));
    }
    out
}

/// The `--json` document: `{"pipe_service": "...", "servers": {...},
/// "notes": [...], "results": [...], "summary": [...]}`: every run, then
/// per connection count and server the medians, and the opipe/smbd ratios
/// (median, min, max over the rounds; null where a server did not run).
pub fn json(
    rows: &[Row],
    pipe_service: &str,
    servers: &serde_json::Value,
    notes: &[String],
) -> String {
    let results: Vec<_> = rows.iter().map(Row::to_json).collect();
    let meds = medians(rows);
    let summary: Vec<_> = ratios(rows)
        .iter()
        .map(|r| {
            let of = |server: &str| {
                meds.iter()
                    .find(|m| m.server == server && m.connections == r.connections)
                    .map(Row::to_json)
            };
            let spread = |s: Option<Spread>| s.map(Spread::to_json);
            json!({
                "connections": r.connections,
                "rounds_compared": r.rounds,
                "opipe_smb2": of(OPIPE),
                "smbd": of(SMBD),
                "opipe_vs_smbd": {
                    "calls_per_s": spread(r.calls_per_s),
                    "server_cpu_us_per_call": spread(r.server_cpu),
                    "p50_us": spread(r.p50),
                    "p99_us": spread(r.p99),
                },
                "goal_met": r.goal_met(),
            })
        })
        .collect();
    json!({
        "pipe_service": pipe_service,
        "servers": servers,
        "notes": notes,
        "results": results,
        "summary": summary,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(server: &'static str, connections: usize, round: usize, cps: f64, cpu: f64) -> Row {
        Row {
            server,
            connections,
            connected: connections,
            round,
            dialect: "3.1.1".into(),
            calls: 100,
            errors: 0,
            elapsed_s: 1.0,
            calls_per_s: cps,
            server_cpu_us_per_call: cpu,
            service_cpu_us_per_call: Some(1.0),
            client_cpu_us_per_call: 2.0,
            p50_us: 10.0,
            p99_us: 20.0,
            p999_us: 30.0,
            server_processes: 1,
        }
    }

    #[test]
    fn ratios_are_taken_within_rounds() {
        let rows = vec![
            row(OPIPE, 64, 1, 300.0, 10.0),
            row(SMBD, 64, 1, 100.0, 40.0),
            row(SMBD, 64, 2, 200.0, 40.0),
            row(OPIPE, 64, 2, 400.0, 10.0),
            row(OPIPE, 64, 3, 500.0, 10.0),
            row(SMBD, 1, 1, 100.0, 40.0),
        ];
        let r = ratios(&rows);
        assert_eq!(r.len(), 2);
        let one = &r[0];
        assert_eq!((one.connections, one.rounds), (1, 0));
        assert!(one.calls_per_s.is_none());
        assert_eq!(one.goal_met(), None);
        let r64 = &r[1];
        // Round 3 has no smbd: left out.
        assert_eq!(r64.rounds, 2);
        let cps = r64.calls_per_s.unwrap();
        assert_eq!((cps.min, cps.median, cps.max), (2.0, 2.5, 3.0));
        assert_eq!(r64.server_cpu.unwrap().median, 0.25);
        assert_eq!(r64.goal_met(), Some(true));
    }

    #[test]
    fn table_and_json_show_both_servers_and_the_notes() {
        let rows = vec![row(OPIPE, 4, 1, 300.0, 10.0), row(SMBD, 4, 1, 100.0, 40.0)];
        let t = table(&rows, "svc", &["hello".into()]);
        assert!(
            t.starts_with("pipe service behind both servers: svc\nnote: hello\n"),
            "{t}"
        );
        assert!(t.contains("opipe-smb2") && t.contains("smbd"), "{t}");
        assert!(t.contains("3.00x"), "{t}");
        let v: serde_json::Value =
            serde_json::from_str(&json(&rows, "svc", &json!({"smbd": "ran"}), &[])).unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["summary"][0]["opipe_vs_smbd"]["calls_per_s"]["median"],
            3.0
        );
        assert_eq!(v["summary"][0]["smbd"]["calls_per_s"], 100.0);
        assert_eq!(v["servers"]["smbd"], "ran");
        assert_eq!(v["pipe_service"], "svc");
    }

    #[test]
    fn smbd_alone_has_no_ratios() {
        let rows = vec![row(SMBD, 4, 1, 100.0, 40.0)];
        let t = table(&rows, "svc", &[]);
        assert!(!t.contains("opipe/smbd"), "{t}");
        let v: serde_json::Value =
            serde_json::from_str(&json(&rows, "svc", &json!({}), &[])).unwrap();
        assert!(v["summary"][0]["opipe_smb2"].is_null());
        assert!(v["summary"][0]["opipe_vs_smbd"]["calls_per_s"].is_null());
    }
}
