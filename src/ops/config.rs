//! The relay's command line: go-pubsocketd's flags, same names and defaults,
//! plus the knobs the rewrite adds. Parsing goes through
//! [`crate::ops::flags::normalize`] so every Go spelling keeps working.

use super::auth_flags::{auth, Auth, Given};
use crate::channels::Channels;
use crate::history::Limits;
use crate::net::client_ip::{TrustedProxies, DEFAULT_TRUSTED};
use crate::ops::secret::Secret;
use crate::ws::origin::{Origin, OriginPolicy};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every flag that takes a value, for the Go-spelling normaliser.
pub const VALUE_FLAGS: &[&str] = &[
    "ws-host",
    "ws-port",
    "ws-route",
    "sse-route",
    "sse-retry",
    "ws-origin",
    "rs-host",
    "rs-port",
    "rs-channel",
    "rs-channel-file",
    "ps-log-file",
    "tls-cert",
    "tls-key",
    "log-level",
    "ws-heartbeat-interval",
    "ws-ping-interval",
    "ws-pong-timeout",
    "ws-handshake-timeout",
    "ws-queue-bytes",
    "ws-max-message",
    "ws-max-channels",
    "ws-trusted-proxies",
    "auth",
    "auth-jwt-secret",
    "auth-jwt-key",
    "auth-jwks",
    "auth-leeway",
    "auth-issuer",
    "auth-audience",
    "auth-cookie",
    "auth-channels-claim",
    "auth-url",
    "auth-timeout",
    "auth-concurrency",
    "auth-jwks-refresh",
    "rs-sentinel",
    "rs-sentinel-master",
    "rs-max-payload",
    "rs-keepalive",
    "rs-on-demand-grace",
    "history",
    "history-bytes",
    "history-ttl",
    "history-max-replay",
    "rs-mode",
    "rs-stream-field",
    "rs-stream-maxlen",
    "rs-url",
    "rs-user",
    "rs-password",
    "rs-ca-cert",
    "rs-client-cert",
    "rs-client-key",
    "publish-addr",
    "publish-token",
    "broker",
    "broker-host",
    "broker-port",
    "ws-max-connections",
    "ws-deflate-min",
    "workers",
    "io",
    "shutdown-timeout",
    "metrics-addr",
    "log-format",
];

/// Every boolean flag, for the Go-spelling normaliser.
pub const SWITCH_FLAGS: &[&str] = &[
    "ws-insecure",
    "ws-heartbeat",
    "ws-json-only",
    "ws-envelope",
    "rs-cluster",
    "rs-on-demand",
    "auth-jwt-no-exp",
];

/// Boolean flags that are on unless turned off (`-ws-deflate=false`).
pub const ON_BY_DEFAULT_FLAGS: &[&str] = &["ws-deflate"];

/// Environment variable read for `-rs-password` when the flag is absent.
pub const RS_PASSWORD_ENV: &str = "PUBSOCKETD_RS_PASSWORD";
/// Environment variable read for the Sentinels' own password.
pub const RS_SENTINEL_PASSWORD_ENV: &str = "PUBSOCKETD_RS_SENTINEL_PASSWORD";
/// Environment variable read for `-publish-token` when the flag is absent.
pub const PUBLISH_TOKEN_ENV: &str = "PUBSOCKETD_PUBLISH_TOKEN";
pub use super::auth_flags::AUTH_SECRET_ENV;

/// pubsocketd: relay a Redis Pub/Sub channel to WebSocket clients.
///
/// Flags may be written -name=value, -name value, --name=value or
/// --name value; booleans as -name or -name=true|false.
/// Durations take ms, s, m or h (bare numbers are seconds); sizes take
/// KiB, MiB or GiB (bare numbers are bytes).
#[derive(argh::FromArgs, Debug)]
pub struct Args {
    /// address to listen on for WebSocket clients (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub ws_host: String,
    /// port to listen on; 0 picks a free one (default 8080)
    #[argh(option, default = "8080")]
    pub ws_port: u16,
    /// HTTP path of the WebSocket endpoint (default /)
    #[argh(option, default = "String::from(\"/\")")]
    pub ws_route: String,
    /// HTTP path of the Server-Sent Events endpoint (a GET on -ws-route
    /// that accepts text/event-stream gets events too) (default: -ws-route
    /// followed by events, e.g. /events)
    #[argh(option)]
    pub sse_route: Option<String>,
    /// reconnection delay an EventSource is told to wait (default 3s)
    #[argh(option, default = "Duration::from_secs(3)", from_str_fn(duration))]
    pub sse_retry: Duration,
    /// comma-separated list of allowed Origins, e.g. https://example.com;
    /// required unless -ws-insecure (default none)
    #[argh(option, default = "String::new()")]
    pub ws_origin: String,
    /// accept any Origin; for debugging only (default false)
    #[argh(switch)]
    pub ws_insecure: bool,
    /// send the original's {"heartbeat": 1} text message to every client
    /// every -ws-heartbeat-interval (default false)
    #[argh(switch)]
    pub ws_heartbeat: bool,
    /// interval of -ws-heartbeat messages (default 30s)
    #[argh(option, default = "Duration::from_secs(30)", from_str_fn(duration))]
    pub ws_heartbeat_interval: Duration,
    /// interval of WebSocket ping frames to each client; 0 disables pings
    /// and the silence timeout (default 25s)
    #[argh(option, default = "Duration::from_secs(25)", from_str_fn(duration))]
    pub ws_ping_interval: Duration,
    /// close a client that sent nothing (not even a pong) for this long;
    /// must exceed -ws-ping-interval (default 60s)
    #[argh(option, default = "Duration::from_secs(60)", from_str_fn(duration))]
    pub ws_pong_timeout: Duration,
    /// close a connection whose HTTP upgrade request is not complete in
    /// this time (default 10s)
    #[argh(option, default = "Duration::from_secs(10)", from_str_fn(duration))]
    pub ws_handshake_timeout: Duration,
    /// bytes that may wait for one slow client before it is closed with
    /// 1008 (default 1MiB)
    #[argh(option, default = "1 << 20", from_str_fn(size))]
    pub ws_queue_bytes: usize,
    /// largest message a client may send; larger ones close it with 1009
    /// (default 64KiB)
    #[argh(option, default = "64 << 10", from_str_fn(size))]
    pub ws_max_message: usize,
    /// most channels one client may read (?channel= names); more is a 400
    /// at the handshake (default 64)
    #[argh(option, default = "64")]
    pub ws_max_channels: usize,
    /// peers (CIDR blocks or addresses, comma-separated; none for nobody)
    /// whose X-Real-IP or X-Forwarded-For name the client (default
    /// 127.0.0.0/8,::1: a proxy on the same host)
    #[argh(option, default = "String::from(DEFAULT_TRUSTED)")]
    pub ws_trusted_proxies: String,
    /// jwt: every client needs a signed token naming the channels it may
    /// read; url: -auth-url decides for each upgrade (default none: anyone
    /// from an allowed origin reads everything)
    #[argh(option, default = "String::new()")]
    pub auth: String,
    /// HS256/384/512 secret of -auth=jwt; better given in
    /// $PUBSOCKETD_AUTH_JWT_SECRET (default none)
    #[argh(option)]
    pub auth_jwt_secret: Option<String>,
    /// PEM public key of -auth=jwt: RSA (RS*, PS*), EC (ES256, ES384) or
    /// Ed25519 (EdDSA) (default none)
    #[argh(option)]
    pub auth_jwt_key: Option<PathBuf>,
    /// JWK set of -auth=jwt, a file (SIGHUP reads it again) or an https://
    /// URL (fetched at start and every -auth-jwks-refresh); keys chosen by
    /// the token's kid (default none)
    #[argh(option)]
    pub auth_jwks: Option<String>,
    /// accept tokens without exp (default false: exp is required)
    #[argh(switch)]
    pub auth_jwt_no_exp: bool,
    /// clock skew allowed on exp and nbf (default 30s)
    #[argh(option, default = "Duration::from_secs(30)", from_str_fn(duration))]
    pub auth_leeway: Duration,
    /// required iss of tokens (default none: not checked)
    #[argh(option)]
    pub auth_issuer: Option<String>,
    /// required aud of tokens (default none: not checked)
    #[argh(option)]
    pub auth_audience: Option<String>,
    /// cookie that may carry the token (default none)
    #[argh(option)]
    pub auth_cookie: Option<String>,
    /// claim listing the channels and patterns a token grants (default
    /// channels)
    #[argh(option, default = "String::from(\"channels\")")]
    pub auth_channels_claim: String,
    /// how often an -auth-jwks URL is fetched again (also, at most once a
    /// minute, when a token names an unknown kid) (default 10m)
    #[argh(option, default = "Duration::from_secs(600)", from_str_fn(duration))]
    pub auth_jwks_refresh: Duration,
    /// the endpoint of -auth=url, http:// or https:// (default none)
    #[argh(option)]
    pub auth_url: Option<String>,
    /// how long -auth-url may take to answer; past it, 503 (default 2s)
    #[argh(option, default = "Duration::from_secs(2)", from_str_fn(duration))]
    pub auth_timeout: Duration,
    /// most -auth-url calls in flight; more upgrades wait (default 256)
    #[argh(option, default = "256")]
    pub auth_concurrency: usize,
    /// relay only payloads that are valid JSON, dropping others with a log
    /// line, as the original did (default false)
    #[argh(switch)]
    pub ws_json_only: bool,
    /// host of the Redis server (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub rs_host: String,
    /// port of the Redis server (default 6379)
    #[argh(option, default = "6379")]
    pub rs_port: u16,
    /// comma-separated Redis channels to relay; names with * ? [ are
    /// patterns (PSUBSCRIBE); clients choose with ?channel=NAME (default
    /// pubsocketd, unless -rs-channel-file is given)
    #[argh(option)]
    pub rs_channel: Option<String>,
    /// file of more channels and patterns to relay, one per line (# starts
    /// a comment); SIGHUP reads it again (default none)
    #[argh(option)]
    pub rs_channel_file: Option<PathBuf>,
    /// negotiate permessage-deflate with clients that offer it; each
    /// message is compressed once for all of them (default true)
    #[argh(option, default = "true", from_str_fn(boolean))]
    pub ws_deflate: bool,
    /// messages smaller than this go out uncompressed even to deflate
    /// clients (default 256)
    #[argh(option, default = "256", from_str_fn(size))]
    pub ws_deflate_min: usize,
    /// wrap each message as {"channel":...,"data":...} for clients of
    /// several channels (default false: the payload as is)
    #[argh(switch)]
    pub ws_envelope: bool,
    /// redis://[user:password@]host:port, or rediss:// for TLS; overrides
    /// -rs-host and -rs-port (default none)
    #[argh(option)]
    pub rs_url: Option<String>,
    /// the Redis ACL user name (default none)
    #[argh(option)]
    pub rs_user: Option<String>,
    /// the Redis password; better given in $PUBSOCKETD_RS_PASSWORD, out of
    /// sight of ps (default none)
    #[argh(option)]
    pub rs_password: Option<String>,
    /// PEM file of the CA that signed the Redis server's certificate, for
    /// rediss:// (default: the web's public roots)
    #[argh(option)]
    pub rs_ca_cert: Option<PathBuf>,
    /// PEM client certificate for rediss:// with -rs-client-key (default
    /// none)
    #[argh(option)]
    pub rs_client_cert: Option<PathBuf>,
    /// PEM client key for rediss:// with -rs-client-cert (default none)
    #[argh(option)]
    pub rs_client_key: Option<PathBuf>,
    /// with Redis Cluster: subscribe with sharded pub/sub (SSUBSCRIBE) on the
    /// node owning each channel (default false)
    #[argh(switch)]
    pub rs_cluster: bool,
    /// the Redis Sentinels to ask for the current primary, host:port,… (the
    /// Sentinels' password in $PUBSOCKETD_RS_SENTINEL_PASSWORD) (default
    /// none: -rs-host/-rs-url is the server)
    #[argh(option)]
    pub rs_sentinel: Option<String>,
    /// the master name the Sentinels monitor, with -rs-sentinel (default
    /// none)
    #[argh(option)]
    pub rs_sentinel_master: Option<String>,
    /// patterns in -rs-channel only bound what clients may name: each
    /// concrete channel is subscribed (SSUBSCRIBE under -rs-cluster) while
    /// some client reads it (default false)
    #[argh(switch)]
    pub rs_on_demand: bool,
    /// with -rs-on-demand: how long a channel nobody reads any more stays
    /// subscribed, for a client that comes back (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(duration))]
    pub rs_on_demand_grace: Duration,
    /// messages kept per channel, with IDs, for clients that resume with
    /// since (default 0: off; 1000 under -rs-mode=stream)
    #[argh(option)]
    pub history: Option<usize>,
    /// under -rs-mode=stream: most entries one resume reads from Redis
    /// (XRANGE) when they are older than the memory history (default 10000)
    #[argh(option, default = "10_000")]
    pub history_max_replay: usize,
    /// pubsub (channels, PUBLISH) or stream: each -rs-channel name is a
    /// Redis stream key, read with XREAD (default pubsub)
    #[argh(option, default = "String::from(\"pubsub\")")]
    pub rs_mode: String,
    /// under -rs-mode=stream: the entry field that holds the payload
    /// (default data)
    #[argh(option, default = "String::from(\"data\")")]
    pub rs_stream_field: String,
    /// under -rs-mode=stream: the MAXLEN ~ of POST /publish's XADD (default
    /// 10000)
    #[argh(option, default = "10_000")]
    pub rs_stream_maxlen: usize,
    /// with -history: most bytes of messages kept, all channels together;
    /// the oldest go first (default 64MiB)
    #[argh(option, default = "64 << 20", from_str_fn(size))]
    pub history_bytes: usize,
    /// with -history: age past which a message is no longer kept (default
    /// 0: no limit)
    #[argh(option, default = "Duration::ZERO", from_str_fn(duration))]
    pub history_ttl: Duration,
    /// serve POST /publish?channel=NAME on this address, e.g.
    /// 127.0.0.1:8081; needs -publish-token (default none: off)
    #[argh(option)]
    pub publish_addr: Option<SocketAddr>,
    /// bearer token required by /publish; better given in
    /// $PUBSOCKETD_PUBLISH_TOKEN (default none)
    #[argh(option)]
    pub publish_token: Option<String>,
    /// where messages come from: redis, or embedded (no Redis: a built-in
    /// broker takes PUBLISH on -broker-host:-broker-port) (default redis)
    #[argh(option, default = "String::from(\"redis\")")]
    pub broker: String,
    /// address of the embedded broker's Redis-protocol listener (default
    /// 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub broker_host: String,
    /// port of the embedded broker's Redis-protocol listener (default 6379)
    #[argh(option, default = "6379")]
    pub broker_port: u16,
    /// largest Redis payload relayed; larger ones are dropped with a log
    /// line (default 64MiB)
    #[argh(option, default = "64 << 20", from_str_fn(size))]
    pub rs_max_payload: usize,
    /// PING Redis after this much silence, and reconnect when the answer
    /// takes as long: detects a dead connection that TCP keeps open
    /// (default 15s)
    #[argh(option, default = "Duration::from_secs(15)", from_str_fn(duration))]
    pub rs_keepalive: Duration,
    /// also append log lines to this file, created 0660 (default none)
    #[argh(option)]
    pub ps_log_file: Option<PathBuf>,
    /// PEM certificate chain; with -tls-key, serve wss:// (default none)
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key; with -tls-cert, serve wss:// (default none)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// most WebSocket clients at once; past it the handshake gets 503
    /// (default 0: the open file limit minus a reserve)
    #[argh(option, default = "0")]
    pub ws_max_connections: usize,
    /// serve /metrics (Prometheus), /healthz and /readyz on this address,
    /// e.g. 127.0.0.1:9100 (default none: off)
    #[argh(option)]
    pub metrics_addr: Option<SocketAddr>,
    /// log line format: text or json (default text)
    #[argh(option, default = "LogFormat::Text", from_str_fn(log_format))]
    pub log_format: LogFormat,
    /// log level: error, warn, info or debug (default info)
    #[argh(option, default = "slog::Level::Info", from_str_fn(level))]
    pub log_level: slog::Level,
    /// worker threads, each with its own listener (default: one per core)
    #[argh(option, default = "0")]
    pub workers: usize,
    /// how the fan-out writes to sockets: uring (one io_uring_enter for
    /// the sends of a whole fan-out; falls back to epoll where io_uring is
    /// not allowed) or epoll (one writev per client) (default uring)
    #[argh(option, default = "Io::Uring", from_str_fn(io_backend))]
    pub io: Io,
    /// on SIGTERM/SIGINT, time given to clients to take their close frame
    /// before exit (default 5s)
    #[argh(option, default = "Duration::from_secs(5)", from_str_fn(duration))]
    pub shutdown_timeout: Duration,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// The validated configuration the relay runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub route: String,
    /// `-sse-route`.
    pub sse_route: String,
    /// `-sse-retry`.
    pub sse_retry: Duration,
    pub origins: OriginPolicy,
    pub heartbeat: Option<Duration>,
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    pub handshake_timeout: Duration,
    pub queue_bytes: usize,
    pub max_message: usize,
    /// `-ws-max-channels`.
    pub max_channels: usize,
    /// `-ws-trusted-proxies`.
    pub trusted_proxies: TrustedProxies,
    /// `-auth=jwt`: where the keys are, the rules, the cookie.
    pub auth: Option<Auth>,
    pub json_only: bool,
    pub redis: RedisSettings,
    pub channels: Channels,
    /// `-rs-channel`, as given (`None`: the default, or the file alone).
    pub channel_flag: Option<String>,
    /// `-rs-channel-file`, read again on SIGHUP.
    pub channel_file: Option<PathBuf>,
    pub envelope: bool,
    /// permessage-deflate on, and the smallest message compressed.
    pub deflate: Option<usize>,
    pub publish: Option<Publish>,
    /// Required by `/publish` and, when set, by the embedded broker (AUTH).
    pub publish_token: Option<Secret>,
    /// `Some(address)` with `-broker=embedded`.
    pub embedded_broker: Option<SocketAddr>,
    pub max_payload: usize,
    pub keepalive: Duration,
    /// `-rs-on-demand-grace`.
    pub on_demand_grace: Duration,
    /// `-history`, `-history-bytes`, `-history-ttl`; `None`: off.
    pub history: Option<Limits>,
    pub log_file: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub log_level: slog::Level,
    pub log_format: LogFormat,
    /// 0 until the server resolves it from the open file limit.
    pub max_connections: usize,
    pub metrics_addr: Option<SocketAddr>,
    pub workers: usize,
    /// The backend asked for; once the server has started, the one chosen
    /// (epoll where io_uring is refused).
    pub io: Io,
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Checks the flags together; the error is one line for stderr.
    pub fn from_args(a: Args) -> Result<Config, String> {
        // Checked in this order, so that a command line with several
        // mistakes always reports the same one.
        let ip = listen_ip(&a.ws_host)?;
        check_route(&a.ws_route)?;
        let sse_route = sse_route(&a)?;
        let origins = origin_policy(&a)?;
        let tls = pair(&a.tls_cert, &a.tls_key, "-tls-cert and -tls-key")?;
        let ping_interval = ping_interval(&a)?;
        if a.ws_heartbeat && a.ws_heartbeat_interval.is_zero() {
            return Err("-ws-heartbeat-interval must be above 0".into());
        }
        let channels = Channels::parse(&channel_list(
            a.rs_channel.as_deref(),
            a.rs_channel_file.as_deref(),
        )?)?
        .with_on_demand(a.rs_on_demand);
        let redis = RedisSettings::from_args(&a)?;
        if redis.cluster && channels.subscribes_patterns() {
            return Err("-rs-cluster relays channel names only (sharded pub/sub has no patterns), unless -rs-on-demand".into());
        }
        let publish_token = secret(&a.publish_token, PUBLISH_TOKEN_ENV);
        let publish = publish_endpoint(a.publish_addr, &publish_token)?;
        let embedded_broker = embedded_broker(&a)?;
        let auth = auth(&Given {
            auth: &a.auth,
            auth_jwt_secret: a.auth_jwt_secret.as_deref(),
            auth_jwt_key: a.auth_jwt_key.as_ref(),
            auth_jwks: a.auth_jwks.as_deref(),
            auth_jwt_no_exp: a.auth_jwt_no_exp,
            auth_leeway: a.auth_leeway,
            auth_issuer: a.auth_issuer.as_deref(),
            auth_audience: a.auth_audience.as_deref(),
            auth_cookie: a.auth_cookie.as_deref(),
            auth_channels_claim: &a.auth_channels_claim,
            auth_url: a.auth_url.as_deref(),
            auth_timeout: a.auth_timeout,
            auth_concurrency: a.auth_concurrency,
            auth_jwks_refresh: a.auth_jwks_refresh,
        })?;
        if embedded_broker.is_some() && redis.sentinel.is_some() {
            return Err("-broker=embedded and -rs-sentinel exclude each other".into());
        }
        if embedded_broker.is_some() && redis.cluster {
            return Err("-broker=embedded and -rs-cluster exclude each other".into());
        }
        if embedded_broker.is_some() && a.rs_on_demand {
            return Err(
                "-rs-on-demand subscribes Redis channels as clients read them; -broker=embedded has no Redis".into(),
            );
        }
        if a.rs_keepalive.is_zero() {
            return Err("-rs-keepalive must be above 0".into());
        }
        if a.ws_max_channels == 0 {
            return Err("-ws-max-channels must be at least 1".into());
        }
        if a.ws_queue_bytes == 0 || a.ws_max_message == 0 || a.rs_max_payload == 0 {
            return Err("sizes must be above 0".into());
        }
        let history = history(&a, redis.stream.is_some())?;
        if redis.stream.is_some() {
            streams_fit(&a, &channels, embedded_broker.is_some())?;
            if history.is_none() {
                return Err(
                    "-rs-mode=stream keeps a history to resume from: -history must be at least 1"
                        .into(),
                );
            }
        }
        let workers = match a.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(Config {
            listen: SocketAddr::new(ip, a.ws_port),
            route: a.ws_route,
            sse_route,
            sse_retry: a.sse_retry,
            origins,
            heartbeat: a.ws_heartbeat.then_some(a.ws_heartbeat_interval),
            ping_interval,
            pong_timeout: a.ws_pong_timeout,
            handshake_timeout: a.ws_handshake_timeout,
            queue_bytes: a.ws_queue_bytes,
            max_message: a.ws_max_message,
            max_channels: a.ws_max_channels,
            trusted_proxies: TrustedProxies::parse(&a.ws_trusted_proxies)?,
            auth,
            json_only: a.ws_json_only,
            redis,
            channels,
            channel_flag: a.rs_channel.clone(),
            channel_file: a.rs_channel_file.clone(),
            envelope: a.ws_envelope,
            deflate: a.ws_deflate.then_some(a.ws_deflate_min),
            publish,
            publish_token,
            embedded_broker,
            max_payload: a.rs_max_payload,
            keepalive: a.rs_keepalive,
            on_demand_grace: a.rs_on_demand_grace,
            history,
            log_file: a.ps_log_file,
            tls,
            log_level: a.log_level,
            log_format: a.log_format,
            max_connections: a.ws_max_connections,
            metrics_addr: a.metrics_addr,
            workers,
            io: a.io,
            shutdown_timeout: a.shutdown_timeout,
        })
    }
}

/// The history's bounds, when it is on (by default under streams).
fn history(a: &Args, stream: bool) -> Result<Option<Limits>, String> {
    let per_channel = a.history.unwrap_or(if stream { 1000 } else { 0 });
    if per_channel == 0 {
        return Ok(None);
    }
    if a.history_bytes == 0 {
        return Err("-history-bytes must be above 0".into());
    }
    Ok(Some(Limits {
        per_channel,
        bytes: a.history_bytes,
        ttl: (!a.history_ttl.is_zero()).then_some(a.history_ttl),
    }))
}

/// What `-rs-mode=stream` cannot go with.
fn streams_fit(a: &Args, channels: &Channels, embedded: bool) -> Result<(), String> {
    if let Some(k) = channels.keys().iter().find(|k| k.pattern) {
        return Err(format!(
            "-rs-mode=stream reads stream keys by name; {:?} is a pattern",
            k.name
        ));
    }
    if embedded {
        return Err("-rs-mode=stream reads Redis streams; -broker=embedded has no Redis (its -history gives IDs)".into());
    }
    if a.rs_on_demand {
        return Err("-rs-mode=stream and -rs-on-demand exclude each other".into());
    }
    if a.rs_channel_file.is_some() {
        return Err(
            "-rs-mode=stream takes its stream keys from -rs-channel, not -rs-channel-file".into(),
        );
    }
    Ok(())
}

/// `-rs-channel` for the config line: the first 16 keys, then how many in
/// all (a list of thousands is not a log line).
fn rs_channel_list(channels: &Channels) -> String {
    let (mut list, total) = channels.first_names(16);
    let all = format!("… ({total} in all)");
    if total > 16 {
        list.push(&all);
    }
    list.join(",")
}

/// The keys to relay: `-rs-channel`'s list, then the lines of
/// `-rs-channel-file` (blank lines and `#` comments skipped), as one
/// comma-separated list. Without either, the original's `pubsocketd`.
pub fn channel_list(flag: Option<&str>, file: Option<&Path>) -> Result<String, String> {
    let mut list: Vec<String> = flag.map(|f| vec![f.to_string()]).unwrap_or_default();
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read -rs-channel-file {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.contains(',') {
                return Err(format!(
                    "-rs-channel-file {} line {}: one channel or pattern per line",
                    path.display(),
                    n + 1
                ));
            }
            if !line.is_empty() {
                list.push(line.to_string());
            }
        }
    }
    if flag.is_none() && file.is_none() {
        list.push("pubsocketd".into());
    }
    Ok(list.join(","))
}

/// `-ws-host`: an address, or a name resolved once at start.
fn listen_ip(host: &str) -> Result<IpAddr, String> {
    host.parse()
        .or_else(|_| resolve_host(host))
        .map_err(|e| format!("invalid -ws-host {host:?}: {e}"))
}

/// `-sse-route`, by default `-ws-route` followed by `events` (`/` ->
/// `/events`, `/ws` -> `/ws/events`); never the WebSocket route itself
/// (that one serves events by `Accept` already).
fn sse_route(a: &Args) -> Result<String, String> {
    let route = match &a.sse_route {
        Some(r) => r.clone(),
        None if a.ws_route.ends_with('/') => format!("{}events", a.ws_route),
        None => format!("{}/events", a.ws_route),
    };
    if !route.starts_with('/') || route.contains(['?', '#', ' ']) {
        return Err(format!(
            "invalid -sse-route {route:?}: must be a path starting with /"
        ));
    }
    if route == a.ws_route {
        return Err("-sse-route must differ from -ws-route".into());
    }
    Ok(route)
}

/// `-ws-route`: a path, without query or fragment.
fn check_route(route: &str) -> Result<(), String> {
    if !route.starts_with('/') || route.contains(['?', '#', ' ']) {
        return Err(format!(
            "invalid -ws-route {route:?}: must be a path starting with /"
        ));
    }
    Ok(())
}

/// `-ws-origin`, required unless `-ws-insecure`.
fn origin_policy(a: &Args) -> Result<OriginPolicy, String> {
    if a.ws_insecure {
        Ok(OriginPolicy::Any)
    } else if a.ws_origin.trim().is_empty() {
        Err("missing -ws-origin: give the allowed origin(s), e.g. -ws-origin=https://example.com, or -ws-insecure for debugging".into())
    } else {
        Ok(OriginPolicy::List(parse_origins(&a.ws_origin)?))
    }
}

/// Two flags that go together (a certificate and its key), or neither.
fn pair<T: Clone>(a: &Option<T>, b: &Option<T>, what: &str) -> Result<Option<(T, T)>, String> {
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a.clone(), b.clone()))),
        (None, None) => Ok(None),
        _ => Err(format!("{what} must be given together")),
    }
}

/// `-ws-ping-interval` (0: off), shorter than `-ws-pong-timeout`.
fn ping_interval(a: &Args) -> Result<Option<Duration>, String> {
    let ping = (!a.ws_ping_interval.is_zero()).then_some(a.ws_ping_interval);
    match ping {
        Some(p) if a.ws_pong_timeout <= p => Err(format!(
            "-ws-pong-timeout ({:?}) must be longer than -ws-ping-interval ({:?})",
            a.ws_pong_timeout, p
        )),
        _ => Ok(ping),
    }
}

/// `-publish-addr`, which needs the token.
fn publish_endpoint(
    addr: Option<SocketAddr>,
    token: &Option<Secret>,
) -> Result<Option<Publish>, String> {
    match (addr, token) {
        (None, _) => Ok(None),
        (Some(addr), Some(token)) => Ok(Some(Publish {
            addr,
            token: token.clone(),
        })),
        (Some(_), None) => Err(format!(
            "-publish-addr needs a bearer token: -publish-token or ${PUBLISH_TOKEN_ENV}"
        )),
    }
}

/// `-broker=embedded`: the broker's address; `None` for Redis.
fn embedded_broker(a: &Args) -> Result<Option<SocketAddr>, String> {
    match a.broker.as_str() {
        "redis" => Ok(None),
        "embedded" => format!("{}:{}", a.broker_host, a.broker_port)
            .parse()
            .map(Some)
            .map_err(|_| format!("invalid -broker-host {:?}", a.broker_host)),
        other => Err(format!("invalid -broker {other:?} (redis or embedded)")),
    }
}

impl Config {
    /// The effective settings as `flag=value` pairs, for the start-up log.
    /// Secrets never appear: the Redis password is left out of the address
    /// (`RedisSettings::describe`), and the publish token shows as "token
    /// set". A new secret flag must be redacted here too.
    pub fn describe(&self) -> String {
        let origins = match &self.origins {
            OriginPolicy::Any => "*".to_string(),
            OriginPolicy::List(l) => l
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(","),
        };
        let opt = |d: Option<Duration>| d.map_or("off".to_string(), |d| format!("{d:?}"));
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".into(), |p| p.display().to_string())
        };
        format!(
            "ws-listen={} ws-route={} sse-route={} sse-retry={:?} ws-origin={origins} ws-heartbeat={} ws-ping-interval={} ws-pong-timeout={:?} ws-handshake-timeout={:?} ws-queue-bytes={} ws-max-message={} ws-max-channels={} ws-trusted-proxies={} auth={} ws-max-connections={} ws-json-only={} ws-envelope={} ws-deflate={} redis={} rs-channel={} rs-on-demand={} rs-max-payload={} rs-keepalive={:?} history={} ps-log-file={} tls={} log-level={} log-format={} workers={} io={} shutdown-timeout={:?} metrics-addr={} publish-addr={} broker={}",
            self.listen,
            self.route,
            self.sse_route,
            self.sse_retry,
            opt(self.heartbeat),
            opt(self.ping_interval),
            self.pong_timeout,
            self.handshake_timeout,
            self.queue_bytes,
            self.max_message,
            self.max_channels,
            self.trusted_proxies.describe(),
            self.auth.as_ref().map_or("off".into(), Auth::describe),
            self.max_connections,
            self.json_only,
            self.envelope,
            self.deflate.map_or("off".into(), |min| format!("on (from {min} bytes)")),
            if self.embedded_broker.is_some() {
                "off".to_string()
            } else {
                match &self.redis.stream {
                    None => self.redis.describe(),
                    Some(s) => format!(
                        "{} streams (field {}, maxlen {}, max replay {})",
                        self.redis.describe(),
                        s.field,
                        s.maxlen,
                        s.max_replay
                    ),
                }
            },
            rs_channel_list(&self.channels),
            match self.channels.on_demand() {
                true => format!("on (grace {:?})", self.on_demand_grace),
                false => "off".into(),
            },
            self.max_payload,
            self.keepalive,
            self.history.map_or("off".into(), |h| format!(
                "{} per channel, {} bytes, ttl {}",
                h.per_channel,
                h.bytes,
                opt(h.ttl)
            )),
            path(&self.log_file),
            self.tls.as_ref().map_or("off".into(), |(c, _)| format!("on ({})", c.display())),
            self.log_level.as_str().to_ascii_lowercase(),
            match self.log_format {
                LogFormat::Text => "text",
                LogFormat::Json => "json",
            },
            self.workers,
            self.io.name(),
            self.shutdown_timeout,
            self.metrics_addr.map_or("off".into(), |a| a.to_string()),
            self.publish.as_ref().map_or("off".into(), |p| format!("{} (token set)", p.addr)),
            self.embedded_broker.map_or("redis".into(), |a| format!("embedded on {a}")),
        )
    }
}

/// The host and port of a URL's authority: `host`, `host:port`, `[v6]` or
/// `[v6]:port` (6379 when no port is given). Anything else is refused, not
/// guessed at: an IPv6 address outside brackets, brackets inside a host,
/// blanks or control characters.
fn split_host_port(hostport: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']').ok_or("unclosed bracket in the host")?;
            match rest {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        rest.strip_prefix(':')
                            .ok_or("junk after the bracketed host")?,
                    ),
                ),
            }
        }
        None => match hostport.split_once(':') {
            Some((host, port)) if !port.contains(':') => (host, Some(port)),
            Some(_) => return Err("an IPv6 host goes in brackets"),
            None => (hostport, None),
        },
    };
    let odd = |c: char| c.is_whitespace() || c.is_control() || matches!(c, '[' | ']');
    if host.is_empty() {
        return Err("no host");
    }
    if host.chars().any(odd) {
        return Err("invalid host");
    }
    let port = match port {
        None => 6379,
        Some(p) => p.parse().map_err(|_| "invalid port")?,
    };
    Ok((host, port))
}

/// Decodes the user or password of a URL (RFC 3986 userinfo): `%XX` is a
/// byte, and everything else is itself. Unlike a query string, `+` is a
/// plus sign, not a space. `None` for a `%` not followed by two hex digits.
pub fn userinfo_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A flag's secret, else the environment variable's.
fn secret(flag: &Option<String>, env: &str) -> Option<Secret> {
    flag.clone()
        .or_else(|| std::env::var(env).ok())
        .filter(|s| !s.is_empty())
        .map(Secret::new)
}

/// The HTTP publish endpoint.
#[derive(Debug, Clone)]
pub struct Publish {
    pub addr: SocketAddr,
    pub token: Secret,
}

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS to Redis.
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub cluster: bool,
    /// `-rs-sentinel`: ask these for the primary of a master name.
    pub sentinel: Option<Sentinel>,
    /// `-rs-mode=stream`: read Redis streams, not channels.
    pub stream: Option<StreamSettings>,
}

/// `-rs-mode=stream`: how streams are read and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// `-rs-stream-field`: the entry field holding the payload.
    pub field: String,
    /// `-rs-stream-maxlen`: the trim of `POST /publish`'s XADD.
    pub maxlen: usize,
    /// `-history-max-replay`: most entries one resume reads from Redis.
    pub max_replay: usize,
}

impl StreamSettings {
    /// From `-rs-mode` and the stream flags; `None` under pubsub.
    fn from_args(a: &Args) -> Result<Option<StreamSettings>, String> {
        match a.rs_mode.as_str() {
            "pubsub" => return Ok(None),
            "stream" => {}
            other => return Err(format!("-rs-mode must be pubsub or stream, not {other:?}")),
        }
        if a.rs_stream_field.is_empty() {
            return Err("-rs-stream-field must not be empty".into());
        }
        if a.rs_stream_maxlen == 0 || a.history_max_replay == 0 {
            return Err("-rs-stream-maxlen and -history-max-replay must be above 0".into());
        }
        Ok(Some(StreamSettings {
            field: a.rs_stream_field.clone(),
            maxlen: a.rs_stream_maxlen,
            max_replay: a.history_max_replay,
        }))
    }
}

/// Redis Sentinel: where the Sentinels are and which master to ask for.
#[derive(Debug, Clone)]
pub struct Sentinel {
    pub addrs: Vec<(String, u16)>,
    pub master: String,
    /// The Sentinels' own password (`$PUBSOCKETD_RS_SENTINEL_PASSWORD`).
    pub password: Option<Secret>,
}

impl Sentinel {
    /// From `-rs-sentinel` and `-rs-sentinel-master`.
    fn from_flags(list: Option<&str>, master: Option<&str>) -> Result<Option<Sentinel>, String> {
        let (list, master) = match (list, master) {
            (None, None) => return Ok(None),
            (Some(l), Some(m)) if !m.is_empty() => (l, m),
            (Some(_), _) => return Err("-rs-sentinel needs -rs-sentinel-master".into()),
            (None, Some(_)) => return Err("-rs-sentinel-master needs -rs-sentinel".into()),
        };
        let mut addrs = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) = item
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((h.trim_matches(|c| c == '[' || c == ']'), p.parse().ok()?))
                })
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| format!("invalid -rs-sentinel entry {item:?} (host:port)"))?;
            addrs.push((host.to_string(), port));
        }
        if addrs.is_empty() {
            return Err("-rs-sentinel names no Sentinel".into());
        }
        let password = secret(&None, RS_SENTINEL_PASSWORD_ENV);
        Ok(Some(Sentinel {
            addrs,
            master: master.to_string(),
            password,
        }))
    }
}

impl RedisSettings {
    fn from_args(a: &Args) -> Result<RedisSettings, String> {
        let mut s = RedisSettings {
            host: a.rs_host.clone(),
            port: a.rs_port,
            tls: false,
            user: None,
            password: None,
            ca_cert: a.rs_ca_cert.clone(),
            client_cert: None,
            cluster: a.rs_cluster,
            stream: StreamSettings::from_args(a)?,
            sentinel: Sentinel::from_flags(
                a.rs_sentinel.as_deref(),
                a.rs_sentinel_master.as_deref(),
            )?,
        };
        if s.sentinel.is_some() && s.cluster {
            return Err("-rs-sentinel and -rs-cluster exclude each other".into());
        }
        if let Some(url) = &a.rs_url {
            s.apply_url(url)?;
        }
        if let Some(user) = &a.rs_user {
            s.user = Some(user.clone());
        }
        if let Some(p) = secret(&a.rs_password, RS_PASSWORD_ENV) {
            s.password = Some(p);
        }
        s.client_cert = pair(
            &a.rs_client_cert,
            &a.rs_client_key,
            "-rs-client-cert and -rs-client-key",
        )?;
        if s.user.is_some() && s.password.is_none() {
            return Err(format!(
                "-rs-user needs a password: -rs-password or ${RS_PASSWORD_ENV}"
            ));
        }
        Ok(s)
    }

    /// Takes host, port, TLS and credentials from a `redis://` or
    /// `rediss://` URL. The error never repeats the URL (it may hold a
    /// password).
    pub fn apply_url(&mut self, url: &str) -> Result<(), String> {
        let bad = |why: &str| {
            format!("invalid -rs-url: {why} (expected redis://[user:password@]host:port)")
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        self.tls = match scheme {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("the scheme must be redis or rediss")),
        };
        let rest = rest.split(['/', '?']).next().unwrap_or("");
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        if let Some(auth) = auth {
            let (user, pass) = auth.split_once(':').unwrap_or(("", auth));
            let decode = |s: &str| {
                userinfo_decode(s)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad("malformed user or password"))
            };
            if !user.is_empty() {
                self.user = Some(decode(user)?);
            }
            if !pass.is_empty() {
                self.password = Some(Secret::new(decode(pass)?));
            }
        }
        let (host, port) = split_host_port(hostport).map_err(bad)?;
        self.host = host.to_string();
        self.port = port;
        Ok(())
    }

    /// `redis://host:port` or `rediss://…`, with the user but never the
    /// password, for logs.
    pub fn describe(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let user = match (&self.user, &self.password) {
            (Some(u), _) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (None, None) => String::new(),
        };
        if let Some(s) = &self.sentinel {
            let first = s
                .addrs
                .first()
                .map(|(h, p)| format!("{h}:{p}"))
                .unwrap_or_default();
            let more = s.addrs.len() - 1;
            return format!(
                "{scheme}://{user}<primary of {} per Sentinel {first} and {more} more>",
                s.master
            );
        }
        let cluster = if self.cluster { " (cluster)" } else { "" };
        format!("{scheme}://{user}{}{cluster}", self.addr())
    }

    /// `host:port` (IPv6 hosts in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Resolves a host name such as `localhost` to its first address.
fn resolve_host(host: &str) -> Result<IpAddr, String> {
    use std::net::ToSocketAddrs;
    (host, 0)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| "no address".to_string())
}

/// Parses the comma-separated `-ws-origin` list.
fn parse_origins(list: &str) -> Result<Vec<Origin>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Origin::parse(s).map_err(|e| format!("invalid -ws-origin {s:?}: {e}")))
        .collect()
}

/// Parses a Go-style duration (`500ms`, `30s`, `2m`, `1h`); a bare number is
/// seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.');
    let (num, unit) = s.split_at(split.unwrap_or(s.len()));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 30s, 2m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (units: ms, s, m, h)")),
    };
    // Found by fuzzing: from_secs_f64 panics on a value too large.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is too large"))
}

/// Parses a size (`4096`, `64KiB`, `1MiB`, `1GiB`; `K`, `M`, `G` alike).
pub fn size(s: &str) -> Result<usize, String> {
    let split = s.find(|c: char| !c.is_ascii_digit());
    let (num, unit) = s.split_at(split.unwrap_or(s.len()));
    let n: usize = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (e.g. 65536, 64KiB, 1MiB)"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return Err(format!("invalid size {s:?} (units: KiB, MiB, GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// `[pubsocketd] 2026/11/28 13:43:50 INFO message`, as the original.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

fn log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("invalid log format {s:?} (text or json)")),
    }
}

/// How the fan-out writes to client sockets (`-io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Batched sends through a per-worker io_uring.
    Uring,
    /// One vectored write per client, on tokio's epoll reactor.
    Epoll,
}

impl Io {
    pub fn name(self) -> &'static str {
        match self {
            Io::Uring => "uring",
            Io::Epoll => "epoll",
        }
    }
}

fn io_backend(s: &str) -> Result<Io, String> {
    match s {
        "uring" => Ok(Io::Uring),
        "epoll" => Ok(Io::Epoll),
        _ => Err(format!("invalid -io {s:?} (uring or epoll)")),
    }
}

/// Parses a boolean option value (for switches whose default is on).
fn boolean(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (true or false)")),
    }
}

/// Parses `-log-level`.
fn level(s: &str) -> Result<slog::Level, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(slog::Level::Error),
        "warn" | "warning" => Ok(slog::Level::Warning),
        "info" => Ok(slog::Level::Info),
        "debug" => Ok(slog::Level::Debug),
        "trace" => Ok(slog::Level::Trace),
        _ => Err(format!(
            "invalid log level {s:?} (error, warn, info, debug)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::flags::{parse_from, Exit, FlagSpec};

    const SPEC: FlagSpec<'static> = FlagSpec {
        values: VALUE_FLAGS,
        switches: SWITCH_FLAGS,
        on_by_default: ON_BY_DEFAULT_FLAGS,
    };

    fn parse(args: &[&str]) -> Result<Config, String> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse_from::<Args>("pubsocketd", &owned, &SPEC) {
            Ok(a) => Config::from_args(a),
            Err(Exit::Error(e)) => Err(e),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_original() {
        let c = parse(&["-ws-insecure"]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.route, "/");
        assert_eq!(
            (c.sse_route.as_str(), c.sse_retry),
            ("/events", Duration::from_secs(3))
        );
        assert_eq!(
            parse(&["-ws-insecure", "-ws-route=/ws"]).unwrap().sse_route,
            "/ws/events"
        );
        assert_eq!(
            parse(&["-ws-insecure", "-ws-route=/ws/"])
                .unwrap()
                .sse_route,
            "/ws/events"
        );
        assert!(parse(&["-ws-insecure", "-sse-route=events"]).is_err());
        assert!(parse(&["-ws-insecure", "-sse-route=/"]).is_err());
        assert_eq!((c.redis.host.as_str(), c.redis.port), ("127.0.0.1", 6379));
        assert_eq!(c.channels.keys()[0].name, "pubsocketd");
        assert!(c.heartbeat.is_none() && c.log_file.is_none() && c.tls.is_none());
        assert_eq!(c.queue_bytes, 1 << 20);
    }

    #[test]
    fn every_value_flag_is_known_to_argh() {
        for flag in VALUE_FLAGS {
            let value = match *flag {
                "ws-port" | "rs-port" | "workers" | "ws-max-connections" | "broker-port"
                | "ws-max-channels" | "history" | "history-max-replay" | "rs-stream-maxlen" => "1",
                "rs-mode" => "stream",
                "rs-stream-field" => "payload",
                "ws-trusted-proxies" => "10.0.0.0/8,::1",
                "rs-sentinel" => "127.0.0.1:26379,[::1]:26380",
                "rs-sentinel-master" => "mymaster",
                "auth" => "jwt",
                "auth-url" => "http://127.0.0.1:3000/ws-auth",
                "auth-concurrency" => "16",
                "auth-jwks" | "auth-jwt-key" => "/dev/null",
                "auth-leeway" => "5s",
                "metrics-addr" | "publish-addr" => "127.0.0.1:0",
                "rs-url" => "rediss://u:p@r.example:6380",
                "broker" => "embedded",
                "log-format" => "json",
                "io" => "epoll",
                "log-level" => "debug",
                "ws-ping-interval" => "10s",
                f if f.contains("interval")
                    || f.contains("timeout")
                    || f == "rs-keepalive"
                    || f.ends_with("grace")
                    || f.ends_with("refresh")
                    || f.ends_with("ttl") =>
                {
                    "90s"
                }
                "ws-queue-bytes" | "ws-max-message" | "rs-max-payload" | "ws-deflate-min"
                | "history-bytes" => "1KiB",
                "ws-host" | "rs-host" | "broker-host" => "127.0.0.1",
                "rs-channel-file" => "/dev/null",
                "ws-route" => "/x",
                "sse-route" => "/y",
                "sse-retry" => "1s",
                _ => "http://a.example",
            };
            let arg = format!("-{flag}={value}");
            // Flags that need a companion get one.
            let companion = match *flag {
                "rs-user" => "-rs-password=p",
                "rs-client-cert" => "-rs-client-key=k",
                "rs-client-key" => "-rs-client-cert=c",
                "publish-addr" => "-publish-token=t",
                "rs-channel-file" => "-rs-channel=x",
                "rs-sentinel" => "-rs-sentinel-master=m",
                "rs-sentinel-master" => "-rs-sentinel=127.0.0.1:26379",
                "auth" => "-auth-jwt-secret=s",
                "auth-jwt-secret" | "auth-jwt-key" | "auth-jwks" => "-auth=jwt",
                "auth-url" => "-auth=url",
                _ => "-tls-cert=a",
            };
            let r = parse(&["-ws-insecure", &arg, companion, "-tls-cert=a", "-tls-key=b"]);
            assert!(r.is_ok(), "{arg}: {r:?}");
        }
    }

    #[test]
    fn origin_is_required_unless_insecure() {
        assert!(parse(&[]).unwrap_err().starts_with("missing -ws-origin"));
        let c = parse(&["--ws-origin", "http://A.example:80, https://b.example"]).unwrap();
        match c.origins {
            OriginPolicy::List(l) => assert_eq!(l.len(), 2),
            OriginPolicy::Any => panic!("expected a list"),
        }
        assert!(parse(&["-ws-origin=notaurl"])
            .unwrap_err()
            .contains("invalid -ws-origin"));
    }

    #[test]
    fn bad_values_are_one_line() {
        let e = parse(&["-ws-insecure", "-ws-port=http"]).unwrap_err();
        assert!(e.contains("ws-port") && !e.contains('\n'), "{e}");
        assert!(parse(&["-ws-insecure", "-ws-route=x"]).is_err());
        assert!(parse(&["-ws-insecure", "-tls-cert=a"]).is_err());
        assert!(parse(&["-ws-insecure", "-ws-pong-timeout=5s"]).is_err());
        assert!(parse(&["-ws-insecure", "-log-level=loud"]).is_err());
    }

    #[test]
    fn url_userinfo_is_rfc_3986_not_a_query_string() {
        let c = parse(&[
            "-ws-insecure",
            "-rs-url=redis://us+er:a+b%2Fc%40d:e%25f@h:1",
        ])
        .unwrap();
        assert_eq!(c.redis.user.as_deref(), Some("us+er"));
        assert_eq!(
            c.redis.password.as_ref().map(|p| p.expose()),
            Some("a+b/c@d:e%f")
        );
        assert_eq!(userinfo_decode("%2b+%2B"), Some(b"+++".to_vec()));
        for bad in ["%", "%2", "%zz", "%+1", "a%-1"] {
            assert_eq!(userinfo_decode(bad), None, "{bad}");
        }
        let e = parse(&["-ws-insecure", "-rs-url=redis://:p%zz@h"]).unwrap_err();
        assert!(
            e.contains("malformed user or password") && !e.contains("p%zz"),
            "{e}"
        );
    }

    #[test]
    fn url_hosts_are_parsed_strictly() {
        let ok = |url: &str| {
            let c = parse(&["-ws-insecure", &format!("-rs-url={url}")]).unwrap();
            (c.redis.host, c.redis.port)
        };
        assert_eq!(ok("redis://[::1]"), ("::1".into(), 6379));
        assert_eq!(ok("redis://[::1]:7"), ("::1".into(), 7));
        assert_eq!(ok("redis://h:8/0?x=1"), ("h".into(), 8));
        for (url, why) in [
            ("redis://[::1]:[::1]:6380", "invalid port"),
            ("redis://[::1]x", "junk after the bracketed host"),
            ("redis://[::1", "unclosed bracket in the host"),
            ("redis://::1", "an IPv6 host goes in brackets"),
            ("redis://a]b:1", "invalid host"),
            ("redis://h:", "invalid port"),
            ("redis://:1", "no host"),
        ] {
            let e = parse(&["-ws-insecure", &format!("-rs-url={url}")]).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn channel_lists_from_the_flag_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c");
        std::fs::write(
            &file,
            "news # front page

  # users
user.*
",
        )
        .unwrap();
        assert_eq!(channel_list(None, None).unwrap(), "pubsocketd");
        assert_eq!(channel_list(Some("a,b"), None).unwrap(), "a,b");
        assert_eq!(channel_list(None, Some(&file)).unwrap(), "news,user.*");
        assert_eq!(
            channel_list(Some("a"), Some(&file)).unwrap(),
            "a,news,user.*"
        );
        std::fs::write(
            &file, "ok
x,y
",
        )
        .unwrap();
        let e = channel_list(None, Some(&file)).unwrap_err();
        assert!(
            e.ends_with("line 2: one channel or pattern per line"),
            "{e}"
        );
        let e = channel_list(None, Some(&dir.path().join("missing"))).unwrap_err();
        assert!(e.starts_with("cannot read -rs-channel-file"), "{e}");
    }

    #[test]
    fn redis_urls_and_secrets() {
        let c = parse(&["-ws-insecure", "-rs-url=rediss://app:p%40ss@[::1]:6380/0"]).unwrap();
        let r = &c.redis;
        assert_eq!((r.host.as_str(), r.port, r.tls), ("::1", 6380, true));
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(r.describe(), "rediss://app:***@[::1]:6380");
        assert!(!format!("{c:?}").contains("p@ss"));
        assert!(!c.describe().contains("p@ss"));
        let c = parse(&["-ws-insecure", "-rs-url", "redis://h", "-rs-password=x"]).unwrap();
        assert_eq!(
            (c.redis.host.as_str(), c.redis.port, c.redis.tls),
            ("h", 6379, false)
        );
        assert_eq!(c.redis.describe(), "redis://:***@h:6379");
        let e = parse(&["-ws-insecure", "-rs-url=http://u:secret@h"]).unwrap_err();
        assert!(
            e.starts_with("invalid -rs-url") && !e.contains("secret"),
            "{e}"
        );
        assert!(parse(&["-ws-insecure", "-rs-user=u"]).is_err());
        assert!(parse(&["-ws-insecure", "-publish-addr=127.0.0.1:1"]).is_err());
        assert!(parse(&["-ws-insecure", "-broker=kafka"]).is_err());
        assert!(parse(&["-ws-insecure", "-rs-cluster", "-rs-channel=a,b.*"]).is_err());
    }

    #[test]
    fn units() {
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("7").unwrap(), Duration::from_secs(7));
        assert!(duration("7 parsecs").is_err());
        assert!(duration("44444444444444444444444")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(size("64KiB").unwrap(), 65536);
        assert_eq!(size("1M").unwrap(), 1 << 20);
        assert!(size("-1").is_err());
    }
}
