//! The chat inbox on the engine's side (`runbot_adapters::inbound::Pipeline` over the harness
//! world): a command recorded by a process that died before acting on it is acted on once by
//! the next process, or answered "nothing was done" when too old; two processes racing on one
//! recorded command create one execution and give one answer.

use chrono::TimeDelta;
use runbot_adapters::inbound::{Pipeline, RESTARTED, Replies, Work};
use runbot_commands::audit::AuditEntry;
use runbot_commands::engine::{Reply, Request};
use runbot_commands::model::{Identity, Origin};
use runbot_commands::ports::{Inbound, Store as _};
use runbot_tests::harness::{CHANNEL, World};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers as a platform would deliver them: kept, with their reply address.
#[derive(Default)]
struct Kept(Mutex<Vec<(String, Value)>>);

#[async_trait::async_trait]
impl Replies for Kept {
    async fn deliver(&self, reply: Reply, to: &Value) {
        self.0.lock().expect("kept").push((reply.message.text, to.clone()));
    }
}

impl Kept {
    fn texts(&self) -> Vec<String> {
        self.0.lock().expect("kept").iter().map(|(t, _)| t.clone()).collect()
    }

    async fn wait(&self, n: usize) -> Vec<String> {
        for _ in 0..500 {
            if self.texts().len() >= n {
                return self.texts();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("expected {n} answers, got {:?}", self.texts());
    }
}

/// Records `/ops run hello promotions` in the inbox as an adapter of `owner` would, `age` ago.
async fn recorded(w: &World, key: &str, owner: &str, age: TimeDelta) {
    let now = w.engine.now() - age;
    let req = Request {
        identity: Identity::new("console:alice"),
        origin: Origin { platform: "console".into(), channel: CHANNEL.into(), thread: None },
        text: "/ops run hello promotions".into(),
        roles: Vec::new(),
    };
    let item = Inbound {
        key: key.into(),
        platform: "console".into(),
        received_at: now,
        owner: owner.into(),
        lease_until: now + TimeDelta::seconds(30),
        payload: json!({"work": Work::Command(req), "reply_to": {"key": key}}),
        done: false,
    };
    let entry =
        AuditEntry { at: now, kind: "test.command".into(), actor: Some("console:alice".into()), execution: None, detail: json!({"key": key}) };
    assert!(w.store.record_inbound(item, entry).await.expect("record"));
}

async fn executions_of(w: &World, key: &str) -> usize {
    w.executions().await.iter().filter(|e| e.inbox.as_deref() == Some(key)).count()
}

fn pipeline(w: &World) -> (Arc<Pipeline>, Arc<Kept>) {
    let p = Pipeline::new(w.engine.clone());
    let kept = Arc::new(Kept::default());
    p.register("console", kept.clone());
    (p, kept)
}

#[tokio::test]
async fn a_command_recorded_by_a_process_that_died_is_acted_on_once_by_its_restart() {
    let mut w = World::new().await;
    let me = w.engine.settings().instance.clone();
    recorded(&w, "k-restart", &me, TimeDelta::seconds(5)).await;
    w.restart().await;
    let (p, kept) = pipeline(&w);
    assert_eq!(p.recover(true).await, 1, "the previous run's command is taken at start-up");
    let answers = kept.wait(1).await;
    assert!(answers[0].contains("created"), "{answers:?}");
    assert_eq!(executions_of(&w, "k-restart").await, 1);
    // Done: taken by nobody again, also not by another process after the lease.
    assert_eq!(p.recover(true).await, 0);
    let (other, _) = w.replica("other").await;
    assert_eq!(Pipeline::new(other).recover(false).await, 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(kept.texts().len(), 1, "answered once");
    assert_eq!(executions_of(&w, "k-restart").await, 1);
}

#[tokio::test]
async fn a_command_older_than_the_maximum_age_is_answered_not_done_and_creates_nothing() {
    let mut w = World::new().await;
    let me = w.engine.settings().instance.clone();
    recorded(&w, "k-old", &me, TimeDelta::minutes(10)).await;
    w.restart().await;
    let (p, kept) = pipeline(&w);
    assert_eq!(p.recover(true).await, 1);
    assert_eq!(kept.wait(1).await, vec![RESTARTED.to_string()]);
    assert_eq!(executions_of(&w, "k-old").await, 0, "nothing was done, as the answer says");
    assert_eq!(w.executions().await.len(), 0);
    assert!(w.audit().await.iter().any(|r| r.entry.kind == "inbox_expired" && r.entry.detail["key"] == "k-old"));
    assert_eq!(p.recover(true).await, 0, "answered once");
}

#[tokio::test]
async fn another_process_takes_a_dead_processes_command_only_once_its_lease_ran_out() {
    let w = World::new().await;
    recorded(&w, "k-lease", "dead-replica", TimeDelta::seconds(1)).await;
    let (p, kept) = pipeline(&w);
    assert_eq!(p.recover(false).await, 0, "within the dead process's lease: not yet");
    // Past the lease (recorded 40 s ago with a 30-s lease).
    recorded(&w, "k-lease-old", "dead-replica", TimeDelta::seconds(40)).await;
    assert_eq!(p.recover(false).await, 1);
    assert!(kept.wait(1).await[0].contains("created"));
    assert_eq!(executions_of(&w, "k-lease-old").await, 1);
}

#[tokio::test]
async fn two_processes_acting_on_one_recorded_command_create_one_execution_and_give_one_answer() {
    let w = World::new().await;
    recorded(&w, "k-race", "someone", TimeDelta::seconds(1)).await;
    let (other, _) = w.replica("other").await;
    let req = || Request {
        identity: Identity::new("console:alice"),
        origin: Origin { platform: "console".into(), channel: CHANNEL.into(), thread: None },
        text: "/ops run hello promotions".into(),
        roles: Vec::new(),
    };
    let (a, b) = tokio::join!(w.engine.handle_inbound_command(req(), "k-race"), other.handle_inbound_command(req(), "k-race"));
    let answered: Vec<Reply> = [a, b].into_iter().flatten().collect();
    assert_eq!(answered.len(), 1, "one answer: {answered:?}");
    assert!(answered[0].message.text.contains("created"), "{answered:?}");
    assert_eq!(executions_of(&w, "k-race").await, 1);
}
