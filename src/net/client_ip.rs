//! Who the client is: the peer's own address, or, when the peer is a
//! trusted proxy (`-ws-trusted-proxies`), the address that proxy vouches
//! for in `X-Real-IP` or `X-Forwarded-For`. Anyone else's headers, and any
//! value that is not an IP address, are ignored, so that a client cannot
//! put words into the log lines (or later, the auth call) by sending them.

use ipnet::IpNet;
use std::net::IpAddr;
use std::str::FromStr;

/// `-ws-trusted-proxies`' default: a proxy on the same host.
pub const DEFAULT_TRUSTED: &str = "127.0.0.0/8,::1";

/// The peers whose forwarding headers are believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// What a request's headers claim about the client, as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The `X-Real-IP` value; empty (so never believed) when repeated,
    /// since no proxy sends two.
    pub real_ip: Option<Box<[u8]>>,
    /// The `X-Forwarded-For` values, joined with commas in header order.
    pub forwarded_for: Option<Box<[u8]>>,
}

/// Where the client's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// Vouched for by a trusted proxy (else it is the peer's address).
    pub forwarded: bool,
}

impl TrustedProxies {
    /// A comma-separated list of CIDR blocks or addresses; `none` (or an
    /// empty list) trusts nobody.
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("none") {
                continue;
            }
            let net = match item.contains('/') {
                true => IpNet::from_str(item).ok(),
                false => IpAddr::from_str(item).ok().map(IpNet::from),
            };
            let net = net.ok_or_else(|| {
                format!("invalid -ws-trusted-proxies entry {item:?} (an address or CIDR block)")
            })?;
            nets.push(net.trunc());
        }
        Ok(TrustedProxies(nets))
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The list as the config line shows it.
    pub fn describe(&self) -> String {
        match self.0.is_empty() {
            true => "none".into(),
            false => self
                .0
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

impl Claimed {
    /// Adds one header line of the request, if it is one of the two.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("x-real-ip") {
            self.real_ip = match self.real_ip {
                None => Some(value.into()),
                Some(_) => Some(Box::default()),
            };
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            let joined = match self.forwarded_for.take() {
                None => value.to_vec(),
                Some(before) => [&before[..], b",", value].concat(),
            };
            self.forwarded_for = Some(joined.into());
        }
    }

    /// The client behind `peer`: from a trusted peer, `X-Real-IP`, else
    /// the right-most entry of `X-Forwarded-For` that is not itself a
    /// trusted proxy (the left-most when all are); otherwise, and whenever
    /// a value is not an IP address, the peer.
    pub fn resolve(&self, peer: IpAddr, trusted: &TrustedProxies) -> Client {
        let peer = Client {
            ip: peer.to_canonical(),
            forwarded: false,
        };
        if !trusted.trusts(peer.ip) {
            return peer;
        }
        let vouched = |ip: IpAddr| Client {
            ip,
            forwarded: true,
        };
        if let Some(v) = &self.real_ip {
            return parse_ip(v).map_or(peer, vouched);
        }
        let Some(list) = &self.forwarded_for else {
            return peer;
        };
        let mut leftmost = None;
        for entry in list.rsplit(|&b| b == b',') {
            let Some(ip) = parse_ip(entry) else {
                return peer;
            };
            if !trusted.trusts(ip) {
                return vouched(ip);
            }
            leftmost = Some(ip);
        }
        leftmost.map_or(peer, vouched)
    }
}

/// An IP address, spaces around it allowed; IPv4-mapped IPv6 as IPv4.
fn parse_ip(v: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(v).ok()?.trim();
    IpAddr::from_str(s).ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(real_ip: Option<&str>, xff: &[&str]) -> Claimed {
        let mut c = Claimed::default();
        if let Some(v) = real_ip {
            c.add("X-Real-IP", v.as_bytes());
        }
        for v in xff {
            c.add("x-forwarded-for", v.as_bytes());
        }
        c
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_is_believed_and_only_with_an_address() {
        let t = TrustedProxies::parse(DEFAULT_TRUSTED).unwrap();
        let local = ip("127.0.0.1");
        let far = ip("203.0.113.9");
        let c = claimed(Some("198.51.100.7"), &[]);
        assert_eq!(
            c.resolve(local, &t),
            Client {
                ip: ip("198.51.100.7"),
                forwarded: true
            }
        );
        assert_eq!(
            c.resolve(far, &t),
            Client {
                ip: far,
                forwarded: false
            },
            "not a proxy of ours"
        );
        let forged = claimed(Some("1.2.3.4] FORGED [x"), &[]);
        assert_eq!(forged.resolve(local, &t).ip, local);
        let mapped = ip("::ffff:127.0.0.1");
        assert!(
            c.resolve(mapped, &t).forwarded,
            "IPv4-mapped loopback is loopback"
        );
        assert!(c.resolve(ip("::1"), &t).forwarded);
    }

    #[test]
    fn forwarded_for_takes_the_right_most_untrusted_entry() {
        let t = TrustedProxies::parse("127.0.0.0/8, 10.0.0.0/8").unwrap();
        let local = ip("127.0.0.1");
        let spoofed = claimed(None, &["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(spoofed.resolve(local, &t).ip, ip("198.51.100.7"));
        let all_proxies = claimed(None, &["10.0.0.2, 10.0.0.3"]);
        assert_eq!(all_proxies.resolve(local, &t).ip, ip("10.0.0.2"));
        let junk = claimed(None, &["198.51.100.7, unknown"]);
        assert_eq!(
            junk.resolve(local, &t),
            Client {
                ip: local,
                forwarded: false
            }
        );
        let both = claimed(Some("192.0.2.1"), &["198.51.100.7"]);
        assert_eq!(
            both.resolve(local, &t).ip,
            ip("192.0.2.1"),
            "X-Real-IP first"
        );
        assert_eq!(claimed(None, &[]).resolve(local, &t).ip, local);
        let mut twice = claimed(Some("192.0.2.1"), &[]);
        twice.add("X-REAL-IP", b"192.0.2.2");
        assert_eq!(twice.resolve(local, &t).ip, local, "two X-Real-IP: neither");
    }

    #[test]
    fn lists() {
        assert!(TrustedProxies::parse("none").unwrap().0.is_empty());
        assert!(!TrustedProxies::parse("").unwrap().trusts(ip("127.0.0.1")));
        let t = TrustedProxies::parse("192.168.1.77/24,2001:db8::/32").unwrap();
        assert_eq!(t.describe(), "192.168.1.0/24,2001:db8::/32");
        assert!(t.trusts(ip("192.168.1.3")) && t.trusts(ip("2001:db8::5")));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("proxy.example").is_err());
    }
}
