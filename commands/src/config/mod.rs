//! Configuration: the TOML types ([`types`]), secrets by reference ([`secret`]), and
//! [`Settings`] — the validated form, with every problem reported with its key path.

mod net;
mod secret;
mod types;
mod validate;

pub use net::{IpNet, is_loopback_peer, listen_is_loopback};
pub use secret::{Redactor, Secret, SecretRef};
pub use types::*;
pub use validate::{AUDIT_KEY_MIN, Problem, audit_keys};

use crate::model::{Identity, PolicySnapshot};
use crate::runbook::{RunbookDef, RunbooksFile};
use crate::steps::StepKinds;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// How a group member names a Discord role: `discord-role:<role id>`. A member of the guild
/// with that role (as the signed interaction says) is a member of the group.
pub const DISCORD_ROLE: &str = "discord-role:";

/// Validated configuration, ready for the engine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub runbooks: BTreeMap<String, RunbookDef>,
    pub groups: BTreeMap<String, BTreeSet<String>>,
    pub secrets: BTreeMap<String, Secret>,
    pub redactor: Redactor,
    /// Lease owner name of this process.
    pub instance: String,
    /// `[audit] key` and `previous_keys`, resolved; no current key: unkeyed.
    pub audit_keys: crate::audit::Keyring,
    person_of: BTreeMap<String, String>,
    aliases: BTreeMap<String, String>,
    version_patterns: BTreeMap<String, regex_lite::Regex>,
}

/// The built-in runbooks file. The four seed runbooks join it as their step kinds land; a step
/// that is not implemented does not appear here.
pub const DEFAULT_RUNBOOKS: &str = include_str!("../../runbooks/default.toml");

/// `30m`, `90s`, `2h`, `1h30m`, `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration; write it like 30s, 10m, 2h or 1h30m");
    let mut total = 0u64;
    let mut num = String::new();
    if s.is_empty() {
        return Err(bad());
    }
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(unit).ok_or_else(bad)?).ok_or_else(bad)?;
    }
    if !num.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

impl Settings {
    /// Reads and validates a config file (and the runbooks file it names).
    pub fn load(path: &Path, kinds: &StepKinds) -> Result<Settings, Vec<Problem>> {
        let text = std::fs::read_to_string(path).map_err(|e| vec![Problem::new("", format!("cannot read {}: {e}", path.display()))])?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, base, kinds)
    }

    /// Validates config text; relative paths (the runbooks file) resolve against `base`.
    pub fn from_toml(text: &str, base: &Path, kinds: &StepKinds) -> Result<Settings, Vec<Problem>> {
        let (config, mut problems) = validate::parse_config(text);
        // The built-in runbooks are always there; a team's runbooks file adds its own, and one
        // of the same name replaces the built-in one.
        let mut runbooks = match validate::parse_section::<RunbooksFile>(DEFAULT_RUNBOOKS, "(built-in runbooks)") {
            Ok(r) => r,
            Err(p) => {
                problems.extend(p);
                RunbooksFile::default()
            }
        };
        if let Some(p) = &config.engine.runbooks {
            let full = base.join(p);
            match std::fs::read_to_string(&full) {
                Ok(text) => match validate::parse_section::<RunbooksFile>(&text, &full.display().to_string()) {
                    Ok(team) => runbooks.runbooks.extend(team.runbooks),
                    Err(p) => problems.extend(p),
                },
                Err(e) => problems.push(Problem::new("engine.runbooks", format!("cannot read {}: {e}", full.display()))),
            }
        }
        let settings = validate::build(config, runbooks, kinds, &mut problems);
        if problems.is_empty() {
            return Ok(settings);
        }
        // A problem quotes what it found; never a secret the config resolved.
        for p in &mut problems {
            p.message = settings.redactor.redact(&p.message);
            p.path = settings.redactor.redact(&p.path);
        }
        Err(problems)
    }

    /// Groups the identity belongs to. `roles` are the memberships the platform vouched for
    /// in the same signed request (`discord-role:<role id>`), matched against group members
    /// written the same way.
    pub fn groups_of(&self, id: &Identity, roles: &[String]) -> Vec<String> {
        self.groups.keys().filter(|g| self.in_any_group(id, roles, std::slice::from_ref(*g))).cloned().collect()
    }

    /// The person behind an identity (the `people` entry, else the identity itself).
    pub fn person(&self, id: &Identity) -> String {
        self.person_of.get(&id.0).cloned().unwrap_or_else(|| id.0.clone())
    }

    /// Whether a person (any of their identities, or one of the platform-given `roles` of
    /// this request) is a member of one of `groups`.
    pub fn in_any_group(&self, id: &Identity, roles: &[String], groups: &[String]) -> bool {
        let person = self.person(id);
        let ids: Vec<&String> = self.person_of.iter().filter(|(_, p)| **p == person).map(|(i, _)| i).collect();
        groups.iter().any(|g| {
            self.groups.get(g).is_some_and(|m| m.contains(&id.0) || ids.iter().any(|i| m.contains(*i)) || roles.iter().any(|r| m.contains(r)))
        })
    }

    /// Whether `id` may request a runbook whose policy names `requesters` (empty: any member
    /// of any group). The one rule that both authorization and `/ops whoami` apply.
    pub fn may_request(&self, id: &Identity, roles: &[String], requesters: &[String]) -> bool {
        if requesters.is_empty() { !self.groups_of(id, roles).is_empty() } else { self.in_any_group(id, roles, requesters) }
    }

    /// Whether `id` may vote on an execution under `policy`. The one rule that both a vote and
    /// `/ops whoami` apply.
    pub fn may_approve(&self, id: &Identity, roles: &[String], policy: &PolicySnapshot) -> bool {
        self.in_any_group(id, roles, &policy.groups)
    }

    /// The approval policy for a runbook in an environment: exact match over `*`.
    pub fn policy(&self, runbook: &str, env: &str) -> Option<(PolicySnapshot, Vec<String>)> {
        let score = |p: &PolicyConfig| -> Option<u8> {
            let r = if p.runbook == runbook {
                2
            } else if p.runbook == "*" {
                0
            } else {
                return None;
            };
            let e = if p.env == env {
                1
            } else if p.env == "*" {
                0
            } else {
                return None;
            };
            Some(r + e)
        };
        let best = self.config.approvals.iter().filter_map(|p| score(p).map(|s| (s, p))).max_by_key(|(s, _)| *s)?.1;
        let expiry = parse_duration(&best.expiry).unwrap_or(Duration::from_secs(1800));
        // A policy naming the runbook decides alone; a generic one is raised to the runbook's
        // own minimum.
        let floor = match best.runbook.as_str() {
            "*" => self.runbooks.get(runbook).and_then(|r| r.approvals_required).unwrap_or(0),
            _ => 0,
        };
        Some((
            PolicySnapshot {
                groups: best.approvers.clone(),
                required: best.required.max(floor),
                self_approval: best.self_approval,
                expiry_secs: expiry.as_secs(),
            },
            best.requesters.clone(),
        ))
    }

    /// The canonical name of a service given its name or an alias.
    pub fn service(&self, name: &str) -> Option<(&str, &ServiceConfig)> {
        let canonical = self.aliases.get(name).map(|s| s.as_str()).unwrap_or(name);
        self.config.services.get_key_value(canonical).map(|(k, v)| (k.as_str(), v))
    }

    /// Checks a version against the service's pattern.
    pub fn version_ok(&self, service: &str, version: &str) -> bool {
        self.version_patterns.get(service).is_none_or(|re| re.is_match(version))
    }

    /// The incident channel for an environment on a platform, if one is fixed.
    pub fn incident_channel(&self, env: &str, platform: &str) -> Option<&str> {
        self.config.environments.get(env)?.incident_channel.get(platform).map(|s| s.as_str())
    }

    /// The platforms an execution in `env` requested from `origin` is mirrored to, other than
    /// `origin` itself, with their incident channel (`None`: not configured).
    pub fn mirrors(&self, env: &str, origin: &str) -> Vec<(&str, Option<&str>)> {
        let Some(e) = self.config.environments.get(env) else { return Vec::new() };
        e.mirror.iter().filter(|p| *p != origin).map(|p| (p.as_str(), e.incident_channel.get(p).map(|c| c.as_str()))).collect()
    }
}
