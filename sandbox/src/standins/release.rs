//! Helm 3's release storage, the Secrets driver (helm v3.21 `pkg/storage`): one Secret
//! `sh.helm.release.v1.<release>.v<revision>` of type `helm.sh/release.v1` per revision,
//! labelled `name`, `owner=helm`, `status`, `version` and `createdAt` (on create) or
//! `modifiedAt` (on update), whose `data.release` is base64(gzip(JSON release)) — base64 again
//! on the wire, as every Secret value. `Create` first prunes the oldest revisions down to
//! `--history-max − 1` (never the last deployed one), as `Storage.removeLeastRecent` does.

use super::kubeapi::{Kube, KubeError};
use base64::Engine as _;
use chrono::{DateTime, Local, SecondsFormat};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::{Read, Write};

/// Helm's text for a release document: base64 of the gzipped JSON (what `data.release` holds
/// once the Secret's own base64 is undone).
pub fn encode_release(json: &Value) -> String {
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    // Writing to a Vec cannot fail.
    let _ = gz.write_all(json.to_string().as_bytes());
    let bytes = gz.finish().unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The reverse of [`encode_release`]; like helm, accepts un-gzipped JSON too.
pub(crate) fn decode_release(text: &[u8]) -> Result<Release, String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(text.trim_ascii()).map_err(|e| e.to_string())?;
    let json = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).take(64 << 20).read_to_end(&mut out).map_err(|e| e.to_string())?;
        out
    } else {
        raw
    };
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

/// Go's `time.Time` JSON (RFC 3339 with nanoseconds, trailing zeros trimmed).
pub(crate) fn go_time(t: DateTime<Local>) -> String {
    let s = t.to_rfc3339_opts(SecondsFormat::Nanos, true);
    match s.find('.') {
        Some(dot) => {
            let tz_at = s[dot..].find(['Z', '+', '-']).map(|i| i + dot).unwrap_or(s.len());
            let frac = s[dot + 1..tz_at].trim_end_matches('0');
            if frac.is_empty() { format!("{}{}", &s[..dot], &s[tz_at..]) } else { format!("{}.{frac}{}", &s[..dot], &s[tz_at..]) }
        }
        None => s,
    }
}

/// Go's `time.ANSIC` (`Mon Jan  2 15:04:05 2006`), as `helm status`/`history` print times.
pub(crate) fn ansic(t: &str) -> String {
    DateTime::parse_from_rfc3339(t).map(|d| d.with_timezone(&Local).format("%a %b %e %H:%M:%S %Y").to_string()).unwrap_or_default()
}

/// A release document (helm's `release.Release`, JSON keys as helm writes them).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Release {
    pub name: String,
    pub info: Info,
    #[serde(default)]
    pub chart: Value,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub manifest: String,
    #[serde(default)]
    pub hooks: Value,
    pub version: u32,
    #[serde(default)]
    pub namespace: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct Info {
    #[serde(default)]
    pub first_deployed: String,
    #[serde(default)]
    pub last_deployed: String,
    #[serde(default)]
    pub deleted: String,
    #[serde(default, alias = "Description")]
    pub description: String,
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl Release {
    pub fn chart_name(&self) -> &str {
        self.chart.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("")
    }
    /// `name-version`, as `helm history` shows it.
    pub fn chart_label(&self) -> String {
        format!("{}-{}", self.chart_name(), self.chart.pointer("/metadata/version").and_then(Value::as_str).unwrap_or(""))
    }
    pub fn app_version(&self) -> &str {
        self.chart.pointer("/metadata/appVersion").and_then(Value::as_str).unwrap_or("")
    }
    pub fn set_status(&mut self, status: &str, description: &str) {
        self.info.status = status.to_string();
        self.info.description = description.to_string();
    }
}

/// The Secrets driver for one namespace.
pub(crate) struct Storage<'a> {
    pub kube: &'a Kube,
    pub namespace: String,
    /// `--history-max` (0 = unlimited).
    pub max_history: usize,
}

fn key(name: &str, version: u32) -> String {
    format!("sh.helm.release.v1.{name}.v{version}")
}

impl Storage<'_> {
    fn path(&self) -> String {
        format!("/api/v1/namespaces/{}/secrets", self.namespace)
    }

    /// Every revision of `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<Release>, String> {
        let items =
            self.kube.list(&self.path(), &format!("owner=helm,name={name}")).await.map_err(|e| format!("query: failed to query with labels: {e}"))?;
        let mut out = Vec::new();
        for s in items {
            if s.get("type").and_then(Value::as_str) != Some("helm.sh/release.v1") {
                continue;
            }
            let sname = s.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("").to_string();
            let data = s.pointer("/data/release").and_then(Value::as_str).unwrap_or("");
            let helm_text =
                base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| format!("query: failed to decode data {sname:?}: {e}"))?;
            out.push(decode_release(&helm_text).map_err(|e| format!("query: failed to decode data {sname:?}: {e}"))?);
        }
        out.sort_by_key(|r| r.version);
        Ok(out)
    }

    fn secret(&self, r: &Release, stamp: &str) -> Value {
        let doc = serde_json::to_value(r).unwrap_or(Value::Null);
        let wire = base64::engine::general_purpose::STANDARD.encode(encode_release(&doc));
        let now = chrono::Utc::now().timestamp().to_string();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": key(&r.name, r.version),
                "namespace": self.namespace,
                "labels": {
                    "name": r.name,
                    "owner": "helm",
                    "status": r.info.status,
                    "version": r.version.to_string(),
                    stamp: now,
                }
            },
            "type": "helm.sh/release.v1",
            "data": {"release": wire}
        })
    }

    /// `Storage.Create`: prune, then create the revision's Secret.
    pub async fn create(&self, r: &Release, history: &[Release]) -> Result<(), String> {
        if self.max_history > 0 {
            self.remove_least_recent(history, self.max_history - 1).await?;
        }
        match self.kube.post(&self.path(), &self.secret(r, "createdAt")).await {
            Ok(_) => Ok(()),
            Err(KubeError::Api { code: 409, .. }) => Err("create: failed to create: release: already exists".to_string()),
            Err(e) => Err(format!("create: failed to create: {e}")),
        }
    }

    /// `Storage.Update` (`recordRelease`): replaces the revision's Secret.
    pub async fn update(&self, r: &Release) -> Result<(), String> {
        let path = format!("{}/{}", self.path(), key(&r.name, r.version));
        self.kube.put(&path, &self.secret(r, "modifiedAt")).await.map(|_| ()).map_err(|e| format!("update: failed to update: {e}"))
    }

    async fn remove_least_recent(&self, history: &[Release], max: usize) -> Result<(), String> {
        if history.len() <= max {
            return Ok(());
        }
        let last_deployed = history.iter().rev().find(|r| r.info.status == "deployed").map(|r| r.version);
        let mut doomed = Vec::new();
        for r in history {
            if history.len() - doomed.len() == max {
                break;
            }
            if Some(r.version) != last_deployed {
                doomed.push(r.version);
            }
        }
        for v in doomed {
            let path = format!("{}/{}", self.path(), key(&history[0].name, v));
            self.kube.delete(&path).await.map_err(|e| format!("delete: failed to delete release: {e}"))?;
        }
        Ok(())
    }
}
