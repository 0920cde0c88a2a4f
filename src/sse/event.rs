//! One message as one Server-Sent Event.
//!
//! The payload goes out as `data:` lines split at every line break the
//! event-stream format knows (CRLF, CR, LF), so no payload can end its
//! event early or smuggle in an `id:` or `event:` field: whatever follows a
//! break is still behind a `data: ` prefix. A receiver joins the lines with
//! LF, so line breaks arrive as LF whatever they were.

use crate::history::id::Id;
use bytes::Bytes;

/// What goes before the data of an event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    /// The `id:` line: the channel (for a client of several) and the ID.
    pub id: Option<(Option<&'a [u8]>, Id)>,
    /// The `event:` line (the channel); `None` for the default `message`.
    pub event: Option<&'a [u8]>,
}

/// Appends the event for `data` (UTF-8 text) to `out`.
pub fn write(out: &mut Vec<u8>, fields: Fields<'_>, data: &[u8]) {
    if let Some((channel, id)) = fields.id {
        out.extend_from_slice(b"id: ");
        if let Some(channel) = channel {
            write_field(out, channel);
            out.push(b':');
        }
        id.write(out);
        out.push(b'\n');
    }
    if let Some(name) = fields.event {
        out.extend_from_slice(b"event: ");
        write_field(out, name);
        out.push(b'\n');
    }
    for line in lines(data) {
        // Always "data: ": the receiver strips one space after the colon,
        // so a payload's own leading space survives.
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// The event of one message of `channel`: named after the channel (its ID
/// then `<channel>:<id>`, so that a `Last-Event-ID` names its channel) or
/// not (a client of that channel alone: the bare ID).
pub fn message(channel: &[u8], id: Option<Id>, named: bool, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 2 * channel.len() + 64);
    let fields = Fields {
        id: id.map(|id| (named.then_some(channel), id)),
        event: named.then_some(channel),
    };
    write(&mut out, fields, data);
    Bytes::from(out)
}

/// A field value that cannot break its line: a channel name holding a
/// line break (Redis allows any bytes) has it replaced by a space.
fn write_field(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(value.iter().map(|&b| match b {
        b'\r' | b'\n' | 0 => b' ',
        b => b,
    }));
}

/// The lines of `data`, split at CRLF, CR and LF; an empty payload is one
/// empty line.
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.iter().position(|&b| b == b'\r' || b == b'\n') {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = match &text[at..] {
                    [b'\r', b'\n', ..] => 2,
                    _ => 1,
                };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

/// A comment line, ignored by receivers: keeps proxies from closing an
/// idle stream (`ping`), or says why the stream ends.
pub fn comment(text: &str) -> Vec<u8> {
    let mut out = b": ".to_vec();
    write_field(&mut out, text.as_bytes());
    out.extend_from_slice(b"\n\n");
    out
}

/// The `recovered` event that ends a resume, or marks a gap, for `channel`.
pub fn recovered(channel: &[u8], recovered: bool) -> Vec<u8> {
    let body = crate::ws::control::recovered(channel, recovered);
    let mut out = Vec::with_capacity(body.len() + 32);
    let fields = Fields {
        id: None,
        event: Some(b"recovered"),
    };
    write(&mut out, fields, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fields: Fields<'_>, data: &str) -> String {
        let mut out = Vec::new();
        write(&mut out, fields, data.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_line_break_starts_a_data_line() {
        let plain = Fields::default();
        assert_eq!(event(plain, "a"), "data: a\n\n");
        assert_eq!(event(plain, ""), "data: \n\n");
        assert_eq!(
            event(plain, "a\r\nb\rc\nd"),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(plain, "x\n"), "data: x\ndata: \n\n");
        assert_eq!(event(plain, "\r\n\r"), "data: \ndata: \ndata: \n\n");
        assert_eq!(
            event(plain, "x\nid: 999\n\nevent: evil"),
            "data: x\ndata: id: 999\ndata: \ndata: event: evil\n\n"
        );
        assert_eq!(event(plain, " lead: data:"), "data:  lead: data:\n\n");
    }

    #[test]
    fn id_and_event_lines() {
        let id = Id::new(17, 3);
        let one = Fields {
            id: Some((None, id)),
            event: None,
        };
        assert_eq!(event(one, "{}"), "id: 17-3\ndata: {}\n\n");
        let named = Fields {
            id: Some((Some(b"user.7"), id)),
            event: Some(b"user.7"),
        };
        assert_eq!(
            event(named, "{}"),
            "id: user.7:17-3\nevent: user.7\ndata: {}\n\n"
        );
        let odd = Fields {
            id: None,
            event: Some(b"a\nid: 1"),
        };
        assert_eq!(event(odd, "x"), "event: a id: 1\ndata: x\n\n");
    }

    #[test]
    fn comments_and_recovered() {
        assert_eq!(comment("ping"), b": ping\n\n");
        assert_eq!(comment("a\nb"), b": a b\n\n");
        let r = String::from_utf8(recovered(b"news", true)).unwrap();
        assert_eq!(
            r,
            "event: recovered\ndata: {\"channel\":\"news\",\"recovered\":true}\n\n"
        );
    }
}
