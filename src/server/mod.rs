//! Start-up, the main runtime and graceful shutdown: bind everything,
//! build the parts, run the workers on their own threads and the side
//! endpoints (broker, `/publish`, metrics, heartbeat) and signals here.

mod announce;
mod bind;
mod build;
mod signals;

use crate::fanout::thread::{self, Parts};
use crate::ingest::{broker, heartbeat, http_publish};
use crate::net::{listen, tls};
use crate::ops::config::{channel_list, Config};
use crate::ops::log::{self, LogHandle};
use crate::ops::metrics;
use bind::Bound;
use build::Relay;
use signals::Signals;
use slog::{info, warn, Logger};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

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

/// Bind, build, run.
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
    // Handlers go in before anything listens (see `Signals`).
    let signals = {
        let _in_runtime = rt.enter();
        Signals::new().map_err(|e| format!("cannot handle signals: {e}"))?
    };
    let nofile = listen::raise_nofile();
    if cfg.max_connections == 0 {
        cfg.max_connections = match &nofile {
            Ok((_, limit)) => limit.saturating_sub(announce::RESERVED_FDS).max(1) as usize,
            Err(_) => usize::MAX,
        };
    }
    let mut bound = bind::bind(&cfg)?;
    let broker_addr = bound.broker.as_ref().map(bind::local_addr).transpose()?;
    announce::log_init(&log, &cfg, bound.local, &nofile, tls.is_some(), broker_addr);
    cfg.io = announce::choose_io(&log, cfg.io);
    announce_side(&log, &bound)?;
    let mut relay = build::build(&cfg, &log, tls, bound.broker.is_some())?;
    let (stop, stopped) = watch::channel(false);
    let workers = start_workers(&mut relay, &mut bound, stopped)?;
    let main = Main {
        cfg,
        log,
        log_file,
        relay,
        signals,
        stop,
        workers,
    };
    let side = Side {
        metrics: bound.metrics,
        broker: bound.broker,
        publish: bound.publish,
    };
    Ok(rt.block_on(main.serve(side)))
}

/// The side endpoints' `[init]` lines.
fn announce_side(log: &Logger, bound: &Bound) -> Result<(), String> {
    if let Some(l) = &bound.publish {
        let addr = bind::local_addr(l)?;
        info!(log, "[init] publish endpoint on http://{addr}/publish");
    }
    if let Some(l) = &bound.metrics {
        let addr = bind::local_addr(l)?;
        info!(
            log,
            "[init] metrics on http://{addr}/metrics, health on /healthz and /readyz"
        );
    }
    Ok(())
}

/// One thread per worker listener. The subscriber runs on worker 0's
/// thread: with the relay pinned to one core, a subscriber thread of its
/// own competed with the worker for that core and doubled the latency
/// (1,000 clients × 500 msg/s: p50 61-72 ms with its own thread on the
/// core, 14-18 ms without).
fn start_workers(
    relay: &mut Relay,
    bound: &mut Bound,
    shutdown: watch::Receiver<bool>,
) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
    let listeners = std::mem::take(&mut bound.workers);
    let receivers = std::mem::take(&mut relay.receivers);
    let mut handles = Vec::with_capacity(listeners.len());
    for (id, (listener, frames)) in listeners.into_iter().zip(receivers).enumerate() {
        let parts = Parts {
            id,
            listener,
            frames,
            shutdown: shutdown.clone(),
            ctx: relay.ctx.clone(),
            beside: relay.source.take(),
        };
        let h = thread::spawn(parts).map_err(|e| format!("cannot start worker {id}: {e}"))?;
        handles.push(h);
    }
    Ok(handles)
}

/// The listeners served on the main runtime.
struct Side {
    metrics: Option<std::net::TcpListener>,
    broker: Option<std::net::TcpListener>,
    publish: Option<std::net::TcpListener>,
}

/// Converts a bound listener for the main runtime.
fn tokio_listener(l: std::net::TcpListener) -> TcpListener {
    // Cannot fail: the runtime is entered and the listener non-blocking.
    TcpListener::from_std(l).unwrap_or_else(|e| panic!("listener into the runtime: {e}"))
}

/// What the main runtime runs: the side endpoints, the signals, and the
/// shutdown of the workers.
struct Main {
    cfg: Config,
    log: Logger,
    log_file: LogHandle,
    relay: Relay,
    signals: Signals,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Main {
    /// Serves the side endpoints until a stop signal, then shuts down.
    async fn serve(mut self, side: Side) -> i32 {
        self.spawn_side(side);
        let beat = self
            .cfg
            .heartbeat
            .map(|every| tokio::spawn(heartbeat::run(self.relay.ingest.clone(), every)));
        let name = self.wait_for_stop().await;
        info!(
            self.log,
            "[shutdown] {name}: no new clients; closing {} clients with 1001 (up to {:?})",
            self.relay.stats.open.load(Relaxed),
            self.cfg.shutdown_timeout
        );
        if let Some(b) = beat {
            b.abort();
        }
        let _ = self.stop.send(true);
        self.shutdown().await
    }

    /// Answers SIGHUP until SIGTERM or SIGINT; exits when Redis refuses the
    /// relay at start.
    async fn wait_for_stop(&mut self) -> &'static str {
        loop {
            tokio::select! {
                name = self.signals.next() => match name {
                    "SIGHUP" => {
                        match self.log_file.reopen() {
                            Ok(()) => info!(self.log, "[log] SIGHUP: log file reopened"),
                            Err(e) => warn!(self.log, "[log] SIGHUP: {e}; still writing the old file"),
                        }
                        self.reload_channels();
                        self.reload_keys();
                    }
                    name => return name,
                },
                Ok(why) = &mut self.relay.fatal => {
                    slog::error!(self.log, "[redis] {why}: check -rs-url, -rs-user and the password; exiting");
                    eprintln!("pubsocketd: Redis refused the relay at start: {why}");
                    std::process::exit(1);
                }
            }
        }
    }

    /// SIGHUP with `-rs-channel-file`: reads the file again and relays
    /// what it lists now (the subscriber subscribes and unsubscribes, the
    /// workers close the clients left with nothing). A file that cannot be
    /// used changes nothing.
    fn reload_channels(&self) {
        let Some(path) = &self.cfg.channel_file else {
            return;
        };
        let file = path.display();
        let list = channel_list(self.cfg.channel_flag.as_deref(), Some(path));
        let reloaded = list.and_then(|l| self.relay.channels.get().reload(&l));
        match reloaded {
            Err(e) => warn!(
                self.log,
                "[channels] SIGHUP: {e}; the channels stay as they were"
            ),
            Ok((_, 0, 0)) => info!(self.log, "[channels] SIGHUP: {file}: no change"),
            Ok((new, _, _)) if self.cfg.redis.cluster && new.subscribes_patterns() => {
                warn!(self.log, "[channels] SIGHUP: {file} lists patterns, which -rs-cluster cannot relay; the channels stay as they were")
            }
            Ok((new, added, removed)) => {
                let now = new.live().count();
                self.relay.channels.set(new);
                info!(
                    self.log,
                    "[channels] SIGHUP: {file}: {added} added, {removed} removed; {now} channels and patterns relayed"
                );
            }
        }
    }

    /// SIGHUP with `-auth-jwks`: reads the JWK set again (a new `kid`
    /// after a key rotation); one that cannot be used changes nothing.
    fn reload_keys(&self) {
        let Some(reloaded) = self.relay.ctx.auth.as_ref().and_then(|v| v.reload()) else {
            return;
        };
        match reloaded {
            Ok(n) => info!(self.log, "[auth] SIGHUP: the JWK set holds {n} keys now"),
            Err(e) => warn!(self.log, "[auth] SIGHUP: {e}; the keys stay as they were"),
        }
    }

    /// Starts the JWK set refresh (a URL), and the broker, `/publish` and
    /// metrics endpoints that are
    /// configured.
    fn spawn_side(&mut self, side: Side) {
        let (cfg, log) = (&self.cfg, &self.log);
        if let (Some(v), Some(a)) = (&self.relay.ctx.auth, &cfg.auth) {
            tokio::spawn(v.clone().refresh(a.jwks_refresh, log.clone()));
        }
        if let Some(l) = side.broker {
            let b = broker::Broker {
                ingest: self.relay.ingest.clone(),
                token: cfg.publish_token.clone(),
                max_payload: cfg.max_payload,
            };
            tokio::spawn(broker::serve(tokio_listener(l), b, log.clone()));
        }
        if let (Some(l), Some(p), Some(sink)) = (side.publish, &cfg.publish, self.relay.sink.take())
        {
            let l = tokio_listener(l);
            let serving =
                http_publish::serve(l, p.token.clone(), cfg.max_payload, sink, log.clone());
            tokio::spawn(serving);
        }
        if let Some(l) = side.metrics {
            let info = Arc::new(metrics::Info {
                channels: self.relay.channels.clone(),
                max_connections: cfg.max_connections,
                workers: cfg.workers,
                io: cfg.io.name(),
                demand: self.relay.ctx.demand.clone(),
            });
            let stats = self.relay.stats.clone();
            tokio::spawn(metrics::serve(tokio_listener(l), stats, info, log.clone()));
        }
    }

    /// Waits for the workers to close their clients; a second stop signal
    /// exits at once.
    async fn shutdown(mut self) -> i32 {
        let workers = std::mem::take(&mut self.workers);
        let join = tokio::task::spawn_blocking(move || {
            workers.into_iter().for_each(|w| {
                let _ = w.join();
            })
        });
        tokio::select! {
            _ = join => {
                info!(self.log, "[shutdown] done: {}", self.relay.stats.summary());
                0
            }
            name = self.signals.next_stop() => {
                warn!(self.log, "[shutdown] second {name}: exiting now");
                // Not through the runtime's drop, which would wait for the
                // workers' join.
                std::process::exit(1)
            }
        }
    }
}
