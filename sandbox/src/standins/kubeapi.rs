//! The `helm` stand-in's Kubernetes API client: plain JSON over HTTP (reqwest) to the API
//! server named like real helm names it — `--kube-apiserver`/`HELM_KUBEAPISERVER`, else the
//! current (or `--kube-context`) context's cluster in `--kubeconfig`/`KUBECONFIG`/
//! `~/.kube/config`. Every request is bounded; errors carry the API server's `Status`
//! message, as client-go's do.

use serde_json::Value;
use std::time::Duration;

/// Where and how to reach the API server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Target {
    pub api_server: Option<String>,
    pub token: Option<String>,
    pub kubeconfig: Option<String>,
    pub context: Option<String>,
}

#[derive(Debug)]
pub(crate) enum KubeError {
    /// No HTTP answer at all (client-go's `Get "URL": dial tcp ...` text).
    Unreachable(String),
    /// An answer with an error status: the `Status` message (or the body).
    Api { code: u16, message: String },
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubeError::Unreachable(m) => f.write_str(m),
            KubeError::Api { message, .. } => f.write_str(message),
        }
    }
}

pub(crate) struct Kube {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Kube {
    pub fn connect(t: &Target) -> Result<Kube, String> {
        let (base, token) = match &t.api_server {
            Some(s) => (s.trim_end_matches('/').to_string(), t.token.clone()),
            None => from_kubeconfig(t)?,
        };
        if base.starts_with("https://") {
            return Err(format!("Kubernetes cluster unreachable: the sandbox helm stand-in speaks plain HTTP only, not {base}"));
        }
        let http =
            reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
        Ok(Kube { base, token, http })
    }

    /// `IsReachable`: `GET /version`, with helm's message when it fails.
    pub async fn reachable(&self) -> Result<(), String> {
        let url = format!("{}/version", self.base);
        match self.send(self.http.get(&url), &url).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("Kubernetes cluster unreachable: {e}")),
        }
    }

    pub async fn get(&self, path: &str) -> Result<Option<Value>, KubeError> {
        let url = format!("{}{path}", self.base);
        match self.send(self.http.get(&url), &url).await {
            Ok(v) => Ok(Some(v)),
            Err(KubeError::Api { code: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `items` of a list, with an optional label selector.
    pub async fn list(&self, path: &str, labels: &str) -> Result<Vec<Value>, KubeError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if !labels.is_empty() {
            req = req.query(&[("labelSelector", labels)]);
        }
        let v = self.send(req, &url).await?;
        Ok(v.get("items").and_then(Value::as_array).cloned().unwrap_or_default())
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.post(&url).json(body), &url).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        let url = format!("{}{path}", self.base);
        self.send(self.http.put(&url).json(body), &url).await
    }

    /// A strategic-merge patch.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, KubeError> {
        let url = format!("{}{path}", self.base);
        let req = self.http.patch(&url).header("content-type", "application/strategic-merge-patch+json").body(body.to_string());
        self.send(req, &url).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), KubeError> {
        let url = format!("{}{path}", self.base);
        match self.send(self.http.delete(&url), &url).await {
            Ok(_) | Err(KubeError::Api { code: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn send(&self, mut req: reqwest::RequestBuilder, url: &str) -> Result<Value, KubeError> {
        req = req.header("accept", "application/json").header("user-agent", "helm/v3.21.4 (sandbox)");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let method = req.try_clone().and_then(|r| r.build().ok()).map(|r| r.method().to_string()).unwrap_or_default();
        let resp = req.send().await.map_err(|e| KubeError::Unreachable(transport_error(&method, url, &e)))?;
        let code = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| KubeError::Unreachable(transport_error(&method, url, &e)))?;
        if (200..300).contains(&code) {
            return serde_json::from_str(&body).map_err(|e| KubeError::Api { code, message: format!("the server sent an invalid JSON body: {e}") });
        }
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| format!("the server responded with the status code {code} but did not return more information"));
        Err(KubeError::Api { code, message })
    }
}

/// Go's `net/http` wording: `Get "URL": dial tcp 127.0.0.1:1: connect: connection refused`.
fn transport_error(method: &str, url: &str, e: &reqwest::Error) -> String {
    let verb = {
        let m = method.to_ascii_lowercase();
        let mut c = m.chars();
        c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
    };
    let host = reqwest::Url::parse(url)
        .ok()
        .map(|u| format!("{}:{}", u.host_str().unwrap_or(""), u.port_or_known_default().unwrap_or(80)))
        .unwrap_or_default();
    if e.is_connect() {
        format!("{verb} \"{url}\": dial tcp {host}: connect: connection refused")
    } else if e.is_timeout() {
        format!("{verb} \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    } else {
        format!("{verb} \"{url}\": {e}")
    }
}

/// The server (and token) of the chosen context of a kubeconfig file.
fn from_kubeconfig(t: &Target) -> Result<(String, Option<String>), String> {
    let path = t
        .kubeconfig
        .clone()
        .or_else(|| std::env::var("KUBECONFIG").ok().and_then(|k| k.split(':').next().map(String::from)))
        .filter(|p| !p.is_empty())
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.kube/config")));
    let unreachable =
        || "Kubernetes cluster unreachable: Get \"http://localhost:8080/version\": dial tcp 127.0.0.1:8080: connect: connection refused".to_string();
    let Some(path) = path else {
        return Err(unreachable());
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) if t.kubeconfig.is_none() => return Err(unreachable()),
        Err(e) => return Err(format!("Kubernetes cluster unreachable: stat {path}: {e}")),
    };
    let cfg = super::yaml(&text).map_err(|e| format!("Kubernetes cluster unreachable: error loading config file \"{path}\": {e}"))?;
    let ctx_name = t.context.clone().or_else(|| cfg.get("current-context").and_then(Value::as_str).map(String::from)).unwrap_or_default();
    let named = |list: &str, name: &str| -> Option<Value> {
        cfg.get(list)?.as_array()?.iter().find(|e| e.get("name").and_then(Value::as_str) == Some(name)).cloned()
    };
    let ctx = named("contexts", &ctx_name).ok_or_else(|| format!("Kubernetes cluster unreachable: context \"{ctx_name}\" does not exist"))?;
    let cluster = ctx.pointer("/context/cluster").and_then(Value::as_str).unwrap_or("");
    let server = named("clusters", cluster)
        .and_then(|c| c.pointer("/cluster/server").and_then(Value::as_str).map(String::from))
        .ok_or_else(|| format!("Kubernetes cluster unreachable: cluster \"{cluster}\" has no server"))?;
    let user = ctx.pointer("/context/user").and_then(Value::as_str).unwrap_or("");
    let token = t.token.clone().or_else(|| named("users", user).and_then(|u| u.pointer("/user/token").and_then(Value::as_str).map(String::from)));
    Ok((server.trim_end_matches('/').to_string(), token))
}
