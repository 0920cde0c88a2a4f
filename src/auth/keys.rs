//! The keys tokens are verified with, and the algorithms each may verify:
//! an algorithm is only ever checked against a key of its own family, so a
//! token signed with HMAC over a public key, or `alg: none`, is refused.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::path::{Path, PathBuf};

/// HMAC with a shared secret.
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
/// RSA, PKCS#1 v1.5 and PSS.
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// Where the keys come from (the flags), kept to read a JWK set again.
#[derive(Clone, PartialEq, Eq)]
pub enum Source {
    /// `-auth-jwt-secret` (or its environment variable).
    Secret(String),
    /// `-auth-jwt-key`: a PEM public key.
    Pem(PathBuf),
    /// `-auth-jwks`: a JWK set file.
    Jwks(PathBuf),
    /// `-auth-jwks`: a JWK set URL.
    JwksUrl(hyper::Uri),
}

/// The keys in use.
#[derive(Clone)]
pub enum Keys {
    /// One key, whatever the token's `kid`.
    One(Key),
    /// A JWK set: the key is chosen by the token's `kid` (or the only one
    /// when the token names none and the set has one).
    Set(Vec<(Option<String>, Key)>),
}

impl std::fmt::Debug for Source {
    /// Never the secret: what the config line shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Secret(_) => f.write_str("a shared secret"),
            Source::Pem(p) => write!(f, "the PEM key {}", p.display()),
            Source::Jwks(p) => write!(f, "the JWK set {}", p.display()),
            Source::JwksUrl(u) => write!(f, "the JWK set at {u}"),
        }
    }
}

impl std::fmt::Debug for Keys {
    /// Never the key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keys::One(k) => write!(f, "one key for {:?}", k.algorithms),
            Keys::Set(set) => write!(f, "{} keys", set.len()),
        }
    }
}

impl Keys {
    /// Loads the keys; the error names the file and what is wrong with it.
    pub fn load(source: &Source) -> Result<Keys, String> {
        match source {
            Source::Secret(s) if s.is_empty() => Err("-auth-jwt-secret is empty".into()),
            Source::Secret(s) => Ok(Keys::One(Key {
                key: DecodingKey::from_secret(s.as_bytes()),
                algorithms: HMAC.to_vec(),
            })),
            Source::Pem(path) => pem(path, &read(path)?).map(Keys::One),
            Source::Jwks(path) => jwks(&path.display().to_string(), &read(path)?).map(Keys::Set),
            Source::JwksUrl(url) => {
                Keys::from_set(&url.to_string(), &super::jwks_url::fetch_now(url)?)
            }
        }
    }

    /// The keys of a JWK set's text (`what` names it in errors).
    pub fn from_set(what: &str, bytes: &[u8]) -> Result<Keys, String> {
        jwks(what, bytes).map(Keys::Set)
    }

    /// How many keys there are (a set is never empty).
    pub fn count(&self) -> usize {
        match self {
            Keys::One(_) => 1,
            Keys::Set(set) => set.len(),
        }
    }

    /// The key for a token with header `kid`.
    pub fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match self {
            Keys::One(k) => Some(k),
            Keys::Set(set) if kid.is_none() && set.len() == 1 => Some(&set[0].1),
            Keys::Set(set) => set
                .iter()
                .find(|(id, _)| id.as_deref() == kid && kid.is_some())
                .map(|(_, k)| k),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A PEM public key: RSA, EC (P-256 or P-384) or Ed25519.
fn pem(path: &Path, bytes: &[u8]) -> Result<Key, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(bytes) {
        return Ok(Key {
            key,
            algorithms: RSA.to_vec(),
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(bytes) {
        return Ok(Key {
            key,
            algorithms: vec![Algorithm::ES256, Algorithm::ES384],
        });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(bytes) {
        return Ok(Key {
            key,
            algorithms: vec![Algorithm::EdDSA],
        });
    }
    Err(format!(
        "{}: not a PEM RSA, EC or Ed25519 public key",
        path.display()
    ))
}

/// A JWK set (`{"keys":[…]}`); each key's algorithms follow its type, or
/// its `alg` when it names one.
fn jwks(what: &str, bytes: &[u8]) -> Result<Vec<(Option<String>, Key)>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("{what}: not a JWK set: {e}"))?;
    if set.keys.is_empty() {
        return Err(format!("{what}: the JWK set holds no key"));
    }
    set.keys
        .iter()
        .map(|jwk| {
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| format!("{what}: a key of the set: {e}"))?;
            let algorithms = algorithms_of(jwk);
            Ok((jwk.common.key_id.clone(), Key { key, algorithms }))
        })
        .collect()
}

fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA.to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        AlgorithmParameters::OctetKey(_) => HMAC.to_vec(),
    };
    let named = jwk
        .common
        .key_algorithm
        .as_ref()
        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
    match named {
        Some(a) if by_type.contains(&a) => vec![a],
        Some(_) => Vec::new(),
        None => by_type,
    }
}
