//! One measurement, inside the runtime: connect every client, then hold
//! them idle or publish each rate in turn, then stop the clients and
//! gather the figures. The phases run one after another on the main
//! thread, which is also the publisher, so that a step's CPU and latency
//! figures cover that step alone.

use crate::args::{Args, Mode};
use crate::client::{self, ClientCfg};
use crate::cpu::{cpu_mark, loadgen_cpu, others_cpu, server_cpu, CpuMark};
use crate::monitor::Monitor;
use crate::procfs::{self, NetCounters};
use crate::publisher::{PubCounters, Publisher, StepPublished};
use crate::report::{self, ConnectReport, IdleReport, Report, StepReport};
use crate::shared::Shared;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::time::sleep;

/// How long the publisher waits for the relay to subscribe, and for the
/// last PUBLISH replies.
const REDIS_WAIT: Duration = Duration::from_secs(5);

/// Runs the phases and returns the figures, warnings included. An error
/// means Redis could not be used, or the client threads could not start.
pub(crate) async fn coordinate(
    a: &Args,
    mode: Mode,
    cfg: Arc<ClientCfg>,
    redis: SocketAddr,
    rates: &[f64],
    run_id: u64,
) -> Result<Report, String> {
    let mut run = Coordinator::new(a, mode, run_id);
    let (connect, threads) = run.connect(cfg).await?;
    let measured = run.measure(redis, rates, run_id).await?;
    run.mon.tick(Instant::now());
    run.sh.stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Ok(run.collect(connect, measured))
}

/// What every phase needs; the warnings gather in the order the phases
/// find them.
struct Coordinator<'a> {
    a: &'a Args,
    mode: Mode,
    sh: Arc<Shared>,
    interrupted: Arc<AtomicBool>,
    /// The publisher's thread, measured apart from the client threads.
    main_tid: u32,
    mon: Monitor,
    warnings: Vec<String>,
}

/// The figures of the phase after connecting: steps, or the idle hold.
#[derive(Default)]
struct Measured {
    steps: Vec<StepReport>,
    idle: Option<IdleReport>,
    subscribers: Option<u64>,
    to_nobody: u64,
    redis_errors: u64,
}

/// Counters at the start of a step, so that a step reports what happened
/// during it and not since the run began.
struct StepStart {
    clients: u64,
    order_violations: u64,
    gaps: u64,
    disconnected: u64,
    cpu: CpuMark,
    net: NetCounters,
}

impl StepStart {
    /// Every client that was connected when the step began should get
    /// every message of its channel (all of them, or with `--spread N`
    /// one in N); one that left since counts as loss.
    fn expected(&self, published: &StepPublished, spread: usize) -> u64 {
        self.clients * published.sent / spread.max(1) as u64
    }
}

impl<'a> Coordinator<'a> {
    /// Ctrl-C only sets a flag: the phases stop at their next wait, and
    /// the figures so far are still reported.
    fn new(a: &'a Args, mode: Mode, run_id: u64) -> Coordinator<'a> {
        let sh = Arc::new(Shared::new(run_id));
        let interrupted = Arc::new(AtomicBool::new(false));
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("pubsocketd-loadtest: interrupted; finishing the report");
                flag.store(true, Relaxed);
            }
        });
        Coordinator {
            a,
            mode,
            sh: sh.clone(),
            interrupted: interrupted.clone(),
            main_tid: procfs::gettid(),
            mon: Monitor::new(sh, a.clients, interrupted),
            warnings: Vec::new(),
        }
    }

    fn mark(&self) -> CpuMark {
        cpu_mark(
            self.a.server_pid,
            &self.sh.tids.lock().unwrap(),
            self.main_tid,
        )
    }

    fn server_rss(&self) -> Option<u64> {
        self.a.server_pid.and_then(|p| procfs::rss_kib(p).ok())
    }

    fn server_cpu_ns(&self) -> Option<u64> {
        self.a.server_pid.and_then(|p| procfs::cpu_ns(p).ok())
    }

    /// Waits for every upgrade to succeed or fail (or the connect
    /// timeout), so that the measurement starts with a fixed set of
    /// clients. The threads are joined only at the end: they hold the
    /// connections.
    async fn connect(
        &mut self,
        cfg: Arc<ClientCfg>,
    ) -> Result<(ConnectReport, Vec<JoinHandle<()>>), String> {
        let a = self.a;
        let rss_before = self.server_rss();
        let cpu_before = self.server_cpu_ns();
        let net0 = NetCounters::read();
        let start = Instant::now();
        let threads = client::spawn(
            cfg,
            self.sh.clone(),
            a.clients,
            a.threads,
            a.connect_concurrency,
        )
        .map_err(|e| format!("cannot start client threads: {e}"))?;
        let c = &self.sh.c;
        let total = a.clients as u64;
        let deadline = start + Duration::from_secs_f64(a.connect_timeout);
        self.mon
            .wait(deadline, || {
                c.handshakes_ok.load(Relaxed) + c.handshakes_failed.load(Relaxed) >= total
            })
            .await;
        let secs = start.elapsed().as_secs_f64();
        let cpu_ns = cpu_before
            .zip(self.server_cpu_ns())
            .map(|(b, a)| a.saturating_sub(b));
        // Let the relay finish what it does after the 101 before reading RSS.
        sleep(Duration::from_millis(300)).await;
        let mut connect = self.connect_report(secs, rss_before, &net0);
        connect.server_cpu_ns = cpu_ns;
        self.note_connect(&connect);
        Ok((connect, threads))
    }

    fn connect_report(
        &self,
        secs: f64,
        rss_before: Option<u64>,
        net0: &NetCounters,
    ) -> ConnectReport {
        let c = &self.sh.c;
        let (hs50, hs99) = {
            let h = self.sh.handshake_us.lock().unwrap();
            (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            )
        };
        ConnectReport {
            requested: self.a.clients,
            ok: c.handshakes_ok.load(Relaxed),
            failed: c.handshakes_failed.load(Relaxed),
            secs,
            failures: self.sh.failures.lock().unwrap().clone(),
            handshake_p50_ms: hs50,
            handshake_p99_ms: hs99,
            rss_before_kib: rss_before,
            rss_after_kib: self.server_rss(),
            net: NetCounters::read().since(net0),
            server_cpu_ns: None,
        }
    }

    /// The live line's last word on the connect phase, and a warning for
    /// each way it fell short.
    fn note_connect(&mut self, connect: &ConnectReport) {
        let clients = self.a.clients;
        eprintln!(
            "[{:6.1}s] connected {} of {} in {:.2} s ({:.0}/s), {} failed",
            self.mon.start.elapsed().as_secs_f64(),
            connect.ok,
            clients,
            connect.secs,
            connect.rate_per_sec(),
            connect.failed
        );
        if connect.failed > 0 {
            self.warnings.push(format!(
                "{} of {} clients failed to connect: {:?}",
                connect.failed, clients, connect.failures
            ));
        }
        let settled = connect.ok + connect.failed;
        if settled < clients as u64 {
            self.warnings.push(format!(
                "{} clients were still connecting when the connect phase ended",
                clients as u64 - settled
            ));
        }
    }

    async fn measure(
        &mut self,
        redis: SocketAddr,
        rates: &[f64],
        run_id: u64,
    ) -> Result<Measured, String> {
        if self.sh.c.connected.load(Relaxed) == 0 {
            self.warnings
                .push("no client connected; nothing was measured".into());
            Ok(Measured::default())
        } else if self.mode == Mode::Idle {
            let idle = self.idle_hold().await;
            Ok(Measured {
                idle: Some(idle),
                ..Measured::default()
            })
        } else {
            self.publish(redis, rates, run_id).await
        }
    }

    /// Holds the connections for `--duration` without publishing: what
    /// the relay spends on clients that only stay connected.
    async fn idle_hold(&mut self) -> IdleReport {
        let c = &self.sh.c;
        self.mon.phase = "idle".into();
        let d0 = c.disconnected.load(Relaxed);
        let m0 = self.mark();
        let end = Instant::now() + Duration::from_secs_f64(self.a.duration);
        self.mon.wait(end, || false).await;
        let m1 = self.mark();
        let (_, thread_pct, _) = loadgen_cpu(&m0, &m1);
        IdleReport {
            secs: m1.at.duration_since(m0.at).as_secs_f64(),
            clients: c.connected.load(Relaxed),
            server: server_cpu(&m0, &m1),
            rss_end_kib: self.server_rss(),
            loadgen_thread_pct: thread_pct,
            disconnects: c.disconnected.load(Relaxed) - d0,
            others_pct: others_cpu(&m0, &m1),
        }
    }

    /// Publishes each rate in turn; a ramp stops at its first failed
    /// step, since every higher rate would fail too.
    async fn publish(
        &mut self,
        redis: SocketAddr,
        rates: &[f64],
        run_id: u64,
    ) -> Result<Measured, String> {
        let a = self.a;
        let (mut publisher, subs) =
            Publisher::connect(redis, &a.channel, (a.spread, a.spread_from), REDIS_WAIT)
                .await
                .map_err(|e| format!("Redis at {redis}: {e}"))?;
        publisher.words = a.pad == "words";
        if subs == 0 {
            self.warnings.push(format!(
                "no subscriber on channel {:?} after 5 s: is the relay connected to this Redis?",
                a.channel
            ));
        }
        self.mon.published = Some(publisher.counters.clone());
        let mut steps = Vec::new();
        for (i, &rate) in rates.iter().enumerate() {
            if self.interrupted.load(Relaxed) || self.sh.c.connected.load(Relaxed) == 0 {
                break;
            }
            let s = self.step(&mut publisher, i, rate, redis, run_id).await?;
            let failed = s.pass == Some(false);
            steps.push(s);
            if failed {
                break;
            }
        }
        let (to_nobody, redis_errors) = self.note_publisher(&publisher.counters);
        Ok(Measured {
            steps,
            idle: None,
            subscribers: Some(subs),
            to_nobody,
            redis_errors,
        })
    }

    /// One rate: publish for `--duration`, wait for the stragglers, then
    /// read every counter against the step's start.
    async fn step(
        &mut self,
        publisher: &mut Publisher,
        i: usize,
        rate: f64,
        redis: SocketAddr,
        run_id: u64,
    ) -> Result<StepReport, String> {
        self.mon.phase = if self.mode == Mode::Ramp {
            format!("step {i} at {rate}/s")
        } else {
            "publishing".into()
        };
        self.mon.step = Some(i);
        let start = self.step_start();
        let duration = Duration::from_secs_f64(self.a.duration);
        let publish = publisher.step(
            rate,
            self.a.size,
            duration,
            run_id,
            i as u32,
            &self.interrupted,
        );
        let published = self
            .mon
            .during(publish)
            .await
            .map_err(|e| format!("publishing to Redis at {redis}: {e}"))?;
        let m_pub = self.mark();
        publisher.drain(REDIS_WAIT).await;
        let settle_secs = self
            .settle(i, start.expected(&published, self.a.spread))
            .await;
        Ok(self.step_report(i, rate, start, &published, &m_pub, settle_secs))
    }

    fn step_start(&self) -> StepStart {
        let c = &self.sh.c;
        StepStart {
            clients: c.connected.load(Relaxed),
            order_violations: c.order_violations.load(Relaxed),
            gaps: c.gaps.load(Relaxed),
            disconnected: c.disconnected.load(Relaxed),
            cpu: self.mark(),
            net: NetCounters::read(),
        }
    }

    /// Waits up to `--settle` for late messages, so that loss counts only
    /// what never came; ends early once all arrived or every client left.
    async fn settle(&mut self, i: usize, expected: u64) -> f64 {
        self.mon.phase = format!("settling step {i}");
        let sh = &self.sh;
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(self.a.settle);
        self.mon
            .wait(deadline, || {
                sh.step_delivered(i) >= expected || sh.c.connected.load(Relaxed) == 0
            })
            .await;
        start.elapsed().as_secs_f64()
    }

    /// `m_pub` ends the publish window, over which the relay's CPU % is
    /// taken; its CPU per delivery runs on to the end of the settle.
    fn step_report(
        &self,
        i: usize,
        rate: f64,
        start: StepStart,
        published: &StepPublished,
        m_pub: &CpuMark,
        settle_secs: f64,
    ) -> StepReport {
        let c = &self.sh.c;
        let m1 = self.mark();
        let h = self.sh.step_histogram(i);
        let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0);
        let (thread, thread_pct, total_pct) = loadgen_cpu(&start.cpu, &m1);
        let mut s = StepReport {
            step: i,
            rate,
            clients: start.clients,
            sent: published.sent,
            publish_secs: published
                .ended
                .duration_since(published.started)
                .as_secs_f64(),
            expected: start.expected(published, self.a.spread),
            delivered: self.sh.step_delivered(i),
            settle_secs,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: (!h.is_empty()).then(|| h.max() as f64 / 1000.0),
            order_violations: c.order_violations.load(Relaxed) - start.order_violations,
            gaps: c.gaps.load(Relaxed) - start.gaps,
            disconnects: c.disconnected.load(Relaxed) - start.disconnected,
            server_pub: server_cpu(&start.cpu, m_pub),
            server_total_ms: server_cpu(&start.cpu, &m1).map(|c| c.0),
            loadgen_thread: thread,
            loadgen_thread_pct: thread_pct,
            loadgen_total_pct: total_pct,
            net: NetCounters::read().since(&start.net),
            others_pct: others_cpu(&start.cpu, &m1),
            pass: None,
        };
        if self.mode == Mode::Ramp {
            let failed = s.lost() > 0 || s.p99_ms.is_none_or(|p| p > self.a.p99_bound_ms);
            s.pass = Some(!failed);
        }
        s
    }

    /// Redis trouble during the run: a relay that was not subscribed, or
    /// errors, would otherwise pass for loss.
    fn note_publisher(&mut self, pc: &PubCounters) -> (u64, u64) {
        let to_nobody = pc.to_nobody.load(Relaxed);
        let redis_errors = pc.errors.load(Relaxed);
        if to_nobody > 0 {
            self.warnings.push(format!(
                "{to_nobody} PUBLISH replies said nobody was subscribed (the relay was not connected to Redis then)"
            ));
        }
        if redis_errors > 0 || pc.lost.load(Relaxed) {
            self.warnings.push(format!(
                "Redis: {redis_errors} error replies, connection lost: {}, last error: {:?}",
                pc.lost.load(Relaxed),
                pc.last_error.lock().unwrap()
            ));
        }
        (to_nobody, redis_errors)
    }

    /// After the client threads have stopped, so that the counters and
    /// the connection ends no longer move.
    fn collect(mut self, connect: ConnectReport, m: Measured) -> Report {
        let c = &self.sh.c;
        let mut r = Report {
            bottleneck: report::loadgen_bottleneck(&m.steps, m.idle.as_ref()),
            connect,
            steps: m.steps,
            idle: m.idle,
            samples: std::mem::take(&mut self.mon.samples),
            warnings: self.warnings,
            ends: self.sh.ends.lock().unwrap().clone(),
            foreign: c.foreign.load(Relaxed),
            pings: c.pings.load(Relaxed),
            deflate_agreed: c.deflate_agreed.load(Relaxed),
            inflated: c.inflated.load(Relaxed),
            wire_bytes: c.bytes.load(Relaxed),
            subscribers: m.subscribers,
            to_nobody: m.to_nobody,
            redis_errors: m.redis_errors,
            interrupted: self.interrupted.load(Relaxed),
        };
        r.add_caveats();
        r
    }
}
