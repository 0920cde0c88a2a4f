//! Fuzz property of the forwarding headers (`X-Real-IP`,
//! `X-Forwarded-For`) and who they make the client.

use crate::net::client_ip::{Claimed, Client, TrustedProxies};
use std::net::IpAddr;

/// The first byte picks the peer (a trusted proxy or not) and which
/// headers are sent; the rest is `X-Real-IP`, a newline, then
/// `X-Forwarded-For`.
///
/// An untrusted peer is always the client. A client vouched for is an
/// address one of the values spells (so a log line shows an address, never
/// text the client chose, such as a forged bracket); otherwise it is the
/// peer.
pub fn client_ip(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (real_ip, xff) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut claimed = Claimed::default();
    if pick & 1 != 0 {
        claimed.add("X-Real-IP", real_ip);
    }
    if let (Some(xff), true) = (xff, pick & 2 != 0) {
        for line in xff.split(|&b| b == b'\n') {
            claimed.add("x-forwarded-for", line);
        }
    }
    let trusted = TrustedProxies::parse("127.0.0.0/8,::1,10.0.0.0/8").expect("a valid list");
    let peer: IpAddr = match pick & 4 {
        0 => [127, 0, 0, 1].into(),
        _ => [203, 0, 113, 9].into(),
    };
    let client = claimed.resolve(peer, &trusted);
    if !trusted.trusts(peer) || !client.forwarded {
        let own = Client {
            ip: peer,
            forwarded: false,
        };
        assert_eq!(client, own, "an unbelieved client is the peer");
        return;
    }
    let spelled = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.to_canonical() == client.ip)
    };
    let in_real_ip = claimed.real_ip.as_deref().is_some_and(spelled);
    let in_xff = claimed
        .forwarded_for
        .as_deref()
        .is_some_and(|l| l.split(|&b| b == b',').any(spelled));
    assert!(in_real_ip || in_xff, "{client:?} is spelled nowhere");
    let shown = client.ip.to_string();
    assert!(!shown.contains(['[', ']', ' ']), "{shown:?}");
}
