//! A fake GitHub REST API on 127.0.0.1 for the deploy runbook's CI gate and `pipeline` driver,
//! speaking GitHub's real wire format (octocrab's `models::workflows::Run`,
//! `models::repos::Ref` and `models::repos::GitTag` deserialize its answers):
//!
//! - `GET /repos/{o}/{r}` — the repository;
//! - `GET /repos/{o}/{r}/actions/workflows` and `.../workflows/{workflow_id}`;
//! - `GET /repos/{o}/{r}/actions/workflows/{workflow_id}/runs` (`branch`, `event`, `status`,
//!   `per_page`, `page`; newest first, `Link` header when there are more pages);
//!   `workflow_id` is the file name (`ci.yml`) or the numeric id;
//! - `GET /repos/{o}/{r}/actions/runs/{run_id}`;
//! - `GET /repos/{o}/{r}/git/ref/tags/{tag}` (lightweight and annotated tags) and
//!   `GET /repos/{o}/{r}/git/tags/{sha}` (annotated tag objects);
//! - `POST /repos/{o}/{r}/actions/workflows/{workflow_id}/dispatches` — 204, or 422 with
//!   GitHub's message for an undeclared input or an unknown ref. It creates a
//!   `workflow_dispatch` run that goes `queued` → `in_progress` → `completed` with the
//!   [`Timing`]'s delays; when it starts, the workflow's [`DispatchHook`] is called with the
//!   inputs (the run "calls the deploy"): `true` = `success`, `false` = `failure`.
//!
//! Errors are GitHub's `{"message", "documentation_url", "status"}`; unknown paths, repos,
//! workflows, runs and tags are 404 `Not Found`. With a token set ([`FakeGitHub::set_token`]),
//! a request without `Authorization: Bearer <token>` / `token <token>` gets 401 (`Requires
//! authentication` when there is none, `Bad credentials` when it is wrong). A request
//! without a `User-Agent` gets 403 like GitHub. Every answer carries the
//! `x-ratelimit-{limit,remaining,reset,used,resource}` headers. Failures are scripted with
//! [`FakeGitHub::fail_next`]; every request is recorded ([`FakeGitHub::calls`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use runbot_commands::setup::{SetupResult, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `documentation_url` of error answers.
pub const DOCS_URL: &str = "https://docs.github.com/rest";
const RATE_LIMIT: u64 = 5000;

/// How fast dispatched runs move.
#[derive(Clone, Debug)]
pub struct Timing {
    /// From the dispatch to `in_progress` (when the hook is called).
    pub queued_for: Duration,
    /// The least time a run stays `in_progress` (it also waits for its hook).
    pub runs_for: Duration,
}

impl Timing {
    /// For tests: queued 30 ms, in progress at least 60 ms.
    pub fn fast() -> Timing {
        Timing { queued_for: Duration::from_millis(30), runs_for: Duration::from_millis(60) }
    }
    /// For `runbot demo`, watchable by a person: queued 3 s, in progress at least 8 s.
    pub fn demo() -> Timing {
        Timing { queued_for: Duration::from_secs(3), runs_for: Duration::from_secs(8) }
    }
}

/// What a dispatched run does when it starts: gets the dispatch's inputs, answers whether
/// the run succeeded.
pub type DispatchHook = Arc<dyn Fn(BTreeMap<String, String>) -> BoxFuture<'static, bool> + Send + Sync>;

/// One request as received, with the status it got.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    /// Path and query as sent (`/repos/acme/app/actions/workflows/ci.yml/runs?branch=main`).
    pub path: String,
    /// The JSON body; `Null` when there was none (a non-JSON body is kept as a string).
    pub body: Value,
    pub status: u16,
}

/// A workflow run as the fake keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRun {
    pub id: u64,
    /// `owner/name`
    pub repo: String,
    pub workflow_id: u64,
    /// `ci.yml`
    pub workflow_file: String,
    /// The workflow's name (`CI`).
    pub name: String,
    pub run_number: u64,
    pub head_branch: String,
    pub head_sha: String,
    pub event: String,
    /// `queued`, `in_progress`, `completed`, ...
    pub status: String,
    pub conclusion: Option<String>,
    /// The inputs of a dispatched run.
    pub inputs: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

struct Workflow {
    id: u64,
    file: String,
    name: String,
    inputs: Vec<String>,
    created_at: DateTime<Utc>,
}

struct TagEntry {
    /// The commit the tag (finally) points at.
    commit: String,
    /// The tag object's sha, for an annotated tag.
    object: Option<String>,
}

struct Repo {
    id: u64,
    workflows: Vec<Workflow>,
    branches: BTreeMap<String, String>,
    tags: BTreeMap<String, TagEntry>,
    hooks: HashMap<String, DispatchHook>,
    created_at: DateTime<Utc>,
}

struct Fault {
    method: String,
    path_contains: String,
    status: u16,
    /// Requests it still catches; `None` = forever.
    left: Option<u32>,
}

struct State {
    token: Option<String>,
    repos: BTreeMap<String, Repo>,
    runs: Vec<FakeRun>,
    next_repo_id: u64,
    next_workflow_id: u64,
    next_run_id: u64,
    faults: Vec<Fault>,
    calls: Vec<Call>,
    used: u64,
    reset_at: i64,
    tasks: Vec<JoinHandle<()>>,
}

impl State {
    fn repo_mut(&mut self, full: &str) -> &mut Repo {
        if !self.repos.contains_key(full) {
            self.next_repo_id += 1;
            let repo = Repo {
                id: self.next_repo_id,
                workflows: Vec::new(),
                branches: BTreeMap::new(),
                tags: BTreeMap::new(),
                hooks: HashMap::new(),
                created_at: Utc::now(),
            };
            self.repos.insert(full.to_string(), repo);
        }
        // Inserted just above when missing.
        self.repos.get_mut(full).unwrap_or_else(|| unreachable!("repo {full} was just inserted"))
    }
}

struct Shared {
    state: Mutex<State>,
    timing: Timing,
    /// `http://127.0.0.1:PORT`
    base: String,
}

impl Shared {
    /// Never held across an `.await`; a panic elsewhere does not poison it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake. Stops with [`FakeGitHub::shutdown`] or when dropped.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(s) = self.server.take() {
            s.abort();
        }
        for t in self.shared.lock().tasks.drain(..) {
            t.abort();
        }
    }
}

impl FakeGitHub {
    /// Binds `listen` (port 0 for a random port; only 127.0.0.1 is accepted) and serves.
    /// No token is required until [`FakeGitHub::set_token`].
    pub async fn start(listen: SocketAddr, timing: Timing) -> SetupResult<FakeGitHub> {
        ensure(listen.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), || {
            format!("the fake GitHub listens on 127.0.0.1 only, not {listen}")
        })?;
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                token: None,
                repos: BTreeMap::new(),
                runs: Vec::new(),
                next_repo_id: 700_000_000,
                next_workflow_id: 61_000_000,
                next_run_id: 9_100_000_000,
                faults: Vec::new(),
                calls: Vec::new(),
                used: 0,
                reset_at: Utc::now().timestamp() + 3600,
                tasks: Vec::new(),
            }),
            timing,
            base: format!("http://{addr}"),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (stop, mut sd) = watch::channel(false);
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = sd.wait_for(|s| *s).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "fake GitHub stopped");
            }
        });
        Ok(FakeGitHub { shared, stop, server: Some(server) })
    }

    /// `http://127.0.0.1:PORT` — the API base URL (like `https://api.github.com`).
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    /// Requires `token` on every request from now on (`None`: no authentication).
    pub fn set_token(&self, token: Option<&str>) {
        self.shared.lock().token = token.map(str::to_string);
    }

    /// Adds (or redeclares) workflow `file` (`ci.yml`) named `name` (`CI`) in `repo`
    /// (`owner/name`), with the `workflow_dispatch` inputs it declares.
    pub fn add_workflow(&self, repo: &str, file: &str, name: &str, inputs: &[&str]) {
        let mut st = self.shared.lock();
        st.next_workflow_id += 1;
        let id = st.next_workflow_id;
        let r = st.repo_mut(repo);
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        if let Some(w) = r.workflows.iter_mut().find(|w| w.file == file) {
            w.name = name.to_string();
            w.inputs = inputs;
        } else {
            r.workflows.push(Workflow { id, file: file.to_string(), name: name.to_string(), inputs, created_at: Utc::now() });
        }
    }

    /// The numeric id of workflow `file` in `repo`.
    pub fn workflow_id(&self, repo: &str, file: &str) -> Option<u64> {
        let st = self.shared.lock();
        st.repos.get(repo)?.workflows.iter().find(|w| w.file == file).map(|w| w.id)
    }

    /// Creates or moves branch `branch` of `repo` to commit `sha`.
    pub fn set_branch(&self, repo: &str, branch: &str, sha: &str) {
        self.shared.lock().repo_mut(repo).branches.insert(branch.to_string(), sha.to_string());
    }

    /// Tags commit `sha` as `tag`: a lightweight tag (the ref points at the commit) or an
    /// annotated one (the ref points at a tag object, which points at the commit).
    pub fn add_tag(&self, repo: &str, tag: &str, sha: &str, annotated: bool) {
        let object = annotated.then(|| hex::encode(&Sha256::digest(format!("tag {tag}\0{sha}").as_bytes())[..20]));
        self.shared.lock().repo_mut(repo).tags.insert(tag.to_string(), TagEntry { commit: sha.to_string(), object });
    }

    /// The tag object sha of annotated tag `tag`.
    pub fn tag_object(&self, repo: &str, tag: &str) -> Option<String> {
        self.shared.lock().repos.get(repo)?.tags.get(tag)?.object.clone()
    }

    /// Records a run of `workflow_file` (which must have been added) and returns its id.
    /// Runs pushed later are newer.
    #[allow(clippy::too_many_arguments)]
    pub fn push_run(&self, repo: &str, workflow_file: &str, branch: &str, sha: &str, event: &str, status: &str, conclusion: Option<&str>) -> u64 {
        let mut st = self.shared.lock();
        let Some((wid, name)) = st.repos.get(repo).and_then(|r| r.workflows.iter().find(|w| w.file == workflow_file)).map(|w| (w.id, w.name.clone()))
        else {
            panic!("FakeGitHub::push_run: no workflow {workflow_file} in {repo} (add_workflow first)");
        };
        new_run(&mut st, repo, wid, workflow_file, &name, branch, sha, event, status, conclusion, BTreeMap::new())
    }

    /// Sets what dispatched runs of `workflow_file` do when they start.
    pub fn on_dispatch(&self, repo: &str, workflow_file: &str, hook: DispatchHook) {
        self.shared.lock().repo_mut(repo).hooks.insert(workflow_file.to_string(), hook);
    }

    /// Changes a run's status and conclusion (as a runner would).
    pub fn set_run_state(&self, id: u64, status: &str, conclusion: Option<&str>) {
        let mut st = self.shared.lock();
        if let Some(r) = st.runs.iter_mut().find(|r| r.id == id) {
            r.status = status.to_string();
            r.conclusion = conclusion.map(str::to_string);
            r.updated_at = Utc::now();
        }
    }

    /// The runs of `repo`, oldest first.
    pub fn runs(&self, repo: &str) -> Vec<FakeRun> {
        self.shared.lock().runs.iter().filter(|r| r.repo == repo).cloned().collect()
    }

    /// Every request so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.lock().calls.clone()
    }

    /// The next `times` requests (0 = all from now on) whose method is `method` (any when
    /// empty; case-insensitive) and whose `path?query` contains `path_contains` get `status`
    /// with GitHub's error body (`Server Error` for 500, `Service Unavailable` for 503, ...),
    /// before authentication or anything else is looked at.
    pub fn fail_next(&self, method: &str, path_contains: &str, status: u16, times: u32) {
        self.shared.lock().faults.push(Fault {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            status,
            left: (times > 0).then_some(times),
        });
    }

    /// Stops serving (in-flight requests get up to 5 s) and stops the runs in progress.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.shared.lock().tasks.drain(..) {
            t.abort();
        }
        if let Some(mut s) = self.server.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut s).await.is_err()
        {
            s.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn new_run(
    st: &mut State,
    repo: &str,
    workflow_id: u64,
    file: &str,
    name: &str,
    branch: &str,
    sha: &str,
    event: &str,
    status: &str,
    conclusion: Option<&str>,
    inputs: BTreeMap<String, String>,
) -> u64 {
    st.next_run_id += 1;
    let id = st.next_run_id;
    let run_number = st.runs.iter().filter(|r| r.repo == repo && r.workflow_id == workflow_id).count() as u64 + 1;
    let now = Utc::now();
    st.runs.push(FakeRun {
        id,
        repo: repo.to_string(),
        workflow_id,
        workflow_file: file.to_string(),
        name: name.to_string(),
        run_number,
        head_branch: branch.to_string(),
        head_sha: sha.to_string(),
        event: event.to_string(),
        status: status.to_string(),
        conclusion: conclusion.map(str::to_string),
        inputs,
        created_at: now,
        updated_at: now,
    });
    id
}

/// An answer before the common headers are added.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    link: Option<String>,
}

impl Reply {
    fn json(v: Value) -> Reply {
        Reply { status: StatusCode::OK, body: Some(v), link: None }
    }
    fn error(status: StatusCode, message: &str) -> Reply {
        Reply { status, body: Some(json!({"message": message, "documentation_url": DOCS_URL, "status": status.as_u16().to_string()})), link: None }
    }
    fn not_found() -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "Not Found")
    }
}

async fn handle(AxState(sh): AxState<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let full_path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| uri.path().to_string());
    let body_v = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let reply = answer(&sh, &method, &uri, &full_path, &headers, &body_v);
    let (remaining, reset) = {
        let mut st = sh.lock();
        st.used += 1;
        st.calls.push(Call { method: method.to_string(), path: full_path, body: body_v, status: reply.status.as_u16() });
        (RATE_LIMIT.saturating_sub(st.used), st.reset_at)
    };
    let used = RATE_LIMIT - remaining;
    let mut resp = match reply.body {
        Some(v) => (reply.status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], v.to_string()).into_response(),
        None => reply.status.into_response(),
    };
    let h = resp.headers_mut();
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    put("x-ratelimit-limit", RATE_LIMIT.to_string());
    put("x-ratelimit-remaining", remaining.to_string());
    put("x-ratelimit-reset", reset.to_string());
    put("x-ratelimit-used", used.to_string());
    put("x-ratelimit-resource", "core".to_string());
    put("x-github-api-version-selected", "2022-11-28".to_string());
    if let Some(link) = reply.link {
        put("link", link);
    }
    resp
}

fn answer(sh: &Arc<Shared>, method: &Method, uri: &Uri, full_path: &str, headers: &HeaderMap, body: &Value) -> Reply {
    // Scripted failures first.
    {
        let mut st = sh.lock();
        let hit = st.faults.iter_mut().position(|f| {
            (f.method.is_empty() || f.method.eq_ignore_ascii_case(method.as_str())) && full_path.contains(&f.path_contains) && f.left != Some(0)
        });
        if let Some(i) = hit {
            let f = &mut st.faults[i];
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(n) = f.left.as_mut() {
                *n -= 1;
            }
            let message = match status.as_u16() {
                500 => "Server Error".to_string(),
                s => status.canonical_reason().map(str::to_string).unwrap_or_else(|| format!("HTTP {s}")),
            };
            return Reply::error(status, &message);
        }
    }
    if headers.get(header::USER_AGENT).is_none() {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.",
        );
    }
    let want = sh.lock().token.clone();
    if let Some(want) = want {
        let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        match got {
            None => return Reply::error(StatusCode::UNAUTHORIZED, "Requires authentication"),
            Some(a) => {
                let ok = a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("token ")).is_some_and(|t| t == want);
                if !ok {
                    return Reply::error(StatusCode::UNAUTHORIZED, "Bad credentials");
                }
            }
        }
    }
    let segs: Vec<String> = uri.path().trim_start_matches('/').split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let query: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs.as_slice() {
        ["repos", o, r] if get => with_repo(sh, o, r, |base, full, repo, _| Reply::json(repo_json(base, full, repo, true))),
        ["repos", o, r, "actions", "workflows"] if get => with_repo(sh, o, r, |base, full, repo, _| {
            let list: Vec<Value> = repo.workflows.iter().map(|w| workflow_json(base, full, w)).collect();
            Reply::json(json!({"total_count": list.len(), "workflows": list}))
        }),
        ["repos", o, r, "actions", "workflows", wf] if get => with_repo(sh, o, r, |base, full, repo, _| match find_workflow(repo, wf) {
            Some(w) => Reply::json(workflow_json(base, full, w)),
            None => Reply::not_found(),
        }),
        ["repos", o, r, "actions", "workflows", wf, "runs"] if get => with_repo(sh, o, r, |base, full, repo, runs| {
            let Some(w) = find_workflow(repo, wf) else { return Reply::not_found() };
            let mut list: Vec<&FakeRun> = runs
                .iter()
                .filter(|x| x.repo == full && x.workflow_id == w.id)
                .filter(|x| q("branch").is_none_or(|b| x.head_branch == b))
                .filter(|x| q("event").is_none_or(|e| x.event == e))
                .filter(|x| q("status").is_none_or(|s| x.status == s || x.conclusion.as_deref() == Some(s.as_str())))
                .filter(|x| q("head_sha").is_none_or(|s| x.head_sha == s))
                .collect();
            list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            let per_page = q("per_page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(30).min(100);
            let page = q("page").and_then(|p| p.parse::<usize>().ok()).filter(|p| *p > 0).unwrap_or(1);
            let total = list.len();
            let pages = total.div_ceil(per_page).max(1);
            let items: Vec<Value> = list.iter().skip((page - 1) * per_page).take(per_page).map(|x| run_json(base, full, repo, x)).collect();
            let mut reply = Reply::json(json!({"total_count": total, "workflow_runs": items}));
            if page < pages {
                let link_to = |n: usize| {
                    let mut qs: Vec<(String, String)> = query.iter().filter(|(k, _)| k != "page").cloned().collect();
                    qs.push(("page".into(), n.to_string()));
                    format!("{base}{}?{}", uri.path(), serde_urlencoded::to_string(&qs).unwrap_or_default())
                };
                reply.link = Some(format!("<{}>; rel=\"next\", <{}>; rel=\"last\"", link_to(page + 1), link_to(pages)));
            }
            reply
        }),
        ["repos", o, r, "actions", "runs", id] if get => with_repo(sh, o, r, |base, full, repo, runs| {
            match id.parse::<u64>().ok().and_then(|id| runs.iter().find(|x| x.id == id && x.repo == full)) {
                Some(x) => Reply::json(run_json(base, full, repo, x)),
                None => Reply::not_found(),
            }
        }),
        ["repos", o, r, "git", "ref", "tags", rest @ ..] if get && !rest.is_empty() => {
            let tag = rest.join("/");
            with_repo(sh, o, r, |base, full, repo, _| match repo.tags.get(&tag) {
                Some(t) => {
                    let api = format!("{base}/repos/{full}");
                    let object = match &t.object {
                        Some(o) => json!({"sha": o, "type": "tag", "url": format!("{api}/git/tags/{o}")}),
                        None => json!({"sha": t.commit, "type": "commit", "url": format!("{api}/git/commits/{}", t.commit)}),
                    };
                    Reply::json(json!({
                        "ref": format!("refs/tags/{tag}"),
                        "node_id": node_id("REF", &tag),
                        "url": format!("{api}/git/refs/tags/{tag}"),
                        "object": object,
                    }))
                }
                None => Reply::not_found(),
            })
        }
        ["repos", o, r, "git", "tags", sha] if get => {
            with_repo(sh, o, r, |base, full, repo, _| match repo.tags.iter().find(|(_, t)| t.object.as_deref() == Some(*sha)) {
                Some((name, t)) => {
                    let api = format!("{base}/repos/{full}");
                    Reply::json(json!({
                        "node_id": node_id("TA", sha),
                        "tag": name,
                        "sha": sha,
                        "url": format!("{api}/git/tags/{sha}"),
                        "message": format!("Release {name}\n"),
                        "tagger": {"name": "Sandbox Dev", "email": "dev@example.com", "date": ts(repo.created_at)},
                        "object": {"sha": t.commit, "type": "commit", "url": format!("{api}/git/commits/{}", t.commit)},
                        "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
                    }))
                }
                None => Reply::not_found(),
            })
        }
        ["repos", o, r, "actions", "workflows", wf, "dispatches"] if post => dispatch(sh, o, r, wf, body),
        _ => Reply::not_found(),
    }
}

/// Runs `f` on a known repository (404 otherwise) under the lock.
fn with_repo(sh: &Arc<Shared>, owner: &str, name: &str, f: impl FnOnce(&str, &str, &Repo, &[FakeRun]) -> Reply) -> Reply {
    let full = format!("{owner}/{name}");
    let st = sh.lock();
    match st.repos.get(&full) {
        Some(repo) => f(&sh.base, &full, repo, &st.runs),
        None => Reply::not_found(),
    }
}

fn find_workflow<'a>(repo: &'a Repo, id_or_file: &str) -> Option<&'a Workflow> {
    repo.workflows.iter().find(|w| w.file == id_or_file || w.id.to_string() == id_or_file)
}

fn dispatch(sh: &Arc<Shared>, owner: &str, name: &str, wf: &str, body: &Value) -> Reply {
    let full = format!("{owner}/{name}");
    let mut st = sh.lock();
    let Some(repo) = st.repos.get(&full) else { return Reply::not_found() };
    let Some(w) = find_workflow(repo, wf) else { return Reply::not_found() };
    let unprocessable = |m: &str| Reply::error(StatusCode::UNPROCESSABLE_ENTITY, m);
    let Value::Object(b) = body else {
        return Reply::error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(git_ref) = b.get("ref").and_then(Value::as_str) else {
        return unprocessable("Invalid request.\n\n\"ref\" wasn't supplied.");
    };
    let mut inputs = BTreeMap::new();
    match b.get("inputs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            let unexpected: Vec<&String> = m.keys().filter(|k| !w.inputs.contains(k)).collect();
            if !unexpected.is_empty() {
                let list = serde_json::to_string(&unexpected).unwrap_or_default();
                return unprocessable(&format!("Unexpected inputs provided: {list}"));
            }
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(_) | Value::Number(_) => v.to_string(),
                    _ => return unprocessable(&format!("For 'properties/{k}', {v} is not a string.")),
                };
                inputs.insert(k.clone(), v);
            }
        }
        Some(other) => return unprocessable(&format!("For 'properties/inputs', {other} is not an object.")),
    }
    // A branch or a tag, short or full.
    let short = git_ref.strip_prefix("refs/heads/").or_else(|| git_ref.strip_prefix("refs/tags/")).unwrap_or(git_ref);
    let sha = if git_ref.starts_with("refs/tags/") {
        repo.tags.get(short).map(|t| t.commit.clone())
    } else if git_ref.starts_with("refs/heads/") {
        repo.branches.get(short).cloned()
    } else {
        repo.branches.get(short).or_else(|| repo.tags.get(short).map(|t| &t.commit)).cloned()
    };
    let Some(sha) = sha else {
        return unprocessable(&format!("No ref found for: {git_ref}"));
    };
    let hook = repo.hooks.get(&w.file).cloned();
    let (wid, file, wname) = (w.id, w.file.clone(), w.name.clone());
    let id = new_run(&mut st, &full, wid, &file, &wname, short, &sha, "workflow_dispatch", "queued", None, inputs.clone());
    st.tasks.retain(|t| !t.is_finished());
    let task = tokio::spawn(progress(Arc::downgrade(sh), sh.timing.clone(), id, hook, inputs));
    st.tasks.push(task);
    Reply { status: StatusCode::NO_CONTENT, body: None, link: None }
}

/// A dispatched run: queued, in progress (its hook runs), completed.
async fn progress(sh: std::sync::Weak<Shared>, timing: Timing, id: u64, hook: Option<DispatchHook>, inputs: BTreeMap<String, String>) {
    let set = |status: &str, conclusion: Option<&str>| {
        if let Some(sh) = sh.upgrade()
            && let Some(r) = sh.lock().runs.iter_mut().find(|r| r.id == id)
        {
            r.status = status.to_string();
            r.conclusion = conclusion.map(str::to_string);
            r.updated_at = Utc::now();
        }
    };
    tokio::time::sleep(timing.queued_for).await;
    set("in_progress", None);
    let work = async move {
        match hook {
            Some(h) => h(inputs).await,
            None => true,
        }
    };
    let (ok, ()) = tokio::join!(work, tokio::time::sleep(timing.runs_for));
    set("completed", Some(if ok { "success" } else { "failure" }));
}

fn percent_decode(s: &str) -> String {
    fn hex_val(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex_val(b[i + 1]), hex_val(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn node_id(prefix: &str, key: impl std::fmt::Display) -> String {
    let h = Sha256::digest(format!("{prefix}:{key}").as_bytes());
    format!("{prefix}_kw{}", hex::encode(&h[..10]))
}

/// A user (or organization) as GitHub embeds it (octocrab's `models::Author`).
fn user_json(base: &str, login: &str, id: u64, kind: &str) -> Value {
    let u = format!("{base}/users/{login}");
    json!({
        "login": login,
        "id": id,
        "node_id": node_id("U", login),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": u,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{u}/followers"),
        "following_url": format!("{u}/following{{/other_user}}"),
        "gists_url": format!("{u}/gists{{/gist_id}}"),
        "starred_url": format!("{u}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{u}/subscriptions"),
        "organizations_url": format!("{u}/orgs"),
        "repos_url": format!("{u}/repos"),
        "events_url": format!("{u}/events{{/privacy}}"),
        "received_events_url": format!("{u}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

fn repo_json(base: &str, full: &str, repo: &Repo, detailed: bool) -> Value {
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    let api = format!("{base}/repos/{full}");
    let mut v = json!({
        "id": repo.id,
        "node_id": node_id("R", full),
        "name": name,
        "full_name": full,
        "private": true,
        "owner": user_json(base, owner, repo.id / 7, "Organization"),
        "html_url": format!("https://github.com/{full}"),
        "description": null,
        "fork": false,
        "url": api,
        "branches_url": format!("{api}/branches{{/branch}}"),
        "commits_url": format!("{api}/commits{{/sha}}"),
        "git_refs_url": format!("{api}/git/refs{{/sha}}"),
        "git_tags_url": format!("{api}/git/tags{{/sha}}"),
        "tags_url": format!("{api}/tags"),
        "hooks_url": format!("{api}/hooks"),
        "deployments_url": format!("{api}/deployments"),
    });
    if detailed {
        let default_branch = if repo.branches.contains_key("main") {
            "main".to_string()
        } else {
            repo.branches.keys().next().cloned().unwrap_or_else(|| "main".to_string())
        };
        v["default_branch"] = json!(default_branch);
        v["visibility"] = json!("private");
        v["archived"] = json!(false);
        v["disabled"] = json!(false);
        v["created_at"] = json!(ts(repo.created_at));
        v["updated_at"] = json!(ts(repo.created_at));
        v["pushed_at"] = json!(ts(repo.created_at));
    }
    v
}

fn workflow_json(base: &str, full: &str, w: &Workflow) -> Value {
    json!({
        "id": w.id,
        "node_id": node_id("W", w.id),
        "name": w.name,
        "path": format!(".github/workflows/{}", w.file),
        "state": "active",
        "created_at": ts(w.created_at),
        "updated_at": ts(w.created_at),
        "url": format!("{base}/repos/{full}/actions/workflows/{}", w.id),
        "html_url": format!("https://github.com/{full}/blob/main/.github/workflows/{}", w.file),
        "badge_url": format!("https://github.com/{full}/workflows/{}/badge.svg", w.name),
    })
}

/// A run in GitHub's format, with every field octocrab's `models::workflows::Run` requires.
fn run_json(base: &str, full: &str, repo: &Repo, r: &FakeRun) -> Value {
    let api = format!("{base}/repos/{full}");
    let run = format!("{api}/actions/runs/{}", r.id);
    let actor = user_json(base, "sandbox-dev", 583_231, "User");
    let tree = hex::encode(&Sha256::digest(format!("tree {}", r.head_sha).as_bytes())[..20]);
    json!({
        "id": r.id,
        "name": r.name,
        "node_id": node_id("WFR", r.id),
        "head_branch": r.head_branch,
        "head_sha": r.head_sha,
        "path": format!(".github/workflows/{}", r.workflow_file),
        "display_title": if r.event == "workflow_dispatch" { r.name.clone() } else { format!("Commit {}", &r.head_sha[..r.head_sha.len().min(7)]) },
        "run_number": r.run_number,
        "event": r.event,
        "status": r.status,
        "conclusion": r.conclusion,
        "workflow_id": r.workflow_id,
        "check_suite_id": r.id + 1_000_000_000,
        "check_suite_node_id": node_id("CS", r.id),
        "url": run,
        "html_url": format!("https://github.com/{full}/actions/runs/{}", r.id),
        "pull_requests": [],
        "created_at": ts(r.created_at),
        "updated_at": ts(r.updated_at),
        "actor": actor,
        "run_attempt": 1,
        "referenced_workflows": [],
        "run_started_at": ts(r.created_at),
        "triggering_actor": actor,
        "jobs_url": format!("{run}/jobs"),
        "logs_url": format!("{run}/logs"),
        "check_suite_url": format!("{api}/check-suites/{}", r.id + 1_000_000_000),
        "artifacts_url": format!("{run}/artifacts"),
        "cancel_url": format!("{run}/cancel"),
        "rerun_url": format!("{run}/rerun"),
        "previous_attempt_url": null,
        "workflow_url": format!("{api}/actions/workflows/{}", r.workflow_id),
        "head_commit": {
            "id": r.head_sha,
            "tree_id": tree,
            "message": format!("Change on {}", r.head_branch),
            "timestamp": ts(r.created_at),
            "author": {"name": "Sandbox Dev", "email": "dev@example.com"},
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
        },
        "repository": repo_json(base, full, repo, false),
        "head_repository": repo_json(base, full, repo, false),
    })
}
