//! The sandbox Docker Swarm: services and their tasks on one node, kept in a JSON file (named
//! by `RUNBOT_SANDBOX_SWARM` for the `docker` stand-in). Every access takes an exclusive lock
//! on `<file>.lock`, replays what happened since the last access from timestamps, applies its
//! change and replaces the file atomically (write + rename), so concurrent CLI calls and
//! tests see one consistent history.
//!
//! # How the Swarm moves (`d` = the converge delay, [`SandboxSwarm::set_timing`])
//! - A task is `preparing` for `d/2`, `starting` until `d`, then `running`.
//! - A task of a crashing image ([`SwarmBehavior::Crash`], decided when the task is created)
//!   runs for `d/4`, then `failed` with `task: non-zero exit (N)` (desired state `shutdown`);
//!   `d/2` later (the restart delay) a new task replaces it in the same slot with the
//!   service's current image — again and again.
//! - An image update (`service update --image`, `stack deploy` with a new image, a rollback)
//!   is a rolling update as Swarm's defaults make it: one slot at a time, stop-first; a slot is
//!   done when its new task has run `d/2` (the monitor window) without failing; the next slot
//!   starts then. When a new task fails the update is `paused` (failure action `pause`) with
//!   `update paused due to failure or early termination of task <id>`; the remaining slots
//!   keep the old image. The service's `PreviousSpec` is the spec before the update.
//! - Each slot keeps at most 5 tasks (Swarm's task history limit).

use runbot_commands::setup::{SetupError, SetupResult};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What the containers of an image do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwarmBehavior {
    Healthy,
    /// Exits with `exit_code` shortly after starting. `error`: the task's error text
    /// (default `task: non-zero exit (<exit_code>)`).
    Crash {
        exit_code: i32,
        error: Option<String>,
    },
}

/// A service as `docker service inspect` / `ps` would describe it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub image: String,
    /// The image of `PreviousSpec`, after an update.
    pub previous_image: Option<String>,
    pub replicas: u64,
    pub version: u64,
    /// `UpdateStatus.State`: `updating`, `paused`, `completed`, `rollback_started`,
    /// `rollback_paused`, `rollback_completed`.
    pub update_state: Option<String>,
    pub update_message: Option<String>,
    /// Newest first within each slot, slots in order.
    pub tasks: Vec<TaskView>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub slot: u64,
    pub image: String,
    /// `running` or `shutdown`.
    pub desired_state: String,
    /// `preparing`, `starting`, `running`, `failed`, `shutdown`.
    pub state: String,
    pub error: Option<String>,
}

/// A handle on a sandbox Swarm's state file.
#[derive(Clone, Debug)]
pub struct SandboxSwarm {
    path: PathBuf,
}

impl SandboxSwarm {
    /// Creates (or resets) the Swarm at `path`: no services, every image healthy, converge
    /// delay 1 s.
    pub fn create(path: impl AsRef<Path>) -> SetupResult<SandboxSwarm> {
        let s = SandboxSwarm { path: path.as_ref().to_path_buf() };
        let st = State {
            server_version: "24.0.7".into(),
            node_id: new_id(0, "node"),
            node_name: "sandbox-node-1".into(),
            converge_ms: 1000,
            behaviors: BTreeMap::new(),
            services: BTreeMap::new(),
            seq: 1,
            index: 10,
        };
        let _lock = s.lock().map_err(SetupError)?;
        s.save(&st).map_err(SetupError)?;
        Ok(s)
    }

    /// An existing Swarm file.
    pub fn open(path: impl AsRef<Path>) -> SandboxSwarm {
        SandboxSwarm { path: path.as_ref().to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tasks created from now on with `image` (`repo:tag`) — or with any image of that tag,
    /// when `image_or_tag` has no `:` — behave so.
    pub fn set_behavior(&self, image_or_tag: &str, b: SwarmBehavior) -> SetupResult<()> {
        self.with(|st, _| {
            st.behaviors.insert(image_or_tag.to_string(), b);
            Ok(())
        })
        .map_err(SetupError)
    }

    /// The converge delay `d` (at least 10 ms).
    pub fn set_timing(&self, converge_delay: Duration) -> SetupResult<()> {
        self.with(|st, _| {
            st.converge_ms = (converge_delay.as_millis() as i64).max(10);
            Ok(())
        })
        .map_err(SetupError)
    }

    /// Creates (or replaces) service `name` already converged: `replicas` tasks running
    /// `image` since a moment ago. For seeding; `docker stack deploy` is the CLI's way.
    pub fn deploy_service(&self, name: &str, image: &str, replicas: u64) -> SetupResult<()> {
        self.with(|st, now| {
            let stack = name.split_once('_').map(|(s, _)| s.to_string());
            st.create_service(name, stack.as_deref(), image, replicas, now - 2 * st.converge_ms);
            Ok(())
        })
        .map_err(SetupError)
    }

    /// The service now, `None` if there is none.
    pub fn service(&self, name: &str) -> SetupResult<Option<ServiceView>> {
        self.with(|st, now| Ok(st.find(name).map(|s| s.view(now, st.converge_ms)))).map_err(SetupError)
    }

    /// The images of the service's tasks that are running now (desired and actual), by slot.
    pub fn running_images(&self, service: &str) -> SetupResult<Vec<String>> {
        Ok(self
            .service(service)?
            .map(|v| v.tasks.into_iter().filter(|t| t.state == "running" && t.desired_state == "running").map(|t| t.image).collect())
            .unwrap_or_default())
    }

    fn lock(&self) -> Result<std::fs::File, String> {
        let lock_path = format!("{}.lock", self.path.display());
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open the swarm lock {lock_path}: {e}"))?;
        f.lock().map_err(|e| format!("cannot lock {lock_path}: {e}"))?;
        Ok(f)
    }

    fn save(&self, st: &State) -> Result<(), String> {
        let tmp = format!("{}.tmp.{}", self.path.display(), std::process::id());
        let text = serde_json::to_string_pretty(st).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, text).map_err(|e| format!("cannot write {tmp}: {e}"))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("cannot replace {}: {e}", self.path.display()))
    }

    /// Locks, loads, catches up to now, runs `f`, saves. A missing file is a daemon that is
    /// not there.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut State, i64) -> Result<T, String>) -> Result<T, String> {
        let _lock = self.lock()?;
        let text = std::fs::read_to_string(&self.path).map_err(|_| NO_DAEMON.to_string())?;
        let mut st: State = serde_json::from_str(&text).map_err(|e| format!("corrupt swarm state {}: {e}", self.path.display()))?;
        let now = now_ms();
        st.advance(now);
        let r = f(&mut st, now);
        self.save(&st)?;
        r
    }
}

pub(crate) const NO_DAEMON: &str = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A Docker-style object ID: 25 characters of `[a-z0-9]`.
fn new_id(seq: u64, salt: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let digest = Sha256::digest(format!("{seq}/{salt}/{nanos}/{}", std::process::id()));
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    digest.iter().take(25).map(|b| ALPHABET[(*b as usize) % 36] as char).collect()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub server_version: String,
    pub node_id: String,
    pub node_name: String,
    pub converge_ms: i64,
    pub behaviors: BTreeMap<String, SwarmBehavior>,
    pub services: BTreeMap<String, Service>,
    pub seq: u64,
    /// The store's version counter (`Version.Index`).
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Spec {
    pub image: String,
    pub replicas: u64,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Update {
    pub state: String,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub message: String,
    /// The slot being updated and its new task.
    pub slot: u64,
    pub task: Option<String>,
    /// The slots the update replaces (those that existed before it; new slots start on the
    /// new image).
    pub last_slot: u64,
}

impl Update {
    fn rollback(&self) -> bool {
        self.state.starts_with("rollback")
    }
    fn in_progress(&self) -> bool {
        matches!(self.state.as_str(), "updating" | "rollback_started")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Service {
    pub id: String,
    pub name: String,
    pub stack: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: u64,
    pub spec: Spec,
    pub previous_spec: Option<Spec>,
    pub update: Option<Update>,
    pub tasks: Vec<Task>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Task {
    pub id: String,
    pub slot: u64,
    pub image: String,
    pub created: i64,
    /// A crashing task's error text, decided when it was created.
    pub crash: Option<String>,
    pub shutdown_at: Option<i64>,
    /// Its failure was handled (restart scheduled, update paused).
    pub failure_seen: bool,
    pub restart_at: Option<i64>,
}

impl Task {
    pub fn fails_at(&self, d: i64) -> Option<i64> {
        let f = self.created + d + d / 4;
        self.crash.as_ref().map(|_| f).filter(|f| self.shutdown_at.is_none_or(|s| s > *f))
    }

    /// The state at `t` and since when.
    pub fn state(&self, t: i64, d: i64) -> (&'static str, i64) {
        if let Some(f) = self.fails_at(d)
            && t >= f
        {
            return ("failed", f);
        }
        if let Some(s) = self.shutdown_at
            && t >= s
        {
            return ("shutdown", s);
        }
        if t >= self.created + d {
            ("running", self.created + d)
        } else if t >= self.created + d / 2 {
            ("starting", self.created + d / 2)
        } else {
            ("preparing", self.created)
        }
    }

    pub fn live(&self, t: i64, d: i64) -> bool {
        !matches!(self.state(t, d).0, "failed" | "shutdown")
    }

    pub fn error(&self, t: i64, d: i64) -> Option<String> {
        (self.state(t, d).0 == "failed").then(|| self.crash.clone()).flatten()
    }
}

enum Event {
    Fail(usize),
    Restart(usize),
    SlotDone,
}

impl State {
    pub fn find(&self, name_or_id: &str) -> Option<&Service> {
        self.services
            .get(name_or_id)
            .or_else(|| self.services.values().find(|s| s.id == name_or_id || (name_or_id.len() >= 3 && s.id.starts_with(name_or_id))))
    }

    pub fn find_name(&self, name_or_id: &str) -> Option<String> {
        self.find(name_or_id).map(|s| s.name.clone())
    }

    fn next_id(&mut self, salt: &str) -> String {
        self.seq += 1;
        new_id(self.seq, salt)
    }

    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    fn crash_for(&self, image: &str) -> Option<String> {
        let tag = image.rsplit_once(':').filter(|(_, t)| !t.contains('/')).map(|(_, t)| t);
        let b = self.behaviors.get(image).or_else(|| tag.and_then(|t| self.behaviors.get(t)))?;
        match b {
            SwarmBehavior::Healthy => None,
            SwarmBehavior::Crash { exit_code, error } => Some(error.clone().unwrap_or_else(|| format!("task: non-zero exit ({exit_code})"))),
        }
    }

    fn new_task(&mut self, slot: u64, image: &str, at: i64) -> Task {
        Task {
            id: self.next_id("task"),
            slot,
            image: image.to_string(),
            created: at,
            crash: self.crash_for(image),
            shutdown_at: None,
            failure_seen: false,
            restart_at: None,
        }
    }

    pub fn create_service(&mut self, name: &str, stack: Option<&str>, image: &str, replicas: u64, at: i64) {
        let mut labels = BTreeMap::new();
        if let Some(s) = stack {
            labels.insert("com.docker.stack.image".to_string(), image.to_string());
            labels.insert("com.docker.stack.namespace".to_string(), s.to_string());
        }
        let tasks = (1..=replicas).map(|slot| self.new_task(slot, image, at)).collect();
        let svc = Service {
            id: self.next_id("service"),
            name: name.to_string(),
            stack: stack.map(String::from),
            created_at: at,
            updated_at: at,
            version: self.bump(),
            spec: Spec { image: image.to_string(), replicas, labels },
            previous_spec: None,
            update: None,
            tasks,
        };
        self.services.insert(name.to_string(), svc);
    }

    /// Changes the service's image and/or replicas at `now`: a rolling update for a new
    /// image or when `force`d (a rollback when `rollback`), tasks added or stopped for new
    /// replicas. An unchanged spec only bumps the version, as Swarm does.
    pub fn change_service(&mut self, name: &str, image: &str, replicas: u64, now: i64, rollback: bool, force: bool) {
        let d = self.converge_ms;
        let Some(mut svc) = self.services.remove(name) else {
            return;
        };
        let image_changed = svc.spec.image != image;
        let mut new_spec = svc.spec.clone();
        new_spec.image = image.to_string();
        new_spec.replicas = replicas;
        if svc.stack.is_some() {
            new_spec.labels.insert("com.docker.stack.image".into(), image.to_string());
        }
        if new_spec == svc.spec && !force {
            svc.version = self.bump();
            svc.updated_at = now;
            self.services.insert(name.to_string(), svc);
            return;
        }
        let old_replicas = svc.spec.replicas;
        // Swarm swaps the specs on a rollback too, so a rollback can be rolled back.
        svc.previous_spec = Some(svc.spec.clone());
        svc.spec = new_spec;
        svc.version = self.bump();
        svc.updated_at = now;
        for t in svc.tasks.iter_mut().filter(|t| t.slot > replicas) {
            t.restart_at = None;
            if t.live(now, d) {
                t.shutdown_at = Some(now);
            }
        }
        for slot in old_replicas + 1..=replicas {
            let t = self.new_task(slot, image, now);
            svc.tasks.push(t);
        }
        if image_changed || force {
            svc.update = Some(Update {
                state: if rollback { "rollback_started" } else { "updating" }.into(),
                started_at: now,
                completed_at: None,
                message: if rollback { "manually requested rollback" } else { "update in progress" }.into(),
                slot: 0,
                task: None,
                last_slot: old_replicas.min(replicas),
            });
            self.next_slot(&mut svc, now);
        }
        self.services.insert(name.to_string(), svc);
    }

    /// Moves the update to its next slot (or completes it) at `at`.
    fn next_slot(&mut self, svc: &mut Service, at: i64) {
        let d = self.converge_ms;
        let Some(u) = svc.update.as_mut() else { return };
        let slot = u.slot + 1;
        if slot > u.last_slot {
            let rb = u.rollback();
            u.state = if rb { "rollback_completed" } else { "completed" }.into();
            u.completed_at = Some(at);
            u.message = if rb { "rollback completed" } else { "update completed" }.into();
            u.task = None;
            return;
        }
        for t in svc.tasks.iter_mut().filter(|t| t.slot == slot) {
            t.restart_at = None;
            if t.live(at, d) {
                t.shutdown_at = Some(at);
            }
        }
        let t = self.new_task(slot, &svc.spec.image, at);
        if let Some(u) = svc.update.as_mut() {
            u.slot = slot;
            u.task = Some(t.id.clone());
        }
        svc.tasks.push(t);
    }

    /// Replays everything that happened up to `now`.
    pub fn advance(&mut self, now: i64) {
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            let Some(mut svc) = self.services.remove(&name) else {
                continue;
            };
            while let Some((at, ev)) = self.next_event(&svc, now) {
                self.apply(&mut svc, at, ev);
            }
            prune(&mut svc, now, self.converge_ms);
            self.services.insert(name, svc);
        }
    }

    fn next_event(&self, svc: &Service, now: i64) -> Option<(i64, Event)> {
        let d = self.converge_ms;
        let mut best: Option<(i64, u8, Event)> = None;
        let mut offer = |at: i64, rank: u8, ev: Event| {
            if at <= now && best.as_ref().is_none_or(|(b, r, _)| (at, rank) < (*b, *r)) {
                best = Some((at, rank, ev));
            }
        };
        for (i, t) in svc.tasks.iter().enumerate() {
            if !t.failure_seen
                && let Some(f) = t.fails_at(d)
            {
                offer(f, 0, Event::Fail(i));
            }
            if let Some(r) = t.restart_at {
                offer(r, 1, Event::Restart(i));
            }
        }
        if let Some(u) = svc.update.as_ref().filter(|u| u.in_progress())
            && let Some(t) = u.task.as_ref().and_then(|id| svc.tasks.iter().find(|t| &t.id == id))
            && t.fails_at(d).is_none()
        {
            offer(t.created + d + d / 2, 2, Event::SlotDone);
        }
        best.map(|(at, _, ev)| (at, ev))
    }

    fn apply(&mut self, svc: &mut Service, at: i64, ev: Event) {
        let d = self.converge_ms;
        match ev {
            Event::Fail(i) => {
                let t = &mut svc.tasks[i];
                t.failure_seen = true;
                if t.slot <= svc.spec.replicas {
                    t.restart_at = Some(at + (d / 2).max(1));
                }
                let id = t.id.clone();
                if let Some(u) = svc.update.as_mut().filter(|u| u.in_progress() && u.task.as_deref() == Some(id.as_str())) {
                    let rb = u.rollback();
                    u.state = if rb { "rollback_paused" } else { "paused" }.into();
                    u.message = format!("{} paused due to failure or early termination of task {id}", if rb { "rollback" } else { "update" });
                }
            }
            Event::Restart(i) => {
                svc.tasks[i].restart_at = None;
                let slot = svc.tasks[i].slot;
                let taken = svc.tasks.iter().any(|t| t.slot == slot && t.live(at, d));
                if slot <= svc.spec.replicas && !taken {
                    let t = self.new_task(slot, &svc.spec.image, at);
                    svc.tasks.push(t);
                }
            }
            Event::SlotDone => self.next_slot(svc, at),
        }
    }
}

/// Swarm's task history limit: at most 5 tasks per slot, dropping the oldest ended ones.
fn prune(svc: &mut Service, now: i64, d: i64) {
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    svc.tasks.sort_by(|a, b| a.slot.cmp(&b.slot).then(b.created.cmp(&a.created)).then(b.id.cmp(&a.id)));
    svc.tasks.retain(|t| {
        let n = per_slot.entry(t.slot).or_default();
        *n += 1;
        *n <= 5 || t.live(now, d) || t.restart_at.is_some()
    });
}

impl Service {
    pub fn view(&self, now: i64, d: i64) -> ServiceView {
        ServiceView {
            id: self.id.clone(),
            name: self.name.clone(),
            image: self.spec.image.clone(),
            previous_image: self.previous_spec.as_ref().map(|p| p.image.clone()),
            replicas: self.spec.replicas,
            version: self.version,
            update_state: self.update.as_ref().map(|u| u.state.clone()),
            update_message: self.update.as_ref().map(|u| u.message.clone()),
            tasks: self
                .tasks
                .iter()
                .map(|t| TaskView {
                    id: t.id.clone(),
                    slot: t.slot,
                    image: t.image.clone(),
                    desired_state: if t.live(now, d) { "running" } else { "shutdown" }.into(),
                    state: t.state(now, d).0.into(),
                    error: t.error(now, d),
                })
                .collect(),
        }
    }

    /// Every slot has a live task on the current image that is running, and no update is in
    /// progress or paused.
    pub fn converged(&self, now: i64, d: i64) -> bool {
        let update_ok = self.update.as_ref().is_none_or(|u| u.state.ends_with("completed"));
        update_ok
            && (1..=self.spec.replicas)
                .all(|slot| self.tasks.iter().any(|t| t.slot == slot && t.image == self.spec.image && t.state(now, d).0 == "running"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(d: i64) -> State {
        State {
            server_version: "24.0.7".into(),
            node_id: "n".into(),
            node_name: "node".into(),
            converge_ms: d,
            behaviors: BTreeMap::new(),
            services: BTreeMap::new(),
            seq: 0,
            index: 0,
        }
    }

    #[test]
    fn rolling_update_slot_by_slot() {
        let mut st = world(100);
        st.create_service("s_app", Some("s"), "app:v1", 2, 0);
        st.advance(100);
        assert!(st.services["s_app"].converged(100, 100));
        st.change_service("s_app", "app:v2", 2, 1000, false, false);
        st.advance(1100);
        // Slot 1 is running v2 but not yet past the monitor window; slot 2 still v1.
        let v = st.services["s_app"].view(1100, 100);
        assert_eq!(v.update_state.as_deref(), Some("updating"));
        st.advance(1150);
        st.advance(1300);
        let s = &st.services["s_app"];
        assert_eq!(s.update.as_ref().unwrap().state, "completed");
        assert_eq!(s.update.as_ref().unwrap().completed_at, Some(1300));
        assert!(s.converged(1300, 100));
        assert_eq!(s.previous_spec.as_ref().unwrap().image, "app:v1");
    }

    #[test]
    fn crashing_update_pauses_and_restarts_forever() {
        let mut st = world(100);
        st.behaviors.insert("v2".into(), SwarmBehavior::Crash { exit_code: 1, error: None });
        st.create_service("s_app", Some("s"), "app:v1", 2, 0);
        st.change_service("s_app", "app:v2", 2, 1000, false, false);
        st.advance(2000);
        let s = &st.services["s_app"];
        let u = s.update.as_ref().unwrap();
        assert_eq!(u.state, "paused");
        assert!(u.message.starts_with("update paused due to failure or early termination of task "));
        let slot1: Vec<_> = s.tasks.iter().filter(|t| t.slot == 1).collect();
        assert_eq!(slot1.len(), 5, "history limit");
        assert!(slot1.iter().filter(|t| t.image == "app:v2").all(|t| t.crash.as_deref() == Some("task: non-zero exit (1)")));
        assert!(s.tasks.iter().any(|t| t.slot == 2 && t.image == "app:v1" && t.live(2000, 100)));
        assert!(!s.converged(2000, 100));
    }
}
