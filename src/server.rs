//! Start-up, the main runtime (subscriber, heartbeat, metrics, signals) and
//! graceful shutdown. Workers run on their own threads.

use crate::channels::BROADCAST;
use crate::config::{Config, Io};
use crate::hub::{Encoder, Hub, Message};
use crate::redis::connect::Target;
use crate::redis::subscriber::Subscriber;
use crate::stats::Stats;
use crate::ws::frame;
use crate::ws::origin::OriginPolicy;
use crate::{broker, log, metrics, net, publish, tls, uring, worker};
use slog::{info, warn, Logger};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Descriptors kept for other uses than clients (listeners, Redis, log
/// file, runtime internals, handshakes in progress), when telling how many
/// clients fit.
const RESERVED_FDS: u64 = 64;

/// The original's heartbeat: the JSON encoding of the string
/// `{"heartbeat": 1}`, i.e. a quoted, escaped string, as a text frame.
pub const HEARTBEAT: &str = r#""{\"heartbeat\": 1}""#;

/// Runs the relay until SIGTERM/SIGINT; returns the exit status.
/// Every start-up failure is one line on stderr and status 1, before
/// anything listens.
pub fn run(cfg: Config) -> i32 {
    match start(cfg) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("pubsocketd: {e}");
            1
        }
    }
}

fn start(mut cfg: Config) -> Result<i32, String> {
    let (log, log_file) = log::logger(cfg.log_level, cfg.log_format, cfg.log_file.as_deref())?;
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))?;
    // Handlers go in before anything listens: a SIGTERM that arrives while
    // the first clients connect must be a graceful stop, not a kill.
    let mut signals = {
        let _in_runtime = rt.enter();
        Signals::new().map_err(|e| format!("cannot handle signals: {e}"))?
    };
    let nofile = net::raise_nofile();
    if cfg.max_connections == 0 {
        cfg.max_connections = match &nofile {
            Ok((_, limit)) => limit.saturating_sub(RESERVED_FDS).max(1) as usize,
            Err(_) => usize::MAX,
        };
    }
    let listeners = net::listeners(cfg.listen, cfg.workers)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let local = listeners[0].local_addr().map_err(|e| e.to_string())?;
    let metrics_listener = cfg.metrics_addr.map(bind_metrics).transpose()?;
    let broker_listener = cfg.embedded_broker.map(bind_broker).transpose()?;
    let broker_addr = broker_listener.as_ref().map(local_addr).transpose()?;
    let publish_listener = cfg
        .publish
        .as_ref()
        .map(|p| bind(p.addr, "-publish-addr"))
        .transpose()?;
    log_init(&log, &cfg, local, &nofile, tls.is_some(), broker_addr);
    cfg.io = choose_io(&log, cfg.io);
    if let Some(l) = &publish_listener {
        info!(
            log,
            "[init] publish endpoint on http://{}/publish",
            local_addr(l)?
        );
    }
    if let Some(l) = &metrics_listener {
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        info!(
            log,
            "[init] metrics on http://{addr}/metrics, health on /healthz and /readyz"
        );
    }

    let stats = Arc::new(Stats::new(cfg.workers, cfg.channels.keys().len()));
    stats.embedded.store(broker_listener.is_some(), Relaxed);
    // Redis is configured (and its TLS files read) only when it is used.
    let target = match &broker_listener {
        None => Some(Target::new(&cfg.redis)?),
        Some(_) => None,
    };
    let encoder = Encoder::new(
        Arc::new(cfg.channels.clone()),
        cfg.envelope,
        cfg.json_only,
        cfg.max_payload,
        stats.clone(),
    )
    .with_deflate(cfg.deflate);
    let (hub, receivers) = Hub::new(cfg.workers);
    let (stop, stopped) = watch::channel(false);
    let ctx = Arc::new(worker::Context {
        cfg: cfg.clone(),
        log: log.clone(),
        tls,
        stats: stats.clone(),
    });
    let (fatal_tx, mut fatal) = tokio::sync::oneshot::channel();
    let publish_sink = match &target {
        Some(target) => publish::Sink::Redis {
            target: target.clone(),
        },
        None => publish::Sink::Local {
            encoder: encoder.clone(),
            hub: hub.clone(),
            stats: stats.clone(),
        },
    };
    let broker = broker::Broker {
        encoder: encoder.clone(),
        hub: hub.clone(),
        stats: stats.clone(),
        token: cfg.publish_token.clone(),
        max_payload: cfg.max_payload,
    };
    // Without Redis the subscriber is never built: `fatal` then never
    // fires (its sender is dropped).
    let subscriber = target.map(|target| Subscriber {
        cfg: cfg.clone(),
        target,
        hub: hub.clone(),
        encoder,
        log: log.clone(),
        stats: stats.clone(),
        fatal: Some(fatal_tx),
        node: None,
    });
    // The subscriber runs on worker 0's thread: with the relay pinned to
    // one core, a subscriber thread of its own competed with the worker for
    // that core and doubled the latency (1,000 clients × 500 msg/s: p50 61-72
    // ms with its own thread on the core, 14-18 ms without).
    let mut source: Option<worker::Task> = subscriber.map(|s| -> worker::Task {
        match s.cfg.redis.cluster {
            true => Box::pin(crate::redis::cluster::Cluster::from(s).run()),
            false => Box::pin(s.run()),
        }
    });
    let mut workers = Vec::with_capacity(cfg.workers);
    for (id, (l, rx)) in listeners.into_iter().zip(receivers).enumerate() {
        let h = worker::spawn(id, l, rx, stopped.clone(), ctx.clone(), source.take())
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        workers.push(h);
    }
    let info = Arc::new(metrics::Info {
        keys: cfg.channels.keys().iter().map(|k| k.name.clone()).collect(),
        max_connections: cfg.max_connections,
        workers: cfg.workers,
        io: cfg.io.name(),
    });
    Ok(rt.block_on(async move {
        if let Some(l) = broker_listener {
            let l = tokio::net::TcpListener::from_std(l).expect("broker listener");
            tokio::spawn(broker::serve(l, broker, log.clone()));
        }
        if let (Some(l), Some(p)) = (publish_listener, &cfg.publish) {
            let l = tokio::net::TcpListener::from_std(l).expect("publish listener");
            let token = p.token.clone();
            let max = cfg.max_payload;
            tokio::spawn(publish::serve(l, token, max, publish_sink, log.clone()));
        }
        let beat = cfg
            .heartbeat
            .map(|every| tokio::spawn(heartbeat(hub, every)));
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l).expect("metrics listener");
            tokio::spawn(metrics::serve(l, stats.clone(), info, log.clone()));
        }
        let name = loop {
            tokio::select! {
                name = signals.next() => match name {
                    "SIGHUP" => match log_file.reopen() {
                        Ok(()) => info!(log, "[log] SIGHUP: log file reopened"),
                        Err(e) => warn!(log, "[log] SIGHUP: {e}; still writing the old file"),
                    },
                    name => break name,
                },
                Ok(why) = &mut fatal => {
                    slog::error!(log, "[redis] {why}: check -rs-url, -rs-user and the password; exiting");
                    eprintln!("pubsocketd: Redis refused the relay at start: {why}");
                    std::process::exit(1);
                }
            }
        };
        info!(
            log,
            "[shutdown] {name}: no new clients; closing {} clients with 1001 (up to {:?})",
            stats.open.load(Relaxed),
            cfg.shutdown_timeout
        );
        if let Some(b) = beat {
            b.abort();
        }
        let _ = stop.send(true);
        let join = tokio::task::spawn_blocking(move || {
            workers.into_iter().for_each(|w| {
                let _ = w.join();
            })
        });
        tokio::select! {
            _ = join => {
                info!(log, "[shutdown] done: {}", stats.summary());
                0
            }
            name = signals.next_stop() => {
                warn!(log, "[shutdown] second {name}: exiting now");
                // Not through the runtime's drop, which would wait for the
                // workers' join.
                std::process::exit(1)
            }
        }
    }))
}

fn bind_metrics(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| format!("cannot listen on -metrics-addr {addr}: {e}"))
}

/// A non-blocking listener for the main runtime; the error names `flag`.
fn bind(addr: std::net::SocketAddr, flag: &str) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|_| l))
        .map_err(|e| format!("cannot listen on {flag} {addr}: {}", io_text(&e)))
}

/// The embedded broker's listener; a taken port is most likely a Redis
/// server, and the error says so.
fn bind_broker(addr: std::net::SocketAddr) -> Result<std::net::TcpListener, String> {
    bind(addr, "-broker").map_err(|e| {
        if e.ends_with("Address already in use") {
            format!("{e} (is a Redis server running there? pick another -broker-port)")
        } else {
            e
        }
    })
}

fn local_addr(l: &std::net::TcpListener) -> Result<std::net::SocketAddr, String> {
    l.local_addr().map_err(|e| e.to_string())
}

/// An I/O error's text without its " (os error N)" suffix.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Checks that io_uring is allowed here before the workers count on it;
/// where it is not (seccomp, `kernel.io_uring_disabled`, an old kernel),
/// the relay says why and writes with epoll.
fn choose_io(log: &Logger, asked: Io) -> Io {
    match asked {
        Io::Epoll => {
            info!(log, "[init] io: epoll (one writev per client per batch)");
            Io::Epoll
        }
        Io::Uring => match uring::Ring::new() {
            Ok(_) => {
                info!(
                    log,
                    "[init] io: uring (one io_uring_enter per fan-out batch)"
                );
                Io::Uring
            }
            Err(e) => {
                warn!(
                    log,
                    "[init] io: io_uring is not available here ({e}); falling back to epoll"
                );
                Io::Epoll
            }
        },
    }
}

/// The `[init]` lines, in the original's words, plus the client cap and
/// the effective configuration.
fn log_init(
    log: &Logger,
    cfg: &Config,
    local: std::net::SocketAddr,
    nofile: &std::io::Result<(u64, u64)>,
    tls: bool,
    broker: Option<std::net::SocketAddr>,
) {
    let from = match &cfg.origins {
        OriginPolicy::Any => "in INSECURE MODE which is not advised for production use".to_string(),
        OriginPolicy::List(list) => format!(
            "from {}",
            list.iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let scheme = if tls { "wss" } else { "ws" };
    info!(
        log,
        "[init] listening for websocket requests on {local}{}, {from}", cfg.route
    );
    let keys = cfg.channels.keys();
    let what = match keys {
        [one] if !one.pattern => format!("the {} channel", one.name),
        _ => format!(
            "the channels {}",
            keys.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match broker {
        Some(addr) => info!(
            log,
            "[init] embedded broker: accepting PUBLISH on {addr} for {what}"
        ),
        None => info!(
            log,
            "[init] listening for pubsub messages from {} sent to {what}",
            cfg.redis.addr()
        ),
    }
    match nofile {
        Ok((before, after)) => info!(
            log,
            "[init] {} workers serving {scheme}://; open file limit {after} (raised from {before}): room for about {} clients; accepting at most {}",
            cfg.workers,
            after.saturating_sub(RESERVED_FDS),
            cfg.max_connections
        ),
        Err(e) => warn!(
            log,
            "[init] {} workers serving {scheme}://; cannot read the open file limit: {e}",
            cfg.workers
        ),
    }
    info!(log, "[init] config: {}", cfg.describe());
}

/// Sends the original's heartbeat message to every client every `every`.
async fn heartbeat(hub: Hub, every: std::time::Duration) {
    let beat = Message {
        frame: frame::encode(frame::OP_TEXT, HEARTBEAT.as_bytes()),
        deflated: None,
        mask: BROADCAST,
        channel: bytes::Bytes::new(),
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        hub.publish(beat.clone()).await;
    }
}

/// SIGTERM and SIGINT (stop), SIGHUP (reopen the log file).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal; returns its name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    async fn next_stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                "SIGHUP" => continue,
                name => return name,
            }
        }
    }
}
