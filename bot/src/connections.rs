//! The HTTP listener with bounds (issue 14): a header read timeout (also the idle timeout of a
//! kept-alive connection), a cap on open connections, and counters of what was dropped, so
//! slow or half-open clients cannot hold the server's sockets and starve `/healthz`.
//!
//! At the cap a new connection takes the place of the oldest one that has not yet sent a whole
//! request: a client that is really talking (a request served, or a response streaming) is never
//! cut off for a new one, and a probe on a fresh connection is always served while the
//! connections that take its room are half-open. When every open connection has sent a request,
//! the new connection is closed at once.

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use runbot_commands::metrics::{self, Collector, DescriptorEncoder};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

/// The bounds, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// File descriptors kept free of connections for the store, step pipes, outbound calls.
const FD_RESERVE: u64 = 128;

impl Limits {
    /// The cap that fits the process's file descriptor limit: the soft limit is first raised to
    /// the hard one, and connections may use all but [`FD_RESERVE`] descriptors, so accepting
    /// never fails for want of descriptors (which would leave even `/healthz` unanswered).
    pub fn fitted(self) -> Limits {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut nofile = getrlimit(Resource::Nofile);
        if nofile.current != nofile.maximum {
            let raised = rustix::process::Rlimit { current: nofile.maximum, maximum: nofile.maximum };
            if setrlimit(Resource::Nofile, raised).is_ok() {
                nofile = getrlimit(Resource::Nofile);
            }
        }
        let Some(fds) = nofile.current else { return self };
        let room = usize::try_from(fds.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX);
        if room < self.max_connections {
            tracing::warn!(
                max_connections = self.max_connections,
                open_files_limit = fds,
                cap = room,
                "server.max_connections is above what the open files limit allows; capping connections lower"
            );
            return Limits { max_connections: room, ..self };
        }
        self
    }
}

/// What `/metrics` shows of the listener.
#[derive(Debug, Default)]
pub struct ConnectionMetrics {
    open: AtomicU64,
    header_timeout: AtomicU64,
    idle: AtomicU64,
    over_cap: AtomicU64,
}

impl ConnectionMetrics {}

impl Collector for ConnectionMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let open = i64::try_from(g(&self.open)).unwrap_or(i64::MAX);
        metrics::gauge(&mut enc, "runbot_http_connections_open", "HTTP connections open now.", open)?;
        let dropped = [("header_timeout", g(&self.header_timeout)), ("idle", g(&self.idle)), ("over_cap", g(&self.over_cap))];
        metrics::counters(&mut enc, "runbot_http_connections_dropped", "HTTP connections closed by runbot, by reason.", "reason", &dropped)
    }
}

/// One open connection, as the cap sees it.
struct Open {
    /// It has sent a whole request (its head), so it is not evicted for a newer one.
    talked: Arc<AtomicBool>,
    /// Closes it (dropping the connection closes the socket).
    evict: oneshot::Sender<()>,
}

/// Serves `app` on `listener` within `limits` until `stop` turns true; then stops accepting,
/// lets each connection finish the request it is serving, and returns when all are closed.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, metrics: Arc<ConnectionMetrics>, mut stop: watch::Receiver<bool>) {
    let open: Arc<Mutex<BTreeMap<u64, Open>>> = Arc::default();
    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    let mut warned = None;
    let reporter = tokio::spawn(report_timeouts(metrics.clone(), limits.header_timeout));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        seq += 1;
        let talked = Arc::new(AtomicBool::new(false));
        let (evict_tx, evict_rx) = oneshot::channel();
        {
            let Ok(mut table) = open.lock() else { return };
            if table.len() >= limits.max_connections {
                let oldest_silent = table.iter().find(|(_, o)| !o.talked.load(Ordering::Relaxed)).map(|(k, _)| *k);
                metrics.over_cap.fetch_add(1, Ordering::Relaxed);
                // Said at most every 10 s: a flood must not flood the log too.
                if warned.is_none_or(|t: tokio::time::Instant| t.elapsed() > Duration::from_secs(10)) {
                    warned = Some(tokio::time::Instant::now());
                    let total = metrics.over_cap.load(Ordering::Relaxed);
                    tracing::warn!(
                        max = limits.max_connections,
                        dropped_so_far = total,
                        "HTTP connection cap reached: closing the oldest connection that has not sent a request, or the new one"
                    );
                }
                match oldest_silent.and_then(|k| table.remove(&k)) {
                    Some(o) => {
                        let _ = o.evict.send(());
                    }
                    None => continue,
                }
            }
            table.insert(seq, Open { talked: talked.clone(), evict: evict_tx });
        }
        metrics.open.fetch_add(1, Ordering::Relaxed);
        let (app, open, metrics, stop) = (app.clone(), open.clone(), metrics.clone(), stop.clone());
        let id = seq;
        tasks.spawn(async move {
            connection(stream, peer, app, limits, &metrics, talked, evict_rx, stop).await;
            if let Ok(mut table) = open.lock() {
                table.remove(&id);
            }
            metrics.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    reporter.abort();
    while tasks.join_next().await.is_some() {}
}

/// Logs, at most every 10 s, how many connections were closed for sending no request in time
/// (a flood of slow or half-open clients shows in the log, not only in `/metrics`).
async fn report_timeouts(metrics: Arc<ConnectionMetrics>, timeout: Duration) {
    let mut reported = (0, 0);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = (metrics.header_timeout.load(Ordering::Relaxed), metrics.idle.load(Ordering::Relaxed));
        if now.0 > reported.0 {
            tracing::warn!(
                closed = now.0 - reported.0,
                timeout_s = timeout.as_secs(),
                "closed HTTP connections that sent no complete request headers in time"
            );
        }
        if now.1 > reported.1 {
            tracing::info!(closed = now.1 - reported.1, timeout_s = timeout.as_secs(), "closed idle kept-alive HTTP connections");
        }
        reported = now;
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    limits: Limits,
    metrics: &ConnectionMetrics,
    talked: Arc<AtomicBool>,
    mut evict: oneshot::Receiver<()>,
    mut stop: watch::Receiver<bool>,
) {
    let seen = talked.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        seen.store(true, Ordering::Relaxed);
        // What axum's ConnectInfo extractor reads: the socket's peer, never a header.
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = &mut evict => return,
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        if e.is_timeout() {
            let c = if talked.load(Ordering::Relaxed) { &metrics.idle } else { &metrics.header_timeout };
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
    }
}

/// Returns once `stop` is true (without holding its lock across anything).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
