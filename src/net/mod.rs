//! Sockets: listeners and process limits, the accept loop, the small HTTP
//! of the side endpoints, and the TLS acceptor.

pub(crate) mod accept;
pub mod client_ip;
pub(crate) mod http;
pub(crate) mod listen;
pub(crate) mod tls;
