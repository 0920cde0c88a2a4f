//! Secrets (passwords, tokens): a type that never prints its value, and
//! the one comparison of a secret with what a client sent.

use sha1::{Digest, Sha1};

/// A value that must never be printed: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The value, for the one place that sends or compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that does not depend on
    /// where they differ (both are hashed first, so not on the secret's
    /// length either).
    pub fn matches(&self, given: &[u8]) -> bool {
        let a = Sha1::digest(self.0.as_bytes());
        let b = Sha1::digest(given);
        let diff = a.iter().zip(b.iter()).fold(0u8, |d, (x, y)| d | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_and_never_print() {
        let t = Secret::new("s3cret".into());
        assert!(t.matches(b"s3cret"));
        for bad in [&b""[..], b"s3cre", b"s3crett", b"S3cret", b"x3cret"] {
            assert!(!t.matches(bad), "{bad:?}");
        }
        assert_eq!(format!("{t:?}"), "***");
    }
}
