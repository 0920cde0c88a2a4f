//! Fuzz property of the Go-style flag normaliser.

use crate::ops::config::{Args, ON_BY_DEFAULT_FLAGS, SWITCH_FLAGS, VALUE_FLAGS};
use crate::ops::flags::{self, FlagSpec};

/// `flags::normalize` with the relay's flags is total, well-formed and
/// idempotent.
///
/// `data` is split into arguments at NUL bytes (lossy UTF-8). On success the
/// output is `--help`, `--version`, or argh's spelling: `--name value` for
/// each value flag, then `--switch` for each set switch and `--name
/// true|false` for each switch that is on by default, each at most once,
/// then the untouched tail of the arguments where flag parsing stopped (at
/// the first non-flag, or at `--`, which is kept). Normalising the output
/// again gives the same output (once `--name true|false` of a switch that
/// is on by default is respelt `--name=true|false`), and argh never accepts arguments that had a
/// tail (so nothing after `--` or a positional is applied as a flag).
pub fn flags(data: &[u8]) {
    let args: Vec<String> = if data.is_empty() {
        Vec::new()
    } else {
        data.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    let spec = FlagSpec {
        values: VALUE_FLAGS,
        switches: SWITCH_FLAGS,
        on_by_default: ON_BY_DEFAULT_FLAGS,
    };
    let Ok(out) = flags::normalize(&args, &spec) else {
        return;
    };
    let tail = check_flag_shape(&out, &spec);
    if !tail.is_empty() {
        assert!(
            args.ends_with(tail),
            "tail {tail:?} is not the end of {args:?}"
        );
    }
    // Idempotence, with one respelling: a switch that is on by default comes
    // out as argh's `--ws-deflate false`, which in Go's syntax (and so for
    // `normalize`) is a bare switch and a positional `false`; its Go
    // spelling is `--ws-deflate=false`.
    let mut go_form: Vec<String> = Vec::with_capacity(out.len());
    let flags_end = out.len() - tail.len();
    let mut i = 0;
    while i < flags_end {
        let on_by_default = out[i]
            .strip_prefix("--")
            .is_some_and(|name| spec.on_by_default.contains(&name));
        if on_by_default {
            go_form.push(format!("{}={}", out[i], out[i + 1]));
            i += 2;
        } else {
            go_form.push(out[i].clone());
            i += 1;
        }
    }
    go_form.extend_from_slice(tail);
    let again = flags::normalize(&go_form, &spec)
        .unwrap_or_else(|e| panic!("normalised {go_form:?} (from {args:?}) is refused: {e}"));
    assert_eq!(again, out, "normalize is not idempotent on {args:?}");
    let positional = tail.strip_prefix(&["--".to_string()][..]).unwrap_or(tail);
    let parsed = flags::parse_from::<Args>("pubsocketd", &args, &spec);
    if !positional.is_empty() {
        assert!(
            parsed.is_err(),
            "{args:?} has positional arguments {positional:?} but argh accepted it: {parsed:?}"
        );
    }
}

/// Checks the shape of normalised arguments; returns the passed-on tail.
fn check_flag_shape<'o>(out: &'o [String], spec: &FlagSpec<'_>) -> &'o [String] {
    if out == ["--help"] || out == ["--version"] {
        return &[];
    }
    let known = |list: &[&str], arg: &str| {
        arg.strip_prefix("--")
            .is_some_and(|name| list.contains(&name))
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < out.len() && known(spec.values, &out[i]) {
        assert!(i + 1 < out.len(), "value flag {} without a value", out[i]);
        assert!(!seen.contains(&out[i].as_str()), "{} twice", out[i]);
        seen.push(&out[i]);
        i += 2;
    }
    while let Some(arg) = out.get(i) {
        let step = if known(spec.switches, arg) {
            1
        } else if known(spec.on_by_default, arg) {
            // Handed to argh with its value: `--ws-deflate false`.
            let value = out.get(i + 1).map(String::as_str);
            assert!(
                matches!(value, Some("true" | "false")),
                "{arg} followed by {value:?}"
            );
            2
        } else {
            break;
        };
        assert!(!seen.contains(&arg.as_str()), "{arg} twice");
        seen.push(arg);
        i += step;
    }
    let tail = &out[i..];
    if let Some(first) = tail.first() {
        let is_flag = first.len() >= 2 && first.starts_with('-');
        assert!(
            first == "--" || !is_flag,
            "tail {tail:?} starts with a flag-like argument that argh would read as a flag"
        );
    }
    tail
}
