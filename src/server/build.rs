//! Building the relay's parts from the configuration: the counters, the
//! hub and the ingest handle every source publishes through, the workers'
//! shared context, the Redis subscriber (or cluster supervisor), and where
//! `POST /publish` sends its messages.

use crate::auth::callback::Callback;
use crate::auth::verify::Verifier;
use crate::channels::{Live, MAX_IDS};
use crate::demand::Demand;
use crate::fanout::context::Context;
use crate::fanout::hub::{Hub, Message};
use crate::fanout::older::Source;
use crate::fanout::thread::Task;
use crate::ingest::encode::Encoder;
use crate::ingest::handle::Ingest;
use crate::ingest::http_publish::Sink;
use crate::ops::auth_flags::Mode;
use crate::ops::config::Config;
use crate::ops::stats::Stats;
use crate::redis::cluster::Cluster;
use crate::redis::connect::Target;
use crate::redis::publisher::Publisher;
use crate::redis::stream::{Cursors, StreamReader};
use crate::redis::subscriber::Subscriber;
use bytes::Bytes;
use slog::Logger;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

/// The relay's parts, ready to run.
pub struct Relay {
    /// The channels relayed now; a SIGHUP with `-rs-channel-file` replaces
    /// them.
    pub channels: Arc<Live>,
    pub stats: Arc<Stats>,
    pub ingest: Ingest,
    /// One per worker: its end of the hub.
    pub receivers: Vec<mpsc::Receiver<Message>>,
    pub ctx: Arc<Context>,
    /// The Redis side, run on worker 0's thread; `None` with the embedded
    /// broker.
    pub source: Option<Task>,
    /// Where `POST /publish` sends messages (taken when it starts).
    pub sink: Option<Sink>,
    /// Told when Redis refuses the relay before its first subscription.
    /// Never fires without Redis (its sender is dropped).
    pub fatal: oneshot::Receiver<String>,
}

/// Builds every part; `embedded` when the embedded broker replaces Redis.
pub fn build(
    cfg: &Config,
    log: &Logger,
    tls: Option<TlsAcceptor>,
    embedded: bool,
) -> Result<Relay, String> {
    // With a channel file, reloads may add keys: room for every id a run
    // may give out.
    let ids = match cfg.channel_file {
        Some(_) => MAX_IDS,
        None => cfg.channels.keys().len(),
    };
    let stats = Arc::new(Stats::new(cfg.workers, ids));
    stats.embedded.store(embedded, Relaxed);
    let channels = Arc::new(Live::new(cfg.channels.clone()));
    let encoder = Encoder::new(
        channels.clone(),
        cfg.envelope,
        cfg.json_only,
        cfg.max_payload,
        stats.clone(),
    )
    .with_deflate(cfg.deflate)
    .with_history(cfg.history.is_some());
    let (hub, receivers) = Hub::new(cfg.workers);
    let cursors = Cursors::default();
    let older = older_source(cfg, &encoder, &cursors)?;
    let mut ingest = Ingest::new(encoder, hub, stats.clone());
    if cfg.history.is_some() && cfg.redis.stream.is_none() {
        ingest = ingest.with_sequencer();
    }
    let demand = cfg
        .channels
        .on_demand()
        .then(|| Demand::new(cfg.on_demand_grace));
    let (auth, callback) = match cfg.auth.as_ref().map(|a| (&a.mode, a)) {
        None => (None, None),
        Some((Mode::Jwt(keys), a)) => {
            let v = Verifier::new(keys.clone(), a.rules.clone())?;
            (Some(Arc::new(v)), None)
        }
        Some((
            Mode::Url {
                url,
                timeout,
                concurrency,
            },
            _,
        )) => {
            let cb = Callback::new(url, *timeout, *concurrency)?;
            (None, Some(Arc::new(cb)))
        }
    };
    let ctx = Arc::new(Context {
        channels: channels.clone(),
        cfg: cfg.clone(),
        log: log.clone(),
        tls,
        stats: stats.clone(),
        demand: demand.clone(),
        auth,
        callback,
        older,
    });
    let (fatal_tx, fatal) = oneshot::channel();
    // Redis is configured (and its TLS files read) only when it is used.
    let (source, sink) = if embedded {
        (None, Sink::Local(ingest.clone()))
    } else {
        let target = Target::new(&cfg.redis)?;
        let sub = Subscriber {
            cfg: cfg.clone(),
            target: target.clone(),
            ingest: ingest.clone(),
            channels: channels.clone(),
            log: log.clone(),
            stats: stats.clone(),
            fatal: Some(fatal_tx),
            node: None,
            demand,
        };
        let source = match &cfg.redis.stream {
            Some(s) if !cfg.redis.cluster => streams(sub, &s.field, cursors),
            Some(_) => source(sub, Some(cursors)),
            None => source(sub, None),
        };
        let publisher = Publisher::new(target, cfg.redis.stream.clone());
        (Some(source), Sink::Redis(publisher))
    };
    Ok(Relay {
        channels,
        stats,
        ingest,
        receivers,
        ctx,
        source,
        sink: Some(sink),
        fatal,
    })
}

/// The subscriber's task: one connection, or one per cluster node (and,
/// under `-rs-on-demand`, the sweep of channels nobody reads).
/// `-rs-mode=stream`: what workers read resumes older than their history
/// from.
fn older_source(
    cfg: &Config,
    encoder: &Encoder,
    cursors: &Cursors,
) -> Result<Option<Source>, String> {
    let Some(settings) = cfg.redis.stream.clone() else {
        return Ok(None);
    };
    Ok(Some(Source {
        target: Target::new(&cfg.redis)?,
        max_reply: settings
            .max_replay
            .saturating_mul(cfg.max_payload.saturating_add(256)),
        settings,
        encoder: std::sync::Mutex::new(encoder.clone().for_replays()),
        cursors: cursors.clone(),
    }))
}

/// `-rs-mode=stream`: the stream reader in the subscriber's place.
fn streams(sub: Subscriber, field: &str, cursors: Cursors) -> Task {
    let keys = sub
        .cfg
        .channels
        .keys()
        .iter()
        .map(|k| Bytes::copy_from_slice(k.name.as_bytes()))
        .collect();
    let reader = StreamReader::new(
        sub.target,
        sub.ingest,
        sub.log,
        sub.stats,
        sub.fatal,
        keys,
        field,
        sub.cfg.max_payload,
        sub.cfg.keepalive,
    )
    .with_store(cursors);
    Box::pin(reader.run())
}

/// The subscriber, or the cluster supervisor (which, under
/// `-rs-mode=stream`, runs stream readers keeping `cursors`).
fn source(sub: Subscriber, cursors: Option<Cursors>) -> Task {
    let sweep = sub.demand.clone().map(Demand::sweeper);
    let run: Task = match sub.cfg.redis.cluster {
        true => Box::pin(
            Cluster {
                cursors,
                ..Cluster::from(sub)
            }
            .run(),
        ),
        false => Box::pin(sub.run()),
    };
    match sweep {
        None => run,
        Some(sweep) => Box::pin(async move {
            tokio::join!(run, sweep);
        }),
    }
}
