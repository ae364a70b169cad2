//! Parsing and validation of the config: each section is deserialized on its own so one bad
//! section does not hide problems in the others, and every problem carries its key path.

use super::{Config, ConsoleAuthMode, DiscordMode, Driver, Redactor, Settings, parse_duration};
use crate::model::Identity;
use crate::runbook::{RunbooksFile, TargetKind, placeholders};
use crate::steps::{APPROVAL, StepKinds};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One problem in the configuration, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.message) } else { write!(f, "{}: {}", self.path, self.message) }
    }
}

/// Deserializes a value, naming the exact key path of the first problem in it.
fn section<T: DeserializeOwned>(value: toml::Value, prefix: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = match (prefix.is_empty(), inner.as_str()) {
            (true, _) => inner.clone(),
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{inner}"),
        };
        Problem::new(path, e.into_inner().message().to_string())
    })
}

/// Parses a whole TOML document into `T` (used for the runbooks file).
pub fn parse_section<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, Vec<Problem>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| vec![Problem::new(file, e.to_string())])?;
    section(toml::Value::Table(table), "").map_err(|p| vec![Problem::new(format!("{file}: {}", p.path), p.message)])
}

/// Parses the config file section by section, collecting a problem per bad section.
pub fn parse_config(text: &str) -> (Config, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut cfg = Config::default();
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => return (cfg, vec![Problem::new("", format!("not valid TOML: {e}"))]),
    };
    macro_rules! take {
        ($key:literal, $field:ident, $v:expr) => {
            match section($v, $key) {
                Ok(x) => cfg.$field = x,
                Err(p) => problems.push(p),
            }
        };
    }
    for (key, v) in table {
        match key.as_str() {
            "server" => take!("server", server, v),
            "store" => take!("store", store, v),
            "engine" => take!("engine", engine, v),
            "limits" => take!("limits", limits, v),
            "secrets" => take!("secrets", secrets, v),
            "groups" => take!("groups", groups, v),
            "people" => take!("people", people, v),
            "approvals" => take!("approvals", approvals, v),
            "environments" => take!("environments", environments, v),
            "services" => take!("services", services, v),
            "databases" => take!("databases", databases, v),
            "console" => take!("console", console, v),
            "clusters" => take!("clusters", clusters, v),
            "slack" => take!("slack", slack, v),
            "discord" => take!("discord", discord, v),
            "github" => take!("github", github, v),
            "registries" => take!("registries", registries, v),
            "tools" => take!("tools", tools, v),
            "alerts" => take!("alerts", alerts, v),
            "triggers" => take!("triggers", triggers, v),
            "audit" => take!("audit", audit, v),
            other => problems.push(Problem::new(other, "unknown section")),
        }
    }
    (cfg, problems)
}

/// A Discord id (snowflake): 1–20 digits, not zero.
pub(crate) fn is_snowflake(s: &str) -> bool {
    !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u64>().is_ok_and(|n| n > 0)
}

/// A group member: an identity, or a platform role (`discord-role:<role id>`).
fn member_problem(m: &str) -> Option<String> {
    match m.strip_prefix(super::DISCORD_ROLE) {
        Some(id) if is_snowflake(id) => None,
        Some(_) => Some(format!("'{m}' is not a Discord role; write discord-role:<role id> (Server Settings → Roles → Copy Role ID)")),
        None => identity_problem(m).map(|why| format!("{why}, or a role as discord-role:<role id>")),
    }
}

fn identity_problem(id: &str) -> Option<String> {
    (!Identity::is_well_formed(id)).then(|| format!("'{id}' is not an identity; write platform:id with platform slack, discord or console"))
}

/// `[console]`'s identity source: a loopback console must not listen beyond loopback, and each
/// mode's keys are well formed and not mixed with the other mode's.
fn console_auth_problems(config: &Config, p: &mut impl FnMut(String, String)) {
    let c = &config.console;
    if let Some(id) = &c.local_identity
        && (!id.starts_with("console:") || identity_problem(id).is_some())
    {
        p("console.local_identity".into(), format!("'{id}' is not a console identity (console:name)"));
    }
    for (i, t) in c.trusted_proxies.iter().enumerate() {
        if let Err(why) = super::IpNet::parse(t) {
            p(format!("console.trusted_proxies[{i}]"), why);
        }
    }
    if bad_header_name(&c.user_header) {
        p("console.user_header".into(), format!("'{}' is not an HTTP header name", c.user_header));
    }
    if let Some(url) = &c.url {
        check_url("console.url".into(), url, p);
    }
    match c.auth {
        ConsoleAuthMode::Loopback => {
            if !c.trusted_proxies.is_empty() {
                p("console.trusted_proxies".into(), "only used with auth = \"proxy\"".into());
            }
            let parses = config.server.listen.parse::<std::net::SocketAddr>().is_ok();
            if c.enabled && parses && !super::listen_is_loopback(&config.server.listen) {
                p(
                    "server.listen".into(),
                    format!(
                        "'{}' is not a loopback address, and the console (enabled, auth = \"loopback\") answers only this machine: \
                         listen on 127.0.0.1, set [console] enabled = false, or put it behind an authenticating proxy \
                         with [console] auth = \"proxy\" and trusted_proxies",
                        config.server.listen
                    ),
                );
            }
        }
        ConsoleAuthMode::Proxy => {
            if c.trusted_proxies.is_empty() {
                p("console.trusted_proxies".into(), "auth = \"proxy\" needs the proxy's addresses (IPs or CIDRs)".into());
            }
            if c.local_identity.is_some() {
                p("console.local_identity".into(), "only used with auth = \"loopback\"; behind the proxy each user is console:<user>".into());
            }
        }
    }
}

/// An HTTP header name is 1–100 token characters (RFC 9110 `tchar`).
fn bad_header_name(name: &str) -> bool {
    name.is_empty() || name.len() > 100 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Cross-checks the parsed config and runbooks and builds [`Settings`]. Each section is checked
/// by a function of its own, in the order the problems are reported.
pub fn build(config: Config, runbooks: RunbooksFile, kinds: &StepKinds, problems: &mut Vec<Problem>) -> Settings {
    let mut p = |path: String, msg: String| problems.push(Problem::new(path, msg));
    check_server(&config, &mut p);
    let (groups, person_of) = check_people(&config, &mut p);
    console_auth_problems(&config, &mut p);
    let mut adapter_secrets = check_slack(&config, &mut p);
    adapter_secrets.extend(check_discord(&config, &mut p));
    check_environments(&config, &mut p);
    let secrets = resolve_secrets(&config, &mut p);
    for (i, pol) in config.approvals.iter().enumerate() {
        check_approval(&config, &runbooks, &groups, &person_of, i, pol, &mut p);
    }
    check_clusters(&config, &mut p);
    for (dname, db) in &config.databases {
        check_database(&config, dname, db, &mut p);
    }
    check_service_clusters(&config, &mut p);
    check_deploy(&config, &mut p);
    check_restore(&config, &mut p);
    check_triggers(&config, &runbooks, &mut p);
    let (audit_keys, audit_secrets) = check_audit(&config, &mut p);
    let (aliases, version_patterns) = check_services(&config, &mut p);
    let vars = engine_vars(&config);
    for (rname, rb) in &runbooks.runbooks {
        check_runbook(&config, &runbooks, kinds, &vars, rname, rb, &mut p);
    }

    let mut redact: Vec<_> = secrets.values().cloned().chain(adapter_secrets).chain(audit_secrets).collect();
    redact.sort_by(|a, b| a.expose().cmp(b.expose()));
    let instance = config.engine.instance.clone().unwrap_or_else(default_instance);
    Settings {
        runbooks: runbooks.runbooks,
        groups,
        redactor: Redactor::new(redact),
        secrets,
        instance,
        audit_keys,
        person_of,
        aliases,
        version_patterns,
        config,
    }
}

/// `[store]`, `[server]`, `[engine]`, `[limits]` and the Slack ping: addresses and lower bounds.
fn check_server(config: &Config, p: &mut impl FnMut(String, String)) {
    if !(config.store.url.starts_with("sqlite:") || config.store.url.starts_with("postgres://") || config.store.url.starts_with("postgresql://")) {
        p("store.url".into(), "must start with sqlite: or postgres://".into());
    }
    if config.server.listen.parse::<std::net::SocketAddr>().is_err() {
        p("server.listen".into(), format!("'{}' is not an address like 127.0.0.1:8080", config.server.listen));
    }
    if config.slack.as_ref().is_some_and(|s| s.socket_ping_secs == 0) {
        p("slack.socket_ping_secs".into(), "must be at least 1".into());
    }
    if config.server.max_connections < 16 {
        p("server.max_connections".into(), "must be at least 16".into());
    }
    if config.server.header_timeout_secs == 0 {
        p("server.header_timeout_secs".into(), "must be at least 1".into());
    }
    if config.engine.update_interval_ms == 0 {
        p("engine.update_interval_ms".into(), "must be at least 1".into());
    }
    if config.engine.lease_secs < 3 {
        p("engine.lease_secs".into(), "must be at least 3".into());
    }
    if config.limits.per_identity_per_minute == 0 {
        p("limits.per_identity_per_minute".into(), "must be at least 1".into());
    }
    if config.limits.per_channel_per_minute == 0 {
        p("limits.per_channel_per_minute".into(), "must be at least 1".into());
    }
}

/// Who is who: the groups (by member), the people (by identity) and `[console]`'s identities.
fn check_people(config: &Config, p: &mut impl FnMut(String, String)) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, String>) {
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (g, members) in &config.groups {
        for (i, m) in members.iter().enumerate() {
            if let Some(why) = member_problem(m) {
                p(format!("groups.{g}[{i}]"), why);
            }
        }
        groups.insert(g.clone(), members.iter().cloned().collect());
    }
    let mut person_of = BTreeMap::new();
    for (person, ids) in &config.people {
        for (i, id) in ids.iter().enumerate() {
            if let Some(why) = identity_problem(id) {
                p(format!("people.{person}[{i}]"), why);
            }
            if let Some(other) = person_of.insert(id.clone(), person.clone()) {
                p(format!("people.{person}[{i}]"), format!("'{id}' is already declared for {other}"));
            }
        }
    }
    for (i, id) in config.console.identities.iter().enumerate() {
        if !id.starts_with("console:") || identity_problem(id).is_some() {
            p(format!("console.identities[{i}]"), format!("'{id}' is not a console identity (console:name)"));
        }
    }
    (groups, person_of)
}

/// An API base URL of a chat platform: http(s), no credentials, no query or fragment.
fn bad_api_url(u: &str) -> bool {
    !(u.starts_with("http://") || u.starts_with("https://")) || u.contains('@') || u.contains(['?', '#'])
}

/// `[slack]`: its secrets resolve (returned, for redaction), one way in is set, the API URL.
fn check_slack(config: &Config, p: &mut impl FnMut(String, String)) -> Vec<super::Secret> {
    let mut resolved = Vec::new();
    let Some(slack) = &config.slack else { return resolved };
    let refs = [("bot_token", Some(&slack.bot_token)), ("signing_secret", slack.signing_secret.as_ref()), ("app_token", slack.app_token.as_ref())];
    for (key, r) in refs {
        match r.map(|r| r.resolve()) {
            Some(Ok(s)) => resolved.push(s),
            Some(Err(why)) => p(format!("slack.{key}"), why),
            None => {}
        }
    }
    if slack.signing_secret.is_none() && slack.app_token.is_none() {
        p("slack".into(), "set signing_secret (HTTP endpoints) or app_token (Socket Mode), or both".into());
    }
    if bad_api_url(&slack.api_url) {
        p("slack.api_url".into(), format!("'{}' is not an http(s) URL like https://slack.com/api", slack.api_url));
    }
    resolved
}

/// `[discord]`: its secrets resolve (returned, for redaction), the public key's shape, the ids.
fn check_discord(config: &Config, p: &mut impl FnMut(String, String)) -> Vec<super::Secret> {
    let mut resolved = Vec::new();
    let Some(d) = &config.discord else { return resolved };
    let refs = [("bot_token", Some(&d.bot_token)), ("public_key", d.public_key.as_ref())];
    for (key, r) in refs {
        match r.map(|r| r.resolve()) {
            Some(Ok(s)) => {
                if key == "public_key" && !(s.expose().trim().len() == 64 && s.expose().trim().bytes().all(|b| b.is_ascii_hexdigit())) {
                    p("discord.public_key".into(), "not a public key: Discord's is 64 hex digits (Developer Portal → General Information)".into());
                }
                resolved.push(s);
            }
            Some(Err(why)) => p(format!("discord.{key}"), why),
            None => {}
        }
    }
    if d.mode == DiscordMode::Http && d.public_key.is_none() {
        p("discord.public_key".into(), "required with mode = \"http\": every interaction is verified with it".into());
    }
    let ids = [("application_id", Some(&d.application_id)), ("guild_id", d.guild_id.as_ref()), ("incident_category", d.incident_category.as_ref())];
    for (key, v) in ids {
        if let Some(v) = v.filter(|v| !is_snowflake(v)) {
            p(format!("discord.{key}"), format!("'{v}' is not a Discord id (a number; Developer Mode → Copy ID)"));
        }
    }
    if d.incident_category.is_some() && d.guild_id.is_none() {
        p("discord.incident_category".into(), "needs discord.guild_id (the server the category is in)".into());
    }
    for (i, m) in d.mention.iter().enumerate() {
        if !is_snowflake(m) {
            p(format!("discord.mention[{i}]"), format!("'{m}' is not a Discord user id (a number)"));
        }
    }
    if bad_api_url(&d.api_url) {
        p("discord.api_url".into(), format!("'{}' is not an http(s) URL like https://discord.com/api/v10", d.api_url));
    }
    resolved
}

/// `[environments.*]`: incident channels per platform and the mirrors that need them.
fn check_environments(config: &Config, p: &mut impl FnMut(String, String)) {
    for (env, e) in &config.environments {
        if let Some(z) = &e.time_zone
            && let Err(why) = crate::timeline::zone(z)
        {
            p(format!("environments.{env}.time_zone"), why);
        }
        if let Some(c) = e.incident_channel.get("discord") {
            let at = format!("environments.{env}.incident_channel.discord");
            if c != "create" && !is_snowflake(c) {
                p(at.clone(), format!("'{c}' is not a Discord channel id (a number) or \"create\" (one channel per execution)"));
            }
            // (Without a [discord] section the channel is only used by engine-level mirrors.)
            if c == "create" && config.discord.as_ref().is_some_and(|d| d.guild_id.is_none()) {
                p(at, "\"create\" needs discord.guild_id (the server to create channels in)".into());
            }
        }
        if let Some(c) = e.incident_channel.get("slack") {
            let id = c.len() >= 9 && c.len() <= 24 && c.starts_with(['C', 'G']) && c.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if c != "create" && !id {
                p(
                    format!("environments.{env}.incident_channel.slack"),
                    format!("'{c}' is not a Slack channel id (like C0123ABCD) or \"create\" (one channel per execution)"),
                );
            }
            if config.slack.is_none() {
                p(format!("environments.{env}.incident_channel.slack"), "a Slack channel is set but there is no [slack] section".into());
            }
        }
        for (i, m) in e.mirror.iter().enumerate() {
            let at = format!("environments.{env}.mirror[{i}]");
            if !crate::model::PLATFORMS.contains(&m.as_str()) {
                p(at, format!("'{m}' is not a chat platform; write one of {}", crate::model::PLATFORMS.join(", ")));
            } else if e.mirror[..i].contains(m) {
                p(at, format!("'{m}' is listed twice"));
            } else if !e.incident_channel.contains_key(m) {
                p(
                    at,
                    format!(
                        "mirroring to {m} needs environments.{env}.incident_channel.{m} (a channel, or \"create\" where the platform supports it)"
                    ),
                );
            }
        }
    }
}

/// The shortest audit key accepted: an HMAC key shorter than the hash's 32 bytes is guessable
/// sooner than the hash can be broken.
pub const AUDIT_KEY_MIN: usize = 32;

/// `[audit]`'s keys, resolved: the keyring and the secrets (for redaction). Reported problems
/// name the key, never its value. Also what `runbot audit verify` reads of a config.
pub fn audit_keys(audit: &super::AuditConfig, p: &mut impl FnMut(String, String)) -> (crate::audit::Keyring, Vec<super::Secret>) {
    let mut ring = crate::audit::Keyring::default();
    let mut secrets = Vec::new();
    let mut resolve = |path: String, id: &str, r: &super::SecretRef, p: &mut dyn FnMut(String, String)| {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            p(path.clone(), format!("key id '{id}' must be 1 to 64 letters, digits, '.', '_' or '-'"));
        }
        match r.resolve() {
            Ok(s) if s.expose().chars().count() < AUDIT_KEY_MIN => {
                p(path, format!("the key {r:?} is shorter than {AUDIT_KEY_MIN} characters"));
                None
            }
            Ok(s) => {
                let key = crate::audit::AuditKey::new(id, &s);
                secrets.push(s);
                Some(key)
            }
            Err(why) => {
                p(path, why);
                None
            }
        }
    };
    match (&audit.key_id, &audit.key) {
        (Some(id), Some(r)) => ring.current = resolve("audit.key".into(), id, r, p),
        (None, Some(_)) => p("audit.key_id".into(), "set key_id with key: it is stored with each record the key hashes".into()),
        (Some(_), None) => p("audit.key".into(), "key_id is set but key is not".into()),
        (None, None) => {}
    }
    for (i, k) in audit.previous_keys.iter().enumerate() {
        if audit.key_id.as_deref() == Some(k.id.as_str()) || audit.previous_keys[..i].iter().any(|o| o.id == k.id) {
            p(format!("audit.previous_keys[{i}].id"), format!("key id '{}' is used twice", k.id));
        }
        ring.previous.extend(resolve(format!("audit.previous_keys[{i}].key"), &k.id, &k.key, p));
    }
    (ring, secrets)
}

/// `[audit]`: the keys, and anchors only with a key (an unkeyed anchor is as forgeable as the
/// chain it anchors).
fn check_audit(config: &Config, p: &mut impl FnMut(String, String)) -> (crate::audit::Keyring, Vec<super::Secret>) {
    let audit = &config.audit;
    let keys = audit_keys(audit, p);
    let anchored = audit.s3.is_some() || !audit.anchor_channels.is_empty();
    if anchored && audit.key.is_none() {
        p("audit".into(), "anchors ([audit.s3], anchor_channels) are signed with the audit key: set [audit] key and key_id".into());
    }
    if audit.anchor_interval_secs < 10 {
        p("audit.anchor_interval_secs".into(), "must be at least 10".into());
    }
    if let Some(s3) = &audit.s3 {
        if !s3.url.strip_prefix("s3://").is_some_and(|r| !r.is_empty() && !r.starts_with('/')) {
            p("audit.s3.url".into(), format!("'{}' is not an s3://bucket/prefix URL", s3.url));
        }
        for (k, name) in [("access_key_secret", &s3.access_key_secret), ("secret_key_secret", &s3.secret_key_secret)] {
            if !config.secrets.contains_key(name) {
                p(format!("audit.s3.{k}"), format!("no secret '{name}' in [secrets]"));
            }
        }
        if !["COMPLIANCE", "GOVERNANCE"].contains(&s3.object_lock_mode.as_str()) {
            p("audit.s3.object_lock_mode".into(), format!("'{}' is not COMPLIANCE or GOVERNANCE", s3.object_lock_mode));
        }
    }
    for platform in audit.anchor_channels.keys() {
        let configured = match platform.as_str() {
            "slack" => config.slack.is_some(),
            "discord" => config.discord.is_some(),
            "console" => config.console.enabled,
            _ => false,
        };
        if !configured {
            p(format!("audit.anchor_channels.{platform}"), format!("'{platform}' is not a configured chat platform"));
        }
    }
    keys
}

/// `[secrets]`: every reference resolves now, so a missing file or variable is found at start.
fn resolve_secrets(config: &Config, p: &mut impl FnMut(String, String)) -> BTreeMap<String, super::Secret> {
    let mut secrets = BTreeMap::new();
    for (name, r) in &config.secrets {
        match r.resolve() {
            Ok(s) => {
                secrets.insert(name.clone(), s);
            }
            Err(why) => p(format!("secrets.{name}"), why),
        }
    }
    secrets
}

/// The approvals a generic policy (`runbook = "*"`) must also supply: the largest
/// `approvals_required` of a runbook no policy names and that has something to act on (e.g. the
/// built-in restore), when it exceeds the policy's own count.
fn approval_floor<'a>(config: &Config, runbooks: &'a RunbooksFile, pol: &super::PolicyConfig) -> Option<(u32, &'a String)> {
    if pol.runbook != "*" {
        return None;
    }
    runbooks
        .runbooks
        .iter()
        .filter(|(name, rb)| {
            let has_targets = match rb.target {
                TargetKind::Service => !config.services.is_empty(),
                TargetKind::Database => !config.databases.is_empty(),
            };
            has_targets && !config.approvals.iter().any(|q| &q.runbook == *name)
        })
        .filter_map(|(name, rb)| rb.approvals_required.map(|n| (n, name)))
        .max()
        .filter(|(n, _)| *n > pol.required)
}

/// One `[[approvals]]` policy: what it names exists, and its groups hold enough people to approve.
fn check_approval(
    config: &Config,
    runbooks: &RunbooksFile,
    groups: &BTreeMap<String, BTreeSet<String>>,
    person_of: &BTreeMap<String, String>,
    i: usize,
    pol: &super::PolicyConfig,
    p: &mut impl FnMut(String, String),
) {
    let at = |k: &str| format!("approvals[{i}].{k}");
    if pol.runbook != "*" && !runbooks.runbooks.contains_key(&pol.runbook) {
        p(at("runbook"), format!("no runbook named '{}'", pol.runbook));
    }
    if pol.env != "*" && !config.environments.contains_key(&pol.env) {
        p(at("env"), format!("no environment named '{}' under [environments]", pol.env));
    }
    if pol.approvers.is_empty() {
        p(at("approvers"), "name at least one group".into());
    }
    let mut eligible = BTreeSet::new();
    for g in pol.approvers.iter().chain(&pol.requesters) {
        if !groups.contains_key(g) {
            p(at("approvers"), format!("no group named '{g}'"));
        }
    }
    for g in &pol.approvers {
        for m in groups.get(g).into_iter().flatten() {
            eligible.insert(person_of.get(m).cloned().unwrap_or_else(|| m.clone()));
        }
    }
    let floor = approval_floor(config, runbooks, pol);
    let needed = floor.map(|(n, _)| n).unwrap_or(pol.required);
    if pol.required == 0 {
        p(at("required"), "must be at least 1".into());
    } else if !pol.approvers.is_empty()
        && !eligible.iter().any(|m| m.starts_with(super::DISCORD_ROLE))
        && (eligible.len() as u32) < needed + u32::from(!pol.self_approval)
    {
        let why = match floor {
            Some((n, name)) => format!(" (runbook {name} asks for {n} unless a policy names it)"),
            None => String::new(),
        };
        p(
            at("required"),
            format!(
                "{needed} approvals needed{why} but the approver groups have {} people; with self-approval off \
                 someone other than the requester must always be able to approve",
                eligible.len()
            ),
        );
    }
    if let Err(why) = parse_duration(&pol.expiry) {
        p(at("expiry"), why);
    }
}

/// `[clusters.*]`: exactly one way to reach each, and its keys well formed.
fn check_clusters(config: &Config, p: &mut impl FnMut(String, String)) {
    for (name, c) in &config.clusters {
        let ways = usize::from(c.url.is_some()) + usize::from(c.kubeconfig.is_some()) + usize::from(c.in_cluster);
        if ways != 1 {
            p(format!("clusters.{name}"), "set exactly one of url, kubeconfig or in_cluster".into());
        }
        if c.context.is_some() && c.kubeconfig.is_none() {
            p(format!("clusters.{name}.context"), "context needs kubeconfig".into());
        }
        if let Some(u) = &c.url
            && (!(u.starts_with("http://") || u.starts_with("https://")) || u.contains('@'))
        {
            p(format!("clusters.{name}.url"), "must be http(s)://host:port without credentials".into());
        }
        if let Err(why) = parse_duration(&c.timeout) {
            p(format!("clusters.{name}.timeout"), why);
        }
    }
}

/// One `[databases.*]`: its writers and cluster, then its integrity and backup subsections.
fn check_database(config: &Config, dname: &str, db: &super::DatabaseConfig, p: &mut impl FnMut(String, String)) {
    if let Some(cj) = &db.backup_cronjob
        && cj.split_once('/').is_none_or(|(ns, n)| ns.is_empty() || n.is_empty())
    {
        p(format!("databases.{dname}.backup_cronjob"), format!("'{cj}' is not namespace/cronjob"));
    }
    for (i, w) in db.writers.iter().enumerate() {
        let ok = w.split_once('/').is_some_and(|(ns, d)| {
            let name = |s: &str| {
                !s.is_empty() && s.len() <= 253 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            };
            name(ns) && name(d)
        });
        if !ok {
            p(format!("databases.{dname}.writers[{i}]"), format!("'{w}' is not namespace/deployment"));
        }
    }
    match &db.cluster {
        Some(c) if !config.clusters.contains_key(c) => p(format!("databases.{dname}.cluster"), format!("no cluster named '{c}' under [clusters]")),
        None if !db.writers.is_empty() && config.clusters.len() > 1 => {
            p(format!("databases.{dname}.cluster"), "several clusters are configured; name the writers' one".into())
        }
        _ => {}
    }
    if let Some(ic) = &db.integrity {
        check_integrity(config, dname, ic, p);
    }
    if let Some(b) = &db.backup {
        check_backup(config, dname, b, p);
    }
}

/// `[databases.*.integrity]`: its URL secret exists, its tables and checks are well formed.
fn check_integrity(config: &Config, dname: &str, ic: &super::IntegrityConfig, p: &mut impl FnMut(String, String)) {
    let at = |k: &str| format!("databases.{dname}.integrity.{k}");
    if !config.secrets.contains_key(&ic.url_secret) {
        p(at("url_secret"), format!("no secret named '{}' under [secrets]", ic.url_secret));
    }
    if ic.tables.is_empty() && ic.checks.is_empty() {
        p(at("tables"), "name at least one table or check".into());
    }
    for (t, n) in &ic.tables {
        let ident = |x: &str| {
            !x.is_empty()
                && x.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && x.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if t.split('.').count() > 2 || !t.split('.').all(ident) {
            p(at(&format!("tables.{t}")), "not a table name (table or schema.table)".into());
        }
        if *n < 0 {
            p(at(&format!("tables.{t}")), "the minimum row count cannot be negative".into());
        }
    }
    for (i, c) in ic.checks.iter().enumerate() {
        if c.name.trim().is_empty() || c.sql.trim().is_empty() {
            p(at(&format!("checks[{i}]")), "a check needs a name and sql".into());
        }
    }
}

/// `[databases.*.backup]`: the S3 location and endpoint, its secrets, its durations.
fn check_backup(config: &Config, dname: &str, b: &super::BackupConfig, p: &mut impl FnMut(String, String)) {
    let at = |k: &str| format!("databases.{dname}.backup.{k}");
    let bucket = b.source.strip_prefix("s3://").map(|r| r.split('/').next().unwrap_or(""));
    if !bucket.is_some_and(|bk| (3..=63).contains(&bk.len())) {
        p(at("source"), format!("'{}' is not an s3://bucket/prefix location", b.source));
    }
    if let Some(e) = &b.endpoint
        && (!(e.starts_with("http://") || e.starts_with("https://")) || e.contains('@'))
    {
        p(at("endpoint"), "must be http(s)://host[:port] without credentials".into());
    }
    for (k, name) in [("access_key_secret", &b.access_key_secret), ("secret_key_secret", &b.secret_key_secret)] {
        if !config.secrets.contains_key(name) {
            p(at(k), format!("no secret named '{name}' under [secrets]"));
        }
    }
    for (k, v) in [("full_max_age", &b.full_max_age), ("wal_max_age", &b.wal_max_age), ("retention", &b.retention), ("check_every", &b.check_every)] {
        if let Err(why) = parse_duration(v) {
            p(at(k), why);
        }
    }
}

/// Each service environment names a configured cluster, or needs none.
fn check_service_clusters(config: &Config, p: &mut impl FnMut(String, String)) {
    for (sname, svc) in &config.services {
        for (ename, e) in &svc.environments {
            if let Some(c) = &e.cluster {
                if !config.clusters.contains_key(c) {
                    p(format!("services.{sname}.environments.{ename}.cluster"), format!("no cluster named '{c}' under [clusters]"));
                }
            } else if config.clusters.len() > 1 && (e.namespace.is_some() || e.selector.is_some()) {
                p(format!("services.{sname}.environments.{ename}.cluster"), "several clusters are configured; name one".into());
            }
        }
    }
}

/// `[services.*]`: aliases unique across services, environments, version patterns. Returns the
/// alias map and the compiled version patterns.
#[allow(clippy::type_complexity)]
fn check_services(config: &Config, p: &mut impl FnMut(String, String)) -> (BTreeMap<String, String>, BTreeMap<String, regex_lite::Regex>) {
    let mut aliases = BTreeMap::new();
    let mut version_patterns = BTreeMap::new();
    for (name, svc) in &config.services {
        for a in &svc.aliases {
            if config.services.contains_key(a) || aliases.insert(a.clone(), name.clone()).is_some() {
                p(format!("services.{name}.aliases"), format!("'{a}' names another service too"));
            }
        }
        if let Some(env) = &svc.default_env
            && !svc.environments.contains_key(env)
        {
            p(format!("services.{name}.default_env"), format!("no environment '{env}' in services.{name}.environments"));
        }
        if svc.environments.is_empty() {
            p(format!("services.{name}.environments"), "declare at least one environment".into());
        }
        let pattern = svc.version_pattern.clone().unwrap_or_else(|| r"^v\d+\.\d+\.\d+$".into());
        match regex_lite::Regex::new(&pattern) {
            Ok(re) => {
                version_patterns.insert(name.clone(), re);
            }
            Err(e) => p(format!("services.{name}.version_pattern"), format!("not a regular expression: {e}")),
        }
    }
    (aliases, version_patterns)
}

/// The variables the engine provides to every runbook: the target's, the command's, the typed
/// target fields, and `secret.<name>` for each configured secret.
fn engine_vars(config: &Config) -> BTreeSet<String> {
    let mut vars: BTreeSet<String> = [
        "target",
        "env",
        "requester",
        "execution",
        "runbook",
        "version",
        "to",
        "date",
        "source",
        "pod",
        "cluster",
        "namespace",
        "selector",
        "deployment",
        "configured_source",
        "server_name",
        "database",
        "writers",
        "backup_cronjob",
        "backup_retention",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vars.extend(config.secrets.keys().map(|k| format!("secret.{k}")));
    vars
}

/// One runbook: its parameters, its steps (kinds, idempotence before the approval, variables),
/// its follow-up, and that a mutating runbook has an approval.
fn check_runbook(
    config: &Config,
    runbooks: &RunbooksFile,
    kinds: &StepKinds,
    engine: &BTreeSet<String>,
    rname: &str,
    rb: &crate::runbook::RunbookDef,
    p: &mut impl FnMut(String, String),
) {
    let at = |k: String| format!("runbooks.{rname}.{k}");
    let mut vars = engine.clone();
    vars.insert(rb.target.as_str().to_string());
    vars.extend(rb.params.keys().cloned());
    check_params(config, &vars, rname, rb, p);
    // Every variable a step refers to must be one the engine can provide: the target
    // variables, parameters, secrets, or vars configured on some target.
    let mut probe: BTreeMap<String, String> = vars.iter().map(|v| (v.clone(), String::new())).collect();
    for svc in config.services.values() {
        for e in svc.environments.values() {
            probe.extend(e.vars.keys().map(|k| (k.clone(), String::new())));
        }
    }
    for db in config.databases.values() {
        probe.extend(db.vars.keys().map(|k| (k.clone(), String::new())));
    }
    let mut seen_approval = false;
    for (i, step) in rb.steps.iter().enumerate() {
        seen_approval |= step.kind == APPROVAL;
        check_step(kinds, &probe, rb.mutating, seen_approval, &|k| at(format!("steps[{i}]{k}")), step, p);
    }
    if let Some(f) = &rb.on_failure {
        if let Err(why) = rb.follow_up() {
            p(at("on_failure".into()), why);
        }
        if !runbooks.runbooks.contains_key(&f.runbook) {
            p(at("on_failure.runbook".into()), format!("no runbook named '{}'", f.runbook));
        }
    }
    if rb.mutating && !seen_approval {
        p(at("steps".into()), "a mutating runbook needs an approval step".into());
    }
    if rb.steps.is_empty() {
        p(at("steps".into()), "a runbook needs at least one step".into());
    }
}

/// A runbook's parameters: patterns compile, and a path parameter's root uses only target
/// variables (not parameters or secrets).
fn check_params(config: &Config, vars: &BTreeSet<String>, rname: &str, rb: &crate::runbook::RunbookDef, p: &mut impl FnMut(String, String)) {
    let at = |k: String| format!("runbooks.{rname}.{k}");
    for (pname, pd) in &rb.params {
        if let Some(pat) = &pd.pattern
            && regex_lite::Regex::new(pat).is_err()
        {
            p(at(format!("params.{pname}.pattern")), "not a regular expression".into());
        }
        match (pd.kind, &pd.root) {
            (crate::runbook::ParamKind::Path, None) => {
                p(at(format!("params.{pname}")), "a path parameter needs `root`, the directory it is resolved under".into())
            }
            (crate::runbook::ParamKind::Value, Some(_)) => {
                p(at(format!("params.{pname}.root")), "only a `type = \"path\"` parameter has a root".into())
            }
            (_, Some(root)) => {
                for ph in placeholders(root) {
                    let from_target = config.services.values().flat_map(|s| s.environments.values()).any(|e| e.vars.contains_key(&ph))
                        || config.databases.values().any(|d| d.vars.contains_key(&ph));
                    let engine = vars.contains(&ph) && !rb.params.contains_key(&ph) && !ph.starts_with("secret.");
                    if !(engine || from_target) {
                        p(
                            at(format!("params.{pname}.root")),
                            format!("unknown variable {{{ph}}} (a root may use the target's variables, not parameters or secrets)"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// One runbook step: a known kind, idempotent before the approval of a mutating runbook, every
/// placeholder one the engine can fill (`probe`), and parameters its kind accepts.
fn check_step(
    kinds: &StepKinds,
    probe: &BTreeMap<String, String>,
    mutating: bool,
    seen_approval: bool,
    sat: &dyn Fn(&str) -> String,
    step: &crate::runbook::StepDef,
    p: &mut impl FnMut(String, String),
) {
    if step.kind == APPROVAL {
        if !step.params.is_empty() {
            p(sat(""), "approval steps take no parameters; the policy comes from [[approvals]]".into());
        }
        return;
    }
    let Some(kind) = kinds.get(&step.kind) else {
        p(sat(".kind"), format!("unknown step kind '{}'; known kinds: {}", step.kind, kinds.names().join(", ")));
        return;
    };
    let idempotent = step.idempotent.unwrap_or(kind.default_idempotent());
    if !seen_approval && mutating && !idempotent {
        p(sat(""), "a step before the approval must be idempotent (read-only); mark it idempotent or move it after the approval".into());
    }
    let mut templates = Vec::new();
    for v in step.params.values() {
        strings(v, &mut templates);
    }
    for tmpl in templates {
        for ph in placeholders(tmpl) {
            if !probe.contains_key(&ph) {
                p(sat(""), format!("unknown variable {{{ph}}}"));
            }
        }
    }
    if let Err(why) = kind.prepare(&step.params, probe)
        && !why.starts_with("unknown variable")
    {
        p(sat(""), why);
    }
}

/// The deploy/rollback settings: drivers with their sections, GitHub, registries, smoke.
fn check_deploy(config: &Config, p: &mut impl FnMut(String, String)) {
    for (name, db) in &config.databases {
        if let Some(sm) = &db.smoke {
            check_smoke(&format!("databases.{name}.smoke"), sm, p);
        }
        if let Some(r) = &db.restore {
            check_duration(format!("databases.{name}.restore.timeout"), &r.timeout, p);
            if r.argv.first().is_none_or(|a| a.is_empty()) {
                p(format!("databases.{name}.restore.argv"), "must name a program".into());
            }
        }
    }
    if let Some(g) = &config.github {
        check_url("github.api_url".into(), &g.api_url, p);
        check_secret(config, "github.token_secret".into(), &g.token_secret, p);
        check_duration("github.timeout".into(), &g.timeout, p);
    }
    for (host, r) in &config.registries {
        let at = |k: &str| format!("registries.\"{host}\".{k}");
        if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
            p(format!("registries.\"{host}\""), "must be a registry host[:port], e.g. registry.example.com".into());
        }
        check_secret(config, at("username_secret"), &r.username_secret, p);
        check_secret(config, at("password_secret"), &r.password_secret, p);
        if r.username_secret.is_some() != r.password_secret.is_some() {
            p(at("password_secret"), "give both username_secret and password_secret, or neither".into());
        }
    }
    for (sname, svc) in &config.services {
        if let Some(ci) = &svc.ci {
            if config.github.is_none() {
                p(format!("services.{sname}.ci"), "the CI gate needs a [github] section".into());
            }
            if ci.repo.split('/').count() != 2 || ci.repo.split('/').any(str::is_empty) {
                p(format!("services.{sname}.ci.repo"), format!("'{}' is not owner/name", ci.repo));
            }
        }
        for (ename, e) in &svc.environments {
            check_env_deploy(config, svc, &|k| format!("services.{sname}.environments.{ename}.{k}"), e, p);
        }
    }
}

/// One service environment's deploy settings: the driver and its section, smoke, image.
fn check_env_deploy(
    config: &Config,
    svc: &super::ServiceConfig,
    at: &dyn Fn(&str) -> String,
    e: &super::TargetEnvConfig,
    p: &mut impl FnMut(String, String),
) {
    let missing = match e.driver {
        Some(Driver::Helm) if e.helm.is_none() => Some("(release, chart)"),
        Some(Driver::Swarm) if e.swarm.is_none() => Some("(stack, service, image)"),
        Some(Driver::Pipeline) if e.pipeline.is_none() => Some("(workflow)"),
        _ => None,
    };
    if let (Some(d), Some(keys)) = (e.driver, missing) {
        p(at(d.as_str()), format!("driver \"{d}\" needs this section {keys}"));
    }
    if e.driver == Some(Driver::Helm) && (e.namespace.is_none() || e.deployment.is_none()) {
        p(at("namespace"), "driver \"helm\" verifies the rollout: set namespace and deployment".into());
    }
    if let Some(h) = &e.helm {
        check_duration(at("helm.timeout"), &h.timeout, p);
    }
    if let Some(s) = &e.swarm {
        check_duration(at("swarm.timeout"), &s.timeout, p);
    }
    if let Some(pl) = &e.pipeline {
        check_duration(at("pipeline.timeout"), &pl.timeout, p);
        check_duration(at("pipeline.poll"), &pl.poll, p);
        if config.github.is_none() {
            p(at("pipeline"), "driver \"pipeline\" needs a [github] section".into());
        }
        if pl.repo.is_none() && svc.ci.is_none() {
            p(at("pipeline.repo"), "name the repository here or in the service's [ci]".into());
        }
    }
    if let Some(sm) = &e.smoke {
        check_smoke(&at("smoke"), sm, p);
    }
    if let Some(img) = &e.image
        && img.rsplit('/').next().is_some_and(|last| last.contains(':') || last.contains('@'))
    {
        p(at("image"), format!("'{img}' must be the repository without a tag"));
    }
}

/// A `[..smoke]` section: its URL, durations, expected status and attempts.
fn check_smoke(at: &str, sm: &super::SmokeConfig, p: &mut impl FnMut(String, String)) {
    check_url(format!("{at}.url"), &sm.url, p);
    check_duration(format!("{at}.backoff"), &sm.backoff, p);
    check_duration(format!("{at}.timeout"), &sm.timeout, p);
    if !(100..=599).contains(&sm.status) {
        p(format!("{at}.status"), format!("{} is not an HTTP status", sm.status));
    }
    if sm.attempts == 0 {
        p(format!("{at}.attempts"), "at least 1".into());
    }
}

/// A key naming a secret, when set, names one under `[secrets]`.
fn check_secret(config: &Config, at: String, name: &Option<String>, p: &mut impl FnMut(String, String)) {
    if let Some(n) = name
        && !config.secrets.contains_key(n)
    {
        p(at, format!("no secret named '{n}' under [secrets]"));
    }
}

fn check_duration(at: String, v: &str, p: &mut impl FnMut(String, String)) {
    if let Err(why) = parse_duration(v) {
        p(at, why);
    }
}

fn check_url(at: String, v: &str, p: &mut impl FnMut(String, String)) {
    if !(v.starts_with("http://") || v.starts_with("https://")) || v.contains('@') || v.contains(char::is_whitespace) {
        p(at, format!("'{v}' is not an http(s) URL without credentials"));
    }
}

/// `[databases.NAME.restore]`: the cutover and what it needs, the rehearsal, the preflight.
fn check_restore(config: &Config, p: &mut impl FnMut(String, String)) {
    use crate::config::Cutover;
    for (name, db) in &config.databases {
        let Some(r) = &db.restore else { continue };
        let at = |k: &str| format!("databases.{name}.restore.{k}");
        let secret = |p: &mut dyn FnMut(String, String), key: String, n: &str| {
            if !config.secrets.contains_key(n) {
                p(key, format!("no secret named '{n}' under [secrets]"));
            }
        };
        match r.cutover {
            Some(Cutover::InPlace) => {
                if r.pgdata.is_none() || r.port.is_none() {
                    p(at("pgdata"), "cutover \"in-place\" needs the server's data directory (pgdata) and port".into());
                }
                if db.integrity.is_none() {
                    p(
                        at("cutover"),
                        "cutover \"in-place\" checks the restored server before the writers return: add [databases.NAME.integrity]".into(),
                    );
                }
            }
            Some(Cutover::Switch) => match &r.switch {
                None => p(at("switch"), "cutover \"switch\" needs this section (secret, key, url_secret)".into()),
                Some(s) => {
                    let dns = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
                    if s.secret.split('/').count() != 2 || !s.secret.split('/').all(dns) {
                        p(at("switch.secret"), format!("'{}' is not namespace/name", s.secret));
                    }
                    if s.key.is_empty() || !s.key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
                        p(at("switch.key"), format!("'{}' is not a Secret key (letters, digits, '-', '.', '_')", s.key));
                    }
                    secret(p, at("switch.url_secret"), &s.url_secret);
                }
            },
            Some(Cutover::None) | None => {}
        }
        if r.switch.is_some() && r.cutover != Some(Cutover::Switch) {
            p(at("switch"), "only used with cutover = \"switch\"".into());
        }
        if let Some(n) = &r.current_url_secret {
            secret(p, at("current_url_secret"), n);
        }
        if r.rehearse {
            if db.integrity.as_ref().is_none_or(|i| i.tables.is_empty()) {
                p(at("rehearse"), "the rehearsal counts the integrity tables: list them in [databases.NAME.integrity] tables".into());
            }
            if !r.rehearse_dir.starts_with('/') {
                p(at("rehearse_dir"), format!("'{}' is not an absolute path", r.rehearse_dir));
            }
        }
        if let Some(c) = &r.check_argv
            && c.first().is_none_or(|a| a.is_empty())
        {
            p(at("check_argv"), "must name a program".into());
        }
    }
}

/// Every string inside a TOML value (argv arrays, env tables), for placeholder checks.
fn strings<'a>(v: &'a toml::Value, out: &mut Vec<&'a str>) {
    match v {
        toml::Value::String(s) => out.push(s),
        toml::Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        toml::Value::Table(t) => t.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn default_instance() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    if host.is_empty() { "runbot".into() } else { format!("runbot-{host}") }
}

#[cfg(test)]
mod slack_tests {
    use crate::config::{DiscordMode, Settings};
    use crate::steps::StepKinds;
    use std::path::Path;

    fn problems(text: &str) -> Vec<String> {
        match Settings::from_toml(text, Path::new("."), &StepKinds::shipped()) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The built-in restore asks for two approvals: a generic policy is raised to two, a
    /// policy naming `restore` decides alone, a generic policy asking more keeps its count.
    #[test]
    fn a_runbooks_approval_floor_raises_only_generic_policies() {
        let settings = |policies: &str| {
            let text = format!("[groups]\ndba = [\"console:dana\", \"console:erin\", \"console:frank\", \"console:gus\"]\n{policies}");
            Settings::from_toml(&text, Path::new("."), &StepKinds::shipped()).unwrap_or_else(|p| panic!("{p:?}"))
        };
        let required = |s: &Settings, rb: &str| s.policy(rb, "prod").map(|(p, _)| p.required);
        let generic = settings("[[approvals]]\napprovers = [\"dba\"]\n");
        assert_eq!((required(&generic, "restore"), required(&generic, "deploy")), (Some(2), Some(1)));
        let named = settings("[[approvals]]\napprovers = [\"dba\"]\n[[approvals]]\nrunbook = \"restore\"\napprovers = [\"dba\"]\n");
        assert_eq!(required(&named, "restore"), Some(1), "a policy naming the runbook decides");
        let three = settings("[[approvals]]\napprovers = [\"dba\"]\nrequired = 3\n");
        assert_eq!(required(&three, "restore"), Some(3));
    }

    /// A generic policy whose groups are too small for the restore runbook's two approvals is
    /// reported once a database exists for it to act on, naming the runbook.
    #[test]
    fn a_generic_policy_too_small_for_the_restore_floor_is_reported() {
        let base = "[groups]\nsre = [\"console:a\", \"console:b\"]\n[[approvals]]\napprovers = [\"sre\"]\n";
        assert!(problems(base).is_empty(), "no database: restore cannot run");
        let p = problems(&format!("{base}[databases.db]\n"));
        assert!(p.iter().any(|m| m.contains("approvals[0].required") && m.contains("2 approvals needed (runbook restore asks for 2")), "{p:?}");
    }

    /// `mirror` names known platforms, each once, each with an incident channel here.
    #[test]
    fn mirrors_are_checked_with_key_paths() {
        let env = |body: &str| problems(&format!("[environments.prod]\n{body}\n"));
        assert!(env("incident_channel = { discord = \"900\", console = \"inc\" }\nmirror = [\"discord\", \"console\"]").is_empty());
        let p = env("incident_channel = { discord = \"900\" }\nmirror = [\"discrod\"]");
        assert!(
            p.iter().any(|p| p == "environments.prod.mirror[0]: 'discrod' is not a chat platform; write one of slack, discord, console"),
            "{p:?}"
        );
        let p = env("mirror = [\"discord\"]");
        assert!(
            p.iter().any(|p| p.starts_with("environments.prod.mirror[0]: mirroring to discord needs environments.prod.incident_channel.discord")),
            "{p:?}"
        );
        let p = env("incident_channel = { discord = \"900\" }\nmirror = [\"discord\", \"discord\"]");
        assert!(p.iter().any(|p| p == "environments.prod.mirror[1]: 'discord' is listed twice"), "{p:?}");
        let p = env("mirror = true");
        assert!(p.iter().any(|p| p.starts_with("environments.prod.mirror")), "{p:?}");
    }

    /// `driver` is one of three names (the config format is unchanged), and a driver needs its
    /// section; both named by key path.
    #[test]
    fn a_driver_is_one_of_three_names_and_needs_its_section() {
        let env = |body: &str| problems(&format!("[services.svc.environments.prod]\n{body}\n"));
        let p = env("driver = \"kubectl\"");
        assert!(p.iter().any(|p| p == "services.svc.environments.prod.driver: unknown driver 'kubectl'; use helm, pipeline or swarm"), "{p:?}");
        let p = env("driver = \"swarm\"");
        assert!(p.iter().any(|p| p == "services.svc.environments.prod.swarm: driver \"swarm\" needs this section (stack, service, image)"), "{p:?}");
        let p = env("driver = \"helm\"");
        assert!(p.iter().any(|p| p.starts_with("services.svc.environments.prod.helm: driver \"helm\" needs this section")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("services.svc.environments.prod.namespace: driver \"helm\" verifies the rollout")), "{p:?}");
        let swarm = "driver = \"swarm\"\n[services.svc.environments.prod.swarm]\nstack = \"s\"\nservice = \"s_api\"\nimage = \"r.local/api\"";
        assert!(env(swarm).is_empty(), "{:?}", env(swarm));
    }

    #[test]
    fn slack_section_is_checked_with_key_paths() {
        let tok = std::env::temp_dir().join(format!("runbot-slack-test-{}", std::process::id()));
        std::fs::write(&tok, "xoxb-very-secret-token\n").expect("write");
        let ok = format!("[slack]\nbot_token = \"file:{}\"\nsigning_secret = \"file:{}\"\n", tok.display(), tok.display());
        let s = Settings::from_toml(&ok, Path::new("."), &StepKinds::shipped()).expect("valid");
        let cfg = s.config.slack.as_ref().expect("slack");
        assert_eq!((cfg.api_url.as_str(), cfg.post_interval_ms), ("https://slack.com/api", 1000));
        assert_eq!(s.redactor.redact("token xoxb-very-secret-token"), "token ***", "the bot token is redacted everywhere");

        let p = problems("[slack]\nbot_token = \"env:RUNBOT_TEST_UNSET_TOKEN\"\n");
        assert!(p.iter().any(|p| p == "slack.bot_token: environment variable RUNBOT_TEST_UNSET_TOKEN is not set"), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("slack: set signing_secret")), "{p:?}");
        let p = problems("[slack]\nbot_token = \"xoxb-literal\"\n");
        assert!(p.iter().any(|p| p.starts_with("slack.bot_token") && p.contains("literal secrets are not accepted")), "{p:?}");
        let p = problems(&format!("{ok}api_url = \"ftp://x\"\nchannel = \"C1\"\n"));
        assert!(p.iter().any(|p| p.starts_with("slack.channel") || p.contains("unknown field")), "{p:?}");
        let p = problems(&format!("{ok}api_url = \"ftp://x\"\n"));
        assert!(p.iter().any(|p| p.starts_with("slack.api_url")), "{p:?}");
        let p = problems(&format!("{ok}[environments.prod]\nincident_channel = {{ slack = \"#inc-prod\" }}\n"));
        assert!(p.iter().any(|p| p.starts_with("environments.prod.incident_channel.slack")), "{p:?}");
        assert!(problems(&format!("{ok}[environments.prod]\nincident_channel = {{ slack = \"create\" }}\n")).is_empty());
        assert!(problems(&format!("{ok}[environments.prod]\nincident_channel = {{ slack = \"C0INCPROD\" }}\n")).is_empty());
        let p = problems("[environments.prod]\nincident_channel = { slack = \"C0INCPROD\" }\n");
        assert!(p.iter().any(|p| p.contains("no [slack] section")), "{p:?}");
        let _ = std::fs::remove_file(&tok);
    }

    #[test]
    fn discord_section_and_roles_are_checked_with_key_paths() {
        let tok = std::env::temp_dir().join(format!("runbot-discord-test-{}", std::process::id()));
        let key = std::env::temp_dir().join(format!("runbot-discord-key-{}", std::process::id()));
        std::fs::write(&tok, "discord-very-secret-token\n").expect("write");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("write");
        let ok = format!(
            "[discord]\nbot_token = \"file:{}\"\npublic_key = \"file:{}\"\napplication_id = \"1250000000000000001\"\nguild_id = \"1280000000000000001\"\n",
            tok.display(),
            key.display()
        );
        let s = Settings::from_toml(&ok, Path::new("."), &StepKinds::shipped()).expect("valid");
        let cfg = s.config.discord.as_ref().expect("discord");
        assert_eq!((cfg.api_url.as_str(), cfg.mode), ("https://discord.com/api/v10", DiscordMode::Http));
        assert_eq!(s.redactor.redact("Bot discord-very-secret-token"), "Bot ***");
        assert!(problems(&format!("{ok}mode = \"gateway\"\n")).is_empty());
        let p = problems(&format!("{ok}mode = \"websocket\"\n"));
        assert!(p.iter().any(|p| p.starts_with("discord") && p.contains("websocket")), "{p:?}");
        let p = problems(&format!(
            "[discord]\nbot_token = \"file:{}\"\napplication_id = \"app\"\nincident_category = \"12\"\nmention = [\"bob\"]\n",
            tok.display()
        ));
        for want in [
            "discord.public_key: required with mode",
            "discord.application_id: 'app' is not a Discord id",
            "discord.incident_category: needs discord.guild_id",
            "discord.mention[0]: 'bob'",
        ] {
            assert!(p.iter().any(|p| p.starts_with(want)), "{want}: {p:?}");
        }
        let p = problems(&format!(
            "[discord]\nbot_token = \"file:{}\"\npublic_key = \"file:{}\"\napplication_id = \"1\"\n[environments.prod]\nincident_channel = {{ discord = \"create\" }}\n",
            tok.display(),
            tok.display()
        ));
        assert!(p.iter().any(|p| p.starts_with("discord.public_key: not a public key")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("environments.prod.incident_channel.discord: \"create\" needs discord.guild_id")), "{p:?}");
        let p = problems("[environments.prod]\nincident_channel = { discord = \"#inc\" }\n");
        assert!(p.iter().any(|p| p.starts_with("environments.prod.incident_channel.discord: '#inc' is not a Discord channel id")), "{p:?}");
        // Roles as group members; not as people.
        assert!(problems("[groups]\nsre = [\"discord-role:1240000000000000001\", \"console:a\"]\n").is_empty());
        let p = problems("[groups]\nsre = [\"discord-role:admins\"]\n[people]\nana = [\"discord-role:1\"]\n");
        assert!(p.iter().any(|p| p.starts_with("groups.sre[0]: 'discord-role:admins' is not a Discord role")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("people.ana[0]: 'discord-role:1' is not an identity")), "{p:?}");
        // A role may hold any number of people: a policy over it is not "too small".
        assert!(problems("[groups]\nsre = [\"discord-role:1240000000000000001\"]\n[[approvals]]\napprovers = [\"sre\"]\nrequired = 2\n").is_empty());
        let _ = (std::fs::remove_file(&tok), std::fs::remove_file(&key));
    }

    #[test]
    fn platform_roles_make_group_members() {
        let s = Settings::from_toml(
            "[groups]\nsre = [\"discord-role:77\"]\nops = [\"discord:5\"]\n[people]\nana = [\"discord:5\", \"slack:U1\"]\n",
            Path::new("."),
            &StepKinds::shipped(),
        )
        .expect("valid");
        let who = crate::model::Identity::new("discord:9");
        assert!(!s.in_any_group(&who, &[], &["sre".into()]));
        assert!(s.in_any_group(&who, &["discord-role:77".into()], &["sre".into()]));
        assert!(!s.in_any_group(&who, &["discord-role:78".into()], &["sre".into()]));
        assert_eq!(s.groups_of(&who, &["discord-role:77".into()]), vec!["sre".to_string()]);
        // People still count once across platforms.
        assert_eq!(s.groups_of(&crate::model::Identity::new("slack:U1"), &[]), vec!["ops".to_string()]);
    }

    #[test]
    fn a_loopback_console_on_a_non_loopback_listen_address_is_refused_naming_the_keys() {
        for listen in ["0.0.0.0:8080", "[::]:8080", "10.1.2.3:8080"] {
            let p = problems(&format!("[server]\nlisten = \"{listen}\"\n"));
            assert!(
                p.iter().any(|p| p.starts_with("server.listen:") && p.contains("auth = \"loopback\"") && p.contains("[console] enabled = false")),
                "{listen}: {p:?}"
            );
        }
        assert!(problems("[server]\nlisten = \"0.0.0.0:8080\"\n[console]\nenabled = false\n").is_empty());
        let proxied = "[server]\nlisten = \"0.0.0.0:8080\"\n[console]\nauth = \"proxy\"\ntrusted_proxies = [\"10.0.0.5\", \"10.1.0.0/16\"]\n";
        assert!(problems(proxied).is_empty(), "{:?}", problems(proxied));
    }

    #[test]
    fn console_auth_keys_are_checked_for_their_mode() {
        let p = problems("[console]\nauth = \"proxy\"\n");
        assert!(p.iter().any(|p| p.starts_with("console.trusted_proxies: auth = \"proxy\" needs")), "{p:?}");
        let p = problems(
            "[console]\nauth = \"proxy\"\ntrusted_proxies = [\"10.0.0.5/24\", \"proxy\"]\nlocal_identity = \"console:ops\"\nuser_header = \"X User\"\n",
        );
        for want in ["console.trusted_proxies[0]:", "console.trusted_proxies[1]:", "console.local_identity: only used", "console.user_header:"] {
            assert!(p.iter().any(|p| p.starts_with(want)), "{want}: {p:?}");
        }
        let p = problems("[console]\nlocal_identity = \"slack:U1\"\ntrusted_proxies = [\"10.0.0.5\"]\n");
        assert!(p.iter().any(|p| p.starts_with("console.local_identity: 'slack:U1' is not a console identity")), "{p:?}");
        assert!(p.iter().any(|p| p.starts_with("console.trusted_proxies: only used with auth = \"proxy\"")), "{p:?}");
        assert!(problems("[console]\nauth = \"anyone\"\n").iter().any(|p| p.contains("console")), "an unknown mode is refused");
        assert!(problems("[console]\nlocal_identity = \"console:ops\"\n").is_empty());
    }
}

#[cfg(test)]
mod param_tests {
    use crate::config::Settings;
    use crate::steps::StepKinds;

    /// The problems `check-config` reports for a runbook with parameter `param` (TOML body).
    fn problems_with_param(param: &str) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!("runbot-param-test-{}-{}", std::process::id(), param.len()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let runbooks = format!(
            "[runbooks.r]\nsummary = \"r\"\ntarget = \"service\"\nmutating = false\n[runbooks.r.params.file]\n{param}\n[runbooks.r.params.other]\ndefault = \"x\"\n[[runbooks.r.steps]]\nname = \"s\"\nkind = \"command\"\nargv = [\"cat\", \"{{file}}\"]\n"
        );
        std::fs::write(dir.join("runbooks.toml"), runbooks).expect("write");
        let config = "[engine]\nrunbooks = \"runbooks.toml\"\n[services.svc.environments.prod]\nvars = { reports = \"/srv/reports\" }\n";
        let out = match Settings::from_toml(config, &dir, &StepKinds::shipped()) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        };
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    #[test]
    fn a_path_parameter_needs_a_root_made_of_target_variables() {
        assert!(problems_with_param("type = \"path\"\nroot = \"{reports}\"").is_empty());
        assert!(problems_with_param("type = \"path\"\nroot = \"/srv/reports\"").is_empty());
        let p = problems_with_param("type = \"path\"");
        assert!(p.iter().any(|p| p.starts_with("runbooks.r.params.file: a path parameter needs `root`")), "{p:?}");
        let p = problems_with_param("root = \"/srv\"");
        assert!(p.iter().any(|p| p.starts_with("runbooks.r.params.file.root: only a `type = \"path\"` parameter")), "{p:?}");
        for bad in ["{other}", "{secret.x}", "{nope}"] {
            let p = problems_with_param(&format!("type = \"path\"\nroot = \"{bad}\""));
            assert!(p.iter().any(|p| p.starts_with("runbooks.r.params.file.root: unknown variable")), "{bad}: {p:?}");
        }
        let p = problems_with_param("type = \"file\"");
        assert!(p.iter().any(|p| p.contains("params.file") && p.contains("value") && p.contains("path")), "{p:?}");
    }
}

/// `[alerts]` and `[[triggers]]`: the token secret is declared, the platform is running, every
/// trigger names a runbook and reads only `{labels.NAME}` in its target and environment.
fn check_triggers(config: &Config, runbooks: &RunbooksFile, p: &mut impl FnMut(String, String)) {
    if let Some(a) = &config.alerts {
        check_secret(config, "alerts.token_secret".into(), &Some(a.token_secret.clone()), p);
        let running = match a.platform.as_str() {
            "slack" => config.slack.is_some(),
            "discord" => config.discord.is_some(),
            "console" => config.console.enabled,
            _ => {
                p("alerts.platform".into(), format!("'{}' is not a chat platform; write slack, discord or console", a.platform));
                true
            }
        };
        if !running {
            p("alerts.platform".into(), format!("{} is not configured here; alert messages could not be posted", a.platform));
        }
        if !(1024..=16 << 20).contains(&a.max_body_bytes) {
            p("alerts.max_body_bytes".into(), format!("{} is outside 1024 to 16777216", a.max_body_bytes));
        }
        check_duration("alerts.diagnosis_timeout".into(), &a.diagnosis_timeout, p);
    } else if !config.triggers.is_empty() {
        p("triggers".into(), "no [alerts] section: without the receiver no alert reaches a trigger".into());
    }
    for (i, t) in config.triggers.iter().enumerate() {
        if t.labels.is_empty() {
            p(format!("triggers[{i}].labels"), "at least one label, e.g. { alertname = \"KubePodCrashLooping\" }".into());
        }
        if !runbooks.runbooks.contains_key(&t.runbook) {
            p(format!("triggers[{i}].runbook"), format!("no runbook named '{}'", t.runbook));
        }
        for (key, template) in [("target", &t.target), ("env", &t.env)] {
            if let Err(why) = crate::alerts::label_template(template) {
                p(format!("triggers[{i}].{key}"), why);
            }
        }
        let fixed_env = crate::alerts::label_template(&t.env).is_ok_and(|labels| labels.is_empty());
        let known = config.environments.contains_key(&t.env) || config.services.values().any(|s| s.environments.contains_key(&t.env));
        if fixed_env && !known {
            p(format!("triggers[{i}].env"), format!("no environment named '{}' under [environments] or a service", t.env));
        }
    }
}

#[cfg(test)]
mod trigger_tests {
    use crate::config::Settings;
    use crate::steps::StepKinds;
    use std::path::Path;

    fn problems(text: &str) -> Vec<String> {
        match Settings::from_toml(text, Path::new("."), &StepKinds::shipped()) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string()).collect(),
        }
    }

    const SERVICE: &str = "[environments.prod]\n[services.promotions]\n[services.promotions.environments.prod]\n";

    #[test]
    fn a_receiver_with_triggers_on_known_runbooks_and_label_templates_passes() {
        let text = format!(
            "[secrets]\nam = \"env:PATH\"\n{SERVICE}[alerts]\ntoken_secret = \"am\"\nplatform = \"console\"\n\
             [[triggers]]\nlabels = {{ alertname = \"KubePodCrashLooping\" }}\nrunbook = \"restart\"\ntarget = \"{{labels.deployment}}\"\nenv = \"{{labels.namespace}}\"\n\
             [[triggers]]\nlabels = {{ alertname = \"Down\" }}\nrunbook = \"restart\"\ntarget = \"{{labels.job}}\"\nenv = \"prod\"\n"
        );
        assert_eq!(problems(&text), Vec::<String>::new());
    }

    #[test]
    fn an_unknown_time_zone_a_bad_diagnosis_timeout_and_a_console_url_with_credentials_are_named() {
        let good = "[secrets]\nam = \"env:PATH\"\n[environments.prod]\ntime_zone = \"Europe/Madrid\"\n[services.promotions]\n[services.promotions.environments.prod]\n\
             [console]\nurl = \"https://runbot.example.com\"\n[alerts]\ntoken_secret = \"am\"\nplatform = \"console\"\ndiagnosis_timeout = \"45s\"\n"
            .to_string();
        assert_eq!(problems(&good), Vec::<String>::new());
        let bad = good.replace("Europe/Madrid", "Europe/Atlantis").replace("45s", "soon").replace("https://runbot", "https://u:p@runbot");
        let got = problems(&bad);
        for want in [
            "environments.prod.time_zone: 'Europe/Atlantis' is not an IANA time zone",
            "alerts.diagnosis_timeout:",
            "console.url: 'https://u:p@runbot.example.com' is not an http(s) URL without credentials",
        ] {
            assert!(got.iter().any(|p| p.starts_with(want)), "{want} in {got:?}");
        }
    }

    #[test]
    fn each_trigger_and_receiver_mistake_is_named_by_its_key() {
        let text = format!(
            "{SERVICE}[alerts]\ntoken_secret = \"missing\"\nplatform = \"slack\"\nmax_body_bytes = 10\n\
             [[triggers]]\nlabels = {{}}\nrunbook = \"nosuch\"\ntarget = \"{{target}}\"\nenv = \"staging\"\n"
        );
        let got = problems(&text);
        for want in [
            "alerts.token_secret: no secret named 'missing' under [secrets]",
            "alerts.platform: slack is not configured here",
            "alerts.max_body_bytes: 10 is outside 1024 to 16777216",
            "triggers[0].labels: at least one label",
            "triggers[0].runbook: no runbook named 'nosuch'",
            "triggers[0].target: {target} is not a label",
            "triggers[0].env: no environment named 'staging'",
        ] {
            assert!(got.iter().any(|g| g.starts_with(want)), "expected {want:?} in {got:#?}");
        }
    }

    #[test]
    fn triggers_without_the_receiver_are_refused() {
        let text = format!("{SERVICE}[[triggers]]\nlabels = {{ a = \"b\" }}\nrunbook = \"restart\"\ntarget = \"x\"\nenv = \"prod\"\n");
        assert!(problems(&text).iter().any(|p| p.starts_with("triggers: no [alerts] section")), "{:?}", problems(&text));
    }
}
