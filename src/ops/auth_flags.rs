//! The `-auth` flags, checked together: `-auth=jwt` with exactly one key
//! source, or `-auth=url` with its endpoint; without `-auth`, none of the
//! mode's own flags may be set.

use crate::auth::jwks_url;
use crate::auth::keys::Source;
use crate::auth::verify::Rules;
use std::path::PathBuf;
use std::time::Duration;

/// Environment variable read for `-auth-jwt-secret` when the flag is absent.
pub const AUTH_SECRET_ENV: &str = "PUBSOCKETD_AUTH_JWT_SECRET";

/// `-auth` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub mode: Mode,
    /// The token rules (`-auth-leeway` also applies to the `exp` an
    /// `-auth-url` answer gives).
    pub rules: Rules,
    /// `-auth-cookie`.
    pub cookie: Option<String>,
    /// `-auth-jwks-refresh`: how often a JWK set URL is fetched again.
    pub jwks_refresh: Duration,
}

/// Who decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `-auth=jwt`: a signed token, checked with these keys.
    Jwt(Source),
    /// `-auth=url`: the application's endpoint.
    Url {
        url: String,
        timeout: Duration,
        concurrency: usize,
    },
}

impl Auth {
    /// For the config line: never a secret.
    pub fn describe(&self) -> String {
        let cookie = self
            .cookie
            .as_ref()
            .map_or(String::new(), |c| format!(", cookie {c}"));
        match &self.mode {
            Mode::Jwt(keys) => format!("jwt ({keys:?}, leeway {}s{cookie})", self.rules.leeway),
            Mode::Url {
                url,
                timeout,
                concurrency,
            } => format!("url ({url}, timeout {timeout:?}, at most {concurrency} in flight)"),
        }
    }
}

/// The `-auth` flags as given.
pub struct Given<'a> {
    pub auth: &'a str,
    pub auth_jwt_secret: Option<&'a str>,
    pub auth_jwt_key: Option<&'a PathBuf>,
    pub auth_jwks: Option<&'a str>,
    pub auth_jwt_no_exp: bool,
    pub auth_leeway: Duration,
    pub auth_issuer: Option<&'a str>,
    pub auth_audience: Option<&'a str>,
    pub auth_cookie: Option<&'a str>,
    pub auth_channels_claim: &'a str,
    pub auth_url: Option<&'a str>,
    pub auth_timeout: Duration,
    pub auth_concurrency: usize,
    pub auth_jwks_refresh: Duration,
}

/// `-auth` and its companions.
pub fn auth(a: &Given<'_>) -> Result<Option<Auth>, String> {
    let keys = key_sources(a)?;
    let rules = Rules {
        leeway: a.auth_leeway.as_secs(),
        require_exp: !a.auth_jwt_no_exp,
        issuer: a.auth_issuer.map(str::to_string),
        audience: a.auth_audience.map(str::to_string),
        channels_claim: a.auth_channels_claim.to_string(),
    };
    let cookie = a.auth_cookie.filter(|c| !c.is_empty()).map(str::to_string);
    let mode = match a.auth {
        "" if !keys.is_empty() => {
            return Err("-auth-jwt-secret, -auth-jwt-key and -auth-jwks need -auth=jwt".into())
        }
        "" if a.auth_url.is_some() => return Err("-auth-url needs -auth=url".into()),
        "" => return Ok(None),
        "jwt" if a.auth_url.is_some() => return Err("-auth-url needs -auth=url, not jwt".into()),
        "jwt" => Mode::Jwt(one_key(keys)?),
        "url" if !keys.is_empty() => {
            return Err("-auth=url takes no -auth-jwt-secret, -auth-jwt-key or -auth-jwks".into())
        }
        "url" => Mode::Url {
            url: a.auth_url.ok_or("-auth=url needs -auth-url")?.to_string(),
            timeout: a.auth_timeout,
            concurrency: a.auth_concurrency,
        },
        other => return Err(format!("invalid -auth {other:?} (jwt or url)")),
    };
    if a.auth_jwks_refresh.is_zero() {
        return Err("-auth-jwks-refresh must be above 0".into());
    }
    Ok(Some(Auth {
        mode,
        rules,
        cookie,
        jwks_refresh: a.auth_jwks_refresh,
    }))
}

/// The key sources given (the secret from the flag or the environment).
fn key_sources(a: &Given<'_>) -> Result<Vec<Source>, String> {
    let secret = a
        .auth_jwt_secret
        .map(str::to_string)
        .or_else(|| std::env::var(AUTH_SECRET_ENV).ok())
        .filter(|s| !s.is_empty());
    let mut sources = Vec::new();
    // The environment's secret counts only when asked for jwt.
    if let Some(s) = secret.filter(|_| a.auth == "jwt" || a.auth_jwt_secret.is_some()) {
        sources.push(Source::Secret(s));
    }
    if let Some(p) = a.auth_jwt_key {
        sources.push(Source::Pem(p.clone()));
    }
    if let Some(j) = a.auth_jwks {
        match j.contains("://") {
            true => sources.push(Source::JwksUrl(jwks_url::parse(j)?)),
            false => sources.push(Source::Jwks(PathBuf::from(j))),
        }
    }
    Ok(sources)
}

fn one_key(mut keys: Vec<Source>) -> Result<Source, String> {
    match (keys.pop(), keys.is_empty()) {
        (Some(k), true) => Ok(k),
        (None, _) => Err(format!(
            "-auth=jwt needs one of -auth-jwt-secret (or ${AUTH_SECRET_ENV}), -auth-jwt-key, -auth-jwks"
        )),
        (Some(_), false) => {
            Err("-auth=jwt takes one of -auth-jwt-secret, -auth-jwt-key, -auth-jwks".into())
        }
    }
}
