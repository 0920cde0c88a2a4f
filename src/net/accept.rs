//! One accept loop for every listener: when `accept` fails (most often
//! EMFILE, out of descriptors) it pauses briefly instead of spinning, and
//! says so once per failing spell rather than once per attempt.

use slog::{debug, warn, Logger};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, Instant};

/// Pause after a failed `accept`, so that the loop does not spin.
const BACKOFF: Duration = Duration::from_millis(100);

/// A listener with its back-off state.
pub struct Acceptor {
    listener: TcpListener,
    paused_until: Option<Instant>,
    failing: bool,
    /// What a failure line starts with (`[accept]` for the clients'
    /// listeners, `[broker] accept` for the broker's, …).
    what: &'static str,
    log: Logger,
}

impl Acceptor {
    pub fn new(listener: TcpListener, what: &'static str, log: Logger) -> Acceptor {
        Acceptor {
            listener,
            paused_until: None,
            failing: false,
            what,
            log,
        }
    }

    /// The next connection. Cancel-safe (the worker selects on it beside
    /// its fan-out): a pause in progress is remembered, not restarted.
    pub async fn next(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if let Some(until) = self.paused_until {
                sleep_until(until).await;
                self.paused_until = None;
            }
            match self.listener.accept().await {
                Ok(accepted) => {
                    if self.failing {
                        debug!(self.log, "{} works again", self.what);
                        self.failing = false;
                    }
                    return accepted;
                }
                Err(e) => {
                    if !self.failing {
                        warn!(
                            self.log,
                            "{} failed: {e}; pausing accepts briefly", self.what
                        );
                        self.failing = true;
                    }
                    self.paused_until = Some(Instant::now() + BACKOFF);
                }
            }
        }
    }

    /// Serves every connection with `handle`, each in a task of its own,
    /// until the task running this is dropped.
    pub async fn serve<F, Fut>(mut self, mut handle: F)
    where
        F: FnMut(TcpStream, SocketAddr) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        loop {
            let (stream, peer) = self.next().await;
            tokio::spawn(handle(stream, peer));
        }
    }
}
