//! A fake container registry on 127.0.0.1 speaking the Docker Registry HTTP API v2 / OCI
//! distribution spec for what a deploy preflight asks: the API version check, manifests by
//! tag or digest (HEAD and GET, negotiated by `Accept`), tag lists and config blobs — with no
//! authentication, HTTP Basic (like distribution's htpasswd), or the Bearer token flow
//! (like Docker Hub and GHCR: a token service at `/token` on the same port).
//!
//! # Wire format (as distribution/registry 2.x and 3.x answer)
//! - Every `/v2/` answer carries `Docker-Distribution-API-Version: registry/2.0`.
//! - `GET /v2/` → 200 `{}`, or 401 with `WWW-Authenticate: Basic realm="..."` /
//!   `Bearer realm="http://127.0.0.1:PORT/token",service="fake-registry"`.
//! - `HEAD|GET /v2/<name>/manifests/<tag|digest>` → 200 with `Docker-Content-Digest`,
//!   `Content-Type` and `Content-Length` (HEAD: no body); `<name>` may contain slashes.
//!   A pushed image is an OCI index (`application/vnd.oci.image.index.v1+json`) over
//!   linux/amd64 and linux/arm64 OCI image manifests. By tag: a client accepting the index
//!   (or a Docker manifest list) gets the index; one accepting only OCI image manifests gets
//!   the linux/amd64 manifest; anything else gets 404 `MANIFEST_UNKNOWN` "OCI index found, but
//!   accept header does not support OCI indexes". By digest: that manifest as stored.
//!   Unknown → 404 `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown",
//!   "detail":{"Tag":"..."}}]}`.
//! - Missing or wrong credentials → 401 `{"errors":[{"code":"UNAUTHORIZED","message":
//!   "authentication required",...}]}` with the challenge; a Bearer token without pull access
//!   to the repository → 401 with `error="insufficient_scope"` in the challenge.
//! - `GET /v2/<name>/tags/list` → `{"name":...,"tags":[...]}`; `HEAD|GET
//!   /v2/<name>/blobs/<digest>` → the image config.
//! - `GET /token?service=fake-registry&scope=repository:<name>:pull` → `{"token", "access_token",
//!   "expires_in", "issued_at"}`; with credentials configured, wrong Basic credentials are 401
//!   `{"details":"incorrect username or password"}` and no credentials get a token without
//!   access (as Docker Hub does).
//!
//! # Simplified
//! No pushes over HTTP (tests call [`FakeRegistry::push`]), no layers (`layers: []`, which
//! OCI allows), no schema1, no pagination of tag lists, tokens never expire.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runbot_commands::setup::{SetupResult, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// The `service` of the Bearer challenge and token requests.
pub const TOKEN_SERVICE: &str = "fake-registry";
const BASIC_REALM: &str = "Registry Realm";

/// One request the registry received. Credentials are never kept: only the scheme of the
/// `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRequest {
    pub method: String,
    /// `path?query`
    pub path: String,
    /// The `Accept` header ("" when absent).
    pub accept: String,
    /// `Basic`, `Bearer` or None.
    pub auth_scheme: Option<String>,
}

#[derive(Clone)]
enum Auth {
    Open,
    Basic {
        user: String,
        pass: String,
    },
    /// Token flow; `creds`: what the token service requires for pull access (None: anyone).
    Bearer {
        creds: Option<(String, String)>,
    },
}

struct Blob {
    media_type: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Repo {
    /// tag → digest of the index.
    tags: BTreeMap<String, String>,
    /// digest → manifest.
    manifests: HashMap<String, Blob>,
    /// digest → config blob.
    blobs: HashMap<String, Blob>,
}

struct RegState {
    repos: BTreeMap<String, Repo>,
    auth: Auth,
    requests: Vec<RegistryRequest>,
    /// token → repositories it may pull.
    tokens: HashMap<String, Vec<String>>,
    token_seq: u64,
}

struct Inner {
    state: Mutex<RegState>,
    /// `127.0.0.1:PORT`
    host: String,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, RegState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake registry.
pub struct FakeRegistry {
    inner: Arc<Inner>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl FakeRegistry {
    /// Binds `addr` (127.0.0.1 only; port 0 for a random one) and serves, open (no
    /// credentials) until [`FakeRegistry::require_basic`] or [`FakeRegistry::require_bearer`].
    pub async fn start(addr: SocketAddr) -> SetupResult<FakeRegistry> {
        ensure(addr.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), || {
            format!("the fake registry listens on 127.0.0.1 only, not {addr}")
        })?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(RegState { repos: BTreeMap::new(), auth: Auth::Open, requests: Vec::new(), tokens: HashMap::new(), token_seq: 0 }),
            host: local.to_string(),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake registry stopped");
            }
        });
        Ok(FakeRegistry { inner, stop, task: Some(task) })
    }

    /// `127.0.0.1:PORT` — the registry part of an image name (`127.0.0.1:PORT/team/app`).
    pub fn host(&self) -> String {
        self.inner.host.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.host)
    }

    /// Pushes image `name:tag` (`name` like `team/app`, slashes allowed): an OCI index over a
    /// linux/amd64 and a linux/arm64 image manifest. Returns the index digest
    /// (`sha256:…`), which the registry sends as `Docker-Content-Digest` for the tag. Pushing
    /// the same name and tag again changes nothing.
    ///
    /// # Panics
    /// If `name` or `tag` is not a valid repository name / tag (test setup).
    pub fn push(&self, name: &str, tag: &str) -> String {
        assert!(valid_name(name), "FakeRegistry::push: invalid repository name {name:?}");
        assert!(valid_tag(tag), "FakeRegistry::push: invalid tag {tag:?}");
        let mut st = self.inner.lock();
        let repo = st.repos.entry(name.to_string()).or_default();
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let config = json!({
                "architecture": arch,
                "os": "linux",
                "config": {"Labels": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": tag}},
                "rootfs": {"type": "layers", "diff_ids": []},
            })
            .to_string()
            .into_bytes();
            let config_digest = digest(&config);
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len()},
                "layers": [],
            })
            .to_string()
            .into_bytes();
            let manifest_digest = digest(&manifest);
            entries.push(json!({
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest.len(),
                "platform": {"architecture": arch, "os": "linux"},
            }));
            repo.blobs.insert(config_digest, Blob { media_type: OCI_CONFIG.into(), bytes: config });
            repo.manifests.insert(manifest_digest, Blob { media_type: OCI_MANIFEST.into(), bytes: manifest });
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).to_string().into_bytes();
        let index_digest = digest(&index);
        repo.manifests.insert(index_digest.clone(), Blob { media_type: OCI_INDEX.into(), bytes: index });
        repo.tags.insert(tag.to_string(), index_digest.clone());
        index_digest
    }

    /// Removes tag `name:tag` (its manifests stay reachable by digest). False if absent.
    pub fn untag(&self, name: &str, tag: &str) -> bool {
        self.inner.lock().repos.get_mut(name).is_some_and(|r| r.tags.remove(tag).is_some())
    }

    /// From now on every `/v2/` request needs HTTP Basic credentials `user`/`pass`.
    pub fn require_basic(&self, user: &str, pass: &str) {
        self.inner.lock().auth = Auth::Basic { user: user.into(), pass: pass.into() };
    }

    /// From now on `/v2/` requests need a Bearer token from the token service at
    /// `http://127.0.0.1:PORT/token`; with `creds`, the service grants pull access only to
    /// Basic credentials `(user, pass)` (anonymous requests get a token without access),
    /// without, to anyone.
    pub fn require_bearer(&self, creds: Option<(&str, &str)>) {
        let creds = creds.map(|(u, p)| (u.to_string(), p.to_string()));
        let mut st = self.inner.lock();
        st.auth = Auth::Bearer { creds };
        st.tokens.clear();
    }

    /// Back to no authentication.
    pub fn open(&self) {
        self.inner.lock().auth = Auth::Open;
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RegistryRequest> {
        self.inner.lock().requests.clone()
    }

    /// Stops serving (bounded by 5 s).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err()
        {
            t.abort();
        }
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// distribution's reference grammar: path components `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
/// joined by `/`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || matches!(x, b'.' | b'_' | b'-'))
                && !c.contains("..")
                && !c.contains("___")
                && !c.contains("._")
                && !c.contains("_.")
        })
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn errors(code: &str, message: &str, detail: Value) -> Value {
    json!({"errors": [{"code": code, "message": message, "detail": detail}]})
}

/// A `/v2/` answer: JSON body (or none for HEAD, with the length it would have had).
fn v2_response(method: &Method, status: StatusCode, content_type: &str, body: Vec<u8>, extra: &[(&str, String)]) -> Response {
    let len = body.len();
    let mut r = if *method == Method::HEAD { Response::new(Body::empty()) } else { Response::new(Body::from(body)) };
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    for (k, v) in extra {
        if let (Ok(k), Ok(v)) = (header::HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
            h.insert(k, v);
        }
    }
    r
}

fn json_error(method: &Method, status: StatusCode, body: Value, extra: &[(&str, String)]) -> Response {
    v2_response(method, status, "application/json; charset=utf-8", body.to_string().into_bytes(), extra)
}

/// `Authorization: Basic …` decoded into (user, pass).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = crate::kube::b64_decode(rest.trim())?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string())
}

/// Constant-time-ish equality is not needed in a test fake; plain comparison.
fn same(a: &(String, String), user: &str, pass: &str) -> bool {
    a.0 == user && a.1 == pass
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let headers = req.headers().clone();
    let path_q = req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    {
        let auth_scheme =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.split_once(' ').map(|(s, _)| s.to_string()));
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        inner.lock().requests.push(RegistryRequest { method: method.as_str().into(), path: path_q, accept, auth_scheme });
    }
    if path == "/token" && method == Method::GET {
        return token(&inner, &headers, &query);
    }
    let Some(rest) = path.strip_prefix("/v2/").or_else(|| (path == "/v2").then_some("")) else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    if method != Method::GET && method != Method::HEAD {
        return json_error(&method, StatusCode::METHOD_NOT_ALLOWED, errors("UNSUPPORTED", "The operation is unsupported.", Value::Null), &[]);
    }
    enum Op {
        Base,
        Manifest(String, String),
        Tags(String),
        Blob(String, String),
    }
    let op = if rest.is_empty() {
        Op::Base
    } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        Op::Manifest(name.into(), reference.into())
    } else if let Some(name) = rest.strip_suffix("/tags/list") {
        Op::Tags(name.into())
    } else if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        Op::Blob(name.into(), d.into())
    } else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let repo_name = match &op {
        Op::Base => None,
        Op::Manifest(n, _) | Op::Tags(n) | Op::Blob(n, _) => Some(n.clone()),
    };
    if let Some(n) = &repo_name
        && !valid_name(n)
    {
        return json_error(&method, StatusCode::BAD_REQUEST, errors("NAME_INVALID", "invalid repository name", json!({"Name": n})), &[]);
    }
    if let Some(refused) = authenticate(&inner, &method, &headers, repo_name.as_deref()) {
        return refused;
    }
    let st = inner.lock();
    match op {
        Op::Base => v2_response(&method, StatusCode::OK, "application/json; charset=utf-8", b"{}".to_vec(), &[]),
        Op::Tags(name) => match st.repos.get(&name) {
            Some(r) => {
                let body = json!({"name": name, "tags": r.tags.keys().collect::<Vec<_>>()});
                v2_response(&method, StatusCode::OK, "application/json; charset=utf-8", body.to_string().into_bytes(), &[])
            }
            None => json_error(
                &method,
                StatusCode::NOT_FOUND,
                errors("NAME_UNKNOWN", "repository name not known to registry", json!({"name": name})),
                &[],
            ),
        },
        Op::Blob(name, d) => match st.repos.get(&name).and_then(|r| r.blobs.get(&d)) {
            Some(b) => v2_response(&method, StatusCode::OK, &b.media_type, b.bytes.clone(), &[("docker-content-digest", d)]),
            None => json_error(&method, StatusCode::NOT_FOUND, errors("BLOB_UNKNOWN", "blob unknown to registry", json!(d)), &[]),
        },
        Op::Manifest(name, reference) => manifest(&st, &method, &headers, &name, &reference),
    }
}

/// None when the request may proceed; else the 401.
fn authenticate(inner: &Inner, method: &Method, headers: &HeaderMap, repo: Option<&str>) -> Option<Response> {
    let st = inner.lock();
    let unauthorized = |challenge: String, detail: Value| {
        Some(json_error(
            method,
            StatusCode::UNAUTHORIZED,
            errors("UNAUTHORIZED", "authentication required", detail),
            &[("www-authenticate", challenge)],
        ))
    };
    match &st.auth {
        Auth::Open => None,
        Auth::Basic { user, pass } => match basic_credentials(headers) {
            Some(c) if same(&c, user, pass) => None,
            _ => unauthorized(format!("Basic realm=\"{BASIC_REALM}\""), Value::Null),
        },
        Auth::Bearer { .. } => {
            let realm = format!("http://{}/token", inner.host);
            let granted = bearer_token(headers).and_then(|t| st.tokens.get(&t).cloned());
            match (repo, granted) {
                (None, Some(_)) => None,
                (None, None) => unauthorized(format!("Bearer realm=\"{realm}\",service=\"{TOKEN_SERVICE}\""), Value::Null),
                (Some(r), Some(g)) if g.iter().any(|x| x == r) => None,
                (Some(r), g) => {
                    let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{TOKEN_SERVICE}\",scope=\"repository:{r}:pull\"");
                    if g.is_some() {
                        challenge.push_str(",error=\"insufficient_scope\"");
                    }
                    unauthorized(challenge, json!([{"Type": "repository", "Class": "", "Name": r, "Action": "pull"}]))
                }
            }
        }
    }
}

fn accepted(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|m| m.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .filter(|m| !m.is_empty())
        .collect()
}

fn manifest(st: &RegState, method: &Method, headers: &HeaderMap, name: &str, reference: &str) -> Response {
    let unknown = |detail: Value| json_error(method, StatusCode::NOT_FOUND, errors("MANIFEST_UNKNOWN", "manifest unknown", detail), &[]);
    let repo = st.repos.get(name);
    let found = |d: &str| -> Response {
        match repo.and_then(|r| r.manifests.get(d)) {
            Some(b) => v2_response(method, StatusCode::OK, &b.media_type, b.bytes.clone(), &[("docker-content-digest", d.to_string())]),
            None => unknown(json!({"Digest": d})),
        }
    };
    if reference.starts_with("sha256:") {
        return found(reference);
    }
    if !valid_tag(reference) {
        return json_error(method, StatusCode::BAD_REQUEST, errors("TAG_INVALID", "manifest tag did not match URI", json!({"Tag": reference})), &[]);
    }
    let Some(index_digest) = repo.and_then(|r| r.tags.get(reference)) else {
        return unknown(json!({"Tag": reference}));
    };
    let accept = accepted(headers);
    let takes = |t: &str| accept.iter().any(|a| a == t);
    if takes(OCI_INDEX) || takes(DOCKER_LIST) {
        return found(index_digest);
    }
    if takes(OCI_MANIFEST) {
        // distribution picks the linux/amd64 entry of an index for clients that cannot read one.
        let amd64 = repo.and_then(|r| r.manifests.get(index_digest)).and_then(|b| serde_json::from_slice::<Value>(&b.bytes).ok()).and_then(|idx| {
            idx["manifests"]
                .as_array()?
                .iter()
                .find(|m| m["platform"]["architecture"] == "amd64" && m["platform"]["os"] == "linux")
                .and_then(|m| m["digest"].as_str().map(String::from))
        });
        if let Some(d) = amd64 {
            return found(&d);
        }
    }
    json_error(
        method,
        StatusCode::NOT_FOUND,
        errors("MANIFEST_UNKNOWN", "OCI index found, but accept header does not support OCI indexes", Value::Null),
        &[],
    )
}

fn token(inner: &Inner, headers: &HeaderMap, query: &str) -> Response {
    let mut st = inner.lock();
    let Auth::Bearer { creds } = st.auth.clone() else {
        return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
    };
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let given = basic_credentials(headers);
    let authorized = match (&creds, &given) {
        (None, _) => true,
        (Some((u, p)), Some(g)) => {
            if !same(g, u, p) {
                let mut r = (StatusCode::UNAUTHORIZED, json!({"details": "incorrect username or password"}).to_string()).into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                return r;
            }
            true
        }
        (Some(_), None) => false,
    };
    let mut repos = Vec::new();
    if authorized {
        for (k, v) in &params {
            // repository:<name>:pull[,push]
            if k == "scope"
                && let Some(rest) = v.strip_prefix("repository:")
                && let Some((name, actions)) = rest.rsplit_once(':')
                && actions.split(',').any(|a| a == "pull" || a == "*")
            {
                repos.push(name.to_string());
            }
        }
    }
    st.token_seq += 1;
    let token = format!("fake-token-{}-{}", st.token_seq, crate::kube::rand_hex(16));
    st.tokens.insert(token.clone(), repos);
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": 300,
        "issued_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    let mut r = (StatusCode::OK, body.to_string()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_tags() {
        assert!(valid_name("team/app"));
        assert!(valid_name("a/b.c/d-e_f"));
        assert!(!valid_name("Team/app"));
        assert!(!valid_name("team//app"));
        assert!(!valid_name("-team/app"));
        assert!(valid_tag("1.4.2"));
        assert!(valid_tag("v1_rc-2"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("a:b"));
    }
}
