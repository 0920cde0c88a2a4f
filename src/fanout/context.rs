//! What every worker shares, read-only: the configuration, the log, the
//! TLS acceptor and the counters, and the one way a client is counted in
//! and out of the per-channel gauges (at the upgrade and at the close).

use crate::channels::{Live, Selection};
use crate::ops::config::Config;
use crate::ops::stats::Stats;
use slog::Logger;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// What every worker shares, read-only.
pub struct Context {
    /// The channels relayed now (the configuration's, until a reload).
    pub channels: Arc<Live>,
    pub cfg: Config,
    pub log: Logger,
    pub tls: Option<TlsAcceptor>,
    pub stats: Arc<Stats>,
}

impl Context {
    /// Counts a client in (or out of) the per-channel gauges, and among
    /// the deflate clients the encoder compresses for. Runs at the upgrade
    /// and at the close, never per message.
    pub(crate) fn account(
        &self,
        selection: Option<&Selection>,
        deflate: bool,
        v1: bool,
        joined: bool,
    ) {
        if v1 {
            self.stats.v1_of(deflate, joined);
        }
        match selection {
            None => self.stats.clients_of(None, deflate, joined),
            Some(sel) => {
                self.stats.clients_of(Some(&sel.counted), deflate, joined);
                self.stats.channels_of(sel, joined);
            }
        }
    }
}
