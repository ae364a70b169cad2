//! A fake Kubernetes API server for tests and `runbot demo`: real HTTP on 127.0.0.1, the real
//! wire format (JSON objects, `Status` errors, chunked newline-delimited watch streams,
//! server-side `Table`s for `kubectl get`), a stateful store with one global
//! `resourceVersion`, and controllers that move pods through their lives on a [`Timing`].
//! `kube` (kube-rs 5) and the real `kubectl` talk to it unchanged.
//!
//! # Code map
//! `http.rs` (faults, routing, verbs) → `registry.rs` (create/replace/patch/delete semantics,
//! defaulting, validation, events) → `store.rs` (objects, resourceVersion, watch history and
//! fan-out); `streams.rs` (watch and log-follow bodies), `select.rs` (label/field selectors),
//! `patch.rs` (merge/strategic/JSON/apply patches), `table.rs` (`kubectl get` Tables),
//! `status.rs` (Status errors), `resources.rs` (served types, discovery); `controller.rs`
//! (Deployment, ReplicaSet, Job, CronJob, garbage collection) and `kubelet.rs` (pod lives,
//! behaviours, logs), run by one task.
//!
//! # Faithful
//! - Paths: `/api/v1/...`, `/apis/{group}/{version}/...`, namespaced and cluster-wide
//!   collections, subresources `pods/{log,eviction,status}`, `deployments/{scale,status}`,
//!   `replicasets/{scale,status}`, `jobs/status`, `cronjobs/status`;
//!   `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`; metadata-only reads
//!   (`Accept: application/json;as=PartialObjectMetadata[List];g=meta.k8s.io;v=v1` on get,
//!   list and watch: `PartialObjectMetadata` objects, no spec/data); discovery (`/version`,
//!   `/api`, `/api/v1`, `/apis`, `/apis/{g}`, `/apis/{g}/{v}`); `/openapi/*` answers 404 (kubectl
//!   copes for get/describe/logs/delete/scale/rollout).
//! - Verbs get/list/watch/create/update/patch/delete/deletecollection; label and field
//!   selectors, `limit`/`continue`/`remainingItemCount`, watch from a
//!   `resourceVersion` with history (410 Gone `ERROR` event when too old), bookmarks,
//!   `timeoutSeconds`, `sendInitialEvents`; optimistic concurrency (409 Conflict), `generateName`,
//!   `dryRun=All`, `metadata.generation`, status/spec separation of the status subresource,
//!   finalizers, owner-reference garbage collection, graceful pod deletion.
//! - Errors as `Status` bodies with the API server's reasons and messages (404 NotFound,
//!   409 AlreadyExists/Conflict, 422 Invalid with causes, 400 BadRequest, 405, 410, 415, 429 with
//!   `Retry-After`, 500).
//! - Deployment → ReplicaSet (`<deploy>-<pod-template-hash>`) → Pod (`<rs>-<5 chars>`) with owner
//!   references, rolling updates (maxSurge/maxUnavailable), revisions, rollbacks by template,
//!   the Available/Progressing conditions including `ProgressDeadlineExceeded`; Jobs with
//!   `backoffLimit`; kubelet-like pod status (conditions, containerStatuses, restarts,
//!   `lastState`), events with counts, logs (`previous`, `tailLines`, `timestamps`,
//!   `follow`).
//!
//! # Simplified
//! - One node (`sandbox-node-1`), no scheduling constraints, no images to pull, no probes
//!   other than the behaviours' scripted ones ([`Behavior`]).
//! - No authentication and no RBAC objects: one identity, allowed everything unless a test
//!   scripts [`FakeCluster::deny`] / [`FakeCluster::allow_only`] (`access.rs`), which both
//!   `SelfSubjectAccessReview`s and the requests themselves obey (403 Forbidden); a [`Fault`]
//!   still produces any 401/403. No admission webhooks, no
//!   `managedFields` (server-side apply is a strategic merge, never a conflict), no protobuf.
//! - Lists are served from the current state (no MVCC snapshot for `continue`); namespaces are
//!   created on demand when something is written into them.
//! - CronJobs are not scheduled; Jobs are created by clients (`kubectl create job --from`).
//!   `restartPolicy: OnFailure` Jobs behave like `Never` (a failed pod is replaced by a new
//!   pod, not restarted in place).
//! - PodDisruptionBudgets and HPAs are stored but not enforced; an eviction is refused (429)
//!   only through an injected [`Fault`].
//! - `propagationPolicy` is ignored: dependents are always collected in the background.
//! - Bodies are JSON only. Protobuf bodies get 415, which client-go does not retry as JSON:
//!   kubectl's typed generators (`kubectl create job|deployment|cronjob ...`, `drain`) fail;
//!   `kubectl create -f`/`apply -f` work with `--validate=false` (no OpenAPI documents are
//!   served, so client-side validation cannot run).

use runbot_commands::setup::{SetupResult, ensure};
mod access;
mod controller;
mod http;
mod kubelet;
mod patch;
mod registry;
mod resources;
mod select;
mod status;
mod store;
mod streams;
mod table;
mod util;

pub(crate) use util::{b64_decode, rand_hex};

use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// How fast the emulated world moves.
#[derive(Clone, Debug)]
pub struct Timing {
    /// From pod creation to Ready for a healthy container (half of it is "ContainerCreating").
    pub ready_after: Duration,
    /// How long a crash-looping container runs before it exits; also the back-off before the
    /// restart, and the liveness-probe kill interval of [`Behavior::LivenessFailing`].
    pub crash_every: Duration,
    /// How long a deleted pod stays `Terminating` before it disappears.
    pub terminate_after: Duration,
    /// How long a Job's pod runs before it succeeds or fails.
    pub job_runs_for: Duration,
}

impl Timing {
    /// For tests: tens of milliseconds (ready 60 ms, crash every 150 ms, terminating 50 ms,
    /// jobs run 100 ms).
    pub fn fast() -> Timing {
        Timing {
            ready_after: Duration::from_millis(60),
            crash_every: Duration::from_millis(150),
            terminate_after: Duration::from_millis(50),
            job_runs_for: Duration::from_millis(100),
        }
    }

    /// For `runbot demo`, watchable by a person: pods Ready after 3 s, a crash-looping
    /// container crashes every 5 s (and waits 5 s to restart), a deleted pod terminates for
    /// 2 s, a Job runs 4 s.
    pub fn demo() -> Timing {
        Timing {
            ready_after: Duration::from_secs(3),
            crash_every: Duration::from_secs(5),
            terminate_after: Duration::from_secs(2),
            job_runs_for: Duration::from_secs(4),
        }
    }

    /// How often the controllers run (they also run right after every write).
    fn tick(&self) -> Duration {
        let min = self.ready_after.min(self.crash_every).min(self.terminate_after).min(self.job_runs_for);
        util::clamp_dur(min / 4, Duration::from_millis(5), Duration::from_millis(200))
    }
}

/// What the containers of a pod do.
///
/// Logs (what `GET .../log` returns for the current container; `previous=true` returns the
/// same lines of the container instance before the last restart):
/// - `Healthy`: `starting`, then `listening on :8080` once Ready. Ready after
///   `Timing::ready_after`. A Job's pod logs `starting`, `done` and exits 0.
/// - `CrashLoop`: the given `logs` lines as soon as the container starts; after
///   `Timing::crash_every` it exits with `exit_code` (`reason: Error`), restartCount + 1,
///   state `waiting: CrashLoopBackOff` for another `crash_every`, a `BackOff` Warning event,
///   then it starts again. Never Ready. A Job's pod fails with `exit_code`.
/// - `LivenessFailing`: `starting`, `listening on :8080`, then the `logs` lines. Running but
///   never Ready; an `Unhealthy` Warning event ("Liveness probe failed: HTTP probe failed with
///   statuscode: 500", count rising) every `crash_every / 3`; on the third failure the kubelet
///   kills it (`Killing` event): `lastState.terminated` `reason: Error`, `exitCode: 137` (the
///   SIGKILL after the grace period, as for an app that ignores SIGTERM), restartCount + 1,
///   and it restarts at once (state `running` again).
/// - `SlowStart(d)`: like `Healthy`, but Ready `d` after the pod's creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    Healthy,
    CrashLoop { exit_code: i32, logs: Vec<String> },
    LivenessFailing { logs: Vec<String> },
    SlowStart(Duration),
}

/// Makes the next matching requests fail. Matched against every request before anything
/// else: `path_contains` is a substring of `path?query`, `method` (if set) compared
/// case-insensitively. `times` = how many requests it catches (0 = forever). `hang` = never
/// answer (until the cluster shuts down), for client timeouts. Otherwise the request gets a
/// `Status` with `status` and the API server's reason for it (403 Forbidden, 404 NotFound,
/// 409 Conflict, 422 Invalid, 429 TooManyRequests — a disruption-budget refusal on
/// `.../eviction` —, 500 InternalError, 503 ServiceUnavailable, ...).
#[derive(Clone, Debug, Default)]
pub struct Fault {
    pub method: Option<String>,
    pub path_contains: String,
    pub status: u16,
    pub times: u32,
    pub hang: bool,
}

/// Everything behind the cluster mutex.
pub(crate) struct State {
    pub store: store::Store,
    pub kubelet: kubelet::Kubelet,
    pub faults: Vec<(Fault, u32)>,
    pub requests: Vec<(String, String)>,
    pub timing: Timing,
    /// Serial for event names.
    pub event_seq: u64,
    /// What the fake's identity may do (default: everything).
    pub access: access::Policy,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the controllers after a write.
    pub notify: Notify,
    pub shutdown: watch::Receiver<bool>,
    pub timing: Timing,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

impl Shared {
    /// The cluster state. Never held across an `.await`. A panic elsewhere does not poison it
    /// for the other handlers.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pods Deployment `ns/name` selects now (by its `spec.selector`), ordered by name;
    /// None when there is no such Deployment.
    pub(crate) fn deployment_pods(&self, ns: &str, name: &str) -> Option<Vec<Value>> {
        let st = self.lock();
        let d = st.store.get(resources::DEPLOYMENTS, ns, name)?;
        let sel = select::LabelSelector::from_object(d.pointer("/spec/selector").unwrap_or(&Value::Null));
        Some(st.store.list(resources::PODS, Some(ns)).filter(|p| sel.matches(p)).cloned().collect())
    }
}

/// A running fake API server plus its controllers.
pub struct FakeCluster {
    shared: Arc<Shared>,
    url: String,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    controller: Option<JoinHandle<()>>,
}

impl FakeCluster {
    /// Binds `listen` (use port 0 for a random port; only 127.0.0.1 is accepted) and
    /// starts serving. Seeds the namespaces `default` and `kube-system` and the node
    /// `sandbox-node-1`.
    pub async fn start(listen: SocketAddr, timing: Timing) -> SetupResult<FakeCluster> {
        ensure(listen.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), || {
            format!("the fake cluster listens on 127.0.0.1 only, not {listen}")
        })?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let mut state = State {
            store: store::Store::new(),
            kubelet: kubelet::Kubelet::default(),
            faults: Vec::new(),
            requests: Vec::new(),
            timing: timing.clone(),
            event_seq: 0,
            access: access::Policy::default(),
        };
        registry::seed(&mut state);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            notify: Notify::new(),
            shutdown: shutdown.clone(),
            timing: timing.clone(),
            addr: addr.to_string(),
        });
        let app = http::router(shared.clone());
        let mut sd = shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = sd.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake kube API server stopped");
            }
        });
        let controller = tokio::spawn(controller::run(shared.clone()));
        Ok(FakeCluster { shared, url: format!("http://{addr}"), stop, server: Some(server), controller: Some(controller) })
    }

    /// The live state, for the other sandbox servers that follow the cluster (the smoke
    /// endpoint).
    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Creates (or updates the image and replicas of) Deployment `name` in `ns`: labels and
    /// selector `app=<name>`, one container `app` with `image`, port 8080 and an HTTP liveness
    /// probe. The controllers then create its ReplicaSet and pods.
    pub fn deploy(&self, ns: &str, name: &str, image: &str, replicas: i32) {
        let mut st = self.shared.lock();
        if let Err(e) = registry::deploy(&mut st, ns, name, image, replicas) {
            tracing::warn!(message = %e.message, "FakeCluster::deploy failed");
        }
        drop(st);
        self.shared.notify.notify_one();
    }

    /// Every container running `image` (current and future pods) behaves so from now on.
    pub fn behave_image(&self, image: &str, b: Behavior) {
        self.shared.lock().kubelet.image_behaviors.insert(image.to_string(), b);
        self.shared.notify.notify_one();
    }

    /// The containers of one existing pod behave so from now on (overrides the image's).
    pub fn behave_pod(&self, ns: &str, pod: &str, b: Behavior) {
        self.shared.lock().kubelet.pod_behaviors.insert((ns.to_string(), pod.to_string()), b);
        self.shared.notify.notify_one();
    }

    /// Adds a fault; faults are tried in the order they were injected.
    pub fn inject(&self, f: Fault) {
        let times = f.times;
        self.shared.lock().faults.push((f, times));
    }

    /// The pods of `ns` now (full objects with `kind`/`apiVersion`), ordered by name.
    pub fn pods(&self, ns: &str) -> Vec<Value> {
        let st = self.shared.lock();
        st.store.list(resources::PODS, Some(ns)).cloned().collect()
    }

    /// The pods Deployment `ns/name` selects now (full objects), ordered by name; None when
    /// there is no such Deployment.
    pub fn deployment_pods(&self, ns: &str, name: &str) -> Option<Vec<Value>> {
        self.shared.deployment_pods(ns, name)
    }

    /// Any stored object, e.g. `object("apps/v1", "Deployment", "ns", "web")`.
    pub fn object(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
        let id = resources::find_kind(api_version, kind)?;
        let ns = if resources::res(id).namespaced { ns } else { "" };
        self.shared.lock().store.get(id, ns, name).cloned()
    }

    /// Takes away a permission: from now on `verb` on `resource` in `namespace` is refused —
    /// a `SelfSubjectAccessReview` answers `allowed: false, denied: true`, and the request
    /// itself gets 403 Forbidden. `verb` is `get`, `list`, ... or `*`; `resource` is `pods`,
    /// `deployments.apps`, `pods/log`, `deployments.apps/scale`, `pods/*`, `*.apps` or `*`
    /// (RBAC's matching: `pods` does not cover `pods/log`), or a non-resource URL such as
    /// `/healthz` (reviews only); `namespace` is a namespace, `*` (all, and the cluster
    /// scope) or `""` (cluster scope only). Deny rules win over [`FakeCluster::allow_only`].
    pub fn deny(&self, verb: &str, resource: &str, namespace: &str) {
        self.shared.lock().access.deny(access::Rule::parse(verb, resource, namespace));
    }

    /// Grants only these `(verb, resource, namespace)` rules (same syntax as
    /// [`FakeCluster::deny`]); everything else is neither allowed nor denied (`allowed: false`
    /// without a reason, as RBAC answers) and refused with 403. Replaces an earlier
    /// `allow_only`; deny rules stay.
    pub fn allow_only(&self, rules: &[(&str, &str, &str)]) {
        let rules = rules.iter().map(|(v, r, n)| access::Rule::parse(v, r, n)).collect();
        self.shared.lock().access.allow_only(rules);
    }

    /// Back to the default: everything allowed, no deny rules.
    pub fn allow_all(&self) {
        self.shared.lock().access.reset();
    }

    /// Every request so far: (method, `path?query`).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// Creates or replaces any served object (CronJob, Secret, ConfigMap, Lease, Pod, ...)
    /// by its `apiVersion`, `kind`, `metadata.namespace` (default `default`) and
    /// `metadata.name`, with the same defaulting and validation as the API.
    ///
    /// # Panics
    /// If the kind is not served by the fake or the object is invalid: seeding is test setup,
    /// and a silent no-op would hide the mistake.
    pub fn put_object(&self, obj: Value) {
        let mut st = self.shared.lock();
        let r = registry::put(&mut st, obj);
        drop(st);
        self.shared.notify.notify_one();
        if let Err(e) = r {
            panic!("FakeCluster::put_object: {}", e.message);
        }
    }

    /// Drops the watch history: a watch from an older `resourceVersion` now gets 410 Gone
    /// (as after an etcd compaction).
    pub fn compact(&self) {
        self.shared.lock().store.compact();
    }

    /// Stops serving: open watches and log streams end, hanging requests are answered 503.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controller.take() {
            c.abort();
        }
        if let Some(mut s) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut s).await.is_err()
        {
            s.abort();
        }
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controller.take() {
            c.abort();
        }
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}
