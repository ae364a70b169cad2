//! The Alertmanager receiver: `POST /alerts/alertmanager`, Alertmanager's webhook (payload
//! version 4). The bearer token (`Authorization: Bearer …`, as Alertmanager's
//! `http_config.authorization` sends it) is compared in constant time before the body is read;
//! the body is read up to `[alerts] max_body_bytes`. Each alert goes to
//! `Engine::handle_alert`, which posts, edits or counts it; the answer is 200 once every
//! alert was handled, 503 when a chat platform did not take a message (Alertmanager retries
//! the group, and a repeat edits what was posted).
//!
//! Counted at `/metrics`: `runbot_alerts_total{outcome}`, `runbot_alerts_unmatched_total{reason}`
//! and `runbot_alerts_rejected_total{reason}` (token, too_large, unreadable).

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use runbot_commands::alerts::{Alert, AlertStatus};
use runbot_commands::config::Secret;
use runbot_commands::engine::{AlertOutcome, Engine};
use runbot_commands::metrics::{self, Collector, DescriptorEncoder};
use runbot_commands::setup::SetupError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;

/// Alertmanager's webhook body (the fields runbot reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    #[serde(default)]
    alerts: Vec<WireAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlert {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: Option<DateTime<Utc>>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    #[serde(default)]
    fingerprint: Option<String>,
}

/// Alertmanager writes "no time" as year 1.
fn set(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.filter(|t| t.timestamp() > 0)
}

impl WireAlert {
    fn into_alert(self) -> Result<Alert, String> {
        let status = match self.status.as_str() {
            "firing" => AlertStatus::Firing,
            "resolved" => AlertStatus::Resolved,
            other => return Err(format!("alert status '{other}' is neither firing nor resolved")),
        };
        // Older Alertmanagers send no fingerprint: one from the label set, which is what
        // identifies an alert there too.
        let fingerprint = match self.fingerprint.filter(|f| !f.is_empty()) {
            Some(f) if f.len() <= 64 && f.bytes().all(|b| b.is_ascii_hexdigit()) => f.to_ascii_lowercase(),
            Some(_) => return Err("an alert's fingerprint is not hex".into()),
            None => {
                let mut h = Sha256::new();
                for (k, v) in &self.labels {
                    h.update(k.as_bytes());
                    h.update([0]);
                    h.update(v.as_bytes());
                    h.update([0]);
                }
                hex::encode(&h.finalize()[..8])
            }
        };
        Ok(Alert {
            fingerprint,
            status,
            labels: self.labels,
            annotations: self.annotations,
            starts_at: set(self.starts_at),
            ends_at: set(self.ends_at),
            generator_url: self.generator_url,
        })
    }
}

/// What the receiver counts.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl AlertMetrics {
    fn add(&self, metric: &'static str, label: &str) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry((metric, label.to_string())).or_default() += 1;
    }

    /// How many times `metric` was counted with `label`.
    pub fn get(&self, metric: &'static str, label: &str) -> u64 {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.get(&(metric, label.to_string())).copied().unwrap_or(0)
    }

    /// The counters alone, encoded (tests).
    pub fn render(self: &Arc<Self>) -> String {
        metrics::encode_collector(self.clone())
    }
}

impl Collector for AlertMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let c = self.counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (family, label, help) in [
            ("runbot_alerts_total", "outcome", "Alertmanager alerts received, by what became of them"),
            ("runbot_alerts_unmatched_total", "reason", "Alerts no trigger matched, counted and not posted"),
            ("runbot_alerts_rejected_total", "reason", "Alertmanager requests refused, by reason"),
        ] {
            let values: Vec<(&str, u64)> = c.iter().filter(|((m, _), _)| *m == family).map(|((_, l), n)| (l.as_str(), *n)).collect();
            metrics::counters(&mut enc, family.strip_suffix("_total").unwrap_or(family), help, label, &values)?;
        }
        Ok(())
    }
}

/// The receiver, as `runbot serve` wires it.
#[derive(Clone)]
pub struct Alerts {
    engine: Engine,
    token: Secret,
    max_body: usize,
    pub metrics: Arc<AlertMetrics>,
}

impl Alerts {
    /// The receiver of `[alerts]`, or `None` when the section is absent.
    pub fn from_engine(engine: &Engine) -> Result<Option<Alerts>, SetupError> {
        let settings = engine.settings();
        let Some(cfg) = &settings.config.alerts else { return Ok(None) };
        let token = settings
            .secrets
            .get(&cfg.token_secret)
            .cloned()
            .ok_or_else(|| SetupError(format!("[alerts] token_secret names '{}', which is not under [secrets]", cfg.token_secret)))?;
        if token.expose().trim().is_empty() {
            return Err(SetupError(format!("[alerts] token_secret '{}' is empty; Alertmanager must send a token", cfg.token_secret)));
        }
        Ok(Some(Alerts { engine: engine.clone(), token, max_body: cfg.max_body_bytes, metrics: Arc::new(AlertMetrics::default()) }))
    }

    /// `POST /alerts/alertmanager`.
    pub fn router(&self) -> Router {
        Router::new().route("/alerts/alertmanager", post(receive)).with_state(self.clone())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .unwrap_or("");
        let want = Sha256::digest(self.token.expose().trim().as_bytes());
        !given.is_empty() && bool::from(Sha256::digest(given.trim().as_bytes()).ct_eq(&want))
    }
}

fn refuse(m: &AlertMetrics, reason: &str, status: StatusCode, text: String) -> Response {
    m.add("runbot_alerts_rejected_total", reason);
    (status, text).into_response()
}

async fn receive(State(a): State<Alerts>, req: Request<Body>) -> Response {
    let m = &a.metrics;
    if !a.authorized(req.headers()) {
        let mut r = refuse(m, "token", StatusCode::UNAUTHORIZED, "a bearer token is required (Alertmanager http_config.authorization)".into());
        r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        return r;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_large = || format!("the body is larger than [alerts] max_body_bytes = {}", a.max_body);
    if declared.is_some_and(|n| n > a.max_body as u64) {
        return refuse(m, "too_large", StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let body = match axum::body::to_bytes(req.into_body(), a.max_body).await {
        Ok(b) => b,
        Err(_) => return refuse(m, "too_large", StatusCode::PAYLOAD_TOO_LARGE, too_large()),
    };
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => return refuse(m, "unreadable", StatusCode::BAD_REQUEST, format!("not an Alertmanager webhook body: {e}")),
    };
    if payload.version != "4" {
        return refuse(m, "unreadable", StatusCode::BAD_REQUEST, format!("webhook payload version {} is not 4", payload.version));
    }
    let mut alerts = Vec::with_capacity(payload.alerts.len());
    for w in payload.alerts {
        match w.into_alert() {
            Ok(al) => alerts.push(al),
            Err(why) => return refuse(m, "unreadable", StatusCode::BAD_REQUEST, why),
        }
    }
    let mut failed = Vec::new();
    for alert in alerts {
        let outcome = a.engine.handle_alert(alert).await;
        let name = match &outcome {
            AlertOutcome::Posted(_) => "posted",
            AlertOutcome::Edited => "edited",
            AlertOutcome::Resolved => "resolved",
            AlertOutcome::Unmatched(reason) => {
                m.add("runbot_alerts_unmatched_total", reason);
                "unmatched"
            }
            AlertOutcome::Failed(why) => {
                failed.push(why.clone());
                "failed"
            }
        };
        m.add("runbot_alerts_total", name);
    }
    if failed.is_empty() {
        (StatusCode::OK, "ok").into_response()
    } else {
        tracing::warn!(errors = ?failed, "alert messages could not be posted; Alertmanager will retry");
        (StatusCode::SERVICE_UNAVAILABLE, format!("could not post: {}", failed.join("; "))).into_response()
    }
}
