//! `slack-sink`: a minimal stand-in for Slack's side of the replies, for load benchmarks
//! (`scripts/bench-slack-acks.sh`). Every request — a `response_url` POST, a Web API call —
//! is read in full and answered `200 {"ok":true}` on a keep-alive connection, like Slack's own
//! endpoints, so the bot under test pays for delivering its replies as in production (one
//! pooled connection, no refused connects, no error logs) without a full fake competing for
//! the CPUs. Nothing is recorded except a count, printed on exit.
//!
//!   slack-sink 127.0.0.1:PORT      # serves until SIGTERM / Ctrl-C, then prints "requests=N"
//!
//! One thread (a current-thread runtime), so it shares the load generator's core fairly.

use axum::body::Bytes;
use axum::http::header;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn main() -> std::process::ExitCode {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: slack-sink ADDR (e.g. 127.0.0.1:8099)");
        return std::process::ExitCode::from(2);
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slack-sink: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let served = rt.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let app = axum::Router::new().fallback(move |_body: Bytes| {
            c.fetch_add(1, Ordering::Relaxed);
            async { ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], "{\"ok\":true}") }
        });
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).with_graceful_shutdown(stop()).await?;
        println!("requests={}", count.load(Ordering::Relaxed));
        Ok::<_, std::io::Error>(())
    });
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slack-sink: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGTERM (what the bench sends) or Ctrl-C.
async fn stop() {
    #[cfg(unix)]
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        return;
    }
    let _ = tokio::signal::ctrl_c().await;
}
