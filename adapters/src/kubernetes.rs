//! The Kubernetes driver: the [`Cluster`] port over kube-rs 5 (k8s-openapi pinned to v1_33).
//!
//! The same code talks to a real API server (kubeconfig + context, or in-cluster) and to the
//! sandbox's emulated one (a plain `http://127.0.0.1:PORT` URL). kube's default retry policy is
//! off (it retries 429/503/504 up to 15 times, so a failing step would hang for minutes), and
//! every request is bounded by the configured timeout: API errors surface at once, with the API
//! server's own message.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use k8s_openapi::api::core::v1::{ContainerStatus, Event, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use runbot_commands::ports::HelmRevision;
use runbot_commands::ports::cluster::{Cluster, ClusterError, ContainerInfo, DeploymentInfo, EventInfo, PodInfo, Rollout, Termination};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// One connected cluster.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    /// Bound on every single request (not on waits, which have their own timeout).
    timeout: Duration,
}

fn configure(mut cfg: Config, timeout: Duration) -> Result<KubeCluster, String> {
    cfg.default_retry = false;
    cfg.connect_timeout = Some(timeout);
    cfg.write_timeout = Some(timeout);
    let client = Client::try_from(cfg).map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
    Ok(KubeCluster { client, timeout })
}

impl KubeCluster {
    /// An API server at `url` without credentials (the sandbox, or a `kubectl proxy`).
    pub fn from_url(url: &str, timeout: Duration) -> Result<KubeCluster, String> {
        let uri = url.parse().map_err(|e| format!("'{url}' is not a URL: {e}"))?;
        configure(Config::new(uri), timeout)
    }

    /// A kubeconfig file, with `context` or its current context.
    pub async fn from_kubeconfig(path: &str, context: Option<&str>, timeout: Duration) -> Result<KubeCluster, String> {
        let kc = Kubeconfig::read_from(path).map_err(|e| format!("cannot read kubeconfig {path}: {e}"))?;
        let opts = KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
        let cfg = Config::from_custom_kubeconfig(kc, &opts).await.map_err(|e| format!("kubeconfig {path}: {e}"))?;
        configure(cfg, timeout)
    }

    /// The pod's service account (runbot running inside the cluster).
    pub fn in_cluster(timeout: Duration) -> Result<KubeCluster, String> {
        let cfg = Config::incluster().map_err(|e| format!("not running in a cluster: {e}"))?;
        configure(cfg, timeout)
    }

    fn pods_api(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Lists the pods matching `selector`, then follows a watch from the list's
    /// resourceVersion (listing again when the watch ends or the version is too old), until
    /// `done` returns `Ok` for the pods seen; on timeout, `done`'s last `Err` says how far it got.
    async fn watch_pods_until<R>(
        &self,
        namespace: &str,
        selector: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<String, Pod>) -> Result<R, String>,
    ) -> Result<R, ClusterError> {
        let api = self.pods_api(namespace);
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |progress: String| ClusterError::Timeout(format!("{what}: {progress}"));
        loop {
            let list = self.call(what, api.list(&ListParams::default().labels(selector))).await?;
            let mut pods: BTreeMap<String, Pod> = list.items.into_iter().map(|p| (p.metadata.name.clone().unwrap_or_default(), p)).collect();
            let mut progress = match done(&pods) {
                Ok(r) => return Ok(r),
                Err(p) => p,
            };
            let rv = list.metadata.resource_version.unwrap_or_else(|| "0".into());
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(timed_out(progress));
            }
            let wp = WatchParams::default().labels(selector).timeout(left.as_secs().clamp(1, 290) as u32);
            let stream = match tokio::time::timeout(left, api.watch(&wp, &rv)).await {
                Err(_) => return Err(timed_out(progress)),
                Ok(s) => s.map_err(|e| api_error(what, e))?,
            };
            let mut stream = Box::pin(stream);
            loop {
                let next = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => return Err(timed_out(progress)),
                    Ok(n) => n,
                };
                match next {
                    None => break, // the server ended the watch: list again
                    Some(Err(e)) => return Err(api_error(what, e)),
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p))) => {
                        pods.insert(p.metadata.name.clone().unwrap_or_default(), p);
                    }
                    Some(Ok(WatchEvent::Deleted(p))) => {
                        pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    Some(Ok(WatchEvent::Bookmark(_))) => continue,
                    Some(Ok(WatchEvent::Error(s))) if s.code == 410 => break, // too old: list again
                    Some(Ok(WatchEvent::Error(s))) => return Err(api_error(what, kube::Error::Api(s))),
                }
                progress = match done(&pods) {
                    Ok(r) => return Ok(r),
                    Err(p) => p,
                };
            }
        }
    }

    /// One request, bounded by the timeout, with kube's error turned into a port error.
    async fn call<T>(&self, what: &str, fut: impl Future<Output = Result<T, kube::Error>>) -> Result<T, ClusterError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(ClusterError::Timeout(format!("{what}: no answer from the API server within {}s", self.timeout.as_secs_f64()))),
            Ok(r) => r.map_err(|e| api_error(what, e)),
        }
    }
}

/// kube's error as the port's: the API server's status code and message, or the transport's.
fn api_error(what: &str, e: kube::Error) -> ClusterError {
    match e {
        kube::Error::Api(s) => {
            let msg = if s.message.is_empty() { s.reason.clone() } else { s.message.clone() };
            match s.code {
                401 | 403 => ClusterError::Forbidden(format!("{what}: {msg}")),
                404 => ClusterError::NotFound(format!("{what}: {msg}")),
                code => ClusterError::Api { code, message: format!("{what}: {msg}") },
            }
        }
        other => ClusterError::Transport(format!("{what}: {other}")),
    }
}

fn time(t: &Option<Time>) -> Option<DateTime<Utc>> {
    t.as_ref().and_then(|t| DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32))
}

fn container_info(c: &ContainerStatus) -> ContainerInfo {
    let state = match &c.state {
        Some(s) if s.running.is_some() => "running".to_string(),
        Some(s) if s.waiting.is_some() => {
            format!("waiting: {}", s.waiting.as_ref().and_then(|w| w.reason.clone()).unwrap_or_else(|| "unknown".into()))
        }
        Some(s) if s.terminated.is_some() => {
            format!("terminated: {}", s.terminated.as_ref().and_then(|t| t.reason.clone()).unwrap_or_else(|| "unknown".into()))
        }
        _ => "unknown".to_string(),
    };
    let last_termination = c.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| Termination {
        reason: t.reason.clone().unwrap_or_else(|| "Unknown".into()),
        exit_code: t.exit_code,
        finished_at: time(&t.finished_at),
    });
    ContainerInfo { name: c.name.clone(), image: c.image.clone(), ready: c.ready, restart_count: c.restart_count, state, last_termination }
}

/// What the runbooks need to know of a pod.
pub fn pod_info(p: &Pod) -> PodInfo {
    let status = p.status.as_ref();
    let ready = status.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let mut containers: Vec<ContainerInfo> =
        status.and_then(|s| s.container_statuses.as_ref()).map(|v| v.iter().map(container_info).collect()).unwrap_or_default();
    // Containers without a status yet (just scheduled) still count.
    if let Some(spec) = &p.spec {
        for c in &spec.containers {
            if !containers.iter().any(|x| x.name == c.name) {
                containers.push(ContainerInfo {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    ready: false,
                    restart_count: 0,
                    state: "waiting: ContainerCreating".into(),
                    last_termination: None,
                });
            }
        }
    }
    PodInfo {
        name: p.metadata.name.clone().unwrap_or_default(),
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Unknown".into()),
        ready,
        terminating: p.metadata.deletion_timestamp.is_some(),
        created_at: time(&p.metadata.creation_timestamp),
        containers,
    }
}

/// `kubectl rollout status` for a Deployment
/// (k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go).
pub fn rollout_status(d: &Deployment) -> Rollout {
    let name = d.metadata.name.clone().unwrap_or_default();
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(st) = &d.status else {
        return Rollout::Pending(format!("waiting for deployment \"{name}\" spec update to be observed"));
    };
    if generation > st.observed_generation.unwrap_or(0) {
        return Rollout::Pending(format!("waiting for deployment \"{name}\" spec update to be observed"));
    }
    let progressing = st.conditions.as_ref().and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"));
    if progressing.is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded")) {
        return Rollout::Failed(format!("deployment \"{name}\" exceeded its progress deadline"));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = st.updated_replicas.unwrap_or(0);
    let replicas = st.replicas.unwrap_or(0);
    let available = st.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Progressing(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Rollout::Progressing(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Progressing(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Rollout::Complete(format!("deployment \"{name}\" successfully rolled out"))
}

/// Ready, not terminating, not excluded: the names, sorted.
fn ready_names(pods: &BTreeMap<String, Pod>, exclude: &[String]) -> Vec<String> {
    pods.values().map(pod_info).filter(|p| p.ready && !p.terminating && !exclude.contains(&p.name)).map(|p| p.name).collect()
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<PodInfo>, ClusterError> {
        let api = self.pods_api(namespace);
        let list = self.call(&format!("list pods {selector} in {namespace}"), api.list(&ListParams::default().labels(selector))).await?;
        let mut pods: Vec<PodInfo> = list.items.iter().map(pod_info).collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<PodInfo>, ClusterError> {
        let api = self.pods_api(namespace);
        let p = self.call(&format!("get pod {name} in {namespace}"), api.get_opt(name)).await?;
        Ok(p.as_ref().map(pod_info))
    }

    async fn events(&self, namespace: &str, pod: &str) -> Result<Vec<EventInfo>, ClusterError> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.kind=Pod,involvedObject.name={pod}"));
        let list = self.call(&format!("list events of pod {pod}"), api.list(&lp)).await?;
        let mut v: Vec<(Option<DateTime<Utc>>, EventInfo)> = list
            .items
            .iter()
            .map(|e| {
                let last = time(&e.last_timestamp).or_else(|| time(&e.first_timestamp));
                (
                    last,
                    EventInfo {
                        kind: e.type_.clone().unwrap_or_else(|| "Normal".into()),
                        reason: e.reason.clone().unwrap_or_default(),
                        message: e.message.clone().unwrap_or_default(),
                        count: e.count.unwrap_or(1),
                        last_seen: last,
                    },
                )
            })
            .collect();
        v.sort_by_key(|(t, _)| *t);
        Ok(v.into_iter().map(|(_, e)| e).collect())
    }

    async fn logs(&self, namespace: &str, pod: &str, container: &str, previous: bool, tail: u32) -> Result<String, ClusterError> {
        let api = self.pods_api(namespace);
        let lp = LogParams { container: Some(container.to_string()), previous, tail_lines: Some(tail.into()), ..Default::default() };
        let which = if previous { "previous " } else { "" };
        self.call(&format!("read the {which}log of {pod}/{container}"), api.logs(pod, &lp)).await
    }

    async fn delete_pod(&self, namespace: &str, name: &str) -> Result<(), ClusterError> {
        let api = self.pods_api(namespace);
        match self.call(&format!("delete pod {name} in {namespace}"), api.delete(name, &DeleteParams::default())).await {
            Ok(_) | Err(ClusterError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn wait_ready(
        &self,
        namespace: &str,
        selector: &str,
        count: usize,
        exclude: &[String],
        timeout: Duration,
    ) -> Result<Vec<String>, ClusterError> {
        let what = format!("wait for {count} Ready pods {selector} in {namespace}");
        self.watch_pods_until(namespace, selector, timeout, &what, |pods| {
            let ready = ready_names(pods, exclude);
            if ready.len() >= count { Ok(ready) } else { Err(format!("{} of {count} Ready", ready.len())) }
        })
        .await
    }

    async fn rollout(&self, namespace: &str, deployment: &str) -> Result<Rollout, ClusterError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let d = self.call(&format!("get deployment {deployment} in {namespace}"), api.get(deployment)).await?;
        Ok(rollout_status(&d))
    }

    async fn deployment(&self, namespace: &str, name: &str) -> Result<DeploymentInfo, ClusterError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let d = self.call(&format!("get deployment {name} in {namespace}"), api.get(name)).await?;
        let spec = d.spec.unwrap_or_default();
        let labels = spec.selector.match_labels.unwrap_or_default();
        if labels.is_empty() {
            return Err(ClusterError::Api {
                code: 422,
                message: format!("deployment {name} selects its pods without matchLabels; runbot needs them"),
            });
        }
        let selector = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        Ok(DeploymentInfo { replicas: spec.replicas.unwrap_or(1), selector })
    }

    async fn wait_no_pods(&self, namespace: &str, selector: &str, timeout: Duration) -> Result<(), ClusterError> {
        let what = format!("wait until no pod {selector} is left in {namespace}");
        self.watch_pods_until(namespace, selector, timeout, &what, |pods| {
            if pods.is_empty() { Ok(()) } else { Err(format!("{} pod(s) still there", pods.len())) }
        })
        .await
    }

    async fn scale(&self, namespace: &str, deployment: &str, replicas: i32) -> Result<i32, ClusterError> {
        if replicas < 0 {
            return Err(ClusterError::Api { code: 422, message: format!("cannot scale {deployment} to {replicas} replicas") });
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let what = format!("scale deployment {deployment} in {namespace}");
        let before = self.call(&what, api.get_scale(deployment)).await?;
        let previous = before.spec.and_then(|s| s.replicas).unwrap_or(0);
        let patch = Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } }));
        self.call(&what, api.patch_scale(deployment, &PatchParams::default(), &patch)).await?;
        Ok(previous)
    }

    async fn run_job_from_cronjob(
        &self,
        namespace: &str,
        cronjob: &str,
        job: &str,
        output: UnboundedSender<String>,
        timeout: Duration,
    ) -> Result<bool, ClusterError> {
        let cronjobs: Api<CronJob> = Api::namespaced(self.client.clone(), namespace);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let cj = self.call(&format!("get cronjob {cronjob} in {namespace}"), cronjobs.get(cronjob)).await?;
        let template = cj.spec.as_ref().map(|s| s.job_template.clone()).unwrap_or_default();
        // As `kubectl create job --from=cronjob/NAME`: the template's labels and annotations,
        // the instantiate annotation, and the CronJob as owner.
        let mut annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
        annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
        let owner = OwnerReference {
            api_version: "batch/v1".into(),
            kind: "CronJob".into(),
            name: cronjob.to_string(),
            uid: cj.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let new = Job {
            metadata: ObjectMeta {
                name: Some(job.to_string()),
                namespace: Some(namespace.to_string()),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                annotations: Some(annotations),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: Some(template.spec.clone().unwrap_or_else(JobSpec::default)),
            status: None,
        };
        self.call(&format!("create job {job} from cronjob {cronjob}"), jobs.create(&PostParams::default(), &new)).await?;
        let _ = output.send(format!("job {job} created from cronjob {cronjob}"));
        let deadline = tokio::time::Instant::now() + timeout;
        let pods = self.pods_api(namespace);
        let selector = format!("job-name={job}");
        let mut followed: Option<String> = None;
        let mut log_task: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            if tokio::time::Instant::now() >= deadline {
                break Err(ClusterError::Timeout(format!("job {job} did not finish within {}s", timeout.as_secs())));
            }
            let j = self.call(&format!("get job {job}"), jobs.get(job)).await?;
            if followed.is_none() {
                let list = self.call(&format!("list pods of job {job}"), pods.list(&ListParams::default().labels(&selector))).await?;
                if let Some(p) = list.items.iter().find(|p| {
                    let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
                    phase == "Running" || phase == "Succeeded" || phase == "Failed"
                }) {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let _ = output.send(format!("following the log of pod {name}"));
                    log_task = Some(tokio::spawn(follow_log(pods.clone(), name.clone(), output.clone())));
                    followed = Some(name);
                }
            }
            let status = j.status.unwrap_or_default();
            let cond = |t: &str| status.conditions.as_ref().is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"));
            if cond("Complete") || status.succeeded.unwrap_or(0) > 0 {
                break Ok(true);
            }
            if cond("Failed") {
                break Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        if let Some(t) = log_task {
            // The log ends with the container; give it a moment to drain, then stop following.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        result
    }

    async fn helm_history(&self, namespace: &str, release: &str) -> Result<Vec<HelmRevision>, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let lp = ListParams::default().labels(&format!("owner=helm,name={release}"));
        let list = self.call(&format!("list Helm release Secrets of {release} in {namespace}"), api.list(&lp)).await?;
        let mut revs = Vec::new();
        for s in &list.items {
            if s.type_.as_deref() != Some("helm.sh/release.v1") {
                continue;
            }
            let name = s.metadata.name.clone().unwrap_or_default();
            let Some(data) = s.data.as_ref().and_then(|d| d.get("release")) else {
                return Err(ClusterError::Api { code: 0, message: format!("Helm release Secret {name} has no `release` key") });
            };
            let rev =
                helm::decode_release(&data.0).map_err(|e| ClusterError::Api { code: 0, message: format!("Helm release Secret {name}: {e}") })?;
            revs.push(rev);
        }
        revs.sort_by_key(|r| r.revision);
        Ok(revs)
    }

    async fn can_i(&self, namespace: &str, verb: &str, resource: &str) -> Result<bool, ClusterError> {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (resource, None),
        };
        let (resource, group) = match resource.split_once('.') {
            Some((r, g)) => (r, g),
            None => (resource, ""),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(namespace.to_string()),
                    verb: Some(verb.to_string()),
                    group: Some(group.to_string()),
                    resource: Some(resource.to_string()),
                    subresource,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
        let answer = self.call(&format!("ask whether runbot may {verb} {resource}"), api.create(&PostParams::default(), &review)).await?;
        Ok(answer.status.map(|s| s.allowed).unwrap_or(false))
    }

    async fn secret_exists(&self, namespace: &str, name: &str) -> Result<bool, ClusterError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        // Metadata only: the Secret's data never reaches runbot.
        let m = self.call(&format!("get Secret {name} in {namespace}"), api.get_metadata_opt(name)).await?;
        Ok(m.is_some())
    }

    async fn switch_secret_key(&self, namespace: &str, name: &str, key: &str, value: &str, keep_as: &str) -> Result<(), ClusterError> {
        use base64::Engine as _;
        // JSON pointer escaping (RFC 6901) of the keys.
        let pointer = |k: &str| format!("/data/{}", k.replace('~', "~0").replace('/', "~1"));
        let patch = serde_json::json!([
            { "op": "copy", "from": pointer(key), "path": pointer(keep_as) },
            { "op": "replace", "path": pointer(key), "value": base64::engine::general_purpose::STANDARD.encode(value) },
        ]);
        let what = format!("switch key {key} of Secret {name} in {namespace} (the old value kept as {keep_as})");
        let req = hyper::Request::patch(format!("/api/v1/namespaces/{namespace}/secrets/{name}"))
            .header("Content-Type", "application/json-patch+json")
            .header("Accept", "application/json")
            .body(patch.to_string().into_bytes())
            .map_err(|e| ClusterError::Transport(format!("{what}: {e}")))?;
        // The answer is the whole Secret: dropped unread.
        self.call(&what, self.client.request_text(req)).await.map(drop)
    }
}

/// Helm's release storage format (`sh.helm.release.v1`): base64 of gzip of JSON, inside the
/// Secret's own base64 (which k8s-openapi has already undone).
pub mod helm {
    use base64::Engine as _;
    use chrono::{DateTime, Utc};
    use runbot_commands::ports::HelmRevision;
    use std::io::Read;

    /// Decodes the `release` value of a release Secret (Helm's base64 text).
    pub fn decode_release(b64: &[u8]) -> Result<HelmRevision, String> {
        let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()).map_err(|e| format!("not base64: {e}"))?;
        // Helm skips gunzip when the gzip magic is absent.
        let json = if raw.starts_with(&[0x1f, 0x8b, 0x08]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..]).take(64 << 20).read_to_end(&mut out).map_err(|e| format!("not gzip: {e}"))?;
            out
        } else {
            raw
        };
        let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| format!("not a release document: {e}"))?;
        let s = |p: &str| v.pointer(p).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let revision = v.get("version").and_then(|x| x.as_u64()).ok_or("the release has no `version`")? as u32;
        let time = |p: &str| v.pointer(p).and_then(|x| x.as_str()).and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
        let description = match s("/info/description") {
            d if d.is_empty() => s("/info/Description"),
            d => d,
        };
        Ok(HelmRevision {
            revision,
            status: s("/info/status"),
            chart: format!("{}-{}", s("/chart/metadata/name"), s("/chart/metadata/version")),
            app_version: s("/chart/metadata/appVersion"),
            updated: time("/info/last_deployed").or_else(|| time("/info/first_deployed")),
            description,
            values: coalesce(v.pointer("/chart/values"), v.get("config")),
        })
    }

    /// The values a revision ran with: the chart's defaults (`chart.values`) overridden by the
    /// user-supplied ones (`config`), maps merged key by key, as helm coalesces them.
    fn coalesce(defaults: Option<&serde_json::Value>, user: Option<&serde_json::Value>) -> serde_json::Value {
        use serde_json::Value;
        match (defaults, user) {
            (Some(Value::Object(d)), Some(Value::Object(u))) => {
                let mut out = d.clone();
                for (k, v) in u {
                    let merged = coalesce(d.get(k), Some(v));
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (_, Some(u)) if !u.is_null() => u.clone(),
            (Some(d), _) => d.clone(),
            _ => Value::Null,
        }
    }
}

/// Streams a pod's log lines to `output` until the container ends.
async fn follow_log(api: Api<Pod>, pod: String, output: UnboundedSender<String>) {
    use futures::AsyncBufReadExt;
    let lp = LogParams { follow: true, ..Default::default() };
    match api.log_stream(&pod, &lp).await {
        Ok(stream) => {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                if output.send(line).is_err() {
                    break;
                }
            }
        }
        Err(e) => {
            let _ = output.send(format!("(the log of {pod} is unavailable: {e})"));
        }
    }
}
