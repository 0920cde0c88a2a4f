//! The signals the relay answers: SIGTERM and SIGINT stop it, SIGHUP
//! reopens the log file.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// The relay's signal handlers. Made before anything listens: a SIGTERM
/// that arrives while the first clients connect must be a graceful stop,
/// not a kill.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    /// Installs the handlers; needs a runtime entered.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for the next signal; returns its name.
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }

    /// Waits for the next SIGTERM or SIGINT.
    pub async fn next_stop(&mut self) -> &'static str {
        loop {
            match self.next().await {
                "SIGHUP" => continue,
                name => return name,
            }
        }
    }
}
