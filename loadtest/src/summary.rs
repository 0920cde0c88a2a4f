//! `--mode summary`: reads the JSON lines of several runs (as written by
//! `--json --label SCENARIO/SERVER`) and prints, per scenario, the median
//! and min–max of each figure for each server and the ratio of the
//! medians, pubsocketd / floor, as Markdown tables.

use serde_json::Value;
use std::collections::BTreeMap;

/// The figures compared: (name in the table, JSON pointer in a run).
const FIGURES: &[(&str, &str)] = &[
    (
        "relay CPU ms per 1,000 deliveries",
        "/steps/0/server_cpu_ms_per_1k",
    ),
    ("relay CPU % during publishing", "/steps/0/server_cpu_pct"),
    ("delivered/s", "/steps/0/delivered_per_sec"),
    ("loss ratio", "/steps/0/loss_ratio"),
    ("latency p50 ms", "/steps/0/p50_ms"),
    ("latency p99 ms", "/steps/0/p99_ms"),
    ("latency p99.9 ms", "/steps/0/p999_ms"),
    ("latency max ms", "/steps/0/max_ms"),
    ("relay CPU % while idle", "/idle/server_cpu_pct"),
    (
        "relay RSS bytes per connection",
        "/connect/server_rss_per_conn_bytes",
    ),
    ("connect rate /s", "/connect/rate_per_sec"),
    (
        "relay CPU µs per handshake",
        "/connect/server_cpu_us_per_handshake",
    ),
    ("frame bytes read, all clients", "/wire_bytes"),
    (
        "messages that came compressed",
        "/deflate/compressed_messages",
    ),
    (
        "load generator busiest thread CPU %",
        "/steps/0/loadgen_max_thread_cpu_pct",
    ),
];

/// `--mode summary`: `input` is a file of JSON lines, or `-` or `None`
/// for stdin, so that run-compare.sh's results can be piped in.
pub fn run(input: Option<&str>) -> Result<i32, String> {
    let text = match input {
        None | Some("-") => std::io::read_to_string(std::io::stdin()).map_err(|e| e.to_string())?,
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"))?,
    };
    print!("{}", summarize(&text));
    Ok(0)
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The Markdown report for the JSON lines in `text` (other lines are
/// skipped).
pub fn summarize(text: &str) -> String {
    // scenario -> server -> runs
    let mut runs: BTreeMap<String, BTreeMap<String, Vec<Value>>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let label = v["label"].as_str().unwrap_or("run/unknown").to_string();
        let (scenario, server) = label.rsplit_once('/').unwrap_or((&label, "unknown"));
        if !order.iter().any(|s| s == scenario) {
            order.push(scenario.to_string());
        }
        runs.entry(scenario.to_string())
            .or_default()
            .entry(server.to_string())
            .or_default()
            .push(v);
    }
    let mut out = String::new();
    for scenario in order {
        let servers = &runs[&scenario];
        let mut names: Vec<&String> = servers.keys().collect();
        // floor first, pubsocketd second, then anything else.
        names.sort_by_key(|n| match n.as_str() {
            "floor" => 0,
            "pubsocketd" => 1,
            _ => 2,
        });
        out.push_str(&format!("### {scenario}\n\n| figure |"));
        for n in &names {
            out.push_str(&format!(
                " {n} (n={}) median [min–max] |",
                servers[*n].len()
            ));
        }
        // Every other server against the first (the floor).
        let ratios = names.len().saturating_sub(1);
        for n in names.iter().skip(1) {
            out.push_str(&format!(" {n} / {} |", names[0]));
        }
        out.push_str("\n|---|");
        for _ in 0..names.len() + ratios {
            out.push_str("---|");
        }
        out.push('\n');
        for (figure, ptr) in FIGURES {
            let cols: Vec<Vec<f64>> = names
                .iter()
                .map(|n| {
                    servers[*n]
                        .iter()
                        .filter_map(|r| r.pointer(ptr)?.as_f64())
                        .collect()
                })
                .collect();
            if cols.iter().all(Vec::is_empty) {
                continue;
            }
            out.push_str(&format!("| {figure} |"));
            let mut medians = Vec::new();
            for mut c in cols {
                if c.is_empty() {
                    out.push_str(" – |");
                    medians.push(f64::NAN);
                    continue;
                }
                let m = median(&mut c);
                out.push_str(&format!(
                    " {} [{}–{}] |",
                    fmt(m),
                    fmt(c[0]),
                    fmt(c[c.len() - 1])
                ));
                medians.push(m);
            }
            for m in medians.iter().skip(1) {
                let r = m / medians[0];
                if r.is_finite() {
                    out.push_str(&format!(" {r:.2}× |"));
                } else {
                    out.push_str(" – |");
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ranges_and_ratios() {
        let mut lines = String::from("not json\n");
        for (server, cpu) in [
            ("floor", 1.0),
            ("pubsocketd", 3.0),
            ("floor", 2.0),
            ("pubsocketd", 4.0),
            ("floor", 9.0),
            ("pubsocketd", 5.0),
        ] {
            lines.push_str(&format!(
                "{{\"label\":\"s1/{server}\",\"steps\":[{{\"server_cpu_ms_per_1k\":{cpu}}}]}}\n"
            ));
        }
        let md = summarize(&lines);
        assert!(md.contains("### s1"), "{md}");
        assert!(md.contains("| relay CPU ms per 1,000 deliveries | 2.00 [1.00–9.00] | 4.00 [3.00–5.00] | 2.00× |"), "{md}");
        assert!(!md.contains("latency"));
        assert_eq!(median(&mut [3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
