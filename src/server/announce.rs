//! The start-up lines: where the relay listens, what it relays, how many
//! clients fit, the effective configuration (secrets as `***`), and which
//! write backend the workers use.

use crate::fanout::uring;
use crate::ops::config::{Config, Io};
use crate::ws::origin::OriginPolicy;
use slog::{info, warn, Logger};

/// Descriptors kept for other uses than clients (listeners, Redis, log
/// file, runtime internals, handshakes in progress), when telling how many
/// clients fit.
pub const RESERVED_FDS: u64 = 64;

/// Checks that io_uring is allowed here before the workers count on it;
/// where it is not (seccomp, `kernel.io_uring_disabled`, an old kernel),
/// the relay says why and writes with epoll.
pub fn choose_io(log: &Logger, asked: Io) -> Io {
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
pub fn log_init(
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
    let http = if tls { "https" } else { "http" };
    info!(
        log,
        "[init] event streams (Server-Sent Events) on {http}://{local}{}, and on {} for Accept: text/event-stream",
        cfg.sse_route,
        cfg.route
    );
    let what = cfg.channels.describe("the channels ");
    match broker {
        Some(addr) => info!(
            log,
            "[init] embedded broker: accepting PUBLISH on {addr} for {what}"
        ),
        None if cfg.redis.stream.is_some() => info!(
            log,
            "[init] reading the Redis streams {} from {}",
            cfg.channels.describe(""),
            cfg.redis.describe()
        ),
        // The original's line; the Sentinels' primary is known only later.
        None if cfg.redis.sentinel.is_none() => info!(
            log,
            "[init] listening for pubsub messages from {} sent to {what}",
            cfg.redis.addr()
        ),
        None => info!(
            log,
            "[init] listening for pubsub messages from {} sent to {what}",
            cfg.redis.describe()
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
