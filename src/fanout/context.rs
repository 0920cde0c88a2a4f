//! What every worker shares, read-only: the configuration, the log, the
//! TLS acceptor and the counters, and the one way a client is counted in
//! and out of the per-channel gauges (at the upgrade and at the close).

use crate::channels::{Channels, Selection};
use crate::ops::config::Config;
use crate::ops::stats::Stats;
use slog::Logger;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// What every worker shares, read-only.
pub struct Context {
    pub cfg: Config,
    pub log: Logger,
    pub tls: Option<TlsAcceptor>,
    pub stats: Arc<Stats>,
}

impl Context {
    /// Counts a client in (or out of) the per-channel gauges, and among
    /// the deflate clients the encoder compresses for.
    pub(crate) fn account(&self, selection: Option<&Selection>, deflate: bool, joined: bool) {
        let mask = counted_mask(&self.cfg.channels, selection);
        self.stats.clients_of(mask, joined);
        if deflate {
            self.stats.deflate_clients_of(mask, joined);
        }
    }
}

/// The keys a client counts under in the per-channel client gauges.
fn counted_mask(channels: &Channels, selection: Option<&Selection>) -> u64 {
    match selection {
        None => channels.all(),
        Some(sel) => sel
            .channels
            .iter()
            .fold(sel.keys, |m, ch| m | channels.mask_for(ch)),
    }
}
