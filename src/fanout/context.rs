//! What every worker shares, read-only: the configuration, the log, the
//! TLS acceptor and the counters, and the one way a client is counted in
//! and out of the per-channel gauges and the on-demand subscriptions (at
//! the upgrade, at a change of choice and at the close).

use super::hub::Form;
use super::older::Source;
use crate::auth::callback::Callback;
use crate::auth::verify::Verifier;
use crate::channels::{Live, Selection};
use crate::demand::Demand;
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
    /// `-rs-on-demand`: the channels read under a pattern, subscribed
    /// while read.
    pub demand: Option<Arc<Demand>>,
    /// `-auth=jwt`: checks each client's token.
    pub auth: Option<Arc<Verifier>>,
    /// `-auth=url`: asks the application about each upgrade.
    pub callback: Option<Arc<Callback>>,
    /// `-rs-mode=stream`: where resumes older than the history read from.
    pub older: Option<Source>,
}

impl Context {
    /// Counts a client in (or out of) the per-channel gauges, among the
    /// deflate clients the encoder compresses for, and among the readers
    /// of the channels subscribed on demand. Runs at the upgrade
    /// and at the close, never per message.
    pub(crate) fn account(&self, selection: Option<&Selection>, form: Form, joined: bool) {
        let deflate = matches!(form, Form::Deflated | Form::EnvelopeDeflated);
        match form {
            Form::Envelope | Form::EnvelopeDeflated => self.stats.v1_of(deflate, joined),
            Form::Event => self.stats.sse_of(false, joined),
            Form::NamedEvent => self.stats.sse_of(true, joined),
            Form::Plain | Form::Deflated => {}
        }
        match selection {
            None => self.stats.clients_of(None, deflate, joined),
            Some(sel) => {
                self.stats.clients_of(Some(&sel.counted), deflate, joined);
                self.stats.channels_of(sel, joined);
                match (&self.demand, joined) {
                    (Some(d), true) => d.acquire(&sel.channels),
                    (Some(d), false) => d.release(&sel.channels),
                    (None, _) => {}
                }
            }
        }
    }
}
