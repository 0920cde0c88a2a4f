//! What `/proc` and `getrusage` tell about a process: CPU time, resident
//! memory, the open-file limit.

use std::io;

/// CPU time (user + system) a process has used, in nanoseconds: the sum
/// of `/proc/PID/task/*/schedstat` (exact, in ns), or, where that is not
/// available, `utime + stime` of `/proc/PID/stat` (in clock ticks, 10 ms
/// on most kernels). Threads that have exited drop out of the schedstat
/// sum, so the relay's thread count must not change during a sample pair;
/// it does not (fixed workers).
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    match schedstat_ns(pid) {
        Ok(ns) if ns > 0 => Ok(ns),
        _ => stat_cpu_ns(pid),
    }
}

fn schedstat_ns(pid: u32) -> io::Result<u64> {
    let mut sum = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = entry?.path().join("schedstat");
        // A thread may end between the listing and the read.
        if let Ok(s) = std::fs::read_to_string(path) {
            sum += first_number(&s).unwrap_or(0);
        }
    }
    Ok(sum)
}

/// One thread's CPU time in ns, from `/proc/PID/task/TID/schedstat`.
pub fn thread_cpu_ns(pid: u32, tid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))?;
    first_number(&s).ok_or_else(|| io::Error::other("empty schedstat"))
}

fn first_number(s: &str) -> Option<u64> {
    s.split_ascii_whitespace().next()?.parse().ok()
}

/// `utime + stime` from `/proc/PID/stat`, in ns.
pub fn stat_cpu_ns(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_ticks(&s).ok_or_else(|| io::Error::other("unreadable stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * (1_000_000_000 / hz))
}

/// utime + stime (fields 14 and 15) of a `stat` line; the command name
/// (field 2) may hold spaces and parentheses, so fields are counted after
/// its last `)`.
pub fn parse_stat_ticks(s: &str) -> Option<u64> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&s, "VmRSS:").ok_or_else(|| io::Error::other("no VmRSS"))
}

pub fn parse_status_kib(s: &str, key: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with(key))?;
    line[key.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

/// This process's CPU time (all threads, user + system), in ns.
pub fn self_cpu_ns() -> u64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (before,
/// after).
pub fn raise_nofile() -> io::Result<(u64, u64)> {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return Err(io::Error::last_os_error());
        }
        let before = l.rlim_cur as u64;
        if l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok((before, l.rlim_cur as u64))
    }
}

/// System-wide network counters that explain latency outliers on
/// loopback: packets the kernel dropped because a CPU's input backlog was
/// full (`net.core.netdev_max_backlog`), and TCP's retransmissions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Second column of `/proc/net/softnet_stat`, summed over CPUs.
    pub backlog_drops: u64,
    /// `Tcp: RetransSegs` of `/proc/net/snmp`.
    pub retrans_segs: u64,
    /// `TcpExt: ListenDrops` of `/proc/net/netstat` (full accept queues).
    pub listen_drops: u64,
}

impl NetCounters {
    pub fn read() -> NetCounters {
        let get = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        NetCounters {
            backlog_drops: parse_softnet_drops(&get("/proc/net/softnet_stat")),
            retrans_segs: parse_snmp(&get("/proc/net/snmp"), "Tcp:", "RetransSegs").unwrap_or(0),
            listen_drops: parse_snmp(&get("/proc/net/netstat"), "TcpExt:", "ListenDrops")
                .unwrap_or(0),
        }
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &NetCounters) -> NetCounters {
        NetCounters {
            backlog_drops: self.backlog_drops.saturating_sub(earlier.backlog_drops),
            retrans_segs: self.retrans_segs.saturating_sub(earlier.retrans_segs),
            listen_drops: self.listen_drops.saturating_sub(earlier.listen_drops),
        }
    }
}

pub fn parse_softnet_drops(s: &str) -> u64 {
    s.lines()
        .filter_map(|l| l.split_ascii_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

/// A value of `/proc/net/snmp` or `netstat`: a header line and a value
/// line share a prefix such as `Tcp:`.
pub fn parse_snmp(s: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = s.lines().filter(|l| l.starts_with(prefix));
    while let (Some(head), Some(values)) = (lines.next(), lines.next()) {
        let i = head.split_ascii_whitespace().position(|h| h == name);
        if let Some(i) = i {
            return values.split_ascii_whitespace().nth(i)?.parse().ok();
        }
    }
    None
}

/// CPU time all processes used on the machine, in ns: the busy fields
/// (user, nice, system, irq, softirq, steal) of the `cpu` line of
/// `/proc/stat`, in clock ticks.
pub fn machine_busy_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_proc_stat_busy(&s)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * (1_000_000_000 / hz))
}

pub fn parse_proc_stat_busy(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_ascii_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0))
}

/// `net.core.netdev_max_backlog`.
pub fn netdev_max_backlog() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/core/netdev_max_backlog")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_lines() {
        let stat = "1234 (a (b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t   4321 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(4321));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn network_counters() {
        let softnet = "01ff984f 00001514 00000000\n00cca424 00000002 00000000\n";
        assert_eq!(parse_softnet_drops(softnet), 0x1514 + 2);
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\nTcp: RtoAlgorithm RtoMin RetransSegs InErrs\nTcp: 1 200 178317 0\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(parse_snmp(snmp, "Tcp:", "RetransSegs"), Some(178317));
        assert_eq!(parse_snmp(snmp, "Tcp:", "Nope"), None);
        let a = NetCounters {
            backlog_drops: 5,
            retrans_segs: 10,
            listen_drops: 1,
        };
        let b = NetCounters {
            backlog_drops: 7,
            retrans_segs: 30,
            listen_drops: 1,
        };
        assert_eq!(
            b.since(&a),
            NetCounters {
                backlog_drops: 2,
                retrans_segs: 20,
                listen_drops: 0
            }
        );
        NetCounters::read();
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 0 25 500 3 1 1 0 0 0\n";
        assert_eq!(parse_proc_stat_busy(stat), Some(100 + 5 + 50 + 3 + 2 + 1));
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        assert!(cpu_ns(pid).is_ok());
        assert!(thread_cpu_ns(pid, gettid()).is_ok());
        assert!(alive(pid));
    }
}
