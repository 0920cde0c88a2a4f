//! CPU time between two instants. The relay's share is the measurement;
//! the load generator's and the rest of the machine's say whether it can
//! be trusted (a saturated client thread or a build running alongside
//! shows up as latency that is not the relay's).

use crate::procfs;
use std::time::Instant;

/// CPU readings at one instant. Every figure is the difference of two
/// marks, so that start-up and the connect phase never count towards a
/// step.
pub(crate) struct CpuMark {
    pub(crate) at: Instant,
    server_ns: Option<u64>,
    self_ns: u64,
    /// (thread name, ns): per thread, because one saturated thread limits
    /// the run while the process as a whole still looks idle.
    threads: Vec<(String, u64)>,
    /// CPU time of every process on the machine.
    machine_ns: Option<u64>,
}

/// `tids` are the client threads' ids in the order they were started,
/// which is how they are named in the report.
pub(crate) fn cpu_mark(server: Option<u32>, tids: &[u32], main_tid: u32) -> CpuMark {
    let pid = std::process::id();
    let mut threads: Vec<(String, u64)> = tids
        .iter()
        .enumerate()
        .filter_map(|(i, tid)| {
            Some((
                format!("clients-{i}"),
                procfs::thread_cpu_ns(pid, *tid).ok()?,
            ))
        })
        .collect();
    if let Ok(ns) = procfs::thread_cpu_ns(pid, main_tid) {
        threads.push(("main (publisher)".into(), ns));
    }
    CpuMark {
        at: Instant::now(),
        server_ns: server.and_then(|p| procfs::cpu_ns(p).ok()),
        self_ns: procfs::self_cpu_ns(),
        threads,
        machine_ns: procfs::machine_busy_ns(),
    }
}

/// CPU % of one core that processes other than the load generator and the
/// relay used between two marks (builds, other tests): noise in the
/// figures. Tick-based (10 ms), so only meaningful over seconds.
pub(crate) fn others_cpu(a: &CpuMark, b: &CpuMark) -> Option<f64> {
    let all = b.machine_ns?.checked_sub(a.machine_ns?)? as f64;
    let ours = b.self_ns.saturating_sub(a.self_ns) as f64;
    let relay = match (a.server_ns, b.server_ns) {
        (Some(x), Some(y)) => y.saturating_sub(x) as f64,
        _ => 0.0,
    };
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    Some(((all - ours - relay) / wall * 100.0).max(0.0))
}

/// Load generator CPU between two marks: (busiest thread, its %, whole
/// process %). The busiest thread, not the total, decides whether the
/// load generator was the bottleneck.
pub(crate) fn loadgen_cpu(a: &CpuMark, b: &CpuMark) -> (String, f64, f64) {
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    let mut busiest = (String::new(), 0.0);
    for (name, end) in &b.threads {
        if let Some((_, start)) = a.threads.iter().find(|(n, _)| n == name) {
            let pct = end.saturating_sub(*start) as f64 / wall * 100.0;
            if pct > busiest.1 {
                busiest = (name.clone(), pct);
            }
        }
    }
    let total = b.self_ns.saturating_sub(a.self_ns) as f64 / wall * 100.0;
    (busiest.0, busiest.1, total)
}

/// The relay's CPU between two marks: (ms, % of one core). `None` without
/// `--server-pid`, or when the relay exited in between.
pub(crate) fn server_cpu(a: &CpuMark, b: &CpuMark) -> Option<(f64, f64)> {
    let ns = b.server_ns?.checked_sub(a.server_ns?)? as f64;
    let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
    Some((ns / 1e6, ns / wall * 100.0))
}
