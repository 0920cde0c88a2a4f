//! Origins as RFC 6454 tuples (scheme, host, port).
//!
//! The original compared the Origin header with the configured origin as a
//! string, so `http://Example.com` and `http://example.com:80` were refused.
//! Here both sides are parsed into a normalised tuple: scheme and host in
//! lower case, the scheme's default port made explicit.

use std::fmt;

/// One serialised origin, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    /// `None` for the scheme's default port (or a scheme without one).
    port: Option<u16>,
}

/// Which Origin headers the handshake accepts.
#[derive(Debug, Clone)]
pub enum OriginPolicy {
    /// `-ws-insecure`: any Origin, or none.
    Any,
    /// Only these.
    List(Vec<Origin>),
}

impl OriginPolicy {
    /// Checks an Origin header value (`None` when the header is missing).
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), OriginRefusal> {
        let list = match self {
            OriginPolicy::Any => return Ok(()),
            OriginPolicy::List(list) => list,
        };
        let raw = header.ok_or(OriginRefusal::Missing)?;
        let text = std::str::from_utf8(raw).map_err(|_| OriginRefusal::Malformed)?;
        let text = text.trim();
        if text == "null" {
            return Err(OriginRefusal::Null);
        }
        let origin = Origin::parse(text).map_err(|_| OriginRefusal::Malformed)?;
        if list.contains(&origin) {
            Ok(())
        } else {
            Err(OriginRefusal::NotAllowed)
        }
    }
}

/// Why an Origin was refused; its `Display` is the log line's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginRefusal {
    Missing,
    Null,
    Malformed,
    NotAllowed,
}

impl fmt::Display for OriginRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OriginRefusal::Missing => "missing Origin header",
            OriginRefusal::Null => "Origin is null",
            OriginRefusal::Malformed => "malformed Origin header",
            OriginRefusal::NotAllowed => "Origin not allowed",
        })
    }
}

impl Origin {
    /// Parses `scheme://host[:port]`; a single trailing `/` is tolerated so
    /// that `-ws-origin=https://example.com/` works.
    pub fn parse(s: &str) -> Result<Origin, &'static str> {
        let (scheme, rest) = s.split_once("://").ok_or("expected scheme://host")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        {
            return Err("invalid scheme");
        }
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', ' ']) {
            return Err("an origin has no path, query, fragment or user");
        }
        let (host, port) = split_port(rest)?;
        if host.is_empty() {
            return Err("missing host");
        }
        let port = port.filter(|p| Some(*p) != default_port(&scheme));
        Ok(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Splits `host[:port]`, keeping IPv6 literals (`[::1]:80`) whole.
fn split_port(hostport: &str) -> Result<(&str, Option<u16>), &'static str> {
    let colon = if hostport.starts_with('[') {
        let end = hostport.find(']').ok_or("unclosed [ in host")?;
        match &hostport[end + 1..] {
            "" => None,
            p if p.starts_with(':') => Some(end + 1),
            _ => return Err("junk after IPv6 address"),
        }
    } else {
        // The first colon: a host that is not an IPv6 literal has none.
        hostport.find(':')
    };
    match colon {
        None => Ok((hostport, None)),
        Some(i) => {
            let digits = &hostport[i + 1..];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid port");
            }
            let port = digits.parse().map_err(|_| "invalid port")?;
            Ok((&hostport[..i], Some(port)))
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

impl fmt::Display for Origin {
    /// The RFC 6454 serialisation: the default port is left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> OriginPolicy {
        OriginPolicy::List(list.iter().map(|s| Origin::parse(s).unwrap()).collect())
    }

    #[test]
    fn rfc6454_equivalence() {
        let p = policy(&["http://a.example", "https://b.example:8443"]);
        for ok in [
            "http://a.example",
            "http://A.EXAMPLE:80",
            "HTTP://a.example",
            "https://b.example:8443",
        ] {
            assert_eq!(p.check(Some(ok.as_bytes())), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("https://a.example", OriginRefusal::NotAllowed),
            ("http://a.example:8080", OriginRefusal::NotAllowed),
            ("https://b.example", OriginRefusal::NotAllowed),
            ("http://a.example.evil", OriginRefusal::NotAllowed),
            ("null", OriginRefusal::Null),
            ("a.example", OriginRefusal::Malformed),
            ("http://a.example:99999", OriginRefusal::Malformed),
        ] {
            assert_eq!(p.check(Some(bad.as_bytes())), Err(why), "{bad}");
        }
        assert_eq!(p.check(None), Err(OriginRefusal::Missing));
        assert_eq!(OriginPolicy::Any.check(None), Ok(()));
    }

    #[test]
    fn serialisation_and_ipv6() {
        assert_eq!(
            Origin::parse("HTTPS://Example.COM:443/")
                .unwrap()
                .to_string(),
            "https://example.com"
        );
        let v6 = Origin::parse("http://[::1]:8000").unwrap();
        assert_eq!(v6.to_string(), "http://[::1]:8000");
        assert_eq!(
            Origin::parse("http://[::1]").unwrap(),
            Origin::parse("http://[::1]:80").unwrap()
        );
        assert!(Origin::parse("http://[::1").is_err());
        assert!(Origin::parse("http://a/b").is_err());
        // Found by fuzzing (fuzz/corpus/origin/regression-colon-in-host):
        // "a:b" was taken as a host, and "http://a:b" did not parse back.
        assert!(Origin::parse("https://Exaempps:le.COM:443/").is_err());
        assert!(Origin::parse("http://a:b:80").is_err());
        assert!(Origin::parse("http://::1").is_err());
        assert_eq!(
            Origin::parse("chrome-extension://ABC").unwrap().to_string(),
            "chrome-extension://abc"
        );
    }
}
