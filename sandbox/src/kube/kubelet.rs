//! The node: runs every pod in the store through a kubelet-like life, driven by [`Timing`]
//! and the [`Behavior`] of its containers, and writes pod status the way the kubelet does:
//! `phase`, the five conditions (PodReadyToStartContainers, Initialized, Ready,
//! ContainersReady, PodScheduled) with `lastTransitionTime`, `containerStatuses` (state
//! running/waiting/terminated, `lastState`, `restartCount`, `ready`, `started`, image ids),
//! `podIP`/`hostIP`, `startTime`, `qosClass`. It records the kubelet's events (Scheduled —
//! from the scheduler —, Pulled, Created, Started, Killing, BackOff, Unhealthy) and keeps each
//! container's log (current and previous instance).
//!
//! Simplified: containers start one after another in no particular order at once; init
//! containers are ignored; behaviours are scripted rather than probed.

use super::registry::{EventSpec, NODE_IP, NODE_NAME, emit_event, qos_class};
use super::resources::PODS;
use super::status::ApiError;
use super::util::{at, fmt_time, meta_str, rand_hex};
use super::{Behavior, State, Timing};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::time::Instant;

#[derive(Default)]
pub struct Kubelet {
    pods: HashMap<String, PodRt>,
    pub image_behaviors: HashMap<String, Behavior>,
    pub pod_behaviors: HashMap<(String, String), Behavior>,
    next_ip: u32,
    next_instance: u64,
}

struct PodRt {
    /// restartPolicy Never/OnFailure: containers run to completion.
    run_to_completion: bool,
    created: Instant,
    ip: String,
    start_wall: DateTime<Utc>,
    containers: Vec<Ctr>,
    deleting: Option<Instant>,
    /// Condition type → (status, lastTransitionTime).
    conds: BTreeMap<&'static str, (bool, DateTime<Utc>)>,
}

#[derive(Debug, Clone)]
enum Stage {
    Creating { until: Instant },
    Running { ready_at: Option<Instant>, end_at: Option<Instant>, next_probe: Option<Instant> },
    BackOff { until: Instant },
    Terminated { exit_code: i32, reason: &'static str, finished: DateTime<Utc> },
}

type Log = Vec<(DateTime<Utc>, String)>;

struct Ctr {
    name: String,
    image: String,
    behavior: Behavior,
    /// Distinguishes container instances (restarts) for `follow` streams.
    instance: u64,
    stage: Stage,
    restart_count: i32,
    ready: bool,
    started_wall: Option<DateTime<Utc>>,
    container_id: String,
    image_id: String,
    log: Log,
    prev_log: Option<Log>,
    last_term: Option<Value>,
}

/// What a log request gets: the lines and, for `follow`, how to find more later.
pub struct LogSnapshot {
    pub container: String,
    pub uid: String,
    pub lines: Log,
    /// The container instance the lines belong to.
    pub instance: u64,
    /// The instance is still running (a follow stream stays open).
    pub running: bool,
}

/// What a container instance logs as it starts (see [`Behavior`]).
fn startup_lines(b: &Behavior) -> Vec<String> {
    match b {
        Behavior::CrashLoop { logs, .. } => logs.clone(),
        Behavior::LivenessFailing { logs } => {
            let mut l = vec!["starting".to_string(), "listening on :8080".to_string()];
            l.extend(logs.iter().cloned());
            l
        }
        Behavior::Healthy | Behavior::SlowStart(_) => vec!["starting".to_string()],
    }
}

impl Kubelet {
    fn behavior_for(&self, ns: &str, pod: &str, image: &str) -> Behavior {
        self.pod_behaviors.get(&(ns.to_string(), pod.to_string())).or_else(|| self.image_behaviors.get(image)).cloned().unwrap_or(Behavior::Healthy)
    }

    /// The log of a container (`previous` = the instance before the last restart).
    pub fn logs(&self, pod: &Value, container: Option<&str>, previous: bool) -> Result<LogSnapshot, ApiError> {
        let name = meta_str(pod, "name");
        let names: Vec<String> = at(pod, &["spec", "containers"])
            .and_then(Value::as_array)
            .map(|cs| cs.iter().filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from)).collect())
            .unwrap_or_default();
        let cname = match container {
            Some(c) if !c.is_empty() => c.to_string(),
            _ => {
                if let Some(d) = at(pod, &["metadata", "annotations", "kubectl.kubernetes.io/default-container"]).and_then(Value::as_str) {
                    d.to_string()
                } else if names.len() == 1 {
                    names[0].clone()
                } else {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        names.join(" ")
                    )));
                }
            }
        };
        if !names.contains(&cname) {
            return Err(ApiError::bad_request(format!("container {cname} is not valid for pod {name}")));
        }
        let rt = self.pods.get(meta_str(pod, "uid"));
        let ctr = rt.and_then(|r| r.containers.iter().find(|c| c.name == cname));
        let Some(ctr) = ctr else {
            return Err(ApiError::bad_request(format!("container \"{cname}\" in pod \"{name}\" is waiting to start: ContainerCreating")));
        };
        if previous {
            return match &ctr.prev_log {
                Some(l) => Ok(LogSnapshot {
                    container: cname.clone(),
                    uid: meta_str(pod, "uid").into(),
                    lines: l.clone(),
                    instance: ctr.instance.wrapping_sub(1),
                    running: false,
                }),
                None => Err(ApiError::bad_request(format!("previous terminated container \"{cname}\" in pod \"{name}\" not found"))),
            };
        }
        match ctr.stage {
            Stage::Creating { .. } => {
                Err(ApiError::bad_request(format!("container \"{cname}\" in pod \"{name}\" is waiting to start: ContainerCreating")))
            }
            Stage::Running { .. } => Ok(LogSnapshot {
                container: cname.clone(),
                uid: meta_str(pod, "uid").into(),
                lines: ctr.log.clone(),
                instance: ctr.instance,
                running: true,
            }),
            _ => Ok(LogSnapshot {
                container: cname.clone(),
                uid: meta_str(pod, "uid").into(),
                lines: ctr.log.clone(),
                instance: ctr.instance,
                running: false,
            }),
        }
    }

    /// For a follow stream: lines of `instance` from index `from`, and whether it still runs.
    /// `None` once the pod or that container instance is gone.
    pub fn follow(&self, uid: &str, container: &str, instance: u64, from: usize) -> Option<(Log, bool)> {
        let rt = self.pods.get(uid)?;
        let c = rt.containers.iter().find(|c| c.name == container)?;
        if c.instance != instance {
            return None;
        }
        let lines = c.log.get(from..).map(<[_]>::to_vec).unwrap_or_default();
        let running = matches!(c.stage, Stage::Running { .. }) && rt.deleting.is_none();
        Some((lines, running))
    }
}

fn kubelet_event(st: &mut State, pod: &Value, type_: &str, reason: &str, message: String, container: Option<&str>) {
    emit_event(st, pod, EventSpec { type_, reason, message, component: "kubelet", field_path: container.map(|c| format!("spec.containers{{{c}}}")) });
}

/// Plans a freshly started container instance.
fn plan(b: &Behavior, t: &Timing, run_to_completion: bool, now: Instant, pod_created: Instant, first: bool) -> Stage {
    let half = t.ready_after / 2;
    if run_to_completion {
        let extra = if let Behavior::SlowStart(d) = b { *d } else { Default::default() };
        return Stage::Running { ready_at: Some(now), end_at: Some(now + t.job_runs_for + extra), next_probe: None };
    }
    match b {
        Behavior::Healthy => {
            let ready_at = if first { (pod_created + t.ready_after).max(now) } else { now + half };
            Stage::Running { ready_at: Some(ready_at), end_at: None, next_probe: None }
        }
        Behavior::SlowStart(d) => {
            let ready_at = if first { (pod_created + *d).max(now) } else { now + *d };
            Stage::Running { ready_at: Some(ready_at), end_at: None, next_probe: None }
        }
        Behavior::CrashLoop { .. } => Stage::Running { ready_at: None, end_at: Some(now + t.crash_every), next_probe: None },
        Behavior::LivenessFailing { .. } => {
            Stage::Running { ready_at: None, end_at: Some(now + t.crash_every), next_probe: Some(now + t.crash_every / 3) }
        }
    }
}

const UNHEALTHY: &str = "Liveness probe failed: HTTP probe failed with statuscode: 500";

/// Starts (or restarts) container `i` of the pod.
fn start_container(st: &mut State, pod: &Value, uid: &str, i: usize, now: Instant, wall: DateTime<Utc>) {
    st.kubelet.next_instance += 1;
    let instance = st.kubelet.next_instance;
    let timing = st.timing.clone();
    let Some(rt) = st.kubelet.pods.get_mut(uid) else { return };
    let (created, rtc) = (rt.created, rt.run_to_completion);
    let Some(c) = rt.containers.get_mut(i) else { return };
    let first = c.started_wall.is_none();
    c.instance = instance;
    c.container_id = format!("containerd://{}", rand_hex(64));
    if c.image_id.is_empty() {
        // `registry:5000/app:1.2` → `registry:5000/app` (a colon after the last slash is the tag).
        let name = c.image.split('@').next().unwrap_or("");
        let repo = match name.rfind(':') {
            Some(i) if i > name.rfind('/').unwrap_or(0) => &name[..i],
            _ => name,
        };
        let repo = if repo.contains('/') { repo.to_string() } else { format!("docker.io/library/{repo}") };
        c.image_id = format!("{repo}@sha256:{}", rand_hex(64));
    }
    c.started_wall = Some(wall);
    c.ready = false;
    c.stage = plan(&c.behavior, &timing, rtc, now, created, first);
    c.log = startup_lines(&c.behavior).into_iter().map(|l| (wall, l)).collect();
    let (name, image) = (c.name.clone(), c.image.clone());
    kubelet_event(st, pod, "Normal", "Pulled", format!("Container image \"{image}\" already present on machine"), Some(&name));
    kubelet_event(st, pod, "Normal", "Created", format!("Created container: {name}"), Some(&name));
    kubelet_event(st, pod, "Normal", "Started", format!("Started container {name}"), Some(&name));
}

fn terminated(exit_code: i32, reason: &str, started: Option<DateTime<Utc>>, finished: DateTime<Utc>, cid: &str) -> Value {
    json!({
        "exitCode": exit_code,
        "reason": reason,
        "startedAt": started.map(fmt_time),
        "finishedAt": fmt_time(finished),
        "containerID": cid,
    })
}

/// Advances container `i` through every transition that is due.
fn advance(st: &mut State, pod: &Value, uid: &str, i: usize, now: Instant, wall: DateTime<Utc>) {
    let timing = st.timing.clone();
    for _ in 0..16 {
        let (ns, pname) = (meta_str(pod, "namespace").to_string(), meta_str(pod, "name").to_string());
        let Some(rt) = st.kubelet.pods.get(uid) else { return };
        let Some(c) = rt.containers.get(i) else { return };
        let b = st.kubelet.behavior_for(&ns, &pname, &c.image);
        let rtc = rt.run_to_completion;
        let stage = c.stage.clone();
        let cname = c.name.clone();
        let changed = b != c.behavior;
        if changed {
            let (created, running) = (rt.created, matches!(stage, Stage::Running { .. }));
            let Some(c) = st.kubelet.pods.get_mut(uid).and_then(|r| r.containers.get_mut(i)) else { return };
            c.behavior = b.clone();
            if running {
                // Re-plan the running instance under the new behaviour, from now.
                c.stage = plan(&b, &timing, rtc, now, created, false);
                c.ready = false;
                if let Behavior::CrashLoop { logs, .. } | Behavior::LivenessFailing { logs } = &b {
                    c.log.extend(logs.iter().map(|l| (wall, l.clone())));
                }
            }
            continue;
        }
        match stage {
            Stage::Creating { until } if now >= until => start_container(st, pod, uid, i, now, wall),
            Stage::BackOff { until } if now >= until => start_container(st, pod, uid, i, now, wall),
            Stage::Running { ready_at, end_at, next_probe } => {
                if let Some(p) = next_probe
                    && now >= p
                    && end_at.is_none_or(|e| p < e)
                {
                    kubelet_event(st, pod, "Warning", "Unhealthy", UNHEALTHY.into(), Some(&cname));
                    if let Some(c) = st.kubelet.pods.get_mut(uid).and_then(|r| r.containers.get_mut(i)) {
                        c.stage = Stage::Running { ready_at, end_at, next_probe: Some(p + timing.crash_every / 3) };
                    }
                    continue;
                }
                if let Some(r) = ready_at
                    && now >= r
                    && let Some(c) = st.kubelet.pods.get_mut(uid).and_then(|r| r.containers.get_mut(i))
                    && !c.ready
                {
                    c.ready = true;
                    if !rtc {
                        c.log.push((wall, "listening on :8080".into()));
                    }
                    c.stage = Stage::Running { ready_at: None, end_at, next_probe };
                    continue;
                }
                if end_at.is_none_or(|e| now < e) {
                    return;
                }
                finish_instance(st, pod, uid, i, &b, rtc, wall);
            }
            _ => return,
        }
    }
}

/// The running instance ends: a Job container completes/fails; a crash-looping one exits
/// into back-off; a liveness-failing one is killed and restarted at once.
fn finish_instance(st: &mut State, pod: &Value, uid: &str, i: usize, b: &Behavior, rtc: bool, wall: DateTime<Utc>) {
    let timing = st.timing.clone();
    let now = Instant::now();
    let pname = meta_str(pod, "name").to_string();
    let pns = meta_str(pod, "namespace").to_string();
    let Some(c) = st.kubelet.pods.get_mut(uid).and_then(|r| r.containers.get_mut(i)) else { return };
    let cname = c.name.clone();
    if rtc {
        let (code, reason) = match b {
            Behavior::CrashLoop { exit_code, .. } => (*exit_code, "Error"),
            Behavior::LivenessFailing { .. } => (137, "Error"),
            _ => (0, "Completed"),
        };
        if code == 0 {
            c.log.push((wall, "done".into()));
        }
        c.ready = false;
        c.stage = Stage::Terminated { exit_code: code, reason, finished: wall };
        return;
    }
    let (code, liveness) = match b {
        Behavior::CrashLoop { exit_code, .. } => (*exit_code, false),
        Behavior::LivenessFailing { .. } => (137, true),
        _ => (0, false),
    };
    c.last_term = Some(terminated(code, "Error", c.started_wall, wall, &c.container_id));
    c.restart_count += 1;
    c.ready = false;
    c.prev_log = Some(std::mem::take(&mut c.log));
    if liveness {
        kubelet_event(st, pod, "Warning", "Unhealthy", UNHEALTHY.into(), Some(&cname));
        kubelet_event(st, pod, "Normal", "Killing", format!("Container {cname} failed liveness probe, will be restarted"), Some(&cname));
        start_container(st, pod, uid, i, now, wall);
    } else {
        if let Some(c) = st.kubelet.pods.get_mut(uid).and_then(|r| r.containers.get_mut(i)) {
            c.stage = Stage::BackOff { until: now + timing.crash_every };
        }
        let puid = meta_str(pod, "uid");
        kubelet_event(
            st,
            pod,
            "Warning",
            "BackOff",
            format!("Back-off restarting failed container {cname} in pod {pname}_{pns}({puid})"),
            Some(&cname),
        );
    }
}

fn container_status(c: &Ctr, pname: &str, pns: &str, puid: &str, backoff_secs: u64) -> Value {
    let state = match &c.stage {
        Stage::Creating { .. } => json!({"waiting": {"reason": "ContainerCreating"}}),
        Stage::Running { .. } => json!({"running": {"startedAt": c.started_wall.map(fmt_time)}}),
        Stage::BackOff { .. } => json!({"waiting": {
            "reason": "CrashLoopBackOff",
            "message": format!("back-off {backoff_secs}s restarting failed container={} pod={pname}_{pns}({puid})", c.name),
        }}),
        Stage::Terminated { exit_code, reason, finished } => {
            json!({"terminated": terminated(*exit_code, reason, c.started_wall, *finished, &c.container_id)})
        }
    };
    let mut s = json!({
        "name": c.name,
        "image": c.image,
        "imageID": c.image_id,
        "ready": c.ready,
        "started": matches!(c.stage, Stage::Running { .. }),
        "restartCount": c.restart_count,
        "state": state,
        "lastState": c.last_term.as_ref().map_or(json!({}), |t| json!({"terminated": t})),
    });
    if !c.container_id.is_empty() {
        s["containerID"] = json!(c.container_id);
    }
    s
}

fn set_cond(rt: &mut PodRt, t: &'static str, status: bool, wall: DateTime<Utc>) -> DateTime<Utc> {
    match rt.conds.get(t) {
        Some((s, at)) if *s == status => *at,
        _ => {
            rt.conds.insert(t, (status, wall));
            wall
        }
    }
}

fn render_status(st: &mut State, pod: &Value, uid: &str, wall: DateTime<Utc>) -> Option<Value> {
    let backoff_secs = st.timing.crash_every.as_secs().max(10);
    let qos = qos_class(pod.get("spec").unwrap_or(&Value::Null));
    let (pname, pns) = (meta_str(pod, "name").to_string(), meta_str(pod, "namespace").to_string());
    let rt = st.kubelet.pods.get_mut(uid)?;
    let statuses: Vec<Value> = rt.containers.iter().map(|c| container_status(c, &pname, &pns, uid, backoff_secs)).collect();
    let all_started_once = rt.containers.iter().all(|c| c.started_wall.is_some());
    let all_terminated = rt.containers.iter().all(|c| matches!(c.stage, Stage::Terminated { .. }));
    let all_ok = rt.containers.iter().all(|c| matches!(c.stage, Stage::Terminated { exit_code: 0, .. }));
    let phase = if rt.run_to_completion && all_terminated {
        if all_ok { "Succeeded" } else { "Failed" }
    } else if all_started_once {
        "Running"
    } else {
        "Pending"
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let unready: Vec<String> = rt.containers.iter().filter(|c| !c.ready).map(|c| c.name.clone()).collect();
    let ready = unready.is_empty() && !terminal;
    let sandbox = !terminal;
    let t_sandbox = set_cond(rt, "PodReadyToStartContainers", sandbox, wall);
    let t_init = set_cond(rt, "Initialized", true, wall);
    let t_ready = set_cond(rt, "Ready", ready, wall);
    let t_cready = set_cond(rt, "ContainersReady", ready, wall);
    let t_sched = set_cond(rt, "PodScheduled", true, wall);
    let cond = |t: &str, ok: bool, at: DateTime<Utc>| {
        let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": fmt_time(at)});
        if !ok && (t == "Ready" || t == "ContainersReady") {
            if terminal {
                c["reason"] = json!("PodCompleted");
            } else {
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!("containers with unready status: [{}]", unready.join(" ")));
            }
        }
        if terminal && t == "Initialized" {
            c["reason"] = json!("PodCompleted");
        }
        c
    };
    let conditions = vec![
        cond("PodReadyToStartContainers", sandbox, t_sandbox),
        cond("Initialized", true, t_init),
        cond("Ready", ready, t_ready),
        cond("ContainersReady", ready, t_cready),
        cond("PodScheduled", true, t_sched),
    ];
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": NODE_IP,
        "hostIPs": [{"ip": NODE_IP}],
        "startTime": fmt_time(rt.start_wall),
        "containerStatuses": statuses,
        "qosClass": qos,
    });
    if !terminal {
        status["podIP"] = json!(rt.ip);
        status["podIPs"] = json!([{"ip": rt.ip}]);
    }
    Some(status)
}

/// One kubelet pass over all pods.
pub fn sync(st: &mut State) {
    let now = Instant::now();
    let wall = Utc::now();
    let terminate_after = st.timing.terminate_after;
    let pods: Vec<Value> = st.store.list(PODS, None).cloned().collect();
    let mut live: HashSet<String> = HashSet::new();
    for pod in pods {
        let uid = meta_str(&pod, "uid").to_string();
        live.insert(uid.clone());
        let (ns, name) = (meta_str(&pod, "namespace").to_string(), meta_str(&pod, "name").to_string());
        let mut pod = pod;
        if !st.kubelet.pods.contains_key(&uid) {
            // Scheduling: bind to the node.
            st.kubelet.next_ip += 1;
            let n = st.kubelet.next_ip;
            let ip = format!("10.244.{}.{}", (n / 250) % 250, n % 250 + 2);
            let restart = at(&pod, &["spec", "restartPolicy"]).and_then(Value::as_str).unwrap_or("Always");
            let containers = at(&pod, &["spec", "containers"]).and_then(Value::as_array).cloned().unwrap_or_default();
            let ctrs = containers
                .iter()
                .map(|c| {
                    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
                    Ctr {
                        name: c.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                        behavior: st.kubelet.behavior_for(&ns, &name, &image),
                        image,
                        instance: 0,
                        stage: Stage::Creating { until: now + st.timing.ready_after / 2 },
                        restart_count: 0,
                        ready: false,
                        started_wall: None,
                        container_id: String::new(),
                        image_id: String::new(),
                        log: Vec::new(),
                        prev_log: None,
                        last_term: None,
                    }
                })
                .collect();
            st.kubelet.pods.insert(
                uid.clone(),
                PodRt {
                    run_to_completion: restart != "Always",
                    created: now,
                    ip,
                    start_wall: wall,
                    containers: ctrs,
                    deleting: None,
                    conds: BTreeMap::new(),
                },
            );
            if at(&pod, &["spec", "nodeName"]).and_then(Value::as_str).unwrap_or("").is_empty() {
                pod["spec"]["nodeName"] = json!(NODE_NAME);
                pod = st.store.update(PODS, pod);
                emit_event(
                    st,
                    &pod,
                    EventSpec {
                        type_: "Normal",
                        reason: "Scheduled",
                        message: format!("Successfully assigned {ns}/{name} to {NODE_NAME}"),
                        component: "default-scheduler",
                        field_path: None,
                    },
                );
            }
        }
        if !meta_str(&pod, "deletionTimestamp").is_empty() {
            let Some(rt) = st.kubelet.pods.get_mut(&uid) else { continue };
            match rt.deleting {
                None => {
                    rt.deleting = Some(now);
                    let running: Vec<String> =
                        rt.containers.iter().filter(|c| matches!(c.stage, Stage::Running { .. })).map(|c| c.name.clone()).collect();
                    for c in running {
                        kubelet_event(st, &pod, "Normal", "Killing", format!("Stopping container {c}"), Some(&c));
                    }
                }
                Some(since) if now >= since + terminate_after => {
                    st.store.remove(PODS, &ns, &name);
                    st.kubelet.pods.remove(&uid);
                }
                Some(_) => {}
            }
            continue;
        }
        let n = st.kubelet.pods.get(&uid).map_or(0, |r| r.containers.len());
        for i in 0..n {
            advance(st, &pod, &uid, i, now, wall);
        }
        if let Some(status) = render_status(st, &pod, &uid, wall)
            && pod.get("status") != Some(&status)
            && let Some(cur) = st.store.get(PODS, &ns, &name).cloned()
        {
            let mut cur = cur;
            cur["status"] = status;
            st.store.update(PODS, cur);
        }
    }
    st.kubelet.pods.retain(|uid, _| live.contains(uid));
}
