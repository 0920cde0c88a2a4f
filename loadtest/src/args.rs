//! The command line. The flags' doc comments are the `--help` text, so
//! they say what a flag does; everything else here exists so that a typo
//! in an address or a rate fails before a single client connects, not
//! after a two-minute connect phase.

use crate::shared::MAX_STEPS;
use argh::FromArgs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

#[derive(FromArgs)]
/// Fan-out load generator for pubsocketd: opens N WebSocket (or
/// Server-Sent Events) clients on loopback, publishes stamped messages to Redis at a fixed rate, and
/// measures deliveries, loss, per-client ordering, latency, and the relay's
/// CPU time and memory.
#[argh(
    note = "Modes: fanout (connect, publish --rate for --duration, settle, report), idle (connect, hold for --duration, report the relay's RSS per connection and idle CPU), ramp (publish at each of --rates in turn until a step loses messages or its p99 exceeds --p99-bound-ms), summary (read --json lines from --input and print median [min–max] per figure and the pubsocketd/floor ratio, as Markdown).",
    note = "Limits: ws:// only (no wss://: measure TLS separately). Loopback addresses only, for the relay, Redis and the client sources. The soft RLIMIT_NOFILE is raised to the hard limit at start; on this machine every process is capped at 20,000 descriptors, so one loadtest process opens at most about 19,000 clients (run several processes, each with its own --sources, for more). Each client is bound to one of the source addresses in turn, so that ephemeral ports never run out.",
    note = "Figures: latency is receive time minus the send time in the payload (CLOCK_REALTIME, same machine). Loss = clients x published - delivered, counted after the settle period. Relay CPU and RSS need --server-pid. The output says when the load generator itself was above 85% of a core (it was then the bottleneck)."
)]
pub struct Args {
    /// fanout (default), idle, ramp or summary
    #[argh(option, default = "String::from(\"fanout\")")]
    pub mode: String,
    /// relay URL, ws:// on a loopback address (default ws://127.0.0.1:8080/)
    #[argh(option, default = "String::from(\"ws://127.0.0.1:8080/\")")]
    pub url: String,
    /// ws (default) or sse: how the clients read. sse makes each client
    /// GET the URL's path and query with Accept: text/event-stream (the
    /// path is used as it is: pubsocketd's event streams are on /events)
    /// and count each event's data as a message
    #[argh(option, default = "String::from(\"ws\")")]
    pub transport: String,
    /// value of the Origin header to send (default none)
    #[argh(option)]
    pub origin: Option<String>,
    /// offer permessage-deflate (each message compressed on its own);
    /// compressed messages are inflated, then checked like the others
    #[argh(switch)]
    pub deflate: bool,
    /// what pads payloads to --size: x (compresses to almost nothing) or
    /// words (words and numbers, compressing about as a JSON feed does)
    /// (default x)
    #[argh(option, default = "String::from(\"x\")")]
    pub pad: String,
    /// number of clients to open (default 1000)
    #[argh(option, default = "1000")]
    pub clients: usize,
    /// source addresses, comma-separated, all in 127.0.0.0/8 (default: from --source-count)
    #[argh(option)]
    pub sources: Option<String>,
    /// use 127.0.0.2 … 127.0.0.(K+1) as source addresses (default 4)
    #[argh(option, default = "4")]
    pub source_count: usize,
    /// most upgrades in flight at once (default 200)
    #[argh(option, default = "200")]
    pub connect_concurrency: usize,
    /// seconds one connect + upgrade may take before it counts as failed (default 10)
    #[argh(option, default = "10.0")]
    pub handshake_timeout: f64,
    /// seconds the whole connect phase may take (default 120)
    #[argh(option, default = "120.0")]
    pub connect_timeout: f64,
    /// client threads, each a current-thread runtime (default 1)
    #[argh(option, default = "1")]
    pub threads: usize,
    /// address of Redis, loopback (default 127.0.0.1:6379)
    #[argh(option, default = "String::from(\"127.0.0.1:6379\")")]
    pub redis: String,
    /// the Redis channel the relay subscribes to (default pubsocketd)
    #[argh(option, default = "String::from(\"pubsocketd\")")]
    pub channel: String,
    /// targeted traffic over N channels: client i reads CHANNEL.<i mod N>
    /// (`?channel=` added to the URL; the relay relays the pattern
    /// CHANNEL.*), and each message goes to one of them at random, so it
    /// reaches clients/N clients; --clients must be a multiple of N
    /// (default 0: every client reads CHANNEL)
    #[argh(option, default = "0")]
    pub spread: usize,
    /// with --spread: the first channel number, so that several load
    /// generators (one per relay) read distinct users: client i reads
    /// CHANNEL.<FROM + i mod N> and messages go to those (default 0)
    #[argh(option, default = "0")]
    pub spread_from: usize,
    /// messages published per second (default 100)
    #[argh(option, default = "100.0")]
    pub rate: f64,
    /// payload size in bytes, at least about 70 (default 128)
    #[argh(option, default = "128")]
    pub size: usize,
    /// seconds of publishing (fanout, each ramp step) or holding (idle) (default 10)
    #[argh(option, default = "10.0")]
    pub duration: f64,
    /// most seconds to wait after the last publish for late messages before counting loss; ends early once all arrived (default 5)
    #[argh(option, default = "5.0")]
    pub settle: f64,
    /// process id of the relay, to read its CPU time and RSS from /proc
    #[argh(option)]
    pub server_pid: Option<u32>,
    /// print one JSON line with every figure at the end
    #[argh(switch)]
    pub json: bool,
    /// write an SVG plot of latency and throughput over time to this file
    #[argh(option)]
    pub svg: Option<String>,
    /// ramp: a step fails when its p99 latency exceeds this (default 50)
    #[argh(option, default = "50.0")]
    pub p99_bound_ms: f64,
    /// ramp: comma-separated rates to try in turn (default 100,200,500,1000,2000,5000,10000)
    #[argh(option, default = "String::from(\"100,200,500,1000,2000,5000,10000\")")]
    pub rates: String,
    /// a name copied into the JSON line (the compare script uses SCENARIO/SERVER)
    #[argh(option)]
    pub label: Option<String>,
    /// summary: file of JSON lines to summarise ('-' for stdin)
    #[argh(option)]
    pub input: Option<String>,
}

/// The modes that measure. `summary` only reads earlier runs' JSON, so the
/// binary dispatches it before a `Mode` exists and nothing below has to
/// handle a mode without clients.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Fanout,
    Idle,
    Ramp,
}

impl Mode {
    /// Names `summary` in the error too, since the user cannot tell that
    /// it was dispatched elsewhere.
    pub fn parse(m: &str) -> Result<Mode, String> {
        match m {
            "fanout" => Ok(Mode::Fanout),
            "idle" => Ok(Mode::Idle),
            "ramp" => Ok(Mode::Ramp),
            m => Err(format!(
                "unknown --mode {m:?} (fanout, idle, ramp or summary)"
            )),
        }
    }

    /// The spelling `--mode` takes, so that the table and the JSON line
    /// can be matched back to the command that produced them.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Fanout => "fanout",
            Mode::Idle => "idle",
            Mode::Ramp => "ramp",
        }
    }
}

/// How the clients talk to the relay. Both count the same messages the
/// same way; only the protocol around them differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket upgrade, then frames.
    Ws,
    /// A `GET` answered with `text/event-stream`, then events.
    Sse,
}

impl Transport {
    pub fn parse(t: &str) -> Result<Transport, String> {
        match t {
            "ws" => Ok(Transport::Ws),
            "sse" => Ok(Transport::Sse),
            t => Err(format!("unknown --transport {t:?} (ws or sse)")),
        }
    }

    /// The spelling `--transport` takes, for the table and the JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
        }
    }
}

/// The flags as addresses and numbers, checked once, so that the run
/// never meets a malformed value half-way through.
pub(crate) struct Plan {
    pub(crate) server: SocketAddr,
    /// The Host header: the authority as written, not as resolved.
    pub(crate) host: String,
    pub(crate) target: String,
    pub(crate) transport: Transport,
    pub(crate) redis: SocketAddr,
    pub(crate) sources: Vec<Ipv4Addr>,
    /// One rate per step: `--rates` for a ramp, else `--rate` alone.
    pub(crate) rates: Vec<f64>,
}

impl Args {
    /// Checks in the order the tool always has, so that a command line
    /// with several mistakes still reports the same one first.
    pub(crate) fn plan(&self, mode: Mode) -> Result<Plan, String> {
        let (server, host, target) = parse_url(&self.url)?;
        let transport = Transport::parse(&self.transport)?;
        if transport == Transport::Sse && self.deflate {
            return Err("--deflate is a WebSocket extension: not with --transport sse".into());
        }
        let redis = loopback_addr(&self.redis, 6379).map_err(|e| format!("--redis: {e}"))?;
        let sources = self.sources()?;
        let rates = match mode {
            Mode::Ramp => parse_rates(&self.rates)?,
            _ => vec![self.rate],
        };
        if rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err("rates must be above 0".into());
        }
        if !(self.duration > 0.0
            && self.settle >= 0.0
            && self.handshake_timeout > 0.0
            && self.connect_timeout > 0.0)
        {
            return Err("--duration, --handshake-timeout and --connect-timeout must be above 0, --settle at least 0".into());
        }
        if self.clients == 0 || self.threads == 0 || self.connect_concurrency == 0 {
            return Err("--clients, --threads and --connect-concurrency must be at least 1".into());
        }
        if self.spread > 0 && !self.clients.is_multiple_of(self.spread) {
            return Err("--clients must be a multiple of --spread".into());
        }
        Ok(Plan {
            server,
            host,
            target,
            transport,
            redis,
            sources,
            rates,
        })
    }

    /// Checked apart from [`Args::plan`] because the tool has always
    /// checked it last, after the descriptor limit and `--server-pid`.
    pub(crate) fn check_pad(&self) -> Result<(), String> {
        if !matches!(self.pad.as_str(), "x" | "words") {
            return Err(format!("unknown --pad {:?} (x or words)", self.pad));
        }
        Ok(())
    }

    /// Several source addresses, because one source address has only
    /// about 28,000 ephemeral ports towards the relay's one port.
    fn sources(&self) -> Result<Vec<Ipv4Addr>, String> {
        let list: Vec<Ipv4Addr> = match &self.sources {
            Some(s) => s
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .map_err(|_| format!("--sources: bad address {x:?}"))
                })
                .collect::<Result<_, _>>()?,
            None => {
                if self.source_count == 0 || self.source_count > 250 {
                    return Err("--source-count must be 1 to 250".into());
                }
                (0..self.source_count)
                    .map(|i| Ipv4Addr::new(127, 0, 0, 2 + i as u8))
                    .collect()
            }
        };
        if list.is_empty() || list.iter().any(|ip| !ip.is_loopback()) {
            return Err("--sources must be loopback addresses (127.0.0.0/8)".into());
        }
        Ok(list)
    }
}

/// `ws://HOST:PORT/path?query` on a loopback address: the address, the
/// Host header and the request target. No wss://, because TLS would add
/// the load generator's own crypto to every figure.
fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = match url.strip_prefix("ws://") {
        Some(r) => r,
        None if url.starts_with("wss://") => {
            return Err("wss:// is not supported by this tool: measure the relay over ws://".into())
        }
        None => return Err(format!("--url {url:?} must start with ws://")),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let target = match target {
        "" => "/".to_string(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_string(),
    };
    let addr = loopback_addr(authority, 80).map_err(|e| format!("--url: {e}"))?;
    Ok((addr, authority.to_string(), target))
}

/// `HOST[:PORT]` where HOST is `localhost` or an address in 127.0.0.0/8:
/// latency is measured against one machine's clock, and the source
/// addresses that multiply the ephemeral ports exist only on loopback.
fn loopback_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("bad port in {s:?}"))?),
        None => (s, default_port),
    };
    let ip: Ipv4Addr = if host == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .map_err(|_| format!("{host:?} is not an IPv4 address (loopback only)"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{ip} is not a loopback address; this tool only talks to 127.0.0.0/8"
        ));
    }
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

/// At most [`MAX_STEPS`], because the clients keep one latency histogram
/// per step, allocated up front.
fn parse_rates(s: &str) -> Result<Vec<f64>, String> {
    let rates: Vec<f64> = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse()
                .map_err(|_| format!("--rates: bad rate {x:?}"))
        })
        .collect::<Result<_, _>>()?;
    if rates.is_empty() || rates.len() > MAX_STEPS {
        return Err(format!("--rates: 1 to {MAX_STEPS} rates"));
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_gives_address_host_and_target() {
        let (addr, host, target) = parse_url("ws://127.0.0.1:8080").unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((host.as_str(), target.as_str()), ("127.0.0.1:8080", "/"));
        let (addr, host, target) = parse_url("ws://localhost?c=x").unwrap();
        assert_eq!(addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!((host.as_str(), target.as_str()), ("localhost", "/?c=x"));
        let (_, _, target) = parse_url("ws://127.0.0.9:1/a/b?c").unwrap();
        assert_eq!(target, "/a/b?c");
    }

    #[test]
    fn url_refuses_tls_other_schemes_and_remote_hosts() {
        assert!(parse_url("wss://127.0.0.1/")
            .unwrap_err()
            .contains("wss://"));
        assert!(parse_url("http://127.0.0.1/").is_err());
        assert!(parse_url("ws://10.0.0.1/")
            .unwrap_err()
            .contains("loopback"));
        assert!(parse_url("ws://127.0.0.1:x/").is_err());
    }

    #[test]
    fn transport_is_ws_or_sse() {
        assert_eq!(Transport::parse("ws"), Ok(Transport::Ws));
        assert_eq!(Transport::parse("sse").map(Transport::name), Ok("sse"));
        assert!(Transport::parse("SSE").unwrap_err().contains("ws or sse"));
        let mut a: Args = argh::FromArgs::from_args(&["t"], &["--transport", "sse"]).unwrap();
        assert_eq!(a.plan(Mode::Fanout).unwrap().transport, Transport::Sse);
        a.deflate = true;
        assert!(a.plan(Mode::Fanout).is_err_and(|e| e.contains("--deflate")));
    }

    #[test]
    fn rates_are_bounded() {
        assert_eq!(parse_rates("1, 2.5").unwrap(), vec![1.0, 2.5]);
        assert!(parse_rates("1,x").is_err());
        let many = vec!["1"; MAX_STEPS + 1].join(",");
        assert!(parse_rates(&many).is_err());
    }
}
