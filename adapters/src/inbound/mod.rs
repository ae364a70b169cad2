//! The one inbound path of every chat platform, and the seam a platform plugs into.
//!
//! A platform's transport (an HTTP route, Socket Mode, the Discord gateway) verifies what it
//! received and reads it into a [`Received`]: a de-duplication key, the work (a command or
//! clicks), where to answer, and its audit record. From there every platform shares one path,
//! [`Pipeline::receive`]:
//!
//! 1. **de-duplicate and record durably**: `Store::record_inbound` writes the inbox entry and
//!    its audit record in one (group-committed) transaction, or nothing when the key was seen;
//! 2. the transport **acknowledges** (with an answer that was ready at once, when it can);
//! 3. **process**: the engine acts — an execution it creates consumes the inbox entry in the
//!    same transaction, so a command is acted on once — and the answer is delivered through the
//!    platform's [`Replies`];
//! 4. **done**: the entry is marked processed (a group-committed write).
//!
//! A command whose answer needs nothing but the command ([`Engine::answer_at_once`]: help,
//! whoami, a typo) is answered before step 1 when the transport can carry the answer in its
//! acknowledgement, and recorded already processed: one write, nothing left to mark or take
//! over. Should the process die before the ack leaves, the platform shows the person that the
//! command failed (no ack), and nothing was done.
//!
//! An entry still unprocessed when its process died is taken over by [`Pipeline::recover`]: at
//! start-up (the entries of this process's previous run) and by the periodic sweep (another
//! replica's, once their lease ran out). A command still within `[engine] inbox_max_age_secs`
//! is processed then; an older one is answered "runbot restarted before acting on your command;
//! nothing was done". Clicks are always processed: the engine re-checks everything they name.
//!
//! A platform is two traits: [`Replies`] (how to answer someone, used by the pipeline, also for
//! recovered commands) and [`ChatAdapter`] (what `runbot serve` wires: routes, readiness,
//! metrics, shutdown).

use async_trait::async_trait;
use axum::body::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use runbot_commands::audit::AuditEntry;
use runbot_commands::engine::{Click, Engine, Reply, Request};
use runbot_commands::metrics::{self, Collector, DescriptorEncoder, Registry};
use runbot_commands::ports::{Inbound, InboxClaim};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// What the person is told about a command recorded before a restart and too old to act on.
pub const RESTARTED: &str = "runbot restarted before acting on your command; nothing was done.";
/// Done entries are kept this long to recognise repeated deliveries, then forgotten.
const KEEP_DONE: TimeDelta = TimeDelta::days(1);

/// The work a received item asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    Command(Request),
    /// One delivery may carry several buttons (Slack's `actions`).
    Clicks {
        clicks: Vec<Click>,
    },
}

/// One verified delivery from a chat platform, read by its transport.
#[derive(Debug, Clone)]
pub struct Received {
    pub platform: &'static str,
    /// The platform's stable key for this delivery: a repeat with the same key is not acted on.
    pub key: String,
    pub work: Work,
    /// Where to answer, in the platform's own terms (kept with the entry for a later answer).
    pub reply_to: Value,
    /// The audit record (`slack.command`, `discord.click`, ...).
    pub audit_kind: &'static str,
    pub audit_detail: Value,
}

/// What became of a delivery, for the transport's acknowledgement.
#[derive(Debug)]
pub enum Outcome {
    /// Recorded; the answer follows through [`Replies::deliver`].
    Accepted,
    /// Recorded and answered at once: this body (JSON) goes in the acknowledgement.
    Answered(Bytes),
    /// Its key was recorded before: not acted on again.
    Duplicate,
    /// It could not be recorded (the store failed): nothing was done.
    NotRecorded,
}

/// How a platform answers the person who acted.
#[async_trait]
pub trait Replies: Send + Sync + 'static {
    /// Shows `reply` as `to` (a [`Received::reply_to`]) says.
    async fn deliver(&self, reply: Reply, to: &Value);

    /// An answer ready before the acknowledgement, as the acknowledgement's body — when the
    /// transport can carry it (Slack's immediate response), encoded as JSON. `None`: deliver
    /// it as usual.
    fn inline_answer(&self, _reply: &mut Reply) -> Option<Bytes> {
        None
    }
}

/// A chat platform as `runbot serve` wires it: its transports, routes, readiness and metrics.
#[async_trait]
pub trait ChatAdapter: Send + Sync {
    /// What it receives through, for `/readyz` (e.g. `slack (HTTP)`, `discord (gateway)`).
    fn transports(&self) -> Vec<&'static str>;
    /// Its webhook routes, when it has any.
    fn routes(&self) -> Option<axum::Router>;
    /// Why it cannot receive commands now; `None` when it can.
    fn not_ready(&self) -> Option<String>;
    /// Adds its counters to the metrics registry.
    fn register_metrics(&self, registry: &mut Registry);
    /// Stops its socket transports.
    async fn shutdown(&self);
}

/// The pipeline's counters (`runbot_inbox_*`).
#[derive(Debug, Default)]
pub struct Metrics {
    recorded: AtomicU64,
    duplicates: AtomicU64,
    not_recorded: AtomicU64,
    recovered: AtomicU64,
    expired: AtomicU64,
    unanswerable: AtomicU64,
}

/// The shared inbound path (see the module docs). One per process.
pub struct Pipeline {
    engine: Engine,
    replies: RwLock<HashMap<&'static str, Arc<dyn Replies>>>,
    /// Keys being processed in this process (recovery leaves them alone).
    in_flight: Mutex<HashSet<String>>,
    metrics: Metrics,
}

impl Pipeline {
    pub fn new(engine: Engine) -> Arc<Pipeline> {
        Arc::new(Pipeline { engine, replies: RwLock::default(), in_flight: Mutex::default(), metrics: Metrics::default() })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Registers how `platform` answers (its adapter does, when built).
    pub fn register(&self, platform: &'static str, replies: Arc<dyn Replies>) {
        self.replies.write().unwrap_or_else(|e| e.into_inner()).insert(platform, replies);
    }

    fn replies(&self, platform: &str) -> Option<Arc<dyn Replies>> {
        self.replies.read().unwrap_or_else(|e| e.into_inner()).get(platform).cloned()
    }

    fn lease(&self) -> TimeDelta {
        TimeDelta::seconds(i64::try_from(self.engine.settings().config.engine.lease_secs).unwrap_or(30))
    }

    fn track(&self, key: &str, on: bool) {
        let mut set = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            set.insert(key.to_string());
        } else {
            set.remove(key);
        }
    }

    /// Commands and clicks being processed in this process now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Waits until nothing is being processed, at most `within` (shutdown).
    pub async fn drain(&self, within: Duration) -> bool {
        let until = tokio::time::Instant::now() + within;
        while self.in_flight() > 0 {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// De-duplicates and records `r`, then starts processing it (see the module docs). `place`
    /// is the delivery's place among the work in flight (`crate::backlog`), held until its
    /// answer is delivered. With `inline` (the transport can carry an answer in its
    /// acknowledgement), a command whose answer needs nothing but the command
    /// ([`Engine::answer_at_once`]: help, whoami, a typo) is answered before it is recorded and
    /// recorded as processed, in the same single write: [`Outcome::Answered`].
    pub async fn receive(self: &Arc<Self>, r: Received, place: Option<OwnedSemaphorePermit>, inline: bool) -> Outcome {
        let now = self.engine.now();
        let replies = self.replies(r.platform);
        // The answer worked out from the command alone, and its body for the acknowledgement.
        let (mut at_once, mut body) = (None, None);
        if let (true, Work::Command(req), Some(replies)) = (inline, &r.work, &replies)
            && let Some(mut reply) = self.engine.answer_at_once(req)
        {
            body = replies.inline_answer(&mut reply);
            at_once = Some(reply);
        }
        let item = Inbound {
            key: r.key.clone(),
            platform: r.platform.to_string(),
            received_at: now,
            owner: self.engine.settings().instance.clone(),
            lease_until: now + self.lease(),
            // Recorded processed, an entry is never acted on from the inbox: it keeps its key
            // (a repeat is recognised), not what to act on.
            payload: if body.is_some() { Value::Null } else { json!({"work": r.work, "reply_to": r.reply_to}) },
            done: body.is_some(),
        };
        let entry = AuditEntry { at: now, kind: r.audit_kind.to_string(), actor: actor(&r.work), execution: None, detail: r.audit_detail };
        match self.engine.store().record_inbound(item, entry).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::info!(platform = r.platform, key = %r.key, "repeated delivery not acted on again");
                return Outcome::Duplicate;
            }
            Err(e) => {
                self.metrics.not_recorded.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, platform = r.platform, "could not record a received command; nothing was done");
                return Outcome::NotRecorded;
            }
        }
        self.metrics.recorded.fetch_add(1, Ordering::Relaxed);
        if let Some(body) = body {
            return Outcome::Answered(body);
        }
        self.track(&r.key, true);
        let Some(replies) = replies else {
            // Wiring error: the transport runs without its replies registered.
            tracing::error!(platform = r.platform, "no replies registered for this platform; the command stays in the inbox");
            self.track(&r.key, false);
            return Outcome::Accepted;
        };
        let this = self.clone();
        tokio::spawn(async move {
            // Lets the acknowledgements that are ready go out before this work.
            tokio::task::yield_now().await;
            // An answer worked out already that the acknowledgement could not carry is
            // delivered as any other; everything else is acted on now.
            let answers = match at_once {
                Some(reply) => vec![reply],
                None => process(this.engine.clone(), r.work, r.key.clone()).await,
            };
            this.answer(&*replies, answers, &r.reply_to, &r.key).await;
            drop(place);
        });
        Outcome::Accepted
    }

    async fn answer(&self, replies: &dyn Replies, answers: Vec<Reply>, to: &Value, key: &str) {
        for reply in answers {
            replies.deliver(reply, to).await;
        }
        self.done(key).await;
    }

    /// Marks `key` processed. If this fails the entry is taken over later: its command acted on
    /// again finds its execution's consumption (no second execution) or answers again.
    async fn done(&self, key: &str) {
        if let Err(e) = self.engine.store().inbound_done(&[key.to_string()]).await {
            tracing::warn!(error = %e, key, "could not mark a received command done; it will be looked at again");
        }
        self.track(key, false);
    }

    /// Takes over recorded-but-unprocessed entries: with `own`, those of this process's previous
    /// run (at start-up, before new deliveries are taken); always, those whose lease ran out.
    /// Returns how many were taken.
    pub async fn recover(self: &Arc<Self>, own: bool) -> usize {
        let now = self.engine.now();
        let claim =
            InboxClaim { owner: self.engine.settings().instance.clone(), own, until: now + self.lease(), now, forget_before: now - KEEP_DONE };
        let items = match self.engine.store().claim_inbound(&claim).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "could not look for received commands left unprocessed");
                return 0;
            }
        };
        let max_age = TimeDelta::seconds(i64::try_from(self.engine.settings().config.engine.inbox_max_age_secs).unwrap_or(i64::MAX));
        let mut taken = 0;
        for item in items {
            if self.in_flight.lock().unwrap_or_else(|e| e.into_inner()).contains(&item.key) {
                continue;
            }
            taken += 1;
            let this = self.clone();
            tokio::spawn(async move { this.recover_one(item, now, max_age).await });
        }
        taken
    }

    async fn recover_one(&self, item: Inbound, now: DateTime<Utc>, max_age: TimeDelta) {
        let (work, to) = match serde_json::from_value::<Work>(item.payload["work"].clone()) {
            Ok(w) => (w, item.payload["reply_to"].clone()),
            Err(e) => {
                tracing::error!(error = %e, key = %item.key, "a recorded command is unreadable; marking it done");
                self.done(&item.key).await;
                return;
            }
        };
        let Some(replies) = self.replies(&item.platform) else {
            self.metrics.unanswerable.fetch_add(1, Ordering::Relaxed);
            tracing::error!(platform = %item.platform, key = %item.key, "a recorded command's platform is not configured; it stays unprocessed");
            return;
        };
        self.track(&item.key, true);
        let late = matches!(work, Work::Command(_)) && now - item.received_at > max_age;
        if late {
            self.metrics.expired.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(key = %item.key, received_at = %item.received_at, "a recorded command is too old to act on now; answering that nothing was done");
            let entry = AuditEntry {
                at: now,
                kind: "inbox_expired".into(),
                actor: actor(&work),
                execution: None,
                detail: json!({"key": item.key, "received_at": item.received_at}),
            };
            if let Err(e) = self.engine.store().append_audit(&entry).await {
                tracing::warn!(error = %e, "could not record that a received command expired");
            }
            self.answer(&*replies, vec![Reply::private(RESTARTED)], &to, &item.key).await;
            return;
        }
        self.metrics.recovered.fetch_add(1, Ordering::Relaxed);
        tracing::info!(key = %item.key, received_at = %item.received_at, "acting on a recorded command left unprocessed");
        let answers = process(self.engine.clone(), work, item.key.clone()).await;
        self.answer(&*replies, answers, &to, &item.key).await;
    }

    /// Re-runs [`Pipeline::recover`] (not `own`) every `every`: another replica's entries once
    /// their lease ran out.
    pub fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                this.recover(false).await;
            }
        })
    }

    /// Adds `runbot_inbox_*` to the metrics registry.
    pub fn register_metrics(self: &Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(InboxMetrics(self.clone())));
    }
}

/// The transports that are on, by name (for [`ChatAdapter::transports`]).
pub fn transports_on(transports: &[(bool, &'static str)]) -> Vec<&'static str> {
    transports.iter().filter(|(on, _)| *on).map(|(_, t)| *t).collect()
}

/// "R-7 created — follow it in #create": names the channel created for the execution
/// (`created(id)`, the platform's memory of it) in place of `#<placeholder>`.
pub fn name_created_channel(msg: &mut runbot_commands::message::Message, placeholder: &str, created: impl Fn(&str) -> Option<String>) {
    let placeholder = format!("#{placeholder}");
    if msg.text.contains(&placeholder)
        && let Some(id) = msg.text.split_whitespace().next().filter(|w| w.starts_with("R-"))
        && let Some(c) = created(id)
    {
        msg.text = msg.text.replace(&placeholder, &format!("#{c}"));
    }
}

/// The pipeline's counters as a [`Collector`].
struct InboxMetrics(Arc<Pipeline>);

impl std::fmt::Debug for InboxMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboxMetrics")
    }
}

impl Collector for InboxMetrics {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let m = &self.0.metrics;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let outcomes = [
            ("recorded", g(&m.recorded)),
            ("duplicate", g(&m.duplicates)),
            ("not_recorded", g(&m.not_recorded)),
            ("recovered", g(&m.recovered)),
            ("expired", g(&m.expired)),
            ("unanswerable", g(&m.unanswerable)),
        ];
        let help = "Chat commands and clicks by what became of them on arrival or after a restart.";
        metrics::counters(&mut enc, "runbot_inbox", help, "outcome", &outcomes)?;
        let in_flight = i64::try_from(self.0.in_flight()).unwrap_or(i64::MAX);
        metrics::gauge(&mut enc, "runbot_inbox_in_flight", "Chat commands and clicks being processed in this process.", in_flight)
    }
}

fn actor(work: &Work) -> Option<String> {
    match work {
        Work::Command(r) => Some(r.identity.0.clone()),
        Work::Clicks { clicks } => clicks.first().map(|c| c.identity.0.clone()),
    }
}

/// Acts on `work`; the answers to deliver (none when another process acted on it first).
async fn process(engine: Engine, work: Work, key: String) -> Vec<Reply> {
    match work {
        Work::Command(req) => engine.handle_inbound_command(req, &key).await.into_iter().collect(),
        Work::Clicks { clicks } => {
            let mut answers = Vec::with_capacity(clicks.len());
            for c in clicks {
                answers.push(engine.handle_click(c).await);
            }
            answers
        }
    }
}
