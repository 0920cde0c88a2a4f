//! Everything the relay listens on, bound before anything is served, so
//! that a taken port or a bad address is one start-up error line.

use crate::net::listen;
use crate::ops::config::Config;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};

/// The listeners of one relay.
pub struct Bound {
    /// One per worker, all on the same port.
    pub workers: Vec<TcpListener>,
    /// The WebSocket address (with the port the kernel picked for 0).
    pub local: SocketAddr,
    pub metrics: Option<TcpListener>,
    pub broker: Option<TcpListener>,
    pub publish: Option<TcpListener>,
}

/// Binds every listener `cfg` asks for.
pub fn bind(cfg: &Config) -> Result<Bound, String> {
    let workers = listen::listeners(cfg.listen, cfg.workers)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let local = local_addr(&workers[0])?;
    Ok(Bound {
        workers,
        local,
        metrics: cfg
            .metrics_addr
            .map(|a| side(a, "-metrics-addr"))
            .transpose()?,
        broker: cfg.embedded_broker.map(broker).transpose()?,
        publish: cfg
            .publish
            .as_ref()
            .map(|p| side(p.addr, "-publish-addr"))
            .transpose()?,
    })
}

/// The address a listener got.
pub fn local_addr(l: &TcpListener) -> Result<SocketAddr, String> {
    l.local_addr().map_err(|e| e.to_string())
}

/// A non-blocking listener for the main runtime; the error names `flag`.
fn side(addr: SocketAddr, flag: &str) -> Result<TcpListener, String> {
    bind_nonblocking(addr).map_err(|e| format!("cannot listen on {flag} {addr}: {}", io_text(&e)))
}

fn bind_nonblocking(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The embedded broker's listener; a taken port is most likely a Redis
/// server, and the error says so.
fn broker(addr: SocketAddr) -> Result<TcpListener, String> {
    bind_nonblocking(addr).map_err(|e| {
        let hint = match e.kind() {
            ErrorKind::AddrInUse => " (is a Redis server running there? pick another -broker-port)",
            _ => "",
        };
        format!("cannot listen on -broker {addr}: {}{hint}", io_text(&e))
    })
}

/// An I/O error's text without its " (os error N)" suffix.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_broker_port_names_the_likely_cause() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = broker(taken.local_addr().unwrap()).unwrap_err();
        assert!(e.contains("Address already in use"), "{e}");
        assert!(e.ends_with("pick another -broker-port)"), "{e}");
        assert!(!e.contains("os error"), "{e}");
    }
}
