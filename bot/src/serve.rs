//! Builds the store, the adapters and the engine from settings, and serves HTTP until SIGTERM
//! or Ctrl-C: `/healthz`, `/readyz`, `/metrics`, the console, Slack (`/slack/*`, Socket
//! Mode) when `[slack]` is configured, and Discord (`/discord/interactions`, or the Gateway in
//! `mode = "gateway"`) when `[discord]` is.
//!
//! Shutdown on SIGTERM / Ctrl-C: stop accepting connections, let requests in flight (acks)
//! finish for up to [`GRACE`], stop the sweeper and the monitor, then close the store (its
//! writes in progress commit or roll back) within [`GRACE`]. A step cut off by the exit is
//! handled by the crash-safety rules at the next start (idempotent: resumed; otherwise
//! Resume / Abort).

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use runbot_adapters::console::{self, ConsoleAuth, ConsoleChat, ConsoleState};
use runbot_adapters::discord::Discord;
use runbot_adapters::inbound::{ChatAdapter, Pipeline};
use runbot_adapters::slack::Slack;
use runbot_adapters::store_sql::SqlStore;
use runbot_commands::config::Settings;
use runbot_commands::engine::Engine;
use runbot_commands::ports::{Chats, Store, SystemClock};
use runbot_commands::steps::{Connections, StepKinds};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long each shutdown phase (in-flight requests, store) may take.
const GRACE: Duration = Duration::from_secs(5);

/// Serves until SIGTERM / Ctrl-C. `console_auth`: how console requests are authenticated —
/// `runbot demo` passes the identity picker; `None` takes `[console] auth` from the settings.
/// `bound`: a listener the caller bound already (the demo binds before it prints where it
/// listens); `None` binds `[server] listen`.
pub async fn serve(
    settings: Settings,
    base: PathBuf,
    console_auth: Option<ConsoleAuth>,
    bound: Option<tokio::net::TcpListener>,
) -> anyhow::Result<()> {
    let console_auth = match console_auth {
        Some(a) => a,
        None => ConsoleAuth::from_config(&settings.config.console)?,
    };
    if settings.config.console.enabled && !settings.config.console.identities.is_empty() && !matches!(console_auth, ConsoleAuth::Picker) {
        tracing::warn!("[console] identities is only offered by runbot demo's picker; runbot serve ignores it ([console] auth decides who acts)");
    }
    let listen = settings.config.server.listen.clone();
    let console_on = settings.config.console.enabled;
    let limits = crate::connections::Limits {
        max_connections: settings.config.server.max_connections,
        header_timeout: Duration::from_secs(settings.config.server.header_timeout_secs),
    }
    .fitted();
    let store = Arc::new(SqlStore::connect(&settings.config.store.url).await?);
    store.hold_liveness(&settings.instance).await?;
    let ChatSetup { console, chats, slack, discord } = connect_chats(&settings, &base, &store)?;
    // `[audit]`: records keyed from the first one on; the head anchored outside the store.
    let anchorer = crate::audit_cmd::key_store(&settings, &store, &chats)?;
    let engine = build_engine(settings, &store, chats).await?;
    // Every chat platform's deliveries take one path: recorded in the inbox, acknowledged,
    // acted on once (runbot_adapters::inbound).
    let pipeline = Pipeline::new(engine.clone());
    let mut adapters: Vec<Box<dyn ChatAdapter>> = Vec::new();
    if let Some(s) = slack {
        adapters.push(Box::new(s.start(&pipeline)));
    }
    if let (Some(d), Some(cfg)) = (discord, engine.settings().config.discord.as_ref()) {
        adapters.push(Box::new(d.start(cfg, &pipeline)?));
    }
    let adapters = Arc::new(adapters);
    let mut background = start_background(&engine, &pipeline).await;
    background.extend(anchorer.as_ref().map(|a| a.spawn()));
    let conn_metrics = Arc::new(crate::connections::ConnectionMetrics::default());
    let console = console_on.then(|| ConsoleState { chat: console, engine: engine.clone(), auth: Arc::new(console_auth.clone()) });
    // `[alerts]`: Alertmanager's webhook.
    let alerts = runbot_adapters::alerts::Alerts::from_engine(&engine)?;
    let app = router(&engine, &pipeline, &store, &adapters, console, alerts, conn_metrics.clone());
    let listener = match bound {
        Some(l) => l,
        None => tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listening on {listen}"))?,
    };
    let addr = listener.local_addr()?;
    // Validation refuses this config already; checked again on the bound socket.
    anyhow::ensure!(
        !console_on || console_auth.allows_listen(addr),
        "[server] listen = {listen:?} is not a loopback address and the console ([console] auth = \"loopback\") answers only \
         this machine: listen on 127.0.0.1, set [console] enabled = false, or use [console] auth = \"proxy\" with trusted_proxies"
    );
    tracing::info!(%addr, max_connections = limits.max_connections, header_timeout_s = limits.header_timeout.as_secs(), "runbot serving");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Each request carries its connection's peer address (ConnectInfo): the console decides by it.
    let server = crate::connections::serve(listener, app, limits, conn_metrics, stop_rx);
    let mut server = tokio::spawn(async move {
        server.await;
        Ok::<(), std::io::Error>(())
    });
    let served = tokio::select! {
        r = &mut server => Some(r),
        () = shutdown() => None,
    };
    // No new connections from here; background work that starts side effects stops.
    let _ = stop_tx.send(true);
    for task in &background {
        task.abort();
    }
    let served = match served {
        Some(r) => r,
        None => match tokio::time::timeout(GRACE, &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(grace_s = GRACE.as_secs(), "requests still open after the grace period (e.g. event streams); closing them");
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    stop(&adapters, &pipeline, &store, anchorer.as_deref()).await;
    served.context("the HTTP server task")?.context("serving HTTP")?;
    tracing::info!("runbot stopped");
    Ok(())
}

/// The console's chat and the configured chat adapters (not started yet), and the `Chats`
/// the engine posts through.
struct ChatSetup {
    console: Arc<ConsoleChat>,
    chats: Chats,
    slack: Option<Slack>,
    discord: Option<Discord>,
}

fn connect_chats(settings: &Settings, base: &std::path::Path, store: &Arc<SqlStore>) -> anyhow::Result<ChatSetup> {
    let console = Arc::new(match &settings.config.console.history {
        Some(h) => ConsoleChat::with_history(base.join(h)).context("reading the console history")?,
        None => ConsoleChat::in_memory(),
    });
    let mut chats = Chats::new().with(console.clone());
    let slack = match &settings.config.slack {
        Some(cfg) => Some(Slack::from_config(cfg, settings)?),
        None => None,
    };
    if let Some(s) = &slack {
        s.chat.share_pacing(store.clone());
        chats = chats.with(s.chat.clone());
    }
    let discord = match &settings.config.discord {
        Some(cfg) => Some(Discord::from_config(cfg)?),
        None => None,
    };
    if let Some(d) = &discord {
        d.chat.share_limits(store.clone());
        chats = chats.with(d.chat.clone());
    }
    Ok(ChatSetup { console, chats, slack, discord })
}

/// The engine with the step kinds' connections (clusters, catalogs, deploy tools, checker).
async fn build_engine(settings: Settings, store: &Arc<SqlStore>, chats: Chats) -> anyhow::Result<Engine> {
    let clusters = crate::clusters::connect(&settings).await?;
    let catalogs = crate::catalogs::connect(&settings)?;
    let deploy = crate::deploy::connect(&settings, &clusters)?;
    let kinds = StepKinds::shipped_for(&Connections {
        deploy,
        clusters,
        catalogs: catalogs.clone(),
        checker: Some(Arc::new(runbot_adapters::integrity::PgChecker)),
        integrity: runbot_commands::steps::integrity::specs(&settings),
    });
    let store: Arc<dyn Store> = store.clone();
    let engine = Engine::new(settings, store, chats, Arc::new(SystemClock), kinds);
    engine.set_catalogs(catalogs);
    Ok(engine)
}

/// Picks up what a previous process left behind before new commands are taken — executions,
/// and commands recorded but not acted on — then starts the periodic work: the sweepers and
/// the backup monitor (at the most frequent configured interval).
async fn start_background(engine: &Engine, pipeline: &Arc<Pipeline>) -> Vec<tokio::task::JoinHandle<()>> {
    let cfg = &engine.settings().config.engine;
    let sweep_every = Duration::from_secs(cfg.failover_secs.min(cfg.lease_secs / 3).max(1));
    engine.sweep().await;
    let recovered = pipeline.recover(true).await;
    if recovered > 0 {
        tracing::info!(recovered, "received commands left unprocessed by the previous run are being handled");
    }
    let mut tasks = vec![engine.spawn_sweeper(sweep_every), pipeline.spawn_sweeper(sweep_every)];
    let monitor_every = engine
        .settings()
        .config
        .databases
        .values()
        .filter_map(|d| d.backup.as_ref())
        .filter_map(|b| runbot_commands::config::parse_duration(&b.check_every).ok())
        .min();
    tasks.extend(monitor_every.map(|every| engine.spawn_backup_monitor(every.max(Duration::from_secs(1)))));
    tasks
}

/// `/healthz`, `/readyz`, the console (when on), each adapter's routes and `/metrics` — one
/// registry: the engine's families, the listener's, the inbox's, each adapter's.
fn router(
    engine: &Engine,
    pipeline: &Arc<Pipeline>,
    store: &Arc<SqlStore>,
    adapters: &Arc<Vec<Box<dyn ChatAdapter>>>,
    console: Option<ConsoleState>,
    alerts: Option<runbot_adapters::alerts::Alerts>,
    conn_metrics: Arc<crate::connections::ConnectionMetrics>,
) -> Router {
    // What /readyz waits for besides the store: at least one way to receive commands, and
    // each adapter's socket transport connected.
    let mut transports = Vec::new();
    if console.is_some() {
        transports.push("console");
    }
    transports.extend(adapters.iter().flat_map(|a| a.transports()));
    tracing::info!(transports = ?transports, "receiving commands");
    let ready = Readiness { store: store.clone(), writable: tokio::sync::Mutex::new(None), transports, adapters: adapters.clone() };
    let mut app = Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(readyz)).with_state(Arc::new(ready));
    if let Some(state) = console {
        app = app.merge(console::router(state));
    }
    let mut registry = runbot_commands::metrics::Registry::default();
    engine.metrics().register(&mut registry);
    registry.register_collector(Box::new(conn_metrics));
    pipeline.register_metrics(&mut registry);
    if let Some(a) = alerts {
        registry.register_collector(Box::new(a.metrics.clone()));
        app = app.merge(a.router());
    }
    for a in adapters.iter() {
        if let Some(r) = a.routes() {
            app = app.merge(r);
        }
        a.register_metrics(&mut registry);
    }
    let registry = Arc::new(registry);
    app.route(
        "/metrics",
        get(move || async move {
            ([(axum::http::header::CONTENT_TYPE, runbot_commands::metrics::CONTENT_TYPE)], runbot_commands::metrics::encode(&registry))
        }),
    )
}

/// After the listener stopped: the adapters' sockets close, the commands acknowledged and
/// being acted on finish (within the grace period; the others stay in the inbox, recorded,
/// and the next start acts on them or says nothing was done), the audit head is anchored, then
/// the store closes.
async fn stop(adapters: &[Box<dyn ChatAdapter>], pipeline: &Pipeline, store: &SqlStore, anchorer: Option<&runbot_adapters::audit_anchor::Anchorer>) {
    for a in adapters {
        a.shutdown().await;
    }
    if !pipeline.drain(GRACE).await {
        tracing::warn!(in_flight = pipeline.in_flight(), "commands still being acted on after the grace period; the next start takes them over");
    }
    if let Some(a) = anchorer
        && tokio::time::timeout(GRACE, a.at_shutdown()).await.is_err()
    {
        tracing::error!(grace_s = GRACE.as_secs(), "the audit head could not be anchored within the grace period");
    }
    if tokio::time::timeout(GRACE, store.close()).await.is_err() {
        tracing::warn!(grace_s = GRACE.as_secs(), "store writes still in progress after the grace period; they roll back");
    }
}

/// What `/readyz` checks.
struct Readiness {
    store: Arc<SqlStore>,
    /// The last write probe: when, and why it failed (kept [`WRITE_PROBE_TTL`]).
    writable: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    /// The ways commands arrive (the console, each chat adapter's transports).
    transports: Vec<&'static str>,
    /// The chat adapters, each saying whether it can receive now.
    adapters: Arc<Vec<Box<dyn ChatAdapter>>>,
}

/// How long a store write probe's result is reused: probes of a busy load balancer do not each
/// write.
const WRITE_PROBE_TTL: Duration = Duration::from_secs(2);

/// Ready: the store answers with its migrations applied and takes a write (a full disk or a
/// read-only store is not ready), some chat adapter receives commands,
/// and Socket Mode and the Discord gateway (when configured) are connected. The body says
/// which, or what is missing.
async fn readyz(State(r): State<Arc<Readiness>>) -> (StatusCode, String) {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why);
    match (r.store.ping().await, r.store.migrations_applied().await) {
        (Ok(()), Ok(true)) => {}
        (Ok(()), _) => return unavailable("store migrations not applied".into()),
        (Err(e), _) => return unavailable(format!("store unreachable: {e}")),
    }
    let writable = {
        let mut last = r.writable.lock().await;
        match &*last {
            Some((at, res)) if at.elapsed() < WRITE_PROBE_TTL => res.clone(),
            _ => {
                let res = r.store.write_probe(Duration::from_secs(1)).await.map_err(|e| format!("{e:#}"));
                if let Err(why) = &res {
                    tracing::warn!(error = %why, "readiness: the store does not take writes");
                }
                *last = Some((tokio::time::Instant::now(), res.clone()));
                res
            }
        }
    };
    if let Err(why) = writable {
        return unavailable(format!("store cannot write: {why}"));
    }
    if r.transports.is_empty() {
        return unavailable("no chat adapter receives commands: enable [console] or configure [slack] or [discord]".into());
    }
    if let Some(why) = r.adapters.iter().find_map(|a| a.not_ready()) {
        return unavailable(why);
    }
    (StatusCode::OK, format!("ready: store, {}", r.transports.join(", ")))
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
