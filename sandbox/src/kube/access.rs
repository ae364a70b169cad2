//! A small authorization model for the fake's single identity
//! (`system:serviceaccount:runbot:runbot`): everything is allowed until a test scripts a
//! missing permission with [`super::FakeCluster::deny`] or [`super::FakeCluster::allow_only`].
//! The same decision answers `SelfSubjectAccessReview`s and guards every resource request
//! (a refused request gets the API server's 403 Forbidden `Status`).
//!
//! # Rules
//! A rule is (verb, resource, namespace), matched like RBAC's `PolicyRule`s:
//! - verb: `get`, `list`, ... or `*`;
//! - resource: `pods`, `deployments.apps` (group after the first dot; no dot = the core
//!   group), `pods/log` (a subresource), `pods/*` (every subresource of pods, not pods
//!   itself), `*/scale`, `*.apps` (every resource of a group), `*` (everything, subresources
//!   included); a rule without `/` does not cover subresources (`pods` does not grant
//!   `pods/log`), as in RBAC. A resource starting with `/` is a non-resource URL (`/healthz`,
//!   `/apis/*`), matched against `nonResourceAttributes` of a review;
//! - namespace: a namespace, `*` (every namespace and the cluster scope) or `""` (only
//!   cluster-scoped requests and requests across all namespaces).
//!
//! Deny rules win over everything. With `allow_only` the default becomes "no opinion"
//! (`allowed: false` without a reason, as RBAC answers when no binding grants the request);
//! a deny rule answers `allowed: false, denied: true` with the rule as its reason.

use super::status::{ApiError, Cause};
use serde_json::{Value, json};

/// The identity the fake authenticates every request as.
pub const USER: &str = "system:serviceaccount:runbot:runbot";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    verb: String,
    /// Non-resource URL (starts with `/`), or None for a resource rule.
    path: Option<String>,
    group: String,
    resource: String,
    /// None: the rule names no subresource.
    sub: Option<String>,
    namespace: String,
    /// As written, for reasons.
    text: String,
}

impl Rule {
    pub fn parse(verb: &str, resource: &str, namespace: &str) -> Rule {
        let text = format!("{verb} {resource} in {}", if namespace == "*" { "every namespace".to_string() } else { format!("{namespace:?}") });
        if resource.starts_with('/') {
            return Rule {
                verb: verb.into(),
                path: Some(resource.into()),
                group: String::new(),
                resource: String::new(),
                sub: None,
                namespace: namespace.into(),
                text,
            };
        }
        let (rg, sub) = match resource.split_once('/') {
            Some((rg, s)) => (rg, Some(s.to_string())),
            None => (resource, None),
        };
        let (res, group) = match rg {
            "*" => ("*", "*"),
            _ => rg.split_once('.').unwrap_or((rg, "")),
        };
        Rule { verb: verb.into(), path: None, group: group.into(), resource: res.into(), sub, namespace: namespace.into(), text }
    }

    fn matches(&self, a: &Attributes) -> bool {
        if self.verb != "*" && self.verb != a.verb {
            return false;
        }
        match (&self.path, &a.path) {
            (Some(p), Some(want)) => match p.strip_suffix('*') {
                Some(prefix) => want.starts_with(prefix),
                None => p == want,
            },
            (None, None) => {
                let ns_ok = match self.namespace.as_str() {
                    "*" => true,
                    ns => ns == a.namespace,
                };
                let group_ok = self.group == "*" || self.group == a.group;
                let res_ok = match (self.resource.as_str(), self.sub.as_deref(), a.sub.as_deref()) {
                    // `*` alone covers every resource and subresource.
                    ("*", None, _) => true,
                    (r, None, None) => r == a.resource,
                    (_, None, Some(_)) => false,
                    (_, Some(_), None) => false,
                    (r, Some(s), Some(want)) => (r == "*" || r == a.resource) && (s == "*" || s == want),
                };
                ns_ok && group_ok && res_ok
            }
            _ => false,
        }
    }
}

/// What a request (or a review) asks to do.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub verb: String,
    /// Set for a non-resource URL.
    pub path: Option<String>,
    pub group: String,
    pub resource: String,
    pub sub: Option<String>,
    /// `""` for cluster scope / all namespaces.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub denied: bool,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Policy {
    deny: Vec<Rule>,
    /// Some: only these are allowed.
    allow_only: Option<Vec<Rule>>,
}

impl Policy {
    pub fn deny(&mut self, r: Rule) {
        self.deny.push(r);
    }

    pub fn allow_only(&mut self, rules: Vec<Rule>) {
        self.allow_only = Some(rules);
    }

    pub fn reset(&mut self) {
        *self = Policy::default();
    }

    pub fn decide(&self, a: &Attributes) -> Decision {
        if let Some(r) = self.deny.iter().find(|r| r.matches(a)) {
            return Decision { allowed: false, denied: true, reason: format!("denied by the sandbox's access policy (deny {})", r.text) };
        }
        match &self.allow_only {
            None => Decision {
                allowed: true,
                denied: false,
                reason: "RBAC: allowed by ClusterRoleBinding \"sandbox-admin\" of ClusterRole \"cluster-admin\" to ServiceAccount \"runbot/runbot\"".into(),
            },
            Some(rules) => match rules.iter().find(|r| r.matches(a)) {
                Some(_) => Decision {
                    allowed: true,
                    denied: false,
                    reason: "RBAC: allowed by ClusterRoleBinding \"sandbox-allow-only\" of ClusterRole \"sandbox-allow-only\" to ServiceAccount \"runbot/runbot\"".into(),
                },
                None => Decision { allowed: false, denied: false, reason: String::new() },
            },
        }
    }
}

/// Answers a `SelfSubjectAccessReview` body: the review with its `status`.
pub fn review(policy: &Policy, body: &Value) -> Result<Value, ApiError> {
    if let Some(k) = body.get("kind").and_then(Value::as_str)
        && !k.is_empty()
        && k != "SelfSubjectAccessReview"
    {
        return Err(ApiError::bad_request(format!("the object provided is unrecognized (must be of type SelfSubjectAccessReview): kind {k:?}")));
    }
    if let Some(v) = body.get("apiVersion").and_then(Value::as_str)
        && !v.is_empty()
        && v != "authorization.k8s.io/v1"
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({v}) does not match the expected API version (authorization.k8s.io/v1)"
        )));
    }
    let spec = body.get("spec").cloned().unwrap_or_else(|| json!({}));
    let ra = spec.get("resourceAttributes").filter(|v| v.is_object());
    let nra = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    let invalid = |field: &str, value: &str, why: &str| {
        ApiError::invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", vec![Cause::invalid(field, value, why)])
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let attrs = match (ra, nra) {
        (Some(ra), None) => Attributes {
            verb: s(ra, "verb"),
            path: None,
            group: s(ra, "group"),
            resource: s(ra, "resource"),
            sub: Some(s(ra, "subresource")).filter(|x| !x.is_empty()),
            namespace: s(ra, "namespace"),
        },
        (None, Some(nra)) => Attributes { verb: s(nra, "verb"), path: Some(s(nra, "path")), ..Default::default() },
        (Some(_), Some(_)) => {
            return Err(invalid("spec.nonResourceAttributes", "\"{...}\"", "cannot be specified in combination with resourceAttributes"));
        }
        (None, None) => {
            return Err(invalid(
                "spec.resourceAttributes",
                "\"null\"",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
    };
    let d = policy.decide(&attrs);
    let mut status = json!({"allowed": d.allowed});
    if d.denied {
        status["denied"] = json!(true);
    }
    if !d.reason.is_empty() {
        status["reason"] = json!(d.reason);
    }
    Ok(json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status,
    }))
}

/// The discovery entry of `selfsubjectaccessreviews` (create-only, cluster-scoped).
pub fn discovery_entry() -> Value {
    json!({
        "name": "selfsubjectaccessreviews",
        "singularName": "selfsubjectaccessreview",
        "namespaced": false,
        "kind": "SelfSubjectAccessReview",
        "verbs": ["create"],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, group: &str, resource: &str, sub: Option<&str>, ns: &str) -> Attributes {
        Attributes { verb: verb.into(), path: None, group: group.into(), resource: resource.into(), sub: sub.map(String::from), namespace: ns.into() }
    }

    #[test]
    fn rules_match_like_rbac() {
        let r = Rule::parse("get", "pods", "a");
        assert!(r.matches(&attrs("get", "", "pods", None, "a")));
        assert!(!r.matches(&attrs("get", "", "pods", Some("log"), "a")), "pods does not cover pods/log");
        assert!(!r.matches(&attrs("get", "", "pods", None, "b")));
        assert!(!r.matches(&attrs("list", "", "pods", None, "a")));
        let r = Rule::parse("*", "deployments.apps/scale", "*");
        assert!(r.matches(&attrs("patch", "apps", "deployments", Some("scale"), "x")));
        assert!(!r.matches(&attrs("patch", "apps", "deployments", None, "x")));
        assert!(!r.matches(&attrs("patch", "", "deployments", Some("scale"), "x")));
        let r = Rule::parse("get", "pods/*", "*");
        assert!(r.matches(&attrs("get", "", "pods", Some("log"), "")));
        assert!(!r.matches(&attrs("get", "", "pods", None, "")));
        let r = Rule::parse("*", "*", "*");
        assert!(r.matches(&attrs("create", "batch", "jobs", None, "n")));
        assert!(r.matches(&attrs("get", "", "pods", Some("log"), "n")));
        let r = Rule::parse("list", "*.apps", "");
        assert!(r.matches(&attrs("list", "apps", "replicasets", None, "")));
        assert!(!r.matches(&attrs("list", "apps", "replicasets", None, "n")));
        let r = Rule::parse("get", "/apis/*", "*");
        assert!(r.matches(&Attributes { verb: "get".into(), path: Some("/apis/apps".into()), ..Default::default() }));
        assert!(!r.matches(&Attributes { verb: "get".into(), path: Some("/api".into()), ..Default::default() }));
        assert!(!r.matches(&attrs("get", "", "pods", None, "")), "a non-resource rule covers no resource");
    }

    #[test]
    fn deny_wins_and_allow_only_has_no_opinion_otherwise() {
        let mut p = Policy::default();
        assert!(p.decide(&attrs("delete", "", "pods", None, "a")).allowed);
        p.deny(Rule::parse("delete", "pods", "a"));
        let d = p.decide(&attrs("delete", "", "pods", None, "a"));
        assert!(!d.allowed && d.denied && d.reason.contains("delete pods"), "{d:?}");
        assert!(p.decide(&attrs("delete", "", "pods", None, "b")).allowed);
        p.allow_only(vec![Rule::parse("*", "pods", "*")]);
        assert!(!p.decide(&attrs("delete", "", "pods", None, "a")).allowed, "deny still wins");
        assert!(p.decide(&attrs("delete", "", "pods", None, "b")).allowed);
        let d = p.decide(&attrs("get", "", "secrets", None, "b"));
        assert_eq!(d, Decision { allowed: false, denied: false, reason: String::new() });
        p.reset();
        assert!(p.decide(&attrs("get", "", "secrets", None, "b")).allowed);
    }

    #[test]
    fn reviews_need_exactly_one_kind_of_attributes() {
        let p = Policy::default();
        assert_eq!(review(&p, &json!({"spec": {}})).unwrap_err().code, 422);
        let both = json!({"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get", "path": "/x"}}});
        assert_eq!(review(&p, &both).unwrap_err().code, 422);
        assert_eq!(review(&p, &json!({"kind": "Pod", "spec": {}})).unwrap_err().code, 400);
        let ok = review(&p, &json!({"spec": {"nonResourceAttributes": {"verb": "get", "path": "/healthz"}}})).unwrap();
        assert_eq!(ok["status"]["allowed"], true);
        assert_eq!(ok["kind"], "SelfSubjectAccessReview");
    }
}
