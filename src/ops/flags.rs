//! Go-style flag spellings, rewritten for `argh`.
//!
//! go-pubsocketd used Go's `flag` package, so init scripts and systemd units
//! in the wild pass `-name=value`, `-name value`, `--name=value`,
//! `--name value`, a bare boolean `-name` and `-name=true|false`. `argh` only
//! understands `--name value` and bare `--switch`, so every binary of this
//! crate runs its arguments through [`normalize`] first.
//!
//! Like Go, the last occurrence of a flag wins, and parsing stops at `--` or
//! at the first argument that is not a flag; no binary takes positional
//! arguments, so such a word is an error (even `help`, which argh alone
//! would take as a request for the help).

/// What the normaliser must know about a program's flags.
pub struct FlagSpec<'a> {
    /// Flags that take a value (`-ws-port 8080`).
    pub values: &'a [&'a str],
    /// Boolean flags (`-ws-insecure`, `-ws-insecure=false`).
    pub switches: &'a [&'a str],
    /// Boolean flags that are on by default: spelled like `switches`, but
    /// handed to argh as an option with a value (`--ws-deflate false`), so
    /// that `-ws-deflate=false` can turn them off.
    pub on_by_default: &'a [&'a str],
}

/// Rewrites `args` (without the program name) into argh's spelling.
///
/// `-h`, `-help` and `--help` become `--help`; `-version` becomes
/// `--version`. Errors are one line, ready for stderr.
pub fn normalize(args: &[String], spec: &FlagSpec<'_>) -> Result<Vec<String>, String> {
    let mut values: Vec<(&str, String)> = Vec::new();
    let mut switches: Vec<(&str, bool)> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            // Keep the `--`: argh must see what follows as positional.
            rest.extend(args[i - 1..].iter().cloned());
            break;
        }
        let Some(body) = flag_body(arg)? else {
            rest.extend(args[i - 1..].iter().cloned());
            break;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        match name {
            "h" | "help" => return Ok(vec!["--help".to_string()]),
            "version" => return Ok(vec!["--version".to_string()]),
            _ => {}
        }
        if let Some(known) = spec
            .switches
            .iter()
            .chain(spec.on_by_default)
            .find(|s| **s == name)
        {
            let on = match inline {
                None => true,
                Some(v) => parse_bool(v).ok_or_else(|| {
                    format!("invalid boolean value {v:?} for flag -{name} (use true or false)")
                })?,
            };
            set(&mut switches, known, on);
        } else if let Some(known) = spec.values.iter().find(|s| **s == name) {
            let value = match inline {
                Some(v) => v.to_string(),
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| format!("flag needs an argument: -{name}"))?;
                    i += 1;
                    v.clone()
                }
            };
            set(&mut values, known, value);
        } else {
            return Err(format!("unknown flag -{name} (see --help)"));
        }
    }
    let mut out = Vec::new();
    for (name, value) in values {
        out.push(format!("--{name}"));
        out.push(value);
    }
    for (name, on) in switches {
        if spec.on_by_default.contains(&name) {
            out.push(format!("--{name}"));
            out.push(on.to_string());
        } else if on {
            out.push(format!("--{name}"));
        }
    }
    out.extend(rest);
    Ok(out)
}

/// The name part of a flag argument, or `None` when `arg` is not a flag.
fn flag_body(arg: &str) -> Result<Option<&str>, String> {
    if arg.len() < 2 || !arg.starts_with('-') {
        return Ok(None);
    }
    let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
    if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
        return Err(format!("bad flag syntax: {arg}"));
    }
    Ok(Some(body))
}

/// Records `value` for `name`, replacing an earlier occurrence (Go: last wins).
fn set<'a, T>(list: &mut Vec<(&'a str, T)>, name: &'a str, value: T) {
    match list.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => list.push((name, value)),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses `args` into `T` with argh after [`normalize`], exiting the process
/// on `--help`, `--version` (printing `version`) or any error.
///
/// Errors are printed as one line on stderr with exit status 2, the status Go
/// programs use for bad flags.
pub fn parse_or_exit<T: argh::FromArgs>(spec: &FlagSpec<'_>, version: &str) -> T {
    let argv: Vec<String> = std::env::args().collect();
    let prog = argv
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    match parse_from(&prog, &argv[1..], spec) {
        Ok(t) => t,
        Err(Exit::Help(text)) => {
            print!("{text}");
            std::process::exit(0)
        }
        Err(Exit::Version) => {
            println!("{prog} {version}");
            std::process::exit(0)
        }
        Err(Exit::Error(line)) => {
            eprintln!("{prog}: {line}");
            std::process::exit(2)
        }
    }
}

/// Why argument parsing did not produce a value.
#[derive(Debug, PartialEq)]
pub enum Exit {
    /// `--help` was asked for: the text to print.
    Help(String),
    /// `--version` was asked for.
    Version,
    /// A one-line error.
    Error(String),
}

/// The testable core of [`parse_or_exit`].
pub fn parse_from<T: argh::FromArgs>(
    prog: &str,
    args: &[String],
    spec: &FlagSpec<'_>,
) -> Result<T, Exit> {
    let normalized = normalize(args, spec).map_err(Exit::Error)?;
    match normalized.first().map(String::as_str) {
        Some("--version") => return Err(Exit::Version),
        Some("--help") if normalized.len() == 1 => {}
        _ => {
            // No binary takes positional arguments; refused here, because
            // argh would read a bare `help` as a request for the help.
            let tail = tail_of(&normalized, spec);
            let tail = tail.strip_prefix(&["--".to_string()][..]).unwrap_or(tail);
            if let Some(word) = tail.first() {
                return Err(Exit::Error(format!("Unrecognized argument: {word}")));
            }
        }
    }
    let refs: Vec<&str> = normalized.iter().map(String::as_str).collect();
    T::from_args(&[prog], &refs).map_err(|early| {
        if early.status.is_ok() {
            Exit::Help(early.output)
        } else {
            Exit::Error(one_line(&early.output))
        }
    })
}

/// The part of `normalize`'s output after the flags: what parsing stopped
/// at (`--` or the first word that is not a flag) and everything after it.
pub fn tail_of<'o>(normalized: &'o [String], spec: &FlagSpec<'_>) -> &'o [String] {
    let mut i = 0;
    while let Some(name) = normalized.get(i).and_then(|a| a.strip_prefix("--")) {
        if spec.values.contains(&name) || spec.on_by_default.contains(&name) {
            i += 2;
        } else if spec.switches.contains(&name) {
            i += 1;
        } else {
            break;
        }
    }
    &normalized[i.min(normalized.len())..]
}

/// argh's error text, flattened to one line and in Go's single-dash spelling.
fn one_line(output: &str) -> String {
    let line = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Run ") && !l.starts_with("Usage"))
        .collect::<Vec<_>>()
        .join("; ");
    line.replace("--", "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: FlagSpec<'static> = FlagSpec {
        values: &["ws-port", "ws-origin"],
        switches: &["ws-insecure"],
        on_by_default: &["ws-deflate"],
    };

    fn norm(args: &[&str]) -> Result<Vec<String>, String> {
        let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        normalize(&owned, &SPEC)
    }

    #[test]
    fn every_go_spelling_of_a_value_flag() {
        for args in [
            &["-ws-port=9"][..],
            &["-ws-port", "9"],
            &["--ws-port=9"],
            &["--ws-port", "9"],
        ] {
            assert_eq!(norm(args).unwrap(), ["--ws-port", "9"], "{args:?}");
        }
    }

    #[test]
    fn booleans_bare_and_explicit() {
        assert_eq!(norm(&["-ws-insecure"]).unwrap(), ["--ws-insecure"]);
        assert_eq!(norm(&["--ws-insecure=true"]).unwrap(), ["--ws-insecure"]);
        assert_eq!(norm(&["-ws-insecure=1"]).unwrap(), ["--ws-insecure"]);
        assert!(norm(&["-ws-insecure=false"]).unwrap().is_empty());
        assert!(norm(&["-ws-insecure", "-ws-insecure=F"])
            .unwrap()
            .is_empty());
        assert!(norm(&["-ws-insecure=maybe"])
            .unwrap_err()
            .contains("invalid boolean"));
    }

    #[test]
    fn switches_that_default_to_on_carry_their_value() {
        assert_eq!(norm(&["-ws-deflate"]).unwrap(), ["--ws-deflate", "true"]);
        assert_eq!(
            norm(&["--ws-deflate=false"]).unwrap(),
            ["--ws-deflate", "false"]
        );
        assert_eq!(
            norm(&["-ws-deflate=0", "-ws-deflate"]).unwrap(),
            ["--ws-deflate", "true"]
        );
    }

    #[test]
    fn last_occurrence_wins() {
        assert_eq!(
            norm(&["-ws-port=1", "--ws-port", "2"]).unwrap(),
            ["--ws-port", "2"]
        );
    }

    #[test]
    fn value_may_start_with_a_dash_or_contain_equals() {
        assert_eq!(norm(&["-ws-origin", "-x"]).unwrap(), ["--ws-origin", "-x"]);
        assert_eq!(norm(&["-ws-origin=a=b"]).unwrap(), ["--ws-origin", "a=b"]);
    }

    #[test]
    fn errors_are_one_precise_line() {
        assert_eq!(
            norm(&["-nope=1"]).unwrap_err(),
            "unknown flag -nope (see --help)"
        );
        assert_eq!(
            norm(&["-ws-port"]).unwrap_err(),
            "flag needs an argument: -ws-port"
        );
        assert_eq!(norm(&["---x"]).unwrap_err(), "bad flag syntax: ---x");
    }

    #[test]
    fn help_version_and_positional_arguments() {
        assert_eq!(norm(&["-h"]).unwrap(), ["--help"]);
        assert_eq!(norm(&["-help"]).unwrap(), ["--help"]);
        assert_eq!(norm(&["-version"]).unwrap(), ["--version"]);
        assert_eq!(
            norm(&["-ws-port=1", "extra", "-ws-insecure"]).unwrap(),
            ["--ws-port", "1", "extra", "-ws-insecure"]
        );
        assert_eq!(norm(&["--", "-x"]).unwrap(), ["--", "-x"]);
    }

    #[test]
    fn a_positional_word_is_an_error_even_help() {
        let spec = FlagSpec {
            values: &["ws-port"],
            switches: &["ws-insecure"],
            on_by_default: &["ws-deflate"],
        };
        for (args, word) in [
            (&["help"][..], "help"),
            (&["-ws-insecure", "help"], "help"),
            (&["-ws-port=1", "-ws-deflate=false", "x", "-h"], "x"),
            (&["--", "help"], "help"),
        ] {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let got = parse_from::<Insecure>("p", &args, &spec).unwrap_err();
            assert_eq!(got, Exit::Error(format!("Unrecognized argument: {word}")));
        }
        let help = parse_from::<Insecure>("p", &["-h".to_string()], &spec).unwrap_err();
        assert!(matches!(help, Exit::Help(_)), "{help:?}");
    }

    /// A program with one switch, to see what argh makes of the output.
    #[derive(argh::FromArgs, Debug)]
    #[argh(description = "test")]
    struct Insecure {
        /// a switch
        #[argh(switch)]
        ws_insecure: bool,
    }

    #[test]
    fn nothing_after_double_dash_is_applied_as_a_flag() {
        // Found by the fuzz property (fuzz/corpus/flags/regression-double-dash-switch):
        // the `--` was dropped, so argh set -ws-insecure from `-- --ws-insecure`.
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            norm(&["--", "--ws-insecure"]).unwrap(),
            ["--", "--ws-insecure"]
        );
        let after = parse_from::<Insecure>("p", &args(&["--", "--ws-insecure"]), &SPEC);
        assert!(matches!(after, Err(Exit::Error(_))), "{after:?}");
        let alone = parse_from::<Insecure>("p", &args(&["-ws-insecure", "--"]), &SPEC);
        assert!(alone.unwrap().ws_insecure);
    }
}
