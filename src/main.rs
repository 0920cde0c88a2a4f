//! `pubsocketd`: parse the Go-compatible command line, then run the relay.

use pubsocketd::ops::config::{Args, Config, ON_BY_DEFAULT_FLAGS, SWITCH_FLAGS, VALUE_FLAGS};
use pubsocketd::ops::flags::{parse_or_exit, FlagSpec};

fn main() {
    let spec = FlagSpec {
        values: VALUE_FLAGS,
        switches: SWITCH_FLAGS,
        on_by_default: ON_BY_DEFAULT_FLAGS,
    };
    let args: Args = parse_or_exit(&spec, env!("CARGO_PKG_VERSION"));
    let cfg = Config::from_args(args).unwrap_or_else(|e| {
        eprintln!("pubsocketd: {e}");
        std::process::exit(2)
    });
    std::process::exit(pubsocketd::server::run(cfg));
}
