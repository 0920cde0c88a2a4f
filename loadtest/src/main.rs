//! `pubsocketd-loadtest`: the fan-out load generator. See `--help` and
//! loadtest/README.md.

use loadtest::args::{Args, Mode};

fn main() {
    let args: Args = argh::from_env();
    // `summary` is dispatched first: it measures nothing, so it needs
    // none of the other flags to be valid.
    let result = match args.mode.as_str() {
        "summary" => loadtest::summary::run(args.input.as_deref()),
        m => Mode::parse(m).and_then(|mode| loadtest::run::run(&args, mode)),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("pubsocketd-loadtest: {e}");
            std::process::exit(2)
        }
    }
}
