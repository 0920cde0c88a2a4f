//! One load run from the flags to the printed figures: the checks that
//! need the machine (descriptor limit, the relay's process), the client
//! configuration, the runtime, then the table, the SVG and the JSON line.
//! The measuring itself is `coordinate.rs`.

use crate::args::{Args, Mode};
use crate::client::{self, ClientCfg};
use crate::coordinate::coordinate;
use crate::payload::{self, Stamp};
use crate::procfs;
use crate::report::Report;
use crate::svg;
use crate::table::print_table;
use std::sync::Arc;
use std::time::Duration;

/// Descriptors kept for the runtime, Redis, /proc reads.
const RESERVED_FDS: u64 = 64;

/// Returns the exit status; an error is a run that could not start, or
/// could not reach Redis.
pub fn run(a: &Args, mode: Mode) -> Result<i32, String> {
    let plan = a.plan(mode)?;
    let nofile = raise_nofile(a.clients)?;
    if let Some(pid) = a.server_pid {
        if !procfs::alive(pid) {
            return Err(format!("--server-pid {pid}: no such process"));
        }
    }
    // Stamped into every payload, so that messages of an earlier run still
    // in flight are counted as foreign, not as this run's.
    let run_id = client::now_ns() % 1_000_000_007 + u64::from(std::process::id());
    let min = payload::min_size(&Stamp {
        seq: 1_000_000,
        t_ns: client::now_ns(),
        run: run_id,
        step: 0,
    });
    let cfg = Arc::new(ClientCfg {
        server: plan.server,
        host: plan.host,
        target: plan.target,
        transport: plan.transport,
        spread: (a.spread > 0).then(|| (a.channel.clone(), a.spread, a.spread_from)),
        origin: a.origin.clone(),
        deflate: a.deflate,
        sources: plan.sources,
        handshake_timeout: Duration::from_secs_f64(a.handshake_timeout),
    });
    a.check_pad()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let mut report = rt.block_on(coordinate(a, mode, cfg, plan.redis, &plan.rates, run_id))?;
    if a.size < min {
        report.warnings.push(format!(
            "--size {} is below the smallest stamped payload; payloads were about {min} bytes",
            a.size
        ));
    }
    print_table(a, mode, &report);
    if let Some(path) = &a.svg {
        write_svg(a, mode, &report, path)?;
    }
    if a.json {
        println!("{}", report.to_json(a, mode, run_id, nofile));
    }
    Ok(0)
}

/// Raises the soft limit to the hard one and refuses a client count that
/// would hit it, since running out mid-connect would look like the
/// relay refusing connections. Returns (soft limit before, after).
fn raise_nofile(clients: usize) -> Result<(u64, u64), String> {
    let nofile = procfs::raise_nofile().map_err(|e| format!("cannot raise RLIMIT_NOFILE: {e}"))?;
    let needed = clients as u64 + RESERVED_FDS;
    if needed > nofile.1 {
        return Err(format!(
            "{clients} clients need {needed} descriptors but the open-file limit is {} (hard limit); one process opens at most about {} clients here: run several processes",
            nofile.1,
            nofile.1.saturating_sub(RESERVED_FDS)
        ));
    }
    Ok(nofile)
}

/// The title names the run, so that a plot kept apart from its log
/// still says what it shows.
fn write_svg(a: &Args, mode: Mode, report: &Report, path: &str) -> Result<(), String> {
    let title = format!(
        "{} {}: {} clients, {} B, {}",
        mode.name(),
        a.url,
        a.clients,
        a.size,
        a.label.as_deref().unwrap_or("")
    );
    std::fs::write(path, svg::render(&title, &report.samples))
        .map_err(|e| format!("cannot write {path}: {e}"))
}
