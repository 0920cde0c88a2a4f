//! The HTTP(S) client of the auth side (the auth URL, a JWK set URL):
//! HTTP/1.1 over rustls with the web's roots, and one exchange with its
//! body read up to a bound. Errors name what failed, never the URL's
//! secrets.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A client with its own keep-alive pool (whose tasks run on the runtime
/// that first uses it).
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A new client.
pub fn client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// Sends `request`; the answer's status and body (at most `max_body`
/// bytes), or what failed.
pub async fn exchange(
    client: &HttpsClient,
    request: Request<Empty<Bytes>>,
    max_body: usize,
) -> Result<(u16, Bytes), String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| match e.is_connect() {
            true => "cannot connect".to_string(),
            false => "the exchange failed".to_string(),
        })?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|_| format!("the body could not be read (at most {max_body} bytes)"))?
        .to_bytes();
    Ok((status, body))
}
