//! `ReqwestCheck`: the [`HttpCheck`] port (the deploy runbook's smoke test) over reqwest —
//! plain HTTP and HTTPS (rustls with ring, the system's roots), redirects followed up to 5,
//! one timeout for the whole exchange, the body capped at 64 KiB. Errors say what happened
//! (refused, timed out, TLS, DNS) and name the URL without its credentials or query.

use async_trait::async_trait;
use runbot_commands::ports::{HttpAnswer, HttpCheck, HttpCheckError};
use std::error::Error as _;
use std::time::{Duration, Instant};

/// How much of a body is kept.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;

pub struct ReqwestCheck {
    client: crate::tls::LazyClient,
}

impl ReqwestCheck {
    pub fn new() -> Result<ReqwestCheck, String> {
        // Built on the first check: an idle runbot loads no TLS roots.
        let client = crate::tls::LazyClient::new("smoke test", || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
                .user_agent(concat!("runbot/", env!("CARGO_PKG_VERSION")))
        });
        Ok(ReqwestCheck { client })
    }
}

#[async_trait]
impl HttpCheck for ReqwestCheck {
    async fn get(&self, url: &str, timeout: Duration) -> Result<HttpAnswer, HttpCheckError> {
        let shown = display_url(url);
        let parsed = reqwest::Url::parse(url).map_err(|e| HttpCheckError::InvalidUrl(format!("GET {shown}: not a valid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(HttpCheckError::InvalidUrl(format!("GET {shown}: only http and https URLs can be checked")));
        }
        let failed = |e: &reqwest::Error, during: &str| {
            let text = format!("GET {shown}: {during}{}", describe(e, timeout));
            if timed_out(e) { HttpCheckError::Timeout(text) } else { HttpCheckError::Transport(text) }
        };
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut resp = self
            .client
            .client()
            .map_err(|e| HttpCheckError::Transport(format!("GET {shown}: {e}")))?
            .get(parsed)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| failed(&e, ""))?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        while body.len() < BODY_LIMIT {
            let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => {
                    return Err(HttpCheckError::Timeout(format!("GET {shown}: timed out after {timeout:?} reading the body (HTTP {status})")));
                }
                Ok(Err(e)) => {
                    return Err(failed(&e, &format!("reading the body (HTTP {status}): ")));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            let room = BODY_LIMIT - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(HttpAnswer { status, body: String::from_utf8_lossy(&body).into_owned(), elapsed: started.elapsed() })
    }
}

/// `scheme://host[:port]/path` — no user info, no query (either may hold a secret).
pub(crate) fn display_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => "<invalid URL>".into(),
    }
}

/// The error's causes, joined, without the URL reqwest puts in its own message.
fn chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut src: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !m.is_empty() && !parts.iter().any(|p: &String| p.contains(&m)) {
            parts.push(m);
        }
        src = s.source();
    }
    if parts.is_empty() { e.to_string() } else { parts.join(": ") }
}

/// Whether the request ran out of time (reqwest's own timeout, or the socket's).
fn timed_out(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        src = s.source();
    }
    e.is_timeout()
}

/// What went wrong, in words an operator acts on: `connection refused`, `timed out after
/// 2s`, `TLS: invalid peer certificate: UnknownIssuer`, `cannot resolve host`, `too many
/// redirects (more than 5)`.
pub(crate) fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {timeout:?}");
    }
    if e.is_redirect() {
        return format!("too many redirects (more than {MAX_REDIRECTS})");
    }
    let mut src: Option<&dyn std::error::Error> = e.source();
    while let Some(s) = src {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return format!("TLS: {tls}");
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => return "connection reset by peer".into(),
                std::io::ErrorKind::TimedOut => return format!("timed out after {timeout:?}"),
                _ => {}
            }
            // io::Error's `source()` skips the error it wraps (rustls' errors arrive as
            // io::Error(Other, io::Error(InvalidData, rustls::Error))): look inside.
            if let Some(inner) = io.get_ref() {
                src = Some(inner);
                continue;
            }
        }
        src = s.source();
    }
    let c = chain(e);
    if c.contains("dns error") || c.contains("failed to lookup address") {
        return format!("cannot resolve host ({c})");
    }
    if e.is_connect() {
        return format!("cannot connect: {c}");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(display_url("https://user:pw@example.com:8443/health?token=x"), "https://example.com:8443/health");
        assert_eq!(display_url("http://127.0.0.1/"), "http://127.0.0.1/");
        assert_eq!(display_url("::"), "<invalid URL>");
    }
}
