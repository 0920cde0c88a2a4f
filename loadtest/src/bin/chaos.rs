//! `chaos`: the fault-injection run (`--scenario chaos`) and the reconnect
//! storm (`--scenario reconnect-storm`). Each starts its own redis-server
//! and relay. See loadtest/README.md.

use argh::FromArgs;
use futures_util::StreamExt;
use loadtest::chaos::{self, Config, Event, Mode, RedisProc, RelayProc};
use loadtest::procfs;
use std::future::pending;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep, timeout};

#[derive(FromArgs)]
/// Chaos runs against pubsocketd: its own redis-server (AOF, appendfsync
/// always) and relay, v1 clients that resume with since, a publisher
/// numbering its messages, and faults on a schedule; or a reconnect storm.
#[argh(
    note = "chaos: publishes --rate msg/s for --duration s; Redis is SIGKILLed at 30 % of the run and restarted from its AOF after 1 s, the relay is stopped with SIGTERM at 60 % and started again after 0.5 s, and every --drop-every s a random --drop-fraction of the clients is dropped and reconnects with since. Prints delivered, lost, duplicated, reordered and the recovered lines. Exit status 1 when, under stream, anything was lost, duplicated or reordered; under pubsub, when a loss was not announced with recovered:false or anything came twice or out of order.",
    note = "reconnect-storm: connects --clients, publishes --messages, then drops every client at once and reconnects them all, first with since = the newest message (nothing to replay: the cost of the reconnects alone), then with since --back messages back; prints the time until all have their replay and recovered, and the relay's CPU per replayed message beside its CPU per live delivery (--live-rate msg/s for --live-seconds after the storm)."
)]
struct Args {
    /// chaos (default) or reconnect-storm
    #[argh(option, default = "String::from(\"chaos\")")]
    scenario: String,
    /// the relay binary (default target/release/pubsocketd)
    #[argh(option, default = "String::from(\"target/release/pubsocketd\")")]
    relay: String,
    /// stream (default for chaos) or pubsub (default for reconnect-storm)
    #[argh(option)]
    mode: Option<String>,
    /// the relay's -history (default: 1000 under pubsub, the relay's own under stream)
    #[argh(option)]
    history: Option<usize>,
    /// clients (default 200; reconnect-storm 10000)
    #[argh(option)]
    clients: Option<usize>,
    /// chaos: messages published per second (default 1000)
    #[argh(option, default = "1000.0")]
    rate: f64,
    /// chaos: seconds of publishing (default 60)
    #[argh(option, default = "60.0")]
    duration: f64,
    /// chaos: faults, comma-separated: redis, relay, drops, or none (default redis,relay,drops)
    #[argh(option, default = "String::from(\"redis,relay,drops\")")]
    faults: String,
    /// chaos: seconds between drops (default 5)
    #[argh(option, default = "5.0")]
    drop_every: f64,
    /// chaos: share of the clients dropped each time (default 0.2)
    #[argh(option, default = "0.2")]
    drop_fraction: f64,
    /// chaos: most seconds to wait after the last publish (default 15)
    #[argh(option, default = "15.0")]
    settle: f64,
    /// chaos: seed of the choice of dropped clients (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// source addresses 127.0.0.2 … 127.0.0.(K+1) (default 8)
    #[argh(option, default = "8")]
    sources: usize,
    /// pin the relay to this core (taskset -c)
    #[argh(option)]
    relay_cpu: Option<usize>,
    /// pin this tool and Redis to this core
    #[argh(option)]
    load_cpu: Option<usize>,
    /// the relay's -workers (default 1)
    #[argh(option, default = "1")]
    workers: usize,
    /// reconnect-storm: messages published before the storm (default 200)
    #[argh(option, default = "200")]
    messages: u64,
    /// reconnect-storm: since this many messages back (default 100)
    #[argh(option, default = "100")]
    back: u64,
    /// reconnect-storm: most upgrades in flight (default 500)
    #[argh(option, default = "500")]
    connect_concurrency: usize,
    /// reconnect-storm: msg/s of the live phase (default 50)
    #[argh(option, default = "50.0")]
    live_rate: f64,
    /// reconnect-storm: seconds of the live phase (default 5)
    #[argh(option, default = "5.0")]
    live_seconds: f64,
    /// print one JSON line at the end
    #[argh(switch)]
    json: bool,
}

fn main() {
    let a: Args = argh::from_env();
    if let Err(e) = procfs::raise_nofile() {
        eprintln!("chaos: cannot raise RLIMIT_NOFILE: {e}");
    }
    if let Some(cpu) = a.load_cpu {
        pin_self(cpu);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match a.scenario.as_str() {
        "chaos" => rt.block_on(run_chaos(&a)),
        "reconnect-storm" => rt.block_on(run_storm(&a)),
        s => Err(format!(
            "unknown --scenario {s:?} (chaos or reconnect-storm)"
        )),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2)
        }
    }
}

/// This thread (and the children it spawns later: Redis) on one core.
fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity
    // on this thread with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("chaos: cannot pin to core {cpu}");
        }
    }
}

fn relay_bin(a: &Args) -> Result<PathBuf, String> {
    let p = PathBuf::from(&a.relay);
    if !p.is_file() {
        return Err(format!(
            "{} is not a file (cargo build --release -p pubsocketd, or --relay PATH)",
            p.display()
        ));
    }
    Ok(p)
}

async fn run_chaos(a: &Args) -> Result<i32, String> {
    let mode = Mode::parse(a.mode.as_deref().unwrap_or("stream"))?;
    let mut cfg = Config::new(relay_bin(a)?, mode);
    if a.history.is_some() {
        cfg.history = a.history;
    }
    cfg.clients = a.clients.unwrap_or(200);
    cfg.rate = a.rate;
    cfg.duration = Duration::from_secs_f64(a.duration);
    let faults: Vec<&str> = a.faults.split(',').map(str::trim).collect();
    for f in &faults {
        if !["redis", "relay", "drops", "none", ""].contains(f) {
            return Err(format!("unknown fault {f:?} (redis, relay, drops or none)"));
        }
    }
    cfg.kill_redis = faults.contains(&"redis");
    cfg.restart_relay = faults.contains(&"relay");
    cfg.drop_every = faults
        .contains(&"drops")
        .then(|| Duration::from_secs_f64(a.drop_every));
    cfg.drop_fraction = a.drop_fraction;
    cfg.settle = Duration::from_secs_f64(a.settle);
    cfg.seed = a.seed;
    cfg.sources = a.sources;
    cfg.relay_cpu = a.relay_cpu;
    cfg.workers = a.workers;
    cfg.verbose = true;
    if cfg.clients == 0 || cfg.rate <= 0.0 || cfg.duration.is_zero() {
        return Err("--clients, --rate and --duration must be above 0".into());
    }
    let out = chaos::run(&cfg).await?;
    out.print();
    if a.json {
        println!("{}", out.json());
    }
    Ok(if out.ok() { 0 } else { 1 })
}

// ------------------------------------------------------------ the storm

/// What the coordinator tells every storm client.
#[derive(Clone, Debug, PartialEq)]
enum Cmd {
    Hold,
    /// Drop the connection (no close frame).
    Drop,
    /// Reconnect with since = this ID; the replay should be messages
    /// after `from` up to `to`.
    Resume {
        since: String,
        from: u64,
        to: u64,
    },
    Stop,
}

#[derive(Default)]
struct StormBoard {
    connected: AtomicUsize,
    /// Clients whose last message is `target`.
    at_target: AtomicUsize,
    target: AtomicU64,
    /// Resumes answered with recovered, true and false.
    recovered_true: AtomicUsize,
    recovered_false: AtomicUsize,
    /// Messages replayed (before `recovered`), and replays not exactly
    /// the expected messages in order.
    replayed: AtomicU64,
    bad_replays: AtomicUsize,
    /// Messages after `recovered` (the live phase).
    live: AtomicU64,
    failures: AtomicUsize,
    /// Time from the resume order to each client's `recovered`.
    times: Mutex<Vec<Duration>>,
    /// The ID of each message, as client 0 saw them.
    ids: Mutex<Vec<(u64, String)>>,
}

async fn storm_client(
    i: usize,
    base: String,
    sources: usize,
    board: Arc<StormBoard>,
    gate: Arc<Semaphore>,
    mut cmd: watch::Receiver<(Cmd, Instant)>,
) {
    let src = chaos::source(i, sources);
    let connect = |url: String| {
        let gate = gate.clone();
        async move {
            let _permit = gate.acquire().await.ok();
            timeout(Duration::from_secs(30), chaos::connect_v1(&url, src))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        }
    };
    let mut ws = match connect(base.clone() + &chaos::query(None)).await {
        Ok(ws) => Some(ws),
        Err(_) => {
            board.failures.fetch_add(1, Relaxed);
            None
        }
    };
    if ws.is_some() {
        board.connected.fetch_add(1, Relaxed);
    }
    // During a replay: (next expected, last expected, when ordered).
    let mut replay: Option<(u64, u64, Instant)> = None;
    loop {
        let next = async {
            match ws.as_mut() {
                Some(w) => w.next().await,
                None => pending().await,
            }
        };
        tokio::select! {
            m = next => {
                let Some(Ok(m)) = m else {
                    ws = None;
                    continue;
                };
                let Ok(text) = m.to_text() else { continue };
                match chaos::parse_event(text) {
                    Event::Message { id, seq } => {
                        if i == 0 && seq > 0 {
                            board.ids.lock().unwrap().push((seq, id));
                        }
                        match replay.as_mut() {
                            Some((want, _, _)) => {
                                board.replayed.fetch_add(1, Relaxed);
                                if seq != *want {
                                    board.bad_replays.fetch_add(1, Relaxed);
                                }
                                *want = seq + 1;
                            }
                            None => {
                                // The marker (0) is not the target.
                                if seq > 0 && board.target.load(Relaxed) == seq {
                                    board.at_target.fetch_add(1, Relaxed);
                                }
                                board.live.fetch_add(1, Relaxed);
                            }
                        }
                    }
                    Event::Recovered(ok) => {
                        if let Some((want, to, at)) = replay.take() {
                            if want != to + 1 {
                                board.bad_replays.fetch_add(1, Relaxed);
                            }
                            board.times.lock().unwrap().push(at.elapsed());
                        }
                        match ok {
                            true => board.recovered_true.fetch_add(1, Relaxed),
                            false => board.recovered_false.fetch_add(1, Relaxed),
                        };
                    }
                    Event::Other => {}
                }
            }
            changed = cmd.changed() => {
                if changed.is_err() {
                    return;
                }
                let (c, at) = cmd.borrow_and_update().clone();
                match c {
                    Cmd::Hold => {}
                    Cmd::Stop => return,
                    Cmd::Drop => {
                        if ws.take().is_some() {
                            board.connected.fetch_sub(1, Relaxed);
                        }
                    }
                    Cmd::Resume { since, from, to } => {
                        let url = format!("{base}?channel={}&since={}:{since}", chaos::CHANNEL, chaos::CHANNEL);
                        match connect(url).await {
                            Ok(w) => {
                                ws = Some(w);
                                board.connected.fetch_add(1, Relaxed);
                                replay = Some((from + 1, to, at));
                            }
                            Err(_) => {
                                board.failures.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn cpu_ns(pid: u32) -> Result<u64, String> {
    procfs::cpu_ns(pid).map_err(|e| format!("relay CPU time: {e}"))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64()
}

async fn wait_until(what: &str, secs: u64, cond: impl Fn() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {secs} s"));
        }
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn run_storm(a: &Args) -> Result<i32, String> {
    let mode = Mode::parse(a.mode.as_deref().unwrap_or("pubsub"))?;
    let clients = a.clients.unwrap_or(10_000);
    if a.back == 0 || a.back >= a.messages {
        return Err("--back must be above 0 and below --messages".into());
    }
    let mut cfg = Config::new(relay_bin(a)?, mode);
    if a.history.is_some() {
        cfg.history = a.history;
    }
    cfg.workers = a.workers;
    let dir = chaos::scratch_dir("storm").map_err(|e| e.to_string())?;
    let redis = RedisProc::start(&dir, false).await?;
    let relay = RelayProc::start(
        &cfg.relay_bin,
        chaos::relay_args(&cfg, redis.port),
        &dir,
        a.relay_cpu,
    )
    .await?;
    let pid = relay.pid().ok_or("relay pid")?;
    eprintln!(
        "storm: {clients} clients, {} mode, relay pid {pid} on :{}, logs in {}",
        mode.name(),
        relay.port,
        dir.display()
    );
    let board = Arc::new(StormBoard::default());
    let gate = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let (cmd_tx, cmd_rx) = watch::channel((Cmd::Hold, Instant::now()));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            tokio::spawn(storm_client(
                i,
                relay.url(""),
                a.sources,
                board.clone(),
                gate.clone(),
                cmd_rx.clone(),
            ))
        })
        .collect();
    let b = board.clone();
    wait_until("all clients connected", 120, || {
        b.connected.load(Relaxed) + b.failures.load(Relaxed) >= clients
    })
    .await?;
    if board.failures.load(Relaxed) > 0 {
        return Err(format!(
            "{} clients failed to connect",
            board.failures.load(Relaxed)
        ));
    }
    eprintln!(
        "storm: {clients} connected in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    // Publish 1..=messages (after a marker that shows the relay reads).
    let b = board.clone();
    let redis_addr = redis.addr();
    let mut tries = 0;
    while b.ids.lock().unwrap().is_empty() && b.live.load(Relaxed) == 0 {
        chaos::publish_once(redis_addr, mode, 0)
            .await
            .map_err(|e| e.to_string())?;
        sleep(Duration::from_millis(200)).await;
        tries += 1;
        if tries > 100 {
            return Err("the marker never arrived".into());
        }
    }
    board.ids.lock().unwrap().clear();
    board.target.store(a.messages, Relaxed);
    chaos::publish(
        redis_addr,
        mode,
        a.messages,
        1000.0,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    wait_until("every client has the messages", 60, || {
        b.at_target.load(Relaxed) >= clients
    })
    .await?;
    let id_of = |seq: u64| -> Result<String, String> {
        b.ids
            .lock()
            .unwrap()
            .iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, id)| id.clone())
            .ok_or(format!("client 0 did not see message {seq}"))
    };
    let rounds = [
        ("since = the newest message (nothing to replay)", a.messages),
        ("since = the message --back before it", a.messages - a.back),
    ];
    let mut cpu_of_round = Vec::new();
    let mut lines = Vec::new();
    let mut all_ok = true;
    for (round, (what, from)) in rounds.iter().enumerate() {
        let since = id_of(*from)?;
        cmd_tx.send_replace((Cmd::Drop, Instant::now()));
        wait_until("all dropped", 30, || b.connected.load(Relaxed) == 0).await?;
        // Let the relay see every socket end before measuring.
        sleep(Duration::from_secs(2)).await;
        for c in [
            &b.recovered_true,
            &b.recovered_false,
            &b.bad_replays,
            &b.failures,
        ] {
            c.store(0, Relaxed);
        }
        b.replayed.store(0, Relaxed);
        b.times.lock().unwrap().clear();
        let cpu0 = cpu_ns(pid)?;
        let start = Instant::now();
        cmd_tx.send_replace((
            Cmd::Resume {
                since,
                from: *from,
                to: a.messages,
            },
            start,
        ));
        wait_until("every client recovered", 120, || {
            b.recovered_true.load(Relaxed)
                + b.recovered_false.load(Relaxed)
                + b.failures.load(Relaxed)
                >= clients
        })
        .await?;
        let all = start.elapsed().as_secs_f64();
        let cpu = cpu_ns(pid)? - cpu0;
        cpu_of_round.push(cpu);
        let mut times = b.times.lock().unwrap().clone();
        times.sort();
        let replayed = b.replayed.load(Relaxed);
        let ok = b.bad_replays.load(Relaxed) == 0
            && b.failures.load(Relaxed) == 0
            && b.recovered_false.load(Relaxed) == 0
            && replayed == clients as u64 * (a.messages - from);
        all_ok &= ok;
        lines.push(format!(
            "round {}, {what}: all {} resumed in {all:.3} s (recovered p50 {:.3} s, p99 {:.3} s); replayed {replayed} (expected {}); recovered:true {}, false {}, failed connects {}, wrong replays {}; relay CPU {:.1} ms = {:.1} µs per resume",
            round + 1,
            clients,
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            clients as u64 * (a.messages - from),
            b.recovered_true.load(Relaxed),
            b.recovered_false.load(Relaxed),
            b.failures.load(Relaxed),
            b.bad_replays.load(Relaxed),
            cpu as f64 / 1e6,
            cpu as f64 / 1e3 / clients as f64,
        ));
        eprintln!("storm: {}", lines.last().unwrap());
    }
    let replay_msgs = clients as f64 * a.back as f64;
    let per_replayed_us = (cpu_of_round[1] as f64 - cpu_of_round[0] as f64) / 1e3 / replay_msgs;
    // Live: the same clients, --live-rate msg/s.
    let live_total = (a.live_rate * a.live_seconds).round().max(1.0) as u64;
    b.live.store(0, Relaxed);
    b.at_target.store(0, Relaxed);
    board.target.store(0, Relaxed);
    let cpu0 = cpu_ns(pid)?;
    // Numbered from 1 again: the clients only count them.
    chaos::publish(
        redis_addr,
        mode,
        live_total,
        a.live_rate,
        Arc::new(AtomicU64::new(0)),
    )
    .await?;
    let b2 = board.clone();
    let expected_live = clients as u64 * live_total;
    let _ = wait_until("live messages delivered", 10, || {
        b2.live.load(Relaxed) >= expected_live
    })
    .await;
    let live_cpu = cpu_ns(pid)? - cpu0;
    let live = b.live.load(Relaxed);
    let per_live_us = live_cpu as f64 / 1e3 / live.max(1) as f64;
    cmd_tx.send_replace((Cmd::Stop, Instant::now()));
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "reconnect-storm: {clients} clients, {} mode, -history {:?}, {} published, since {} back, {} upgrades in flight at most",
        mode.name(),
        cfg.history,
        a.messages,
        a.back,
        a.connect_concurrency
    );
    for l in &lines {
        println!("  {l}");
    }
    println!(
        "  relay CPU per replayed message: {per_replayed_us:.3} µs ((round 2 - round 1) / {replay_msgs})"
    );
    println!(
        "  live: {live_total} messages at {} msg/s, {live} of {expected_live} delivered, relay CPU {:.1} ms = {per_live_us:.3} µs per delivery ({:.2} ms per 1,000)",
        a.live_rate,
        live_cpu as f64 / 1e6,
        per_live_us
    );
    println!(
        "  replayed / live delivery: {:.2}×",
        per_replayed_us / per_live_us
    );
    all_ok &= live >= expected_live;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "scenario": "reconnect-storm", "clients": clients, "mode": mode.name(),
                "back": a.back, "rounds": lines, "cpu_per_replayed_us": per_replayed_us,
                "cpu_per_live_delivery_us": per_live_us, "ok": all_ok,
            })
        );
    }
    drop(relay);
    drop(redis);
    if all_ok {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if all_ok { 0 } else { 1 })
}
