//! wss:// through rustls (TLS 1.2 and 1.3, ring provider).

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Loads `-tls-cert` and `-tls-key`; errors name the file at fault.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, String> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "-tls-cert {} and -tls-key do not make a usable pair: {e}",
                cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn open(flag: &str, path: &Path) -> Result<BufReader<std::fs::File>, String> {
    std::fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| format!("cannot read -{flag} {}: {e}", path.display()))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut open("tls-cert", path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid PEM in -tls-cert {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate in -tls-cert {}",
            path.display()
        ));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    rustls_pemfile::private_key(&mut open("tls-key", path)?)
        .map_err(|e| format!("invalid PEM in -tls-key {}: {e}", path.display()))?
        .ok_or_else(|| format!("no PEM private key in -tls-key {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = acceptor(&missing, &empty).err().unwrap();
        assert!(
            e.starts_with("cannot read -tls-cert ") && e.contains("nope.pem"),
            "{e}"
        );
        let e = acceptor(&empty, &empty).err().unwrap();
        assert!(e.starts_with("no PEM certificate in -tls-cert"), "{e}");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        let e = acceptor(&cert, &empty).err().unwrap();
        assert!(e.starts_with("no PEM private key in -tls-key"), "{e}");
        let key = dir.path().join("k.pem");
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        assert!(acceptor(&cert, &key).is_ok());
    }
}
