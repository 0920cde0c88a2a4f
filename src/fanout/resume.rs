//! Which channel each `since` of a client names, checked against what the
//! client reads.

use crate::channels::{Channels, Selection};
use crate::history::since::{Point, Resume};
use bytes::Bytes;

/// A resume request made concrete: the channel, and the point after which
/// the client wants its messages.
pub(crate) type Asked = Vec<(Bytes, Point)>;

/// The channels of `asked`, each one the client reads (`sel`: what it
/// chose; `None`, everything). A bare `since` names the client's only
/// channel. The error is the reason for a 400 (or an error reply).
pub(crate) fn resolve(
    channels: &Channels,
    sel: Option<&Selection>,
    asked: Vec<Resume>,
) -> Result<Asked, String> {
    asked
        .into_iter()
        .map(|r| {
            let channel = match r.channel {
                Some(ch) => Bytes::from(ch),
                None => only_channel(channels, sel)
                    .ok_or("a since without a channel needs a client of exactly one channel")?,
            };
            if !reads(channels, sel, &channel) {
                let name = String::from_utf8_lossy(&channel);
                return Err(format!(
                    "since names {name:?}, which this client does not read"
                ));
            }
            Ok((channel, r.point))
        })
        .collect()
}

/// The one channel a client reads, when it reads one named channel.
pub(crate) fn only_channel(channels: &Channels, sel: Option<&Selection>) -> Option<Bytes> {
    let mut keys: Vec<u32> = match sel {
        None => channels.everything().collect(),
        Some(s) if s.keys.len() + s.channels.len() != 1 => return None,
        Some(s) if s.channels.len() == 1 => return Some(s.channels[0].clone()),
        Some(s) => s.keys.to_vec(),
    };
    let key = &channels.keys()[keys.pop().filter(|_| keys.is_empty())? as usize];
    (!key.pattern).then(|| Bytes::copy_from_slice(key.name.as_bytes()))
}

/// Whether a client that chose `sel` receives the messages of `channel`.
pub(crate) fn reads(channels: &Channels, sel: Option<&Selection>, channel: &[u8]) -> bool {
    let keys = channels.keys_for(channel);
    match sel {
        None => !keys.is_nothing() && channels.reaches_everyone(channel),
        Some(s) => {
            s.channels.iter().any(|c| c.as_ref() == channel)
                || keys.ids().iter().any(|k| s.keys.contains(k))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::id::Id;
    use crate::history::since::from_query;

    fn resolved(list: &str, query: &str) -> Result<Vec<(String, Point)>, String> {
        let channels = Channels::parse(list).unwrap();
        let sel = channels.select(query, 64).unwrap();
        let asked = from_query(query, 64)?;
        let out = resolve(&channels, sel.as_ref(), asked)?;
        Ok(out
            .into_iter()
            .map(|(c, p)| (String::from_utf8(c.to_vec()).unwrap(), p))
            .collect())
    }

    #[test]
    fn channels_of_since() {
        let at = Point::After(Id::new(1, 2));
        assert_eq!(resolved("news", "since=1-2"), Ok(vec![("news".into(), at)]));
        assert_eq!(
            resolved("news,user.*", "channel=user.7&since=1-2"),
            Ok(vec![("user.7".into(), at)])
        );
        assert_eq!(
            resolved("news,user.*", "channel=user.*&since=user.7:last"),
            Ok(vec![("user.7".into(), Point::Last)])
        );
        assert_eq!(resolved("a,b", "since=a:1-2&since=b:1-2").unwrap().len(), 2);
        for (list, query) in [
            ("a,b", "since=1-2"),
            ("user.*", "since=1-2"),
            ("a,b", "channel=a&since=b:1-2"),
            ("a,user.*", "since=zzz:1-2"),
            ("a,user.*", "channel=user.*&since=1-2"),
        ] {
            assert!(resolved(list, query).is_err(), "{list} {query}");
        }
    }
}
