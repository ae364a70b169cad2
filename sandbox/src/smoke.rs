//! A service's smoke-test endpoint on 127.0.0.1: `GET /health` (and `GET /`) answers what a
//! health function says — either a test's own, or one that follows a Deployment of the fake
//! cluster, so a deploy runbook's smoke test sees the image that is really running: healthy
//! after a good rollout, 503 after a bad one.

use crate::kube::FakeCluster;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use runbot_commands::setup::{SetupResult, ensure};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the endpoint answers: (HTTP status, body).
pub type Health = Arc<dyn Fn() -> (u16, String) + Send + Sync>;

struct Inner {
    health: Health,
    delay: Mutex<Duration>,
    hits: AtomicU64,
}

/// A running smoke endpoint.
pub struct SmokeServer {
    inner: Arc<Inner>,
    url: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SmokeServer {
    /// Binds `addr` (127.0.0.1 only; port 0 for a random one) and serves `GET /health` and
    /// `GET /` with `health()`'s answer (`text/plain`). Other paths are 404, other methods 405.
    pub async fn start(addr: SocketAddr, health: Health) -> SetupResult<SmokeServer> {
        ensure(addr.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), || {
            format!("the smoke endpoint listens on 127.0.0.1 only, not {addr}")
        })?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let inner = Arc::new(Inner { health, delay: Mutex::new(Duration::ZERO), hits: AtomicU64::new(0) });
        let app = Router::new().route("/health", get(answer)).route("/", get(answer)).with_state(inner.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "smoke endpoint stopped");
            }
        });
        Ok(SmokeServer { inner, url: format!("http://{local}"), stop, task: Some(task) })
    }

    /// An endpoint whose health follows Deployment `ns/deployment` of `cluster`: 200
    /// `ok <tag>` when it has at least one Ready pod (not terminating) and every such pod runs
    /// only images `healthy` accepts (`<tag>`: the first container's image tag — the digest
    /// for `image@sha256:…`, `latest` when untagged — several tags comma-separated while a
    /// rollout has both generations Ready); otherwise 503 with the reason (no such
    /// Deployment, no Ready pod, which pod runs which unhealthy image).
    pub async fn following_deployment(
        addr: SocketAddr,
        cluster: &FakeCluster,
        ns: &str,
        deployment: &str,
        healthy: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> SetupResult<SmokeServer> {
        let shared = cluster.shared();
        let (ns, deployment) = (ns.to_string(), deployment.to_string());
        let health: Health = Arc::new(move || match shared.deployment_pods(&ns, &deployment) {
            None => (503, format!("deployment {ns}/{deployment} not found")),
            Some(pods) => judge(&ns, &deployment, &pods, &healthy),
        });
        SmokeServer::start(addr, health).await
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Every answer waits `d` first (for latency and timeout tests).
    pub fn set_delay(&self, d: Duration) {
        *self.inner.delay.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// How many health requests were answered (or started waiting) so far.
    pub fn hits(&self) -> u64 {
        self.inner.hits.load(Ordering::SeqCst)
    }

    /// Stops serving (in-flight requests bounded by 5 s).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut t) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err()
        {
            t.abort();
        }
    }
}

impl Drop for SmokeServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn answer(axum::extract::State(inner): axum::extract::State<Arc<Inner>>) -> Response {
    inner.hits.fetch_add(1, Ordering::SeqCst);
    let delay = *inner.delay.lock().unwrap_or_else(|e| e.into_inner());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (code, body) = (inner.health)();
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn images(pod: &Value) -> Vec<&str> {
    pod.pointer("/spec/containers").and_then(Value::as_array).map(|cs| cs.iter().filter_map(|c| c["image"].as_str()).collect()).unwrap_or_default()
}

/// `registry:5000/team/app:1.2` → `1.2`; `app@sha256:ab…` → `sha256:ab…`; `app` → `latest`.
pub fn image_tag(image: &str) -> &str {
    if let Some((_, digest)) = image.split_once('@') {
        return digest;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if !tag.is_empty() => tag,
        _ => "latest",
    }
}

fn judge(ns: &str, deployment: &str, pods: &[Value], healthy: &dyn Fn(&str) -> bool) -> (u16, String) {
    let serving: Vec<&Value> = pods.iter().filter(|p| ready(p) && p.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)).collect();
    if serving.is_empty() {
        return (503, format!("no Ready pod of deployment {ns}/{deployment} ({} pods)", pods.len()));
    }
    let mut bad = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    for p in &serving {
        let name = p.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
        let imgs = images(p);
        for img in &imgs {
            if !healthy(img) {
                bad.push(format!("pod {name} runs unhealthy image {img}"));
            }
        }
        if let Some(first) = imgs.first() {
            let t = image_tag(first);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
    }
    if bad.is_empty() { (200, format!("ok {}", tags.join(","))) } else { (503, bad.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, image: &str, ready: bool, terminating: bool) -> Value {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": image}]},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
        if terminating {
            p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        p
    }

    #[test]
    fn tags() {
        assert_eq!(image_tag("registry.local:5000/team/app:1.2"), "1.2");
        assert_eq!(image_tag("registry.local:5000/team/app"), "latest");
        assert_eq!(image_tag("app@sha256:abc"), "sha256:abc");
    }

    #[test]
    fn judging() {
        let good = |i: &str| !i.ends_with(":bad");
        assert_eq!(judge("n", "d", &[], &good).0, 503);
        let (c, b) = judge("n", "d", &[pod("a", "r/app:1", true, false), pod("b", "r/app:bad", false, false)], &good);
        assert_eq!((c, b.as_str()), (200, "ok 1"), "a pod that is not Ready does not serve");
        let (c, b) = judge("n", "d", &[pod("a", "r/app:1", true, false), pod("b", "r/app:bad", true, false)], &good);
        assert_eq!(c, 503);
        assert!(b.contains("pod b runs unhealthy image r/app:bad"), "{b}");
        let (c, b) = judge("n", "d", &[pod("a", "r/app:bad", true, true)], &good);
        assert_eq!(c, 503, "a terminating pod does not serve: {b}");
        assert!(b.contains("no Ready pod"), "{b}");
        assert_eq!(judge("n", "d", &[pod("a", "r/app:1", true, false), pod("b", "r/app:2", true, false)], &good).1, "ok 1,2");
    }
}
