//! The table printed at the end of a run, for a person reading the
//! terminal. run-compare.sh copies it into its log from the
//! `pubsocketd-loadtest …` line down to the JSON line, so that first line
//! must stay first and nothing printed here may start with `{`.

use crate::args::{Args, Mode};
use crate::report::{ConnectReport, IdleReport, Report, StepReport};

pub(crate) fn print_table(a: &Args, mode: Mode, r: &Report) {
    println!();
    println!(
        "pubsocketd-loadtest {} {}{}{}",
        mode.name(),
        a.url,
        if a.transport == "ws" {
            ""
        } else {
            " (event stream)"
        },
        a.label
            .as_deref()
            .map_or(String::new(), |l| format!(" [{l}]"))
    );
    print_connect(&r.connect);
    if let Some(i) = &r.idle {
        print_idle(i);
    }
    if !r.steps.is_empty() {
        print_steps(mode, &r.steps);
        print_machine(&r.steps);
        if mode == Mode::Ramp {
            print_ramp(a, &r.steps);
        }
    }
    print_other(a, r);
    for w in &r.warnings {
        println!("  WARNING      {w}");
    }
}

/// A figure that may be missing prints as `-`, so that the columns stay
/// aligned.
fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn print_connect(c: &ConnectReport) {
    println!(
        "  connect      {} ok, {} failed of {} in {:.2} s: {:.0} connections/s; upgrade p50 {:.2} ms, p99 {:.2} ms",
        c.ok,
        c.failed,
        c.requested,
        c.secs,
        c.rate_per_sec(),
        c.handshake_p50_ms,
        c.handshake_p99_ms
    );
    for (why, n) in &c.failures {
        println!("  failed       {n} × {why}");
    }
    if let (Some(b), Some(after)) = (c.rss_before_kib, c.rss_after_kib) {
        println!(
            "  relay RSS    {:.1} MiB before, {:.1} MiB after connecting: {} per connection",
            b as f64 / 1024.0,
            after as f64 / 1024.0,
            c.rss_per_conn()
                .map_or("-".into(), |v| format!("{:.0} bytes", v))
        );
    }
}

fn print_idle(i: &IdleReport) {
    println!(
        "  idle         {} clients held {:.1} s: relay CPU {} ({} ms); relay RSS at the end {}",
        i.clients,
        i.secs,
        i.server.map_or("-".into(), |s| format!("{:.2}%", s.1)),
        opt(i.server.map(|s| s.0), 1),
        i.rss_end_kib
            .map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    println!(
        "  load gen     busiest thread {:.1}% of a core",
        i.loadgen_thread_pct
    );
}

/// One row per step; the `pass` column only in a ramp, where a step can
/// fail.
fn print_steps(mode: Mode, steps: &[StepReport]) {
    println!(
        "  {:>4} {:>8} {:>7} {:>9} {:>11} {:>11} {:>9} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9} {:>7} {}",
        "step", "rate", "clients", "published", "expected", "delivered", "lost", "loss %", "deliv/s",
        "p50 ms", "p99 ms", "p99.9", "max ms", "order", "gaps", "relay %", "ms/1k dlv", "gen %",
        if mode == Mode::Ramp { "pass" } else { "" }
    );
    for s in steps {
        println!(
            "  {:>4} {:>8.0} {:>7} {:>9} {:>11} {:>11} {:>9} {:>9.4} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>9} {:>7.1} {}",
            s.step,
            s.rate,
            s.clients,
            s.sent,
            s.expected,
            s.delivered,
            s.lost(),
            s.loss_ratio() * 100.0,
            s.delivered_per_sec(),
            opt(s.p50_ms, 2),
            opt(s.p99_ms, 2),
            opt(s.p999_ms, 2),
            opt(s.max_ms, 2),
            s.order_violations,
            s.gaps,
            opt(s.server_pub.map(|c| c.1), 1),
            opt(s.cpu_per_1k(), 4),
            s.loadgen_thread_pct,
            match s.pass {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            }
        );
    }
}

/// System-wide figures, on lines of their own because they are not the
/// relay's: they explain a step's outliers.
fn print_machine(steps: &[StepReport]) {
    for s in steps {
        println!(
            "  machine      step {}: {} backlog drops, {} TCP segments retransmitted, other processes {} of a core (system-wide)",
            s.step,
            s.net.backlog_drops,
            s.net.retrans_segs,
            s.others_pct.map_or("-".into(), |p| format!("{p:.0}%"))
        );
    }
}

/// The one figure a ramp is run for.
fn print_ramp(a: &Args, steps: &[StepReport]) {
    let best = steps
        .iter()
        .filter(|s| s.pass == Some(true))
        .map(|s| s.rate)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    println!(
        "  ramp         highest rate without loss and with p99 ≤ {} ms: {}",
        a.p99_bound_ms,
        best.map_or("none".into(), |b| format!("{b} msg/s"))
    );
}

/// Lines that appear only when they have something to say, so that a
/// clean run's table stays short.
fn print_other(a: &Args, r: &Report) {
    if let Some(s) = r.subscribers {
        println!(
            "  redis        {s} subscriber(s) on {:?} before publishing",
            a.channel
        );
    }
    if !r.ends.is_empty() {
        let ends: Vec<String> = r.ends.iter().map(|(k, v)| format!("{v} × {k}")).collect();
        println!("  ended early  {}", ends.join(", "));
    }
    if a.deflate {
        println!(
            "  deflate      agreed on {} of {} connections; {} messages came compressed; {:.1} MiB of frames read",
            r.deflate_agreed,
            r.connect.ok,
            r.inflated,
            r.wire_bytes as f64 / (1 << 20) as f64
        );
    }
    if r.foreign > 0 || r.pings > 0 {
        println!(
            "  other        {} foreign messages, {} pings answered",
            r.foreign, r.pings
        );
    }
}
