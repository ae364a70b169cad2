//! `GitHubCi`: the [`Ci`] port (the deploy runbook's CI gate and `pipeline` driver) over
//! GitHub's REST API with octocrab.
//!
//! - Runs are listed with `GET /repos/{o}/{r}/actions/workflows/{workflow}/runs` (`branch`,
//!   `event`, `per_page`) and read with `GET .../actions/runs/{id}`, into a lenient model of
//!   a run: GitHub documents `head_branch`, `head_commit`, `name` and `status` as nullable,
//!   which octocrab's `models::workflows::Run` does not accept, and a CI gate must not fail
//!   on a run it does not even look at.
//! - Tags: `GET .../git/ref/tags/{tag}` (octocrab's `Ref`); an annotated tag's ref points at
//!   a tag object, peeled with `GET .../git/tags/{sha}` (octocrab's `GitTag`) until a commit.
//!   A 404 means "no such tag" only if the repository itself can be read; otherwise it is an
//!   error (GitHub answers 404 for a repository the token cannot see).
//! - Dispatch: `actions().create_workflow_dispatch(...)` (204).
//!
//! Nothing is retried (a dispatch must not run twice). Every request is bounded by the
//! configured timeout. Errors are sentences for a chat channel with GitHub's status and
//! `message` and the request's method and path — never the token.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use octocrab::Octocrab;
use octocrab::models::repos::Object;
use octocrab::params::repos::Reference;
use runbot_commands::ports::{Ci, CiError, RunQuery, WorkflowRun};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

/// Annotated tags pointing at annotated tags: how many tag objects are followed at most.
const MAX_TAG_DEPTH: usize = 5;

/// GitHub Actions for one API endpoint (`https://api.github.com`, or GitHub Enterprise's
/// `https://HOST/api/v3`) and one token.
pub struct GitHubCi {
    crab: Octocrab,
    timeout: Duration,
    /// Only to scrub it from error texts, should a lower layer ever echo it.
    token: Option<String>,
}

impl std::fmt::Debug for GitHubCi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubCi").field("timeout", &self.timeout).field("token", &self.token.as_ref().map(|_| "***")).finish()
    }
}

/// A workflow run as GitHub sends it, the fields runbot reads (nullable ones as GitHub
/// documents them).
#[derive(Debug, Deserialize)]
struct RunWire {
    id: u64,
    run_number: u64,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    head_sha: String,
    event: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
    html_url: String,
    created_at: DateTime<Utc>,
}

impl From<RunWire> for WorkflowRun {
    fn from(r: RunWire) -> WorkflowRun {
        WorkflowRun {
            id: r.id,
            run_number: r.run_number,
            name: r.name.unwrap_or_default(),
            head_branch: r.head_branch,
            head_sha: r.head_sha,
            event: r.event,
            status: r.status.unwrap_or_else(|| "unknown".to_string()),
            conclusion: r.conclusion,
            html_url: r.html_url,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RunsWire {
    workflow_runs: Vec<RunWire>,
}

#[derive(Serialize)]
struct RunsParams<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_page: Option<u8>,
}

impl GitHubCi {
    /// `api_url`: `https://api.github.com` (or an Enterprise `…/api/v3`, or a test server).
    /// `token`: a personal access token or an installation token (`None`: anonymous, which
    /// only reads public repositories and cannot dispatch). `timeout` bounds every request.
    pub fn new(api_url: &str, token: Option<&str>, timeout: Duration) -> Result<GitHubCi, String> {
        let parsed = url::Url::parse(api_url).map_err(|e| format!("GitHub API URL {api_url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(format!("GitHub API URL {api_url:?} must be http(s)://HOST[/PATH]"));
        }
        if timeout.is_zero() {
            return Err("GitHub timeout must be more than 0 s".to_string());
        }
        let base = api_url.trim_end_matches('/');
        let mut builder = Octocrab::builder()
            .base_uri(base)
            .map_err(|_| format!("GitHub API URL {api_url:?} is not a valid URI"))?
            .add_header(http_header("x-github-api-version"), "2022-11-28".to_string())
            // The whole request is bounded by `timeout` in `call`; these are backstops
            // (a little longer, so the message names the request, not a socket).
            .set_connect_timeout(Some(timeout))
            .set_read_timeout(Some(timeout + Duration::from_secs(1)))
            .set_write_timeout(Some(timeout + Duration::from_secs(1)));
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        if let Some(t) = token {
            // octocrab panics on a token that cannot be a header value: refuse it here.
            if !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("GitHub token contains characters a token cannot have (whitespace or non-ASCII)".to_string());
            }
            builder = builder.personal_token(t.to_string());
        }
        let crab = builder.build().map_err(|e| format!("GitHub client could not be built: {}", chain(&e)))?;
        Ok(GitHubCi { crab, timeout, token: token.map(str::to_string) })
    }

    /// Runs one request under the timeout, mapping every failure to a sentence.
    async fn call<T>(&self, what: &str, fut: impl Future<Output = octocrab::Result<T>>) -> Result<T, CiError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(self.timed_out(what)),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.failed(&e, what)),
        }
    }

    fn timed_out(&self, what: &str) -> CiError {
        CiError::Timeout(format!("GitHub did not answer {what} within {} s", self.timeout.as_secs_f64()))
    }

    /// The error of a request that got an error back, its text scrubbed of the token.
    fn failed(&self, e: &octocrab::Error, what: &str) -> CiError {
        let text = self.scrub(describe(e, what));
        match e {
            octocrab::Error::GitHub { source, .. } => CiError::Api { status: source.status_code.as_u16(), message: text },
            _ => CiError::Transport(text),
        }
    }

    fn scrub(&self, msg: String) -> String {
        match &self.token {
            Some(t) if msg.contains(t.as_str()) => msg.replace(t.as_str(), "***"),
            _ => msg,
        }
    }
}

fn http_header(name: &'static str) -> axum::http::HeaderName {
    axum::http::HeaderName::from_static(name)
}

/// `GitHub answered 401 Bad credentials for GET /repos/...`, or why there was no answer.
fn describe(e: &octocrab::Error, what: &str) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            let mut msg = source.message.trim().to_string();
            if msg.is_empty() {
                msg = source.status_code.canonical_reason().unwrap_or("error").to_string();
            }
            let mut out = format!("GitHub answered {} {msg} for {what}", source.status_code.as_u16());
            let details: Vec<String> = source
                .errors
                .iter()
                .flatten()
                .map(|d| match d.get("message").and_then(|m| m.as_str()) {
                    Some(m) => m.to_string(),
                    None => d.to_string(),
                })
                .collect();
            if !details.is_empty() {
                out.push_str(&format!(" ({})", details.join("; ")));
            }
            out
        }
        octocrab::Error::Serde { .. } | octocrab::Error::Json { .. } => {
            format!("GitHub's answer to {what} could not be read: {}", chain(e))
        }
        _ => format!("GitHub could not be reached for {what}: {}", chain(e)),
    }
}

/// An error and its sources, `: `-separated, without repeats.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The same error, its text followed by `note`.
fn annotate(e: CiError, note: &str) -> CiError {
    let more = |m: String| format!("{m} {note}");
    match e {
        CiError::Invalid(m) => CiError::Invalid(more(m)),
        CiError::Api { status, message } => CiError::Api { status, message: more(message) },
        CiError::Timeout(m) => CiError::Timeout(more(m)),
        CiError::Transport(m) => CiError::Transport(more(m)),
        CiError::Unexpected(m) => CiError::Unexpected(more(m)),
    }
}

fn is_status(e: &octocrab::Error, status: u16) -> bool {
    matches!(e, octocrab::Error::GitHub { source, .. } if source.status_code.as_u16() == status)
}

/// `owner/name`, each made of letters, digits, `-`, `_` and `.`.
fn split_repo(repo: &str) -> Result<(&str, &str), CiError> {
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    match repo.split_once('/') {
        Some((o, n)) if ok(o) && ok(n) && n != "." && n != ".." => Ok((o, n)),
        _ => Err(CiError::Invalid(format!("{repo:?} is not a GitHub repository (expected owner/name)"))),
    }
}

/// A workflow's file name (`ci.yml`) or numeric id.
fn check_workflow(workflow: &str) -> Result<(), CiError> {
    if !workflow.is_empty()
        && workflow != "."
        && workflow != ".."
        && workflow.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(CiError::Invalid(format!("{workflow:?} is not a workflow file name (like ci.yml) or id")))
    }
}

/// Percent-encodes a ref name for a URL path, keeping its `/`s.
fn encode_ref_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b'+' | b'@' | b'!' | b',' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl Ci for GitHubCi {
    /// `query.per_page` 0 leaves GitHub's default (30); more than 100 is sent as 100.
    async fn runs(&self, repo: &str, workflow: &str, query: &RunQuery) -> Result<Vec<WorkflowRun>, CiError> {
        let (o, r) = split_repo(repo)?;
        check_workflow(workflow)?;
        let route = format!("/repos/{o}/{r}/actions/workflows/{workflow}/runs");
        let params = RunsParams {
            branch: query.branch.as_deref().filter(|b| !b.is_empty()),
            event: query.event.as_deref().filter(|e| !e.is_empty()),
            per_page: (query.per_page > 0).then_some(query.per_page.min(100)),
        };
        let page: RunsWire = self.call(&format!("GET {route}"), self.crab.get(&route, Some(&params))).await?;
        let mut runs: Vec<WorkflowRun> = page.workflow_runs.into_iter().map(WorkflowRun::from).collect();
        // GitHub lists newest first; keep that promise even if it did not.
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(runs)
    }

    async fn run(&self, repo: &str, id: u64) -> Result<WorkflowRun, CiError> {
        let (o, r) = split_repo(repo)?;
        let route = format!("/repos/{o}/{r}/actions/runs/{id}");
        let run: RunWire = self.call(&format!("GET {route}"), self.crab.get(&route, None::<&()>)).await?;
        Ok(run.into())
    }

    async fn tag_commit(&self, repo: &str, tag: &str) -> Result<Option<String>, CiError> {
        let (o, r) = split_repo(repo)?;
        let tag = tag.strip_prefix("refs/tags/").unwrap_or(tag);
        if tag.is_empty() || tag.starts_with('/') || tag.ends_with('/') || tag.split('/').any(|p| p == "." || p == "..") {
            return Err(CiError::Invalid(format!("{tag:?} is not a tag name")));
        }
        let encoded = encode_ref_path(tag);
        let what = format!("GET /repos/{o}/{r}/git/ref/tags/{encoded}");
        let git = self.crab.git(o, r);
        let found = match tokio::time::timeout(self.timeout, git.get_ref(&Reference::Tag(encoded.clone()))).await {
            Err(_) => return Err(self.timed_out(&what)),
            Ok(Ok(reference)) => reference,
            Ok(Err(e)) if is_status(&e, 404) => {
                // No such tag — or no such repository (or one the token cannot see).
                let route = format!("/repos/{o}/{r}");
                let repo_check = format!("GET {route}");
                self.call(&repo_check, self.crab.get::<serde_json::Value, _, ()>(&route, None))
                    .await
                    .map_err(|e| annotate(e, &format!("(so the tag {tag} cannot be looked up)")))?;
                return Ok(None);
            }
            Ok(Err(e)) => return Err(self.failed(&e, &what)),
        };
        let mut object = found.object;
        for _ in 0..MAX_TAG_DEPTH {
            match object {
                Object::Commit { sha, .. } => return Ok(Some(sha)),
                Object::Tag { sha, .. } => {
                    let tag_obj = self.call(&format!("GET /repos/{o}/{r}/git/tags/{sha}"), git.get_tag(sha.clone())).await?;
                    let Some(target) = tag_obj.object else {
                        return Err(CiError::Unexpected(format!("GitHub's tag object {sha} for {tag} names no object")));
                    };
                    object = match target.r#type.as_str() {
                        "commit" => Object::Commit { sha: target.sha, url: target.url },
                        "tag" => Object::Tag { sha: target.sha, url: target.url },
                        other => return Err(CiError::Unexpected(format!("tag {tag} points at a {other}, not a commit"))),
                    };
                }
                Object::Tree { .. } => return Err(CiError::Unexpected(format!("tag {tag} points at a tree, not a commit"))),
                Object::Blob { .. } => return Err(CiError::Unexpected(format!("tag {tag} points at a blob, not a commit"))),
                _ => return Err(CiError::Unexpected(format!("tag {tag} points at an object that is not a commit"))),
            }
        }
        Err(CiError::Unexpected(format!("tag {tag} is nested deeper than {MAX_TAG_DEPTH} tag objects")))
    }

    async fn dispatch(&self, repo: &str, workflow: &str, git_ref: &str, inputs: &BTreeMap<String, String>) -> Result<(), CiError> {
        let (o, r) = split_repo(repo)?;
        check_workflow(workflow)?;
        if git_ref.trim().is_empty() {
            return Err(CiError::Invalid("a workflow dispatch needs a ref (branch or tag)".to_string()));
        }
        let what = format!("POST /repos/{o}/{r}/actions/workflows/{workflow}/dispatches");
        let actions = self.crab.actions();
        let mut req = actions.create_workflow_dispatch(o, r, workflow, git_ref);
        if !inputs.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> =
                inputs.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
            req = req.inputs(serde_json::Value::Object(map));
        }
        self.call(&what, req.send()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_and_workflow_names_are_checked() {
        assert_eq!(split_repo("acme/promotions"), Ok(("acme", "promotions")));
        assert!(matches!(split_repo("acme"), Err(CiError::Invalid(_))), "refused before anything is sent");
        assert!(split_repo("acme").is_err());
        assert!(split_repo("acme/pro/motions").is_err());
        assert!(split_repo("acme/..").is_err());
        assert!(split_repo("ac me/x").is_err());
        assert!(check_workflow("ci.yml").is_ok());
        assert!(check_workflow("161335").is_ok());
        assert!(check_workflow("../ci.yml").is_err());
        assert!(check_workflow("ci.yml?x=1").is_err());
    }

    #[test]
    fn ref_paths_are_encoded() {
        assert_eq!(encode_ref_path("release/1.0"), "release/1.0");
        assert_eq!(encode_ref_path("v1.0.0+build"), "v1.0.0+build");
        assert_eq!(encode_ref_path("a#b c?"), "a%23b%20c%3F");
    }

    #[test]
    fn tokens_with_odd_characters_are_refused_without_echo() {
        let e = GitHubCi::new("https://api.github.com", Some("ghp_abc\ndef"), Duration::from_secs(5)).unwrap_err();
        assert!(!e.contains("ghp_abc"), "{e}");
        assert!(GitHubCi::new("ftp://x", None, Duration::from_secs(5)).is_err());
        assert!(GitHubCi::new("not a url", None, Duration::from_secs(5)).is_err());
    }
}
