//! The scenario `World`: a real `Engine` on in-memory fakes of its ports — a `MemoryStore`
//! (behind a switch that "kills" the process), a recording `console` chat, a `TokioClock`
//! (follows paused time) — with the shipped step kinds plus the test-only `probe` kind.
//! Helpers read like the runbooks: `cmd`, `click` (with the real button's value), `wait_for`,
//! `status_message`, `restart`, `reload_runbooks`.

pub mod chat;
pub mod config;
pub mod probe;
pub mod store;
pub mod writers;

pub use chat::RecordingChat;
pub use config::{CONFIG, RUNBOOKS, many_steps};
pub use probe::{Probe, Probes};
pub use store::KillableStore;

use runbot_commands::audit::{self, AuditRecord};
use runbot_commands::config::Settings;
use runbot_commands::engine::{Click, Engine, Reply, Request};
use runbot_commands::message::Message;
use runbot_commands::model::{Execution, ExecutionId, Identity, Origin};
use runbot_commands::ports::integrity::DbChecker;
use runbot_commands::ports::{Catalogs, Chat, Chats, Clusters, Store, TokioClock};
use runbot_commands::steps::{Connections, StepKinds};
use runbot_commands::store_memory::MemoryStore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The channel every command is typed in (and, with no incident channel configured, where the
/// status messages live).
pub const CHANNEL: &str = "ops";

/// How the world is built.
#[derive(Clone)]
pub struct Options {
    /// The config template (`{instance}`, `{interval}`, `{extra}` filled in): [`CONFIG`].
    pub config: String,
    /// Chat platforms besides `console`, each a [`RecordingChat`] (`World::on`).
    pub platforms: Vec<&'static str>,
    pub update_interval_ms: u64,
    /// Appended to the config (e.g. a `[limits]` section).
    pub extra_config: String,
    pub runbooks: String,
    pub max_text: usize,
    pub instance: String,
    /// How long `wait_for` and friends wait (tokio time) before failing.
    pub patience: Duration,
    /// Kubernetes clusters the shipped k8s step kinds act on (none by default).
    pub clusters: Clusters,
    /// Backup catalogs by database (none by default).
    pub catalogs: Catalogs,
    /// Runs `db-integrity` checks (none by default).
    pub checker: Option<Arc<dyn DbChecker>>,
    /// GitHub, registry, HTTP client and CLIs for the deploy kinds (none by default; its
    /// `services` are filled in from the config).
    pub deploy: runbot_commands::steps::deploy::DeployConnections,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: CONFIG.to_string(),
            platforms: Vec::new(),
            update_interval_ms: 20,
            extra_config: String::new(),
            runbooks: RUNBOOKS.to_string(),
            max_text: 3000,
            instance: "test-1".into(),
            patience: Duration::from_secs(15),
            clusters: Clusters::new(),
            catalogs: Catalogs::new(),
            checker: None,
            deploy: Default::default(),
        }
    }
}

pub struct World {
    pub engine: Engine,
    /// The durable state, shared across restarts.
    pub store: Arc<MemoryStore>,
    /// This process's handle on the store (cut off by `restart`).
    live: Arc<KillableStore>,
    pub chat: Arc<RecordingChat>,
    /// The other platforms' chats ([`Options::platforms`]), by platform.
    pub others: BTreeMap<&'static str, Arc<RecordingChat>>,
    pub probes: Probes,
    pub kinds: StepKinds,
    clock: Arc<TokioClock>,
    dir: tempfile::TempDir,
    opts: Options,
    deliveries: AtomicU64,
}

impl World {
    /// The standard world: config [`CONFIG`], runbooks [`RUNBOOKS`], 20 ms update interval.
    pub async fn new() -> World {
        World::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> World {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("runbooks.toml"), &opts.runbooks).expect("write runbooks.toml");
        let probes = Probes::default();
        // The integrity checks come from the settings; validation only needs the kinds' names,
        // so the settings are built once, with the kinds not yet connected (as `runbot serve`).
        let settings = build_settings(&opts, &opts.instance, dir.path(), &StepKinds::shipped().with(Arc::new(Probe { probes: probes.clone() })));
        let connections = Connections {
            clusters: opts.clusters.clone(),
            catalogs: opts.catalogs.clone(),
            checker: opts.checker.clone(),
            integrity: runbot_commands::steps::integrity::specs(&settings),
            deploy: runbot_commands::steps::deploy::DeployConnections {
                services: settings.config.services.clone(),
                databases: settings.config.databases.clone(),
                ..opts.deploy.clone()
            },
        };
        let kinds = StepKinds::shipped_for(&connections).with(Arc::new(Probe { probes: probes.clone() }));
        let store = Arc::new(MemoryStore::new());
        let live = Arc::new(KillableStore::new(store.clone()));
        let chat = Arc::new(RecordingChat::new(opts.max_text));
        let others: BTreeMap<_, _> = opts.platforms.iter().map(|p| (*p, Arc::new(RecordingChat::on(p, opts.max_text)))).collect();
        let clock = Arc::new(TokioClock::new());
        let engine = Engine::new(settings, live.clone(), chats(&chat, &others), clock.clone(), kinds.clone());
        engine.set_catalogs(opts.catalogs.clone());
        World { engine, store, live, chat, others, probes, kinds, clock, dir, opts, deliveries: AtomicU64::new(0) }
    }

    /// Settings from the world's config with another instance name.
    pub fn settings(&self, instance: &str) -> Settings {
        build_settings(&self.opts, instance, self.dir.path(), &self.kinds)
    }

    /// `who` types `text` in #ops; the reply is shown to them privately, as an adapter would.
    pub async fn cmd(&self, who: &str, text: &str) -> Reply {
        let identity = Identity::new(who);
        let reply = self.engine.handle_command(Request { identity: identity.clone(), origin: origin(), text: text.into(), roles: Vec::new() }).await;
        if reply.ephemeral {
            let _ = self.chat.ephemeral(CHANNEL, &identity, &reply.message).await;
        }
        reply
    }

    /// `who` types `text` in #ops, received by `engine` (a replica, [`World::replica`]).
    pub async fn cmd_via(&self, engine: &Engine, who: &str, text: &str) -> Reply {
        engine.handle_command(Request { identity: Identity::new(who), origin: origin(), text: text.into(), roles: Vec::new() }).await
    }

    /// `who` presses a button with `value` in #ops, received by `engine` (a replica).
    pub async fn click_via(&self, engine: &Engine, who: &str, value: &str) -> Reply {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst);
        let click =
            Click { identity: Identity::new(who), origin: origin(), value: value.into(), delivery: Some(format!("d-{n}")), roles: Vec::new() };
        engine.handle_click(click).await
    }

    /// The chat of another platform ([`Options::platforms`]).
    pub fn on(&self, platform: &str) -> &Arc<RecordingChat> {
        self.others.get(platform).unwrap_or_else(|| panic!("the world has no {platform} chat; add it to Options::platforms"))
    }

    /// `who` types `text` in `channel` on `platform` (one of [`Options::platforms`]).
    pub async fn cmd_from(&self, platform: &str, channel: &str, who: &str, text: &str) -> Reply {
        let origin = Origin { platform: platform.into(), channel: channel.into(), thread: None };
        self.engine.handle_command(Request { identity: Identity::new(who), origin, text: text.into(), roles: Vec::new() }).await
    }

    /// `who` presses a button with `value` on `platform`, as its adapter would deliver it.
    pub async fn click_from(&self, platform: &str, channel: &str, who: &str, value: &str) -> Reply {
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst);
        let origin = Origin { platform: platform.into(), channel: channel.into(), thread: None };
        let click = Click { identity: Identity::new(who), origin, value: value.into(), delivery: Some(format!("d-{n}")), roles: Vec::new() };
        self.engine.handle_click(click).await
    }

    /// `who` types a runbook command that must create an execution; returns its id.
    pub async fn request(&self, who: &str, text: &str) -> ExecutionId {
        let reply = self.cmd(who, text).await;
        created(&reply)
    }

    /// The value of a button on the execution's status message, waiting for it to appear.
    pub async fn button(&self, id: ExecutionId, action: &str) -> String {
        let msg = self.wait_message(id, &format!("a {action} button"), |m| m.buttons.iter().any(|b| b.action_id == action)).await;
        msg.buttons.into_iter().find(|b| b.action_id == action).map(|b| b.value).unwrap_or_default()
    }

    /// `who` presses the `action` button (approve, reject, resume, abort) on the status message.
    pub async fn click(&self, who: &str, id: ExecutionId, action: &str) -> Reply {
        let value = self.button(id, action).await;
        let n = self.deliveries.fetch_add(1, Ordering::SeqCst);
        self.click_value(who, &value, Some(&format!("d-{n}"))).await
    }

    /// A click with an explicit button value and delivery id.
    pub async fn click_value(&self, who: &str, value: &str, delivery: Option<&str>) -> Reply {
        self.engine
            .handle_click(Click {
                identity: Identity::new(who),
                origin: origin(),
                value: value.into(),
                delivery: delivery.map(str::to_string),
                roles: Vec::new(),
            })
            .await
    }

    /// The execution as stored.
    pub async fn exec(&self, id: ExecutionId) -> Execution {
        self.store.load(id).await.expect("load").unwrap_or_else(|| panic!("{id} is not in the store")).value
    }

    /// Every stored execution, newest first.
    pub async fn executions(&self) -> Vec<Execution> {
        self.store.list(&Default::default()).await.expect("list")
    }

    /// A step's whole output as stored in the execution log (`step` counts from 0).
    pub async fn output(&self, id: ExecutionId, step: usize) -> String {
        self.store.output(id, step).await.expect("output")
    }

    /// Polls (tokio time) until `pred` holds for the stored execution.
    pub async fn wait_for(&self, id: ExecutionId, what: &str, pred: impl Fn(&Execution) -> bool) -> Execution {
        let deadline = tokio::time::Instant::now() + self.opts.patience;
        loop {
            let exec = self.exec(id).await;
            if pred(&exec) {
                return exec;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{id}: waited {:?} for {what}; it is {:#?}", self.opts.patience, summary(&exec));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for an execution state (`running`, `succeeded`, ...).
    pub async fn wait_state(&self, id: ExecutionId, state: &str) -> Execution {
        self.wait_for(id, &format!("state {state}"), |e| e.state.as_str() == state).await
    }

    /// The id of the status message of an execution (its first message).
    pub async fn status_message_id(&self, id: ExecutionId) -> String {
        let exec = self.wait_for(id, "a status message", |e| !e.messages.is_empty()).await;
        exec.messages[0].id.clone()
    }

    /// The latest content of the status message, as seen in the channel.
    pub async fn status_message(&self, id: ExecutionId) -> Message {
        let exec = self.wait_for(id, "a status message", |e| !e.messages.is_empty()).await;
        let r = &exec.messages[0];
        let chat = if r.platform == "console" { &self.chat } else { self.on(&r.platform) };
        chat.latest(&r.id).unwrap_or_else(|| panic!("the {} chat does not know message {}", r.platform, r.id))
    }

    /// Polls until the status message satisfies `pred`.
    pub async fn wait_message(&self, id: ExecutionId, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + self.opts.patience;
        loop {
            let msg = self.status_message(id).await;
            if pred(&msg) {
                return msg;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{id}: waited {:?} for {what} on the status message; it shows:\n{}", self.opts.patience, msg.all_text());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the status message text contains `needle`.
    pub async fn wait_text(&self, id: ExecutionId, needle: &str) -> Message {
        self.wait_message(id, &format!("'{needle}'"), |m| m.all_text().contains(needle)).await
    }

    /// Simulates a process restart with the same instance name: see [`World::restart_as`].
    pub async fn restart(&mut self) {
        let instance = self.opts.instance.clone();
        self.restart_as(&instance).await;
    }

    /// Simulates a process restart: the old engine is cut off from the store (it can no longer
    /// change anything; its tasks die out), a NEW engine is built on the same store with a
    /// fresh chat fake that still knows the old message ids, and it sweeps once, as at start-up.
    pub async fn restart_as(&mut self, instance: &str) {
        self.live.kill();
        self.live = Arc::new(KillableStore::new(self.store.clone()));
        self.chat = Arc::new(self.chat.continuing());
        self.others = self.others.iter().map(|(p, c)| (*p, Arc::new(c.continuing()))).collect();
        self.opts.instance = instance.to_string();
        let settings = self.settings(instance);
        self.engine = Engine::new(settings, self.live.clone(), chats(&self.chat, &self.others), self.clock.clone(), self.kinds.clone());
        self.engine.set_catalogs(self.opts.catalogs.clone());
        self.engine.sweep().await;
    }

    /// Makes this process's `n`th store write from now fail (see [`KillableStore::fail_write`]).
    pub fn fail_write(&self, n: i64) {
        self.live.fail_write(n);
    }

    /// Cuts this process off from the store (`true`: a partition or a long pause) or
    /// reconnects it (`false`); unlike a restart, the process and its tasks live on.
    pub fn partition(&self, down: bool) {
        self.live.set_down(down);
    }

    /// A second process (replica) named `instance` on the same store, with its own chat fake
    /// on the same platform. It sweeps once, as at start-up.
    pub async fn replica(&self, instance: &str) -> (Engine, Arc<RecordingChat>) {
        let chat = Arc::new(self.chat.continuing());
        let live = Arc::new(KillableStore::new(self.store.clone()));
        let others = self.others.iter().map(|(p, c)| (*p, Arc::new(c.continuing()))).collect();
        let engine = Engine::new(self.settings(instance), live, chats(&chat, &others), self.clock.clone(), self.kinds.clone());
        engine.set_catalogs(self.opts.catalogs.clone());
        engine.sweep().await;
        (engine, chat)
    }

    /// Rewrites the runbooks file and reloads the engine's settings from it.
    pub fn reload_runbooks(&mut self, runbooks: &str) {
        std::fs::write(self.dir.path().join("runbooks.toml"), runbooks).expect("write runbooks.toml");
        self.opts.runbooks = runbooks.to_string();
        let settings = self.settings(&self.opts.instance);
        self.engine.reload(settings);
    }

    /// The audit log, checked: it must verify.
    pub async fn audit(&self) -> Vec<AuditRecord> {
        let (records, head) = self.store.audit_log().await.expect("audit_log");
        let n =
            audit::verify(&records, head.as_ref().map(|(s, h)| (*s, h.as_str()))).unwrap_or_else(|p| panic!("the audit log does not verify: {p:?}"));
        assert_eq!(n as usize, records.len());
        records
    }
}

fn origin() -> Origin {
    Origin { platform: "console".into(), channel: CHANNEL.into(), thread: None }
}

fn chats(chat: &Arc<RecordingChat>, others: &BTreeMap<&'static str, Arc<RecordingChat>>) -> Chats {
    others.values().fold(Chats::new().with(chat.clone() as Arc<dyn Chat>), |c, o| c.with(o.clone() as Arc<dyn Chat>))
}

fn build_settings(opts: &Options, instance: &str, base: &std::path::Path, kinds: &StepKinds) -> Settings {
    let text = opts
        .config
        .replace("{instance}", instance)
        .replace("{interval}", &opts.update_interval_ms.to_string())
        .replace("{extra}", &opts.extra_config);
    Settings::from_toml(&text, base, kinds).unwrap_or_else(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        panic!("the test config does not validate:\n{}", lines.join("\n"))
    })
}

/// The execution id from a "R-7 created — ..." reply.
pub fn created(reply: &Reply) -> ExecutionId {
    let text = &reply.message.text;
    assert!(text.contains(" created"), "expected an execution to be created, got: {text}");
    text.split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or_else(|| panic!("no execution id in: {text}"))
}

/// A readable one-screen view of an execution for failure messages.
fn summary(e: &Execution) -> String {
    let steps: Vec<String> =
        e.steps.iter().map(|s| format!("{} {} [{}] {}", s.name, s.kind, s.status.as_str(), s.summary.clone().unwrap_or_default())).collect();
    format!("{} {} state={} current={}\nsteps: {steps:#?}\nnotes: {:#?}", e.id, e.runbook, e.state.as_str(), e.current, e.notes)
}
