//! A token to what it grants. `jsonwebtoken` checks the signature, the
//! algorithm against the key's family, `exp`, `nbf`, `iss` and `aud`; this
//! module picks the key, sets the rules from the flags, and reads the
//! claims the relay uses.

use super::jwks_url::{self, KID_REFETCH};
use super::keys::{Keys, Source};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{decode, decode_header, Validation};
use serde_json::Value;
use slog::{info, warn, Logger};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The rules tokens are checked by (from the flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Seconds of clock skew allowed on `exp` and `nbf` (`-auth-leeway`).
    pub leeway: u64,
    /// `exp` is required (unless `-auth-jwt-no-exp`).
    pub require_exp: bool,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The claim that lists the channels (`-auth-channels-claim`).
    pub channels_claim: String,
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// `sub`, for log lines.
    pub sub: Option<String>,
    /// `exp` (Unix seconds); `None` when the token has none.
    pub exp: Option<u64>,
    /// Channel names and glob patterns the client may read.
    pub channels: Box<[String]>,
}

/// Verifies tokens with the keys of the moment (a SIGHUP may reload a JWK
/// set file).
pub struct Verifier {
    keys: RwLock<Arc<Keys>>,
    source: Source,
    rules: Rules,
    /// Woken by a token whose `kid` the keys lack (a JWK set URL only).
    unknown_kid: Notify,
}

impl Verifier {
    /// Loads the keys; a key that cannot be used is a start-up error.
    pub fn new(source: Source, rules: Rules) -> Result<Verifier, String> {
        let keys = Keys::load(&source)?;
        Ok(Verifier {
            keys: RwLock::new(Arc::new(keys)),
            source,
            rules,
            unknown_kid: Notify::new(),
        })
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Reads a JWK set file again (SIGHUP); `None` when the keys are not a
    /// file that can change. On error the keys stay as they were.
    pub fn reload(&self) -> Option<Result<usize, String>> {
        let Source::Jwks(_) = &self.source else {
            return None;
        };
        Some(Keys::load(&self.source).map(|keys| {
            let n = keys.count();
            *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            n
        }))
    }

    /// With a JWK set URL: fetches it again every `every`, and when a
    /// token's `kid` was unknown (at most once a minute), for as long as
    /// the relay runs; other sources return at once.
    pub async fn refresh(self: Arc<Self>, every: Duration, log: Logger) {
        let Source::JwksUrl(url) = &self.source else {
            return;
        };
        let mut last_asked: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.unknown_kid.notified() => {
                    if last_asked.is_some_and(|t| t.elapsed() < KID_REFETCH) {
                        continue;
                    }
                    last_asked = Some(Instant::now());
                }
            }
            let fetched = jwks_url::fetch(url).await;
            match fetched.and_then(|b| Keys::from_set(&url.to_string(), &b)) {
                Ok(keys) => {
                    let n = keys.count();
                    *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                    info!(log, "[auth] the JWK set at {url} holds {n} keys");
                }
                Err(e) => warn!(log, "[auth] {e}; the keys stay as they were"),
            }
        }
    }

    /// The grant of `token`, or why it is refused (a reason for the log
    /// line, never holding the token).
    pub fn verify(&self, token: &str) -> Result<Grant, &'static str> {
        let header = decode_header(token)
            .map_err(|_| "malformed token (or an algorithm not supported here, such as none)")?;
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(key) = keys.find(header.kid.as_deref()) else {
            if matches!(self.source, Source::JwksUrl(_)) {
                self.unknown_kid.notify_one();
            }
            return Err("no key for the token's kid");
        };
        if !key.algorithms.contains(&header.alg) {
            return Err("algorithm not allowed for the key");
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.rules.leeway;
        v.validate_exp = self.rules.require_exp;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        if self.rules.require_exp {
            v.required_spec_claims.insert("exp".into());
        }
        if let Some(iss) = &self.rules.issuer {
            v.set_issuer(&[iss]);
        }
        match &self.rules.audience {
            Some(aud) => v.set_audience(&[aud]),
            None => v.validate_aud = false,
        }
        let data = decode::<Value>(token, &key.key, &v).map_err(|e| why(e.kind()))?;
        self.grant(&data.claims)
    }

    /// The claims the relay reads.
    fn grant(&self, claims: &Value) -> Result<Grant, &'static str> {
        let channels = match claims.get(&self.rules.channels_claim) {
            None => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("the channels claim is not a list of strings")?,
            Some(_) => return Err("the channels claim is not a list of strings"),
        };
        Ok(Grant {
            sub: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            exp: claims.get("exp").and_then(Value::as_u64),
            channels: channels.into(),
        })
    }
}

/// The log line's reason for a refused token.
fn why(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not allowed for the key"
        }
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::MissingRequiredClaim(_) => "no exp claim",
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token",
        _ => "invalid token",
    }
}
