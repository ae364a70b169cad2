//! Outgoing HTTPS whose TLS set-up waits for the first `https://` URL.
//!
//! Loading the system's root certificates means reading and parsing ~140 PEM certificates
//! (about two thirds of a `runbot serve` start-up's instructions when it was done eagerly) and
//! keeps them in memory. A runbot that only talks to a local fake, or has not sent anything
//! yet, needs none of it; [`LazyHttpsConnector`] builds hyper-rustls's connector (ring, native
//! roots, HTTP/1.1 and HTTP/2) the first time an `https://` URL is dialled — once per
//! process — and dials `http://` URLs directly. Without any root certificate an `https://`
//! connection fails with that reason (`runbot check-config` says it up front).

use hyper::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `https_or_http` with the TLS half built on first use.
#[derive(Clone)]
pub struct LazyHttpsConnector {
    http: HttpConnector,
    tls: Arc<OnceLock<Result<HttpsConnector<HttpConnector>, String>>>,
}

impl Default for LazyHttpsConnector {
    fn default() -> Self {
        LazyHttpsConnector { http: HttpConnector::new(), tls: Arc::new(OnceLock::new()) }
    }
}

impl LazyHttpsConnector {
    /// Whether the TLS half has been built (by an `https://` connection).
    pub fn tls_ready(&self) -> bool {
        self.tls.get().is_some()
    }
}

/// How many root certificates the system offers (what an `https://` connection will trust),
/// or why there are none. For pre-flight checks; the connector loads them itself.
pub fn native_root_count() -> Result<usize, String> {
    let found = rustls_native_certs::load_native_certs();
    match (found.certs.len(), found.errors.first()) {
        (0, Some(e)) => Err(format!("no TLS root certificates: {e}")),
        (0, None) => Err("no TLS root certificates found on this system".to_string()),
        (n, _) => Ok(n),
    }
}

/// A reqwest client built on first use: reqwest's builder loads the system's roots too.
pub struct LazyClient {
    build: Box<dyn Fn() -> reqwest::ClientBuilder + Send + Sync>,
    what: &'static str,
    cell: OnceLock<Result<reqwest::Client, String>>,
}

impl LazyClient {
    /// `what` names the client in the error when it cannot be built.
    pub fn new(what: &'static str, build: impl Fn() -> reqwest::ClientBuilder + Send + Sync + 'static) -> Self {
        LazyClient { build: Box::new(build), what, cell: OnceLock::new() }
    }

    pub fn client(&self) -> Result<&reqwest::Client, String> {
        self.cell
            .get_or_init(|| (self.build)().build().map_err(|e| format!("cannot build the {} HTTP client: {}", self.what, with_sources(&e))))
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// An error and its causes, `a: b: c`.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn native() -> Result<HttpsConnector<HttpConnector>, String> {
    // Several crates bring rustls; make ring the process default (as kube's) so building a TLS
    // config never has to guess. A provider installed earlier stays.
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpsConnectorBuilder::new()
        .with_native_roots()
        .map(|b| b.https_or_http().enable_http1().enable_http2().build())
        .map_err(|e| format!("no TLS root certificates: {e}"))
}

impl tower_service::Service<Uri> for LazyHttpsConnector {
    type Response = MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both halves are always ready (HttpConnector's poll_ready is).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if dst.scheme() == Some(&hyper::http::uri::Scheme::HTTPS) {
            return match self.tls.get_or_init(native) {
                Ok(https) => https.clone().call(dst),
                Err(e) => {
                    let e = e.clone();
                    Box::pin(async move { Err(e.into()) })
                }
            };
        }
        // Plain http (HttpConnector refuses any other scheme).
        let connecting = self.http.call(dst);
        Box::pin(async move { Ok(MaybeHttpsStream::Http(connecting.await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_service::Service;

    #[tokio::test]
    async fn plain_http_never_builds_tls_and_https_does() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut c = LazyHttpsConnector::default();
        let dialled = c.call(format!("http://{addr}/").parse().unwrap()).await.unwrap();
        assert!(matches!(dialled, MaybeHttpsStream::Http(_)));
        assert!(!c.tls_ready(), "an http:// URL must not load the TLS roots");
        // An https:// URL builds the TLS half (then the handshake fails against a plain socket,
        // or the roots are missing: either way it is an error, and the half was attempted).
        let accept = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        assert!(c.call(format!("https://{addr}/").parse().unwrap()).await.is_err());
        assert!(c.tls_ready());
        assert!(c.clone().tls_ready(), "clones share the TLS half");
        accept.await.unwrap();
    }

    #[tokio::test]
    async fn other_schemes_are_refused() {
        let mut c = LazyHttpsConnector::default();
        assert!(c.call("ftp://127.0.0.1:1/".parse().unwrap()).await.is_err());
        assert!(!c.tls_ready());
    }
}
