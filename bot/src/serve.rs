//! Builds the store, the adapters and the engine from settings, and serves HTTP until SIGTERM
//! or Ctrl-C: `/healthz`, `/readyz`, the console, and Slack (`/slack/*`, Socket Mode,
//! `/metrics`) when `[slack]` is configured.

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use runbot_adapters::console::{self, ConsoleChat, ConsoleState};
use runbot_adapters::slack::Slack;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::Engine;
use runbot_commands::ports::{Chats, Store, SystemClock};
use runbot_commands::steps::{Connections, StepKinds};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub async fn serve(settings: Settings, base: PathBuf) -> anyhow::Result<()> {
    let clusters = crate::clusters::connect(&settings).await?;
    let catalogs = crate::catalogs::connect(&settings)?;
    let store = Arc::new(SqlStore::connect(&settings.config.store.url).await?);
    let console = Arc::new(match &settings.config.console.history {
        Some(h) => ConsoleChat::with_history(base.join(h)).context("reading the console history")?,
        None => ConsoleChat::in_memory(),
    });
    let mut chats = Chats::new().with(console.clone());
    let slack = match &settings.config.slack {
        Some(cfg) => Some(Slack::from_config(cfg, &settings)?),
        None => None,
    };
    if let Some(s) = &slack {
        chats = chats.with(s.chat.clone());
    }
    let listen = settings.config.server.listen.clone();
    let console_on = settings.config.console.enabled;
    let sweep_every = Duration::from_secs((settings.config.engine.lease_secs / 3).max(1));
    let store_dyn: Arc<dyn Store> = store.clone();
    let kinds = StepKinds::shipped_for(&Connections {
        clusters,
        catalogs: catalogs.clone(),
        checker: Some(Arc::new(runbot_adapters::integrity::PgChecker)),
        integrity: runbot_commands::steps::integrity::specs(&settings),
    });
    let engine = Engine::new(settings, store_dyn, chats, Arc::new(SystemClock), kinds);
    engine.set_catalogs(catalogs);
    // Pick up work a previous process left behind before taking new commands.
    engine.sweep().await;
    let sweeper = engine.spawn_sweeper(sweep_every);
    // The backup monitor, at the most frequent configured interval.
    let monitor_every = engine
        .settings()
        .config
        .databases
        .values()
        .filter_map(|d| d.backup.as_ref())
        .filter_map(|b| runbot_commands::config::parse_duration(&b.check_every).ok())
        .min();
    let monitor = monitor_every.map(|every| engine.spawn_backup_monitor(every.max(Duration::from_secs(1))));

    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(store.clone());
    if console_on {
        app = app.merge(console::router(ConsoleState { chat: console, engine: engine.clone() }));
    }
    let mut socket_mode = None;
    if let Some(s) = &slack {
        if let Some(r) = s.router(engine.clone()) {
            app = app.merge(r);
            tracing::info!("Slack endpoints: POST /slack/commands, /slack/interactions, /slack/events");
        }
        socket_mode = s.socket_mode(engine.clone());
        let metrics = s.metrics.clone();
        app = app.route("/metrics", get(move || async move { metrics.render() }));
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listening on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, "runbot serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await?;
    sweeper.abort();
    if let Some(m) = monitor {
        m.abort();
    }
    if let Some(sm) = socket_mode {
        sm.shutdown().await;
    }
    tracing::info!("runbot stopped");
    Ok(())
}

async fn readyz(State(store): State<Arc<SqlStore>>) -> (StatusCode, String) {
    match (store.ping().await, store.migrations_applied().await) {
        (Ok(()), Ok(true)) => (StatusCode::OK, "ready".into()),
        (Ok(()), _) => (StatusCode::SERVICE_UNAVAILABLE, "store migrations not applied".into()),
        (Err(e), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unreachable: {e}")),
    }
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: no new requests");
}
