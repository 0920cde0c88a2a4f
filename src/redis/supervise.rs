//! The reconnect loop every Redis reader shares (the subscriber, the
//! stream reader): run a session until it fails, report a refusal before
//! the first success as fatal, log one line per change of state, back off,
//! start again. With `-rs-sentinel` it also follows `+switch-master`.

use super::backoff::Backoff;
use super::connect::Target;
use super::sentinel;
use crate::ops::stats::Stats;
use slog::{debug, warn, Logger};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::time::sleep;

/// Why a connection ended.
pub struct Failure {
    pub why: String,
    /// Refused credentials or permissions (rather than a network fault).
    pub refused: bool,
}

impl Failure {
    pub fn io(why: impl Into<String>) -> Failure {
        Failure {
            why: why.into(),
            refused: false,
        }
    }
}

/// One connection of a reader, from connect to failure; resets `backoff`
/// once it is live.
pub trait Session {
    fn once(&mut self, backoff: &mut Backoff) -> impl Future<Output = Result<Infallible, Failure>>;
}

/// What the loop needs besides the session.
pub struct Parts {
    pub target: Target,
    pub log: Logger,
    pub stats: Arc<Stats>,
    /// Told when Redis refuses the relay before its first success.
    pub fatal: Option<oneshot::Sender<String>>,
}

/// Runs `session` again and again until the process ends; returns only
/// after reporting a fatal start-up error.
pub async fn run(mut session: impl Session, mut parts: Parts) {
    if let Some(s) = parts.target.sentinel() {
        let primaries = parts.target.primaries().clone();
        tokio::spawn(sentinel::watch_switches(
            s.clone(),
            primaries,
            parts.log.clone(),
        ));
    }
    let mut backoff = Backoff::new();
    let mut was_refused = false;
    loop {
        let Err(failure) = session.once(&mut backoff).await;
        parts.stats.redis_up.store(false, Relaxed);
        if failure.refused && backoff.first {
            if let Some(fatal) = parts.fatal.take() {
                let _ = fatal.send(failure.why);
                return;
            }
        }
        // One line per state change: the first failure after a healthy
        // spell, or the first refusal, is a warning; the retries that
        // follow are debug lines.
        let changed = backoff.is_reset() || failure.refused != was_refused;
        was_refused = failure.refused;
        if changed {
            warn!(parts.log, "[redis] {}; reconnecting", failure.why);
        } else {
            debug!(parts.log, "[redis] {}; retrying", failure.why);
        }
        sleep(backoff.next_delay()).await;
    }
}
