//! A JWK set fetched over HTTPS (`-auth-jwks=https://…`): at start (a
//! failure is a start-up error), every `-auth-jwks-refresh`, and when a
//! token names a `kid` the set lacks (at most once a minute). A fetch that
//! fails keeps the keys in use.

use super::https;
use http_body_util::Empty;
use hyper::{Request, Uri};
use std::time::Duration;

/// Largest JWK set read.
const MAX_SET: usize = 1 << 20;
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches asked for by unknown `kid`s are at least this far apart.
pub const KID_REFETCH: Duration = Duration::from_secs(60);

/// Checks a JWK set URL: `https://`, or `http://` to a loopback address
/// (keys must not cross a network in the clear).
pub fn parse(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|_| format!("invalid -auth-jwks URL {url:?}"))?;
    let host = uri.host().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if loopback => Ok(uri),
        Some("http") => {
            Err("-auth-jwks over http:// only to a loopback address; use https://".into())
        }
        _ => Err(format!(
            "-auth-jwks must be a file or an https:// URL, not {url:?}"
        )),
    }
}

/// One fetch of the set (a client of its own: fetches are rare, and the
/// first runs before the relay's runtime does).
pub async fn fetch(url: &Uri) -> Result<Vec<u8>, String> {
    let request = Request::get(url.clone())
        .body(Empty::new())
        .map_err(|e| format!("{url}: {e}"))?;
    let call = async {
        match https::exchange(&https::client(), request, MAX_SET).await? {
            (200..=299, body) => Ok(body.to_vec()),
            (status, _) => Err(format!("answered {status}")),
        }
    };
    tokio::time::timeout(FETCH_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {FETCH_TIMEOUT:?}"))?
        .map_err(|why| format!("{url}: {why}"))
}

/// The first fetch, at start, outside any runtime.
pub fn fetch_now(url: &Uri) -> Result<Vec<u8>, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime to fetch {url}: {e}"))?
        .block_on(fetch(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http() {
        assert!(parse("https://idp.example/.well-known/jwks.json").is_ok());
        assert!(parse("http://127.0.0.1:8000/jwks").is_ok());
        assert!(parse("http://[::1]:8000/jwks").is_ok());
        assert!(parse("http://localhost/jwks").is_ok());
        assert!(parse("http://idp.example/jwks")
            .unwrap_err()
            .contains("loopback"));
        assert!(parse("ftp://idp.example/jwks").is_err());
    }
}
