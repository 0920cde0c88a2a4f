//! Writing RESP: the commands the relay sends to Redis, and the replies the
//! embedded broker sends to publishers, in RESP2 or RESP3 form.

/// The protocol a broker connection speaks, chosen by `HELLO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Resp2,
    Resp3,
}

/// A command as clients send it: an array of bulk strings.
pub fn command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    array(&mut out, parts.len());
    for p in parts {
        bulk(&mut out, p);
    }
    out
}

/// `+text`: a status reply (`OK`, `PONG`).
pub fn simple(out: &mut Vec<u8>, text: &str) {
    out.push(b'+');
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `:n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(format!(":{n}\r\n").as_bytes());
}

/// `$len` and the bytes.
pub fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The header of an array of `n` items.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(format!("*{n}\r\n").as_bytes());
}

/// The header of a map of `n` pairs: `%n` in RESP3, a flat array of `2n`
/// items in RESP2, as Redis answers `HELLO`.
pub fn map(out: &mut Vec<u8>, n: usize, proto: Proto) {
    match proto {
        Proto::Resp3 => out.extend_from_slice(format!("%{n}\r\n").as_bytes()),
        Proto::Resp2 => array(out, 2 * n),
    }
}

/// An error reply; line breaks become spaces, as Redis does, so that a
/// text can never end the reply early.
pub fn error(out: &mut Vec<u8>, code: &str, text: &str) {
    out.push(b'-');
    out.extend_from_slice(code.as_bytes());
    out.push(b' ');
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_replies() {
        assert_eq!(
            command(&[b"SUBSCRIBE", b"ch"]),
            b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n"
        );
        let mut out = Vec::new();
        error(&mut out, "ERR", "a\r\nb");
        simple(&mut out, "OK");
        integer(&mut out, -3);
        map(&mut out, 2, Proto::Resp3);
        map(&mut out, 2, Proto::Resp2);
        assert_eq!(out, b"-ERR a  b\r\n+OK\r\n:-3\r\n%2\r\n*4\r\n");
    }
}
