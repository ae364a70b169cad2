//! `RegistryClient`: the [`Registry`] port (does an image tag exist?) over the Docker
//! Registry HTTP API v2 / OCI distribution spec with reqwest.
//!
//! - Image names as Docker reads them: `host[:port]/path` when the first component has a
//!   `.` or `:` or is `localhost`; otherwise Docker Hub (`registry-1.docker.io`), with
//!   `library/` before one-component names (`nginx` → `library/nginx`).
//! - `HEAD /v2/<path>/manifests/<tag>` with `Accept` listing the OCI index and manifest and
//!   the Docker v2 manifest list and manifest types: 200 → the tag exists, 404 → it does
//!   not; 401/403 and anything else → `Err` naming the registry and the status (never a
//!   password).
//! - Authentication from the `WWW-Authenticate` challenge: `Basic` with the credentials
//!   configured for the registry host; `Bearer realm=…,service=…,scope=…` — a token from the
//!   realm (with those credentials as Basic, or anonymously), cached per registry and scope
//!   until it expires. Credentials are sent over plain HTTP only to hosts listed as insecure
//!   and to loopback.
//! - `https` by default; `http` for hosts listed as insecure and for 127.0.0.1 / localhost.
//!   Every request is bounded by the timeout.

use crate::http_check::{describe, display_url};
use async_trait::async_trait;
use runbot_commands::config::Secret;
use runbot_commands::ports::{Registry, RegistryError};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The media types a manifest HEAD accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

const DOCKER_HUB: &str = "registry-1.docker.io";
const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"];

/// An image name split into the registry host and the repository path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry.example.com`, `127.0.0.1:5000`, `registry-1.docker.io`.
    pub host: String,
    /// `team/app`, `library/nginx`.
    pub repository: String,
}

/// Parses `host[:port]/path` (no tag, no digest) the way Docker does.
pub fn parse_image(image: &str) -> Result<ImageRef, String> {
    let image = image.trim();
    if image.is_empty() {
        return Err("empty image name".into());
    }
    if image.contains('@') {
        return Err(format!("image {image:?}: give the name without a digest"));
    }
    if image.contains("://") {
        return Err(format!("image {image:?}: give host[:port]/path, not a URL"));
    }
    let (host, path) = match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (first.to_string(), rest.to_string()),
        _ => (DOCKER_HUB.to_string(), image.to_string()),
    };
    let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) { DOCKER_HUB.to_string() } else { host };
    let repository = if host == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path };
    if repository.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        return Err(format!("image {image:?}: give the name without a tag"));
    }
    let ok_component = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if !repository.split('/').all(ok_component) {
        return Err(format!("image {image:?}: invalid repository path {repository:?} (lowercase letters, digits, . _ - and /)"));
    }
    Ok(ImageRef { host, repository })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String>, error: Option<String> },
    Other(String),
}

/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"`
fn parse_challenge(h: &str) -> Challenge {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Other(scheme.to_string());
    }
    // key="value" pairs; values may contain commas (scopes), so scan quotes.
    let mut params: HashMap<String, String> = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((k, after)) = s.split_once('=') else { break };
        let key = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Challenge::Bearer {
        realm: params.remove("realm").unwrap_or_default(),
        service: params.remove("service"),
        scope: params.remove("scope"),
        error: params.remove("error"),
    }
}

struct Credential {
    user: String,
    password: Secret,
}

/// Container registries over HTTP API v2.
pub struct RegistryClient {
    http: crate::tls::LazyClient,
    credentials: HashMap<String, Credential>,
    insecure: HashSet<String>,
    timeout: Duration,
    /// (host, scope) → (token, valid until).
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
    /// Hosts known to answer with a Basic challenge: credentials are sent at once.
    basic_hosts: Mutex<HashSet<String>>,
}

impl RegistryClient {
    /// A client whose every request is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Result<RegistryClient, String> {
        // Built on the first check: an idle runbot loads no TLS roots.
        let http = crate::tls::LazyClient::new("registry", move || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .connect_timeout(timeout)
                .user_agent(concat!("runbot/", env!("CARGO_PKG_VERSION")))
        });
        Ok(RegistryClient {
            http,
            credentials: HashMap::new(),
            insecure: HashSet::new(),
            timeout,
            tokens: Mutex::new(HashMap::new()),
            basic_hosts: Mutex::new(HashSet::new()),
        })
    }

    /// Credentials for registry `host` (`registry.example.com`, `127.0.0.1:5000`;
    /// `docker.io` for Docker Hub).
    pub fn with_credentials(mut self, host: &str, user: &str, password: Secret) -> RegistryClient {
        let host = host.trim().to_ascii_lowercase();
        let host = if DOCKER_HUB_ALIASES.contains(&host.as_str()) { DOCKER_HUB.to_string() } else { host };
        self.credentials.insert(host, Credential { user: user.to_string(), password });
        self
    }

    /// Talk plain HTTP to `host` (`host[:port]`).
    pub fn with_insecure(mut self, host: &str) -> RegistryClient {
        self.insecure.insert(host.trim().to_ascii_lowercase());
        self
    }

    fn plain_http_ok(&self, host_port: &str, host: &str) -> bool {
        self.insecure.contains(host_port) || matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
    }

    fn scheme(&self, host: &str) -> &'static str {
        let name = host_name(host);
        if self.plain_http_ok(host, name) { "http" } else { "https" }
    }

    fn cached_token(&self, host: &str, scope: &str) -> Option<String> {
        let t = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        t.get(&(host.to_string(), scope.to_string())).filter(|(_, until)| Instant::now() < *until).map(|(t, _)| t.clone())
    }

    async fn head(&self, http: &reqwest::Client, url: &str, auth: &Auth<'_>) -> Result<reqwest::Response, reqwest::Error> {
        let mut rb = http.head(url).header(reqwest::header::ACCEPT, MANIFEST_ACCEPT).timeout(self.timeout);
        rb = match auth {
            Auth::None => rb,
            Auth::Basic(c) => rb.basic_auth(&c.user, Some(c.password.expose())),
            Auth::Bearer(t) => rb.bearer_auth(t),
        };
        rb.send().await
    }

    /// A token from the challenge's realm.
    async fn fetch_token(&self, host: &str, realm: &str, service: Option<&str>, scope: &str) -> Result<String, RegistryError> {
        let realm_url =
            reqwest::Url::parse(realm).map_err(|e| RegistryError::Protocol(format!("registry {host}: invalid token realm {realm:?}: {e}")))?;
        let mut url = realm_url.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let shown = display_url(realm);
        let mut rb = self.http.client().map_err(RegistryError::Transport)?.get(url).timeout(self.timeout);
        if let Some(c) = self.credentials.get(host) {
            let realm_host = realm_url.host_str().unwrap_or("");
            let realm_hp = match realm_url.port() {
                Some(p) => format!("{realm_host}:{p}"),
                None => realm_host.to_string(),
            };
            if realm_url.scheme() != "https" && !self.plain_http_ok(&realm_hp, realm_host) {
                return Err(RegistryError::Protocol(format!(
                    "registry {host}: its token service {shown} is plain HTTP; refusing to send the credentials of {} there",
                    c.user
                )));
            }
            rb = rb.basic_auth(&c.user, Some(c.password.expose()));
        }
        let resp = rb
            .send()
            .await
            .map_err(|e| RegistryError::Transport(format!("registry {host}: token service {shown}: {}", describe(&e, self.timeout))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized(match self.credentials.get(host) {
                Some(c) => format!("registry {host}: the token service {shown} refused the credentials of {} (HTTP {})", c.user, status.as_u16()),
                None => format!(
                    "registry {host}: the token service {shown} requires credentials (HTTP {}); no credentials are configured for {host}",
                    status.as_u16()
                ),
            }));
        }
        if !status.is_success() {
            return Err(RegistryError::Protocol(format!("registry {host}: the token service {shown} answered HTTP {}", status.as_u16())));
        }
        let body: serde_json::Value = resp.json().await.map_err(|e| {
            RegistryError::Protocol(format!("registry {host}: the token service {shown} sent no JSON: {}", describe(&e, self.timeout)))
        })?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Protocol(format!("registry {host}: the token service {shown} sent no token")))?
            .to_string();
        let ttl = body.get("expires_in").and_then(|v| v.as_u64()).unwrap_or(60).max(1);
        // Renew a little before the registry would refuse it.
        let until = Instant::now() + Duration::from_secs(ttl).saturating_sub(Duration::from_secs(5)).max(Duration::from_secs(1));
        self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert((host.to_string(), scope.to_string()), (token.clone(), until));
        Ok(token)
    }
}

enum Auth<'a> {
    None,
    Basic(&'a Credential),
    Bearer(String),
}

/// `host:port` → `host`; `[::1]:5000` → `[::1]`.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

#[async_trait]
impl Registry for RegistryClient {
    async fn tag_exists(&self, image: &str, tag: &str) -> Result<bool, RegistryError> {
        let r = parse_image(image).map_err(RegistryError::Invalid)?;
        if tag.is_empty()
            || tag.len() > 128
            || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
            || tag.starts_with(['.', '-'])
        {
            return Err(RegistryError::Invalid(format!("invalid tag {tag:?}")));
        }
        let host = r.host.to_ascii_lowercase();
        let url = format!("{}://{}/v2/{}/manifests/{}", self.scheme(&host), host, r.repository, tag);
        let scope = format!("repository:{}:pull", r.repository);
        let cred = self.credentials.get(&host);

        let mut auth = match (self.cached_token(&host, &scope), cred) {
            (Some(t), _) => Auth::Bearer(t),
            (None, Some(c)) if self.basic_hosts.lock().unwrap_or_else(|e| e.into_inner()).contains(&host) => Auth::Basic(c),
            _ => Auth::None,
        };
        let transport = |e: reqwest::Error| RegistryError::Transport(format!("registry {host}: {}", describe(&e, self.timeout)));
        let http = self.http.client().map_err(|e| RegistryError::Transport(format!("registry {host}: {e}")))?;
        let mut resp = self.head(http, &url, &auth).await.map_err(transport)?;
        // One answer to a challenge, then the verdict.
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            let challenge = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).map(parse_challenge);
            let retry = match (&challenge, &auth) {
                (Some(Challenge::Basic), Auth::None) => match cred {
                    Some(c) => {
                        self.basic_hosts.lock().unwrap_or_else(|e| e.into_inner()).insert(host.clone());
                        Some(Auth::Basic(c))
                    }
                    None => {
                        return Err(RegistryError::Unauthorized(format!(
                            "registry {host}: HTTP 401 Unauthorized: it requires credentials (Basic); no credentials are configured for {host}"
                        )));
                    }
                },
                (Some(Challenge::Basic), _) => None,
                (Some(Challenge::Bearer { realm, service, scope: ch_scope, error }), _) => {
                    if matches!(auth, Auth::Bearer(_)) && error.as_deref() == Some("insufficient_scope") {
                        None
                    } else if realm.is_empty() {
                        return Err(RegistryError::Protocol(format!(
                            "registry {host}: HTTP 401 Unauthorized with a Bearer challenge without a realm"
                        )));
                    } else {
                        let want = ch_scope.clone().unwrap_or_else(|| scope.clone());
                        let token = self.fetch_token(&host, realm, service.as_deref(), &want).await?;
                        Some(Auth::Bearer(token))
                    }
                }
                (Some(Challenge::Other(s)), _) => {
                    return Err(RegistryError::Protocol(format!(
                        "registry {host}: HTTP 401 Unauthorized with an unsupported authentication scheme {s:?}"
                    )));
                }
                (None, _) => None,
            };
            if let Some(a) = retry {
                auth = a;
                resp = self.head(http, &url, &auth).await.map_err(transport)?;
            }
        }
        let status = resp.status();
        match status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            401 | 403 => {
                let why = match (&auth, cred) {
                    (Auth::Basic(c), _) => format!("the credentials of {} were refused", c.user),
                    (Auth::Bearer(_), Some(c)) => {
                        format!("the token for {} grants no pull access to {}", c.user, r.repository)
                    }
                    (Auth::Bearer(_), None) => {
                        format!("an anonymous token grants no pull access to {} (no credentials configured for {host})", r.repository)
                    }
                    (Auth::None, Some(_)) => "it refused the request".to_string(),
                    (Auth::None, None) => format!("no credentials are configured for {host}"),
                };
                Err(RegistryError::Unauthorized(format!(
                    "registry {host}: HTTP {} {} for {}:{tag}: {why}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or(""),
                    r.repository
                )))
            }
            code => Err(RegistryError::Protocol(format!(
                "registry {host}: HTTP {code} {} for {}:{tag}",
                status.canonical_reason().unwrap_or(""),
                r.repository
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_like_docker() {
        let p = |s: &str| parse_image(s).map(|r| (r.host, r.repository));
        assert_eq!(p("nginx"), Ok(("registry-1.docker.io".into(), "library/nginx".into())));
        assert_eq!(p("bitnami/redis"), Ok(("registry-1.docker.io".into(), "bitnami/redis".into())));
        assert_eq!(p("docker.io/nginx"), Ok(("registry-1.docker.io".into(), "library/nginx".into())));
        assert_eq!(p("ghcr.io/org/team/app"), Ok(("ghcr.io".into(), "org/team/app".into())));
        assert_eq!(p("127.0.0.1:5000/team/app"), Ok(("127.0.0.1:5000".into(), "team/app".into())));
        assert_eq!(p("localhost/app"), Ok(("localhost".into(), "app".into())));
        assert!(p("ghcr.io/org/app:1.2").is_err(), "a tag");
        assert!(p("app@sha256:abc").is_err(), "a digest");
        assert!(p("ghcr.io/Org/app").is_err(), "uppercase");
        assert!(p("").is_err());
        assert!(p("https://ghcr.io/org/app").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"Registry Realm\""), Challenge::Basic);
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:a/b:pull,push\",error=\"insufficient_scope\""
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
                error: Some("insufficient_scope".into()),
            }
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://ghcr.io/token, service=ghcr.io"),
            Challenge::Bearer { realm: "https://ghcr.io/token".into(), service: Some("ghcr.io".into()), scope: None, error: None }
        );
        assert_eq!(parse_challenge("Negotiate"), Challenge::Other("Negotiate".into()));
    }

    #[test]
    fn hosts_and_schemes() {
        assert_eq!(host_name("127.0.0.1:5000"), "127.0.0.1");
        assert_eq!(host_name("[::1]:5000"), "[::1]");
        assert_eq!(host_name("ghcr.io"), "ghcr.io");
        let c = RegistryClient::new(Duration::from_secs(1)).expect("client").with_insecure("registry.lan:5000");
        assert_eq!(c.scheme("registry.lan:5000"), "http");
        assert_eq!(c.scheme("registry.lan"), "https");
        assert_eq!(c.scheme("localhost:5000"), "http");
        assert_eq!(c.scheme("ghcr.io"), "https");
    }
}
