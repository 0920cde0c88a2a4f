//! Where a request carries its token, in the order they are read:
//! `Authorization: Bearer …`; a subprotocol offer `pubsocketd.token.<token>`
//! (browsers cannot set headers on a WebSocket); the query parameter
//! `token`; the cookie named by `-auth-cookie`. Nothing here is ever
//! printed: `Presented`'s `Debug` says only which places hold something.

use crate::channels::percent_decode;
use std::borrow::Cow;

/// The prefix of a subprotocol offer that carries a token.
pub const OFFER_PREFIX: &str = "pubsocketd.token.";

/// The headers a token may come in, as sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Presented {
    authorization: Option<Box<[u8]>>,
    offered: Option<Box<[u8]>>,
    cookie: Option<Box<[u8]>>,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = |v: &Option<Box<[u8]>>| if v.is_some() { "(held)" } else { "-" };
        write!(
            f,
            "Presented {{ authorization: {}, offered: {}, cookie: {} }}",
            held(&self.authorization),
            held(&self.offered),
            held(&self.cookie)
        )
    }
}

/// Where a token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Bearer,
    Subprotocol,
    Query,
    Cookie,
}

impl Presented {
    /// Takes note of one request header, if it may carry a token.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        if name.eq_ignore_ascii_case("authorization") {
            self.authorization = Some(value.into());
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            let offers = value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
            if let Some(t) = offers
                .filter_map(|o| o.strip_prefix(OFFER_PREFIX.as_bytes()))
                .find(|t| !t.is_empty())
            {
                self.offered = Some(t.into());
            }
        } else if name.eq_ignore_ascii_case("cookie") {
            let joined = match self.cookie.take() {
                None => value.to_vec(),
                Some(before) => [&before[..], b"; ", value].concat(),
            };
            self.cookie = Some(joined.into());
        }
    }

    /// The `Authorization` header as sent (for `-auth=url`).
    pub fn authorization(&self) -> Option<&[u8]> {
        self.authorization.as_deref()
    }

    /// The `Cookie` headers as sent, joined (for `-auth=url`).
    pub fn cookie(&self) -> Option<&[u8]> {
        self.cookie.as_deref()
    }

    /// The token and where it was, from the first place that has one.
    pub fn find<'a>(
        &'a self,
        query: &'a str,
        cookie: Option<&str>,
    ) -> Option<(Cow<'a, str>, Place)> {
        if let Some(t) = self.authorization.as_deref().and_then(bearer) {
            return Some((Cow::Borrowed(t), Place::Bearer));
        }
        if let Some(t) = self
            .offered
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
        {
            return Some((Cow::Borrowed(t), Place::Subprotocol));
        }
        if let Some(t) = from_query(query) {
            return Some((Cow::Owned(t), Place::Query));
        }
        let name = cookie?;
        let jar = std::str::from_utf8(self.cookie.as_deref()?).ok()?;
        from_cookie(jar, name).map(|t| (Cow::Borrowed(t), Place::Cookie))
    }
}

/// `Bearer <token>` (the scheme in any case).
fn bearer(value: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first non-empty `token=` of a query string, percent-decoded.
fn from_query(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == "token")
        .filter_map(|(_, v)| String::from_utf8(percent_decode(v)?).ok())
        .find(|t| !t.is_empty())
}

/// The value of cookie `name` in a `Cookie` header (quotes removed).
fn from_cookie<'a>(jar: &'a str, name: &str) -> Option<&'a str> {
    jar.split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presented(headers: &[(&str, &str)]) -> Presented {
        let mut p = Presented::default();
        for (n, v) in headers {
            p.add(n, v.as_bytes());
        }
        p
    }

    #[test]
    fn the_four_places_in_their_order() {
        let all = presented(&[
            ("Cookie", "a=1; jwt=\"c.c.c\""),
            (
                "Sec-WebSocket-Protocol",
                "pubsocketd.v1, pubsocketd.token.s.s.s",
            ),
            ("Authorization", "bearer  b.b.b "),
        ]);
        let q = "channel=x&token=q.q%2Eq";
        assert_eq!(
            all.find(q, Some("jwt")).unwrap(),
            ("b.b.b".into(), Place::Bearer)
        );
        let no_bearer = presented(&[
            ("Cookie", "a=1; jwt=\"c.c.c\""),
            (
                "Sec-WebSocket-Protocol",
                "pubsocketd.raw,pubsocketd.token.s.s.s",
            ),
        ]);
        assert_eq!(
            no_bearer.find(q, Some("jwt")).unwrap().1,
            Place::Subprotocol
        );
        let cookie_only = presented(&[("Cookie", "a=1"), ("cookie", "jwt=c.c.c")]);
        assert_eq!(
            cookie_only.find(q, Some("jwt")).unwrap(),
            ("q.q.q".into(), Place::Query)
        );
        assert_eq!(
            cookie_only.find("", Some("jwt")).unwrap(),
            ("c.c.c".into(), Place::Cookie)
        );
        assert_eq!(cookie_only.find("", None), None, "no -auth-cookie");
        assert_eq!(
            presented(&[("Authorization", "Basic eDp5")]).find("", None),
            None
        );
        assert_eq!(presented(&[]).find("token=", None), None);
        let empty_offer =
            presented(&[("Sec-WebSocket-Protocol", "pubsocketd.token., pubsocketd.v1")]);
        assert_eq!(empty_offer.find("token=q", None).unwrap().1, Place::Query);
    }

    #[test]
    fn nothing_is_printed() {
        let p = presented(&[("Authorization", "Bearer secret.secret.secret")]);
        assert!(!format!("{p:?}").contains("secret"));
    }
}
