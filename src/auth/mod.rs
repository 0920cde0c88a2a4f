//! Who may read what (`-auth=jwt`, `-auth=url`): a signed token, or the
//! application's endpoint, names the channels a client may read, checked at the upgrade and at each `pubsocketd.v1`
//! subscribe, never per message, so the shared fan-out is untouched.
//!
//! - [`keys`]: the verification keys (a shared secret, a PEM public key or
//!   a JWK set), each with the algorithms it may verify.
//! - [`verify`]: a token to a [`verify::Grant`] (subject, expiry, channels),
//!   with `jsonwebtoken` doing every signature and time check.
//! - [`token`]: where a request carries its token.
//! - [`grant`]: whether a grant covers what a client asks to read.
//! - [`callback`]: `-auth=url`, the application's endpoint deciding.
//! - [`jwks_url`]: a JWK set fetched over HTTPS, and kept fresh.
//! - [`https`]: the HTTP(S) client of both.

pub mod callback;
pub mod grant;
pub mod https;
pub mod jwks_url;
pub mod keys;
pub mod token;
pub mod verify;
