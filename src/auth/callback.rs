//! `-auth=url`: the application decides, as nginx's `auth_request` does.
//! For each upgrade the relay sends a `GET` to `-auth-url` with the
//! client's `Cookie`, `Authorization` and `Origin`, its address
//! (`X-Forwarded-For`, `X-Real-IP`) and `X-Original-URI` (the route and its
//! query, any `token` redacted). A 2xx allows the upgrade, its optional
//! JSON body (`{"channels":[…],"sub":"…","exp":<unix>}`) meaning what the
//! JWT claims mean; a 401 or 403 is passed to the client; anything else,
//! a timeout or an unreachable URL is a 503 (fail closed).
//!
//! Each worker thread keeps its own keep-alive pool (the connections' tasks
//! run on that thread's runtime); one semaphore bounds the calls in flight
//! across the relay.

use super::https::{self, HttpsClient};
use super::verify::Grant;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Request, Uri};
use serde_json::Value;
use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Largest answer body read.
const MAX_BODY: usize = 64 * 1024;

/// The endpoint and its bounds.
pub struct Callback {
    url: Uri,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

/// What the request tells the endpoint.
#[derive(Default)]
pub struct Ask<'a> {
    pub cookie: Option<&'a [u8]>,
    pub authorization: Option<&'a [u8]>,
    pub origin: Option<&'a [u8]>,
    /// The client's address (as `-ws-trusted-proxies` resolved it).
    pub client_ip: String,
    /// The route and query, `token` redacted.
    pub original_uri: String,
}

/// Why an upgrade is not allowed: the status for the client, and the log
/// line's reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Denied {
    pub status: u16,
    pub reason: String,
}

thread_local! {
    /// This thread's pool of keep-alive connections to the endpoint.
    static CLIENT: OnceCell<HttpsClient> = const { OnceCell::new() };
}

/// This worker thread's client (clones share the pool).
fn pooled() -> HttpsClient {
    CLIENT.with(|c| c.get_or_init(https::client).clone())
}

impl Callback {
    /// `url` must be `http://` or `https://` with a host.
    pub fn new(url: &str, timeout: Duration, concurrency: usize) -> Result<Callback, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("invalid -auth-url {url:?}"))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_ok || uri.host().is_none() {
            return Err(format!(
                "-auth-url must be http:// or https:// with a host, not {url:?}"
            ));
        }
        if concurrency == 0 {
            return Err("-auth-concurrency must be at least 1".into());
        }
        Ok(Callback {
            url: uri,
            timeout,
            in_flight: Arc::new(Semaphore::new(concurrency)),
        })
    }

    /// Asks the endpoint about one upgrade. The wait for a free slot is
    /// bounded by the caller (the handshake's deadline); the call itself by
    /// `-auth-timeout`.
    pub async fn ask(&self, ask: &Ask<'_>) -> Result<Grant, Denied> {
        let _slot = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| unavailable("closed"))?;
        let request = self
            .request(ask)
            .map_err(|_| unavailable("a header the client sent cannot be forwarded"))?;
        let call = async {
            https::exchange(&pooled(), request, MAX_BODY)
                .await
                .map_err(|why| unavailable(&why))
        };
        let (status, body) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| unavailable(&format!("no answer within {:?}", self.timeout)))??;
        match status {
            200..=299 => grant(&body),
            401 | 403 => Err(Denied {
                status,
                reason: format!("the auth URL answered {status}"),
            }),
            other => Err(unavailable(&format!("the auth URL answered {other}"))),
        }
    }

    fn request(&self, ask: &Ask<'_>) -> Result<Request<Empty<Bytes>>, hyper::http::Error> {
        let mut r = Request::get(self.url.clone())
            .header("X-Original-URI", &ask.original_uri)
            .header("X-Forwarded-For", &ask.client_ip)
            .header("X-Real-IP", &ask.client_ip);
        for (name, value) in [
            ("Cookie", ask.cookie),
            ("Authorization", ask.authorization),
            ("Origin", ask.origin),
        ] {
            if let Some(v) = value {
                r = r.header(name, v);
            }
        }
        r.body(Empty::new())
    }
}

/// A refusal that fails closed (503).
fn unavailable(why: &str) -> Denied {
    Denied {
        status: 503,
        reason: format!("auth URL unavailable: {why}"),
    }
}

/// The grant of a 2xx answer: every channel when the body is empty or has
/// no `channels`.
fn grant(body: &[u8]) -> Result<Grant, Denied> {
    let everything = || Box::from(["*".to_string()]);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Grant {
            channels: everything(),
            ..Grant::default()
        });
    }
    let bad = || unavailable("the 2xx body is not the expected JSON object");
    let v: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let Value::Object(o) = v else {
        return Err(bad());
    };
    let channels = match o.get("channels") {
        None => everything(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?
            .into(),
        Some(_) => return Err(bad()),
    };
    Ok(Grant {
        sub: o.get("sub").and_then(Value::as_str).map(str::to_string),
        exp: o.get("exp").and_then(Value::as_u64),
        channels,
    })
}

/// A query string with every `token` value replaced by `REDACTED`, for
/// `X-Original-URI`.
pub fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some(("token", _)) => "token=REDACTED",
            _ => p,
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(grant(b"").unwrap().channels[..], ["*".to_string()]);
        let g = grant(br#"{"channels":["news","user.1"],"sub":"u1","exp":99}"#).unwrap();
        assert_eq!(
            (g.sub.as_deref(), g.exp, g.channels.len()),
            (Some("u1"), Some(99), 2)
        );
        assert_eq!(
            grant(br#"{"sub":"u"}"#).unwrap().channels[..],
            ["*".to_string()]
        );
        assert_eq!(grant(b"[1]").unwrap_err().status, 503);
        assert_eq!(grant(br#"{"channels":"news"}"#).unwrap_err().status, 503);
    }

    #[test]
    fn urls_and_redaction() {
        assert!(Callback::new("http://127.0.0.1:3000/ws-auth", Duration::from_secs(2), 8).is_ok());
        assert!(Callback::new("ftp://x/", Duration::from_secs(2), 8).is_err());
        assert!(Callback::new("/relative", Duration::from_secs(2), 8).is_err());
        assert!(Callback::new("http://x/", Duration::from_secs(2), 0).is_err());
        assert_eq!(
            redact_query("channel=a&token=abc&x=1"),
            "channel=a&token=REDACTED&x=1"
        );
    }
}
