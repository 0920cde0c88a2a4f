//! The embedded broker's request parser: RESP arrays of bulk strings, as
//! clients send them, and inline commands (`PING`, as typed into telnet),
//! taken off a read buffer one complete request at a time. Its input is
//! whatever any local process sends, so every length is bounded before
//! anything is buffered for it.

use bytes::{Buf, Bytes, BytesMut};

/// Most arguments in one request (PUBLISH takes 3).
const MAX_ARGS: i64 = 1024;
/// Longest inline command line, as Redis' `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_MAX: usize = 64 << 10;
/// Longest `*N` or `$N` header line (sign, digits, CRLF).
const MAX_HEADER: usize = 24;

/// Malformed input; the connection is answered and closed.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn protocol(why: impl Into<String>) -> ProtocolError {
    ProtocolError(why.into())
}

/// Takes the next complete request off `buf`: its arguments (empty for a
/// blank line or `*0`), or `None` while it is incomplete. Requests are
/// RESP arrays of bulk strings, as clients send them, or inline commands
/// (`PING\r\n`, as typed into telnet), split like Redis splits them. A
/// bulk string longer than `limit` is an error as soon as its header
/// arrives.
pub fn next_request(buf: &mut BytesMut, limit: usize) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => multibulk(buf, limit),
        Some(_) => inline(buf),
    }
}

fn multibulk(buf: &mut BytesMut, limit: usize) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((n, mut pos)) = header(buf, 1, "invalid multibulk length")? else {
        return Ok(None);
    };
    if n <= 0 {
        buf.advance(pos);
        return Ok(Some(Vec::new()));
    }
    if n > MAX_ARGS {
        return Err(protocol("invalid multibulk length"));
    }
    let mut ranges = Vec::with_capacity(n.min(8) as usize);
    for _ in 0..n {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&c) => {
                return Err(protocol(format!(
                    "expected '$', got '{}'",
                    char::from(c).escape_default()
                )))
            }
        }
        let Some((len, start)) = header(buf, pos + 1, "invalid bulk length")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > limit as u64 {
            return Err(protocol("invalid bulk length"));
        }
        let end = start + len as usize;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(protocol("expected CRLF after a bulk string"));
        }
        ranges.push(start..end);
        pos = end + 2;
    }
    let frame = buf.split_to(pos).freeze();
    Ok(Some(ranges.into_iter().map(|r| frame.slice(r)).collect()))
}

/// The integer of a `*N\r\n` or `$N\r\n` line whose digits start at
/// `from`, and the offset after its CRLF; `None` while incomplete.
fn header(buf: &[u8], from: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[from.min(buf.len())..buf.len().min(from + MAX_HEADER)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= MAX_HEADER {
            return Err(protocol(what));
        }
        return Ok(None);
    };
    if window.len() < cr + 2 {
        return Ok(None);
    }
    if window[cr + 1] != b'\n' {
        return Err(protocol(what));
    }
    let n = std::str::from_utf8(&window[..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| protocol(what))?;
    Ok(Some((n, from + cr + 2)))
}

fn inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > INLINE_MAX {
            return Err(protocol("too big inline request"));
        }
        return Ok(None);
    };
    if nl > INLINE_MAX {
        return Err(protocol("too big inline request"));
    }
    let line = buf.split_to(nl + 1);
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    split_args(line)
        .map(Some)
        .ok_or_else(|| protocol("unbalanced quotes in request"))
}

/// Splits an inline command line as Redis' `sdssplitargs` does: blanks
/// separate arguments; "double quotes" take \n \r \t \b \a \" \\ and \xHH
/// escapes; 'single quotes' take \'. `None` for unbalanced quotes (or a
/// closing quote not followed by a blank).
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let blank = |c: u8| matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0 | 0x0b | 0x0c);
    let hex = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && blank(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let quote = match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                Some(q)
            }
            _ => None,
        };
        match quote {
            None => {
                while i < line.len() && !blank(line[i]) && line[i] != b'"' && line[i] != b'\'' {
                    cur.push(line[i]);
                    i += 1;
                }
                // A quote right after a word starts a quoted part of the
                // same argument in Redis; keep it simple: refuse it.
                if i < line.len() && !blank(line[i]) {
                    return None;
                }
            }
            Some(q) => loop {
                let c = *line.get(i)?;
                if c == b'\\' && q == b'"' {
                    if let (Some(b'x'), Some(h), Some(l)) = (
                        line.get(i + 1),
                        line.get(i + 2).and_then(|&c| hex(c)),
                        line.get(i + 3).and_then(|&c| hex(c)),
                    ) {
                        cur.push(h << 4 | l);
                        i += 4;
                        continue;
                    }
                    let e = *line.get(i + 1)?;
                    cur.push(match e {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'\\' && q == b'\'' && line.get(i + 1) == Some(&b'\'') {
                    cur.push(b'\'');
                    i += 2;
                } else if c == q {
                    i += 1;
                    if i < line.len() && !blank(line[i]) {
                        return None;
                    }
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            },
        }
        args.push(Bytes::from(cur));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], limit: usize) -> Result<Vec<Vec<String>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(args) = next_request(&mut buf, limit)? {
            out.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect(),
            );
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    const PIPELINE: &[u8] = b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$5\r\nhe\r\no\r\nPING\r\n*0\r\n\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n  ping  \"a b\\x41\\n\" 'c\\'d'\r\n";

    fn expected() -> Vec<Vec<String>> {
        vec![
            vec!["PUBLISH".into(), "news".into(), "he\r\no".into()],
            vec!["PING".into()],
            vec![],
            vec![],
            vec!["ECHO".into(), "".into()],
            vec!["ping".into(), "a bA\n".into(), "c'd".into()],
        ]
    }

    #[test]
    fn pipelined_requests() {
        assert_eq!(parse_all(PIPELINE, 100).unwrap(), expected());
    }

    #[test]
    fn split_reads_give_the_same_requests() {
        // Every split point, and byte by byte: a partial request is never
        // consumed, a complete one always is.
        for cut in 0..PIPELINE.len() {
            let mut buf = BytesMut::from(&PIPELINE[..cut]);
            let mut got = Vec::new();
            while let Some(args) = next_request(&mut buf, 100).unwrap() {
                got.push(args);
            }
            buf.extend_from_slice(&PIPELINE[cut..]);
            while let Some(args) = next_request(&mut buf, 100).unwrap() {
                got.push(args);
            }
            let got: Vec<Vec<String>> = got
                .iter()
                .map(|a| {
                    a.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .collect();
            assert_eq!(got, expected(), "cut at {cut}");
        }
        let mut buf = BytesMut::new();
        let mut n = 0;
        for b in PIPELINE {
            buf.extend_from_slice(&[*b]);
            while next_request(&mut buf, 100).unwrap().is_some() {
                n += 1;
            }
        }
        assert_eq!(n, expected().len());
    }

    #[test]
    fn protocol_errors() {
        let err = |input: &[u8]| parse_all(input, 10).unwrap_err().0;
        assert_eq!(err(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(err(b"*1\r\nxx\r\n"), "expected '$', got 'x'");
        assert_eq!(err(b"*1\r\n$x\r\n"), "invalid bulk length");
        assert_eq!(err(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(err(b"*2000\r\n"), "invalid multibulk length");
        assert_eq!(
            err(b"*1\r\n$3\r\nabcde"),
            "expected CRLF after a bulk string"
        );
        assert_eq!(err(b"PING \"a\r\n"), "unbalanced quotes in request");
        assert_eq!(err(b"PING \"a\"b\r\n"), "unbalanced quotes in request");
        // Over the limit as soon as the header is known, before the bytes.
        assert_eq!(err(b"*1\r\n$11\r\n"), "invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$1111111111111111111111111"),
            "invalid bulk length"
        );
        let mut long = vec![b'a'; INLINE_MAX + 1];
        assert_eq!(err(&long), "too big inline request");
        long.push(b'\n');
        assert_eq!(err(&long), "too big inline request");
        // Exactly at the limit is fine.
        assert_eq!(
            parse_all(b"*1\r\n$10\r\n0123456789\r\n", 10).unwrap(),
            vec![vec!["0123456789".to_string()]]
        );
    }

    #[test]
    fn inline_splitting() {
        let s = |l: &str| {
            split_args(l.as_bytes()).map(|v| {
                v.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            s("PUBLISH news hello"),
            Some(vec!["PUBLISH".into(), "news".into(), "hello".into()])
        );
        assert_eq!(s("  "), Some(vec![]));
        assert_eq!(s("a \"\" b"), Some(vec!["a".into(), "".into(), "b".into()]));
        assert_eq!(s("a \"\\\"x\\\\\""), Some(vec!["a".into(), "\"x\\".into()]));
        assert_eq!(s("'unterminated"), None);
        assert_eq!(s("\"esc\\"), None);
    }
}
