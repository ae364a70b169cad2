//! Long-lived responses: watches and `follow` logs. Both are chunked HTTP bodies fed by a
//! spawned task through a channel; the task ends when the client goes away, the watch times
//! out (`timeoutSeconds`), the container stops, or the cluster shuts down.
//!
//! Watch semantics (as the watch cache serves them): newline-delimited
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`; from `resourceVersion`
//! N only changes newer than N (410 Gone `ERROR` event if N was compacted away); without a
//! `resourceVersion` (or `0`) first a synthetic ADDED per existing object; with a selector, an
//! object that starts matching arrives as ADDED and one that stops matching as DELETED;
//! BOOKMARKs (when `allowWatchBookmarks=true`) every [`BOOKMARK_EVERY`] with the last
//! resourceVersion the stream has seen; `sendInitialEvents=true` ends the initial events with
//! a bookmark annotated `k8s.io/initial-events-end`.

use super::Shared;
use super::resources::{ResId, res};
use super::select::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Change, WatchEvent};
use super::table::{Include, table};
use super::util::fmt_micro;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Interval of BOOKMARK events (the real API server: about a minute).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(1);

type Tx = mpsc::Sender<Result<Bytes, Infallible>>;

/// Resolves once the cluster shuts down.
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn streaming(content_type: &'static str) -> (Tx, Response) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let mut resp = (StatusCode::OK, Body::from_stream(ReceiverStream::new(rx))).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    (tx, resp)
}

pub struct WatchReq {
    pub id: ResId,
    /// None = all namespaces (or a cluster-scoped type).
    pub ns: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub send_initial: bool,
    pub timeout: Option<Duration>,
    pub table: Option<Include>,
    /// Events carry `PartialObjectMetadata` objects.
    pub metadata: bool,
}

/// An object's metadata-only representation (`meta.k8s.io/v1` `PartialObjectMetadata`): no
/// spec, status or data.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({}))})
}

impl WatchReq {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn in_scope(&self, ev: &WatchEvent) -> bool {
        ev.res == self.id && self.ns.as_ref().is_none_or(|n| *n == ev.ns)
    }

    /// The event a watcher with this filter sees for a change, if any.
    fn view(&self, ev: &WatchEvent) -> Option<(&'static str, Value)> {
        if !self.in_scope(ev) {
            return None;
        }
        let now = self.matches(&ev.object);
        match ev.change {
            Change::Added | Change::Deleted => now.then(|| (ev.change.as_str(), ev.object.clone())),
            Change::Modified => {
                let before = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", ev.object.clone())),
                    (false, true) => Some(("ADDED", ev.object.clone())),
                    (true, false) => {
                        let mut old = ev.old.clone().unwrap_or_default();
                        old["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                        Some(("DELETED", old))
                    }
                    (false, false) => None,
                }
            }
        }
    }
}

struct Encoder {
    id: ResId,
    table: Option<Include>,
    metadata: bool,
    headers_sent: bool,
}

impl Encoder {
    fn line(&mut self, type_: &str, object: Value) -> Bytes {
        let object = match (self.table, type_) {
            (Some(inc), "ADDED" | "MODIFIED" | "DELETED") => {
                let rv = object["metadata"]["resourceVersion"].clone();
                let t = table(self.id, &[&object], inc, !self.headers_sent, json!({"resourceVersion": rv}));
                self.headers_sent = true;
                t
            }
            (None, "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK") if self.metadata => partial_metadata(&object),
            _ => object,
        };
        let mut s = json!({"type": type_, "object": object}).to_string();
        s.push('\n');
        Bytes::from(s)
    }
}

fn bookmark(id: ResId, rv: u64, initial_end: bool) -> Value {
    let r = res(id);
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": meta})
}

fn gone_event(msg: String) -> Bytes {
    let mut s = json!({"type": "ERROR", "object": ApiError::gone(msg).body()}).to_string();
    s.push('\n');
    Bytes::from(s)
}

pub fn watch(sh: &Arc<Shared>, w: WatchReq) -> Result<Response, ApiError> {
    let since: Option<u64> = match w.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(s) => Some(s.parse().map_err(|_| {
            ApiError::invalid("WatchOptions", "", "", vec![super::status::Cause::invalid("resourceVersion", format!("{s:?}"), "must be an integer")])
        })?),
    };
    // `sendInitialEvents=true` (with `resourceVersionMatch=NotOlderThan`): the current state
    // (which is never older than any RV we handed out) first, whatever the RV.
    let since = if w.send_initial { None } else { since };
    let mut enc = Encoder { id: w.id, table: w.table, metadata: w.metadata, headers_sent: false };
    let (tx, resp) = streaming("application/json");
    let mut first: Vec<Bytes> = Vec::new();
    let (rx, mut last_rv) = {
        let st = sh.lock();
        let cur = st.store.rv();
        match since {
            Some(rv) if rv < st.store.compacted() => {
                let _ = tx.try_send(Ok(gone_event(format!("too old resource version: {rv} ({})", st.store.compacted() + 1))));
                return Ok(resp);
            }
            Some(rv) => {
                for ev in st.store.history_since(rv) {
                    if let Some((t, o)) = w.view(ev) {
                        first.push(enc.line(t, o));
                    }
                }
                (st.store.subscribe(), cur.max(rv))
            }
            None => {
                let ns = w.ns.as_deref();
                for o in st.store.list(w.id, ns).filter(|o| w.matches(o)) {
                    first.push(enc.line("ADDED", o.clone()));
                }
                if w.send_initial && w.bookmarks {
                    first.push(enc.line("BOOKMARK", bookmark(w.id, cur, true)));
                }
                (st.store.subscribe(), cur)
            }
        }
    };
    let mut shutdown = sh.shutdown.clone();
    let mut rx = rx;
    tokio::spawn(async move {
        for b in first {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = w.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        if ev.rv <= last_rv {
                            continue;
                        }
                        last_rv = ev.rv;
                        if let Some((t, o)) = w.view(&ev)
                            && tx.send(Ok(enc.line(t, o))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(gone_event(format!("too old resource version: {last_rv}")))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if w.bookmarks => {
                    if tx.send(Ok(enc.line("BOOKMARK", bookmark(w.id, last_rv, false)))).await.is_err() {
                        return;
                    }
                }
                _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => return,
                _ = stopped(&mut shutdown) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(resp)
}

pub struct LogReq {
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
    pub timestamps: bool,
    pub limit_bytes: Option<usize>,
    pub follow: bool,
}

fn render_lines(lines: &[(chrono::DateTime<chrono::Utc>, String)], timestamps: bool) -> String {
    let mut out = String::new();
    for (t, l) in lines {
        if timestamps {
            out.push_str(&fmt_micro(*t).replace('Z', "000Z"));
            out.push(' ');
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// `GET .../pods/{name}/log`.
pub fn logs(sh: &Arc<Shared>, pod: &Value, container: Option<&str>, previous: bool, q: LogReq) -> Result<Response, ApiError> {
    let snap = sh.lock().kubelet.logs(pod, container, previous)?;
    let mut lines = snap.lines.clone();
    if let Some(s) = q.since_seconds {
        let from = chrono::Utc::now() - chrono::Duration::seconds(s);
        lines.retain(|(t, _)| *t >= from);
    }
    if let Some(n) = q.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut text = render_lines(&lines, q.timestamps);
    if let Some(n) = q.limit_bytes {
        let mut cut = n.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    if !(q.follow && snap.running && !previous) {
        let mut r = (StatusCode::OK, text).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(r);
    }
    let (tx, resp) = streaming("text/plain");
    let sh = sh.clone();
    let mut shutdown = sh.shutdown.clone();
    let mut sent = snap.lines.len();
    tokio::spawn(async move {
        if !text.is_empty() && tx.send(Ok(Bytes::from(text))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = stopped(&mut shutdown) => return,
                _ = tx.closed() => return,
            }
            let next = sh.lock().kubelet.follow(&snap.uid, &snap.container, snap.instance, sent);
            let Some((more, running)) = next else { return };
            if !more.is_empty() {
                sent += more.len();
                if tx.send(Ok(Bytes::from(render_lines(&more, q.timestamps)))).await.is_err() {
                    return;
                }
            }
            if !running {
                return;
            }
        }
    });
    Ok(resp)
}
