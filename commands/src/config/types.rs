//! The TOML configuration as written by people: every section rejects unknown fields and every
//! field has a documented default. [`super::Settings`] is the validated form the engine uses.

use super::secret::SecretRef;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file (`runbot serve --config FILE`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server for the console, chat webhooks and health endpoints.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where executions, locks and the audit log live.
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub engine: EngineConfig,
    /// Command quotas.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Named secrets (`env:NAME` or `file:PATH`), usable in command steps' `env` as `{secret.NAME}`.
    #[serde(default)]
    pub secrets: BTreeMap<String, SecretRef>,
    /// Groups of identities (`platform:id`), e.g. `sre = ["slack:U024BE7LH", "console:alice"]`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    /// One person with several identities counts once, e.g. `ana = ["slack:U1", "discord:42"]`.
    #[serde(default)]
    pub people: BTreeMap<String, Vec<String>>,
    /// Approval policies; the most specific (runbook, env) match wins.
    #[serde(default)]
    pub approvals: Vec<PolicyConfig>,
    /// Environments and where their incident status messages go.
    #[serde(default)]
    pub environments: BTreeMap<String, EnvironmentConfig>,
    #[serde(default)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub databases: BTreeMap<String, DatabaseConfig>,
    /// The local web console (the embedded default adapter).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Kubernetes clusters by name; services name theirs per environment.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// The Slack adapter; absent = no Slack.
    #[serde(default)]
    pub slack: Option<SlackConfig>,
    /// The Discord adapter; absent = no Discord.
    #[serde(default)]
    pub discord: Option<DiscordConfig>,
    /// GitHub (the deploy runbook's CI gate and `pipeline` driver); absent = no GitHub.
    #[serde(default)]
    pub github: Option<GitHubConfig>,
    /// Container registries the deploy preflight asks whether an image tag exists, by host
    /// (`registry.example.com`, `127.0.0.1:5000`). A host not listed is asked anonymously
    /// over https.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryConfig>,
    /// External command-line tools the drivers run.
    #[serde(default)]
    pub tools: ToolsConfig,
    /// The Alertmanager receiver (`POST /alerts/alertmanager`); absent = no receiver.
    #[serde(default)]
    pub alerts: Option<AlertsConfig>,
    /// Which alerts propose which runbook on which target, first match wins.
    #[serde(default)]
    pub triggers: Vec<TriggerConfig>,
    /// The audit trail's key and the anchors of its head outside the store.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[audit]`: keyed record hashes and anchors of the chain head outside the store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The id of `key`, stored with every record it keys (letters, digits, `.`, `_`, `-`; at
    /// most 64). Required with `key`.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The HMAC-SHA256 key of record hashes and anchors (`env:NAME` or `file:PATH`, at least
    /// 32 characters). Default: none — records get plain SHA-256 hashes, which whoever can
    /// write the database can recompute, and nothing is anchored.
    #[serde(default)]
    pub key: Option<SecretRef>,
    /// Keys rotated out, still trusted for the records (and anchors) written under them.
    #[serde(default)]
    pub previous_keys: Vec<AuditPreviousKey>,
    /// How often the chain head is anchored, in seconds (at least 10); also at shutdown.
    /// Default 300.
    #[serde(default = "default_anchor_interval")]
    pub anchor_interval_secs: u64,
    /// Anchors as S3 objects. Default: none.
    #[serde(default)]
    pub s3: Option<AuditS3Config>,
    /// Channels each anchor is posted in, by platform (`{ slack = "C0AUDIT" }`). Default: none.
    #[serde(default)]
    pub anchor_channels: BTreeMap<String, String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            key_id: None,
            key: None,
            previous_keys: Vec::new(),
            anchor_interval_secs: default_anchor_interval(),
            s3: None,
            anchor_channels: BTreeMap::new(),
        }
    }
}

fn default_anchor_interval() -> u64 {
    300
}

/// `[[audit.previous_keys]]`: a rotated-out key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPreviousKey {
    pub id: String,
    pub key: SecretRef,
}

/// `[audit.s3]`: where anchors are written — the same S3 client as the backup catalogs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditS3Config {
    /// `s3://bucket/prefix`: anchors are `<prefix>/anchors/<instance>/<seq>.json` and
    /// `<prefix>/anchors/<instance>/latest.json`.
    pub url: String,
    /// S3-compatible endpoint. Default: AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing. Default: true when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Names of `[secrets]` entries holding the access key id and the secret access key.
    pub access_key_secret: String,
    pub secret_key_secret: String,
    /// Days each `<seq>.json` anchor is retained under S3 Object Lock (the bucket must have
    /// it enabled; a write the bucket refuses is logged as an error). Default 0: no lock.
    #[serde(default)]
    pub object_lock_days: u32,
    /// `COMPLIANCE` (nobody can shorten it) or `GOVERNANCE`. Default `COMPLIANCE`.
    #[serde(default = "default_lock_mode")]
    pub object_lock_mode: String,
}

fn default_lock_mode() -> String {
    "COMPLIANCE".into()
}

/// `[alerts]`: the Alertmanager webhook receiver.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Name of a `[secrets]` entry holding the bearer token Alertmanager sends
    /// (`http_config.authorization.credentials`). Required.
    pub token_secret: String,
    /// The chat platform alert messages are posted on: `slack`, `discord` or `console`.
    /// Required; the platform must be configured.
    pub platform: String,
    /// The channel of an alert whose environment has no `incident_channel` on `platform`.
    /// Default: none (such an alert is counted as unmatched, not posted).
    #[serde(default)]
    pub channel: Option<String>,
    /// The largest request body accepted, in bytes (1024 to 16777216). Default 1048576.
    #[serde(default = "default_alerts_body")]
    pub max_body_bytes: usize,
    /// How long the runbook's read-only diagnosis (its steps before the approval, run as a
    /// dry run when the alert fires) may take in all; a step still running then is cancelled
    /// and shown as timed out. Default `30s`.
    #[serde(default = "default_diagnosis_timeout")]
    pub diagnosis_timeout: String,
}

fn default_diagnosis_timeout() -> String {
    "30s".into()
}

fn default_alerts_body() -> usize {
    1048576
}

/// `[[triggers]]`: an alert that has every one of `labels` proposes `runbook` on
/// `target` in `env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Label values the alert must have, e.g. `{ alertname = "KubePodCrashLooping" }`.
    /// Required, at least one.
    pub labels: BTreeMap<String, String>,
    /// The runbook proposed. Required.
    pub runbook: String,
    /// The runbook's target, a template over the alert's labels, e.g. `{labels.deployment}`.
    /// Required.
    pub target: String,
    /// The environment: fixed (`prod`) or from the labels (`{labels.namespace}`). Required.
    pub env: String,
}

/// `[github]`: the GitHub REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    /// Base URL of the REST API. Default `https://api.github.com` (GitHub Enterprise:
    /// `https://HOST/api/v3`).
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// Name of a `[secrets]` entry holding a token that may read Actions runs and refs and
    /// dispatch the deploy workflow. Default: none (public repositories, no dispatch).
    #[serde(default)]
    pub token_secret: Option<String>,
    /// Timeout of one API request. Default `10s`.
    #[serde(default = "default_api_timeout")]
    pub timeout: String,
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}

/// `[registries."HOST"]`: how to reach one container registry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Names of `[secrets]` entries with the user name and password (or token) for Basic
    /// auth and the token exchange. Default: anonymous.
    #[serde(default)]
    pub username_secret: Option<String>,
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Plain http instead of https (a registry on a private network). Default false.
    #[serde(default)]
    pub insecure: bool,
}

/// `[tools]`: where the drivers' command-line tools are. Located once at start-up.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsConfig {
    /// Path of the `helm` binary. Default: `helm` found on PATH.
    #[serde(default)]
    pub helm: Option<String>,
    /// Path of the `docker` binary. Default: `docker` found on PATH.
    #[serde(default)]
    pub docker: Option<String>,
}

/// `[slack]`: HTTP endpoints (`/slack/commands`, `/slack/interactions`, `/slack/events`) when
/// `signing_secret` is set, Socket Mode when `app_token` is set (both may be on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`), by reference: `env:SLACK_BOT_TOKEN` or `file:PATH`. Required.
    pub bot_token: SecretRef,
    /// The app's signing secret, by reference; verifies every HTTP request. Default: none
    /// (then the HTTP endpoints are not served).
    #[serde(default)]
    pub signing_secret: Option<SecretRef>,
    /// An app-level token (`xapp-…`, scope `connections:write`), by reference; turns on Socket
    /// Mode. Default: none.
    #[serde(default)]
    pub app_token: Option<SecretRef>,
    /// Base URL of the Web API. Default `https://slack.com/api`.
    #[serde(default = "default_slack_api")]
    pub api_url: String,
    /// Minimum time between two posts into one channel, in milliseconds. Default 1000
    /// (chat.postMessage: about one message per second per channel).
    #[serde(default = "default_post_interval")]
    pub post_interval_ms: u64,
    /// chat.update calls a minute for the whole workspace, all channels together (Slack's
    /// Tier 3 limit is per method per workspace, "50+ per minute"); shared by the replicas of
    /// one store. 0 = not paced (then only 429s slow edits down). Default 50.
    #[serde(default = "default_edits_per_minute")]
    pub edits_per_minute: u32,
    /// Socket Mode liveness: runbot pings Slack this often, in seconds, and takes a connection
    /// that sent nothing (no pong, no frame) for twice as long as dead: it reconnects, and
    /// `/readyz` answers 503 until it is connected again. Default 10.
    #[serde(default = "default_socket_ping")]
    pub socket_ping_secs: u64,
}

fn default_socket_ping() -> u64 {
    10
}

fn default_slack_api() -> String {
    "https://slack.com/api".into()
}
fn default_post_interval() -> u64 {
    1000
}
fn default_edits_per_minute() -> u32 {
    50
}

/// `[discord]`: `POST /discord/interactions` (mode `http`, verified with `public_key`) or the
/// gateway (mode `gateway`); status messages through the REST API as the bot.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot token, by reference: `env:DISCORD_BOT_TOKEN` or `file:PATH`. Required.
    pub bot_token: SecretRef,
    /// The application's public key (hex, Developer Portal → General Information), by
    /// reference; verifies every interaction. Required in mode `http`.
    #[serde(default)]
    pub public_key: Option<SecretRef>,
    /// The application (client) id. Required.
    pub application_id: String,
    /// The server (guild) runbot serves: commands registered there by default, incident
    /// channels created there. Default: none.
    #[serde(default)]
    pub guild_id: Option<String>,
    /// The category created incident channels (`incident_channel.discord = "create"`) go in.
    /// Default: none (top level of the guild).
    #[serde(default)]
    pub incident_category: Option<String>,
    /// Discord user ids mentioned in every created incident channel. Default: none.
    #[serde(default)]
    pub mention: Vec<String>,
    /// How interactions arrive: `http` (the interactions endpoint URL) or `gateway`.
    #[serde(default)]
    pub mode: DiscordMode,
    /// Base URL of the REST API. Default `https://discord.com/api/v10`.
    #[serde(default = "default_discord_api")]
    pub api_url: String,
}

/// How Discord interactions reach runbot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscordMode {
    /// Discord POSTs each interaction to `/discord/interactions` (signed).
    #[default]
    Http,
    /// runbot keeps a gateway connection and receives interactions over it.
    Gateway,
}

/// How a service environment is deployed and rolled back; written as its lower-case name
/// (`driver = "helm"`), and stored so in each deploy step's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Driver {
    /// `helm upgrade --install` of the `[..helm]` release.
    Helm,
    /// A GitHub Actions workflow dispatched and followed (`[..pipeline]`).
    Pipeline,
    /// Docker Swarm: `docker stack deploy` or `docker service update` (`[..swarm]`).
    Swarm,
}

impl Driver {
    pub const ALL: [Driver; 3] = [Driver::Helm, Driver::Pipeline, Driver::Swarm];

    /// The name written in the config (and the name of the driver's section).
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Helm => "helm",
            Driver::Pipeline => "pipeline",
            Driver::Swarm => "swarm",
        }
    }
}

impl TryFrom<String> for Driver {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Driver::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| format!("unknown driver '{s}'; use helm, pipeline or swarm"))
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_discord_api() -> String {
    "https://discord.com/api/v10".into()
}

/// How to reach one Kubernetes cluster: exactly one of `url`, `kubeconfig`, `in_cluster`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// API server URL without credentials (e.g. the sandbox's `http://127.0.0.1:PORT`).
    #[serde(default)]
    pub url: Option<String>,
    /// A kubeconfig file; with `context` to pick one (default: its current context).
    #[serde(default)]
    pub kubeconfig: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    /// Use the pod's service account (runbot running inside the cluster).
    #[serde(default)]
    pub in_cluster: bool,
    /// Timeout of one API request, e.g. `10s` (default).
    #[serde(default = "default_api_timeout")]
    pub timeout: String,
}

fn default_api_timeout() -> String {
    "10s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address. Default `127.0.0.1:8080`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Open connections at most. At the cap a new connection takes the place of the oldest one
    /// that has not yet sent a whole request (a slow or half-open client); when every
    /// connection has, the new one is closed at once. Default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A request's line and headers must arrive within this many seconds of the connection
    /// opening (or of the previous response, on a kept-alive connection, which is its idle
    /// timeout); otherwise the connection is closed. Default 10.
    #[serde(default = "default_header_timeout")]
    pub header_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen(), max_connections: default_max_connections(), header_timeout_secs: default_header_timeout() }
    }
}

fn default_max_connections() -> usize {
    1024
}

fn default_header_timeout() -> u64 {
    10
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (default `sqlite://runbot.db`) or `postgres://...`.
    #[serde(default = "default_store_url")]
    pub url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: default_store_url() }
    }
}

fn default_store_url() -> String {
    "sqlite://runbot.db".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Name of this process for leases. Default: `runbot-<hostname>`; keep it stable across
    /// restarts so a restarted process reclaims its own work at once.
    #[serde(default)]
    pub instance: Option<String>,
    /// A team runbooks file, relative to the config file, added to the built-in runbooks (a
    /// runbook of the same name replaces the built-in one).
    #[serde(default)]
    pub runbooks: Option<String>,
    /// Minimum time between two edits of one status message, in milliseconds. Default 1000.
    #[serde(default = "default_update_interval")]
    pub update_interval_ms: u64,
    /// Lease duration in seconds; renewed at a third of it. Default 30.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// A received command that runbot recorded but had not acted on when it stopped is acted
    /// on at the next start (or by another replica) if it is at most this old, in seconds;
    /// older, it is answered "nothing was done" instead. Default 300; 0 never acts late.
    #[serde(default = "default_inbox_max_age")]
    pub inbox_max_age_secs: u64,
    /// How often each process sweeps for executions whose owner is gone, in seconds — on
    /// PostgreSQL, the bound on taking over after a replica dies. Default 2.
    #[serde(default = "default_failover")]
    pub failover_secs: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            instance: None,
            runbooks: None,
            update_interval_ms: default_update_interval(),
            lease_secs: default_lease(),
            inbox_max_age_secs: default_inbox_max_age(),
            failover_secs: default_failover(),
        }
    }
}

fn default_inbox_max_age() -> u64 {
    300
}

fn default_update_interval() -> u64 {
    1000
}
fn default_lease() -> u64 {
    30
}
fn default_failover() -> u64 {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Commands one identity may send per minute (burst the same). Default 20.
    #[serde(default = "default_per_identity")]
    pub per_identity_per_minute: u32,
    /// Commands per channel per minute. Default 60.
    #[serde(default = "default_per_channel")]
    pub per_channel_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig { per_identity_per_minute: default_per_identity(), per_channel_per_minute: default_per_channel() }
    }
}

fn default_per_identity() -> u32 {
    20
}
fn default_per_channel() -> u32 {
    60
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Runbook name, or `*` (default).
    #[serde(default = "star")]
    pub runbook: String,
    /// Environment name, or `*` (default).
    #[serde(default = "star")]
    pub env: String,
    /// Groups whose members may approve.
    pub approvers: Vec<String>,
    /// Approvals needed. Default 1.
    #[serde(default = "one")]
    pub required: u32,
    /// May the requester approve their own request? Default false.
    #[serde(default)]
    pub self_approval: bool,
    /// How long a request waits for approval, e.g. `30m` (default), `90s`, `2h`.
    #[serde(default = "default_expiry")]
    pub expiry: String,
    /// Groups whose members may request it. Default: members of any group.
    #[serde(default)]
    pub requesters: Vec<String>,
}

fn star() -> String {
    "*".into()
}
fn one() -> u32 {
    1
}
fn default_expiry() -> String {
    "30m".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentConfig {
    /// Fixed incident channel per platform, e.g. `{ console = "inc-prod", slack = "C0INCPROD" }`;
    /// `slack = "create"` creates one Slack channel per execution (`inc-<yyyymmdd>-<runbook>-<n>`).
    /// Default: the channel the command came from.
    #[serde(default)]
    pub incident_channel: BTreeMap<String, String>,
    /// Platforms the status message of every execution here is mirrored to, e.g.
    /// `["discord"]`: posted in that platform's `incident_channel` (required) besides the
    /// origin's, both updated live, approvals from either counted once per person. A request
    /// from a listed platform is not mirrored to itself. Default: none.
    #[serde(default)]
    pub mirror: Vec<String>,
    /// The IANA time zone of the environment's channels, e.g. `Europe/Madrid`: a timeline
    /// shows each time in UTC and in this zone. Default: UTC only.
    #[serde(default)]
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Other names the service answers to, e.g. `promotions-api`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Environment used when `--env` is not given. Default: the only one, or `prod`.
    #[serde(default)]
    pub default_env: Option<String>,
    /// Versions must match this regular expression. Default `^v\d+\.\d+\.\d+$`.
    #[serde(default)]
    pub version_pattern: Option<String>,
    /// Per-environment settings.
    #[serde(default)]
    pub environments: BTreeMap<String, TargetEnvConfig>,
    /// The CI run that must be green before a deploy. Default: none (then `ci-gate` refuses).
    #[serde(default)]
    pub ci: Option<CiConfig>,
}

/// `[services.NAME.ci]`: the GitHub Actions workflow whose latest run on `branch` must have
/// succeeded (and, for a tag version, ran on the tag's commit).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CiConfig {
    /// `owner/name`.
    pub repo: String,
    /// The workflow's file name (`ci.yml`) or numeric id.
    pub workflow: String,
    /// Default `main`.
    #[serde(default = "default_branch")]
    pub branch: String,
}

fn default_branch() -> String {
    "main".into()
}

/// `[services.NAME.environments.ENV.helm]`: driver `helm`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HelmConfig {
    /// The release, e.g. `promotions-release`.
    pub release: String,
    /// Chart reference: a path (relative to runbot's working directory), `repo/chart` or
    /// `oci://…`.
    pub chart: String,
    /// The values key that holds the image tag. Default `image.tag`.
    #[serde(default = "default_tag_key")]
    pub tag_key: String,
    /// Extra arguments for every helm call (e.g. `["--kube-context", "prod"]`); never
    /// secrets — they show in the plan.
    #[serde(default)]
    pub args: Vec<String>,
    /// `--timeout` of `helm upgrade --wait` / `helm rollback --wait`. Default `5m`.
    #[serde(default = "default_rollout_timeout")]
    pub timeout: String,
}

fn default_tag_key() -> String {
    "image.tag".into()
}
fn default_rollout_timeout() -> String {
    "5m".into()
}

/// `[services.NAME.environments.ENV.pipeline]`: driver `pipeline` — a GitHub Actions
/// workflow that deploys (the seed's "the pipeline runs helm upgrade").
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// `owner/name`. Default: the service's `ci.repo`.
    #[serde(default)]
    pub repo: Option<String>,
    /// The deploy workflow's file name or id.
    pub workflow: String,
    /// The branch (or tag) it runs on. Default `main`.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Its inputs; values are templates. Default `{ version = "{version}", environment = "{env}" }`.
    #[serde(default = "default_pipeline_inputs")]
    pub inputs: BTreeMap<String, String>,
    /// How long the run may take. Default `30m`.
    #[serde(default = "default_pipeline_timeout")]
    pub timeout: String,
    /// How often the run's state is read. Default `5s`.
    #[serde(default = "default_poll")]
    pub poll: String,
}

fn default_poll() -> String {
    "5s".into()
}

fn default_pipeline_inputs() -> BTreeMap<String, String> {
    [("version".to_string(), "{version}".to_string()), ("environment".to_string(), "{env}".to_string())].into()
}
fn default_pipeline_timeout() -> String {
    "30m".into()
}

/// `[services.NAME.environments.ENV.swarm]`: driver `swarm` (Docker Swarm through the
/// `docker` CLI, which reaches its manager as configured in runbot's environment).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmConfig {
    /// The stack, e.g. `stack`.
    pub stack: String,
    /// The Swarm service, e.g. `stack_app`.
    pub service: String,
    /// The image repository without tag, e.g. `myrpo/app`.
    pub image: String,
    /// The compose file for `docker stack deploy` (its image written as
    /// `myrpo/app:${VERSION}`). Default: none — a deploy runs `docker service update --image`.
    #[serde(default)]
    pub compose: Option<String>,
    /// The environment variable that carries the version into the compose file. Default `VERSION`.
    #[serde(default = "default_version_env")]
    pub version_env: String,
    /// The Docker daemon of a Swarm manager, passed as `docker -H HOST` (e.g.
    /// `ssh://deploy@manager`). Default: docker's own (`DOCKER_HOST`, the current context).
    #[serde(default)]
    pub host: Option<String>,
    /// How long convergence may take. Default `5m`.
    #[serde(default = "default_rollout_timeout")]
    pub timeout: String,
}

fn default_version_env() -> String {
    "VERSION".into()
}

/// `[services.NAME.environments.ENV.smoke]`: the smoke test after a deploy or rollback.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeConfig {
    /// e.g. `https://api.prod.com/health`.
    pub url: String,
    /// Expected HTTP status. Default 200.
    #[serde(default = "default_smoke_status")]
    pub status: u16,
    /// Text the body must contain. Default: none.
    #[serde(default)]
    pub body: Option<String>,
    /// Attempts before it fails. Default 5.
    #[serde(default = "default_smoke_attempts")]
    pub attempts: u32,
    /// Wait after the first failed attempt, doubled after each one. Default `2s`.
    #[serde(default = "default_smoke_backoff")]
    pub backoff: String,
    /// Timeout of one request. Default `5s`.
    #[serde(default = "default_smoke_timeout")]
    pub timeout: String,
}

fn default_smoke_status() -> u16 {
    200
}
fn default_smoke_attempts() -> u32 {
    5
}
fn default_smoke_backoff() -> String {
    "2s".into()
}
fn default_smoke_timeout() -> String {
    "5s".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Environment of the database. Default `prod`.
    #[serde(default)]
    pub env: Option<String>,
    /// Template variables for runbooks acting on this database.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Where its backups are archived (barman-cloud layout on S3 or an S3-compatible store).
    #[serde(default)]
    pub backup: Option<BackupConfig>,
    /// The `[clusters.NAME]` its writers run on. Default: the only cluster configured.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Deployments that write to it, as `namespace/deployment`: the restore runbook records
    /// their replica counts, scales them to 0 and back.
    #[serde(default)]
    pub writers: Vec<String>,
    /// The backup CronJob (`namespace/name`) that `/ops backup now` runs as a Job.
    #[serde(default)]
    pub backup_cronjob: Option<String>,
    /// What a restored copy must pass before writers are started again (`db-integrity`).
    #[serde(default)]
    pub integrity: Option<IntegrityConfig>,
    /// The restore command of the `restore` runbook (`db-restore`). Default: the shipped
    /// `deploy/scripts/db-restore.sh --date {date} --source {source}`.
    #[serde(default)]
    pub restore: Option<RestoreConfig>,
    /// The smoke test after a restore, once the writers are back. Default: none (the step
    /// says it is skipped).
    #[serde(default)]
    pub smoke: Option<SmokeConfig>,
}

/// `[databases.NAME.restore]`: the restore command — a local program, argv only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// Program and arguments, each a template (`{date}`, `{source}`, `{server_name}`).
    /// Default `["deploy/scripts/db-restore.sh", "--date", "{date}", "--source", "{source}"]`.
    #[serde(default = "default_restore_argv")]
    pub argv: Vec<String>,
    /// Extra environment, templates; values may use `{secret.NAME}` (e.g. the S3 keys, and
    /// `PGDATA`, `DB_RESTORE_SERVER_NAME` for the shipped script).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// How long the restore may take. Default `1h`.
    #[serde(default = "default_restore_timeout")]
    pub timeout: String,
    /// Working directory. Default: runbot's own.
    #[serde(default)]
    pub cwd: Option<String>,
    /// How the service is moved to the restored data: `in-place` (the server's own data
    /// directory is restored, the old one kept aside), `switch` (a restored instance beside
    /// the old one, then the Secret the writers read is pointed at it) or `none` (the restore
    /// command alone decides; the writers come back to what they used before). The built-in
    /// `restore` runbook refuses a database that does not say. Default: not set.
    #[serde(default)]
    pub cutover: Option<Cutover>,
    /// The data directory, passed to the restore command as `--pgdata` (a template, e.g.
    /// `/var/lib/postgresql/restore-{execution}`): in place, the server's own (kept aside as
    /// `PGDATA.before-EXECUTION`); for a switch, the restored instance's. Default: none (the
    /// argv says).
    #[serde(default)]
    pub pgdata: Option<String>,
    /// The restored server's port, passed as `--port` (in place: the server's own). Default:
    /// none (the argv says).
    #[serde(default)]
    pub port: Option<u16>,
    /// `cutover = "switch"`: the Secret the writers read the database's URL from.
    #[serde(default)]
    pub switch: Option<SwitchConfig>,
    /// Before the approval, restore the date into a scratch directory, count the integrity
    /// tables there, show the counts in the plan beside today's, remove the copy; the restore
    /// must then give exactly those counts. Default `false`.
    #[serde(default)]
    pub rehearse: bool,
    /// Where the rehearsal's scratch copy is made (`DIR/rehearsal-DATABASE-EXECUTION`).
    /// Default `/var/tmp`.
    #[serde(default = "default_rehearse_dir")]
    pub rehearse_dir: String,
    /// The database (inside the server) holding the integrity tables, counted by the
    /// rehearsal. Default `postgres`.
    #[serde(default = "default_rehearse_dbname")]
    pub rehearse_dbname: String,
    /// Name of a `[secrets]` entry with the URL of the database as the writers use it now:
    /// the preflight connects to it and the plan shows today's counts from it. Default: the
    /// integrity `url_secret` when `cutover = "in-place"` (the same server), else none.
    #[serde(default)]
    pub current_url_secret: Option<String>,
    /// The preflight command, run before anyone is asked. Default: the restore command with
    /// `--check` added (the shipped script then checks its tools, the archive and the target
    /// and changes nothing).
    #[serde(default)]
    pub check_argv: Option<Vec<String>>,
}

/// How a restore moves the service to the restored data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cutover {
    InPlace,
    Switch,
    None,
}

/// `[databases.NAME.restore.switch]`: the Secret key the writers read the database URL from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchConfig {
    /// `namespace/name` of the Secret, on the database's cluster.
    pub secret: String,
    /// The key holding the URL. Default `url`.
    #[serde(default = "default_switch_key")]
    pub key: String,
    /// Name of a `[secrets]` entry holding the restored instance's URL as the writers reach
    /// it; written into the key, the old value kept under `KEY-before-EXECUTION`.
    pub url_secret: String,
}

fn default_switch_key() -> String {
    "url".into()
}
fn default_rehearse_dir() -> String {
    "/var/tmp".into()
}
fn default_rehearse_dbname() -> String {
    "postgres".into()
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig {
            argv: default_restore_argv(),
            env: BTreeMap::new(),
            timeout: default_restore_timeout(),
            cwd: None,
            cutover: None,
            pgdata: None,
            port: None,
            switch: None,
            rehearse: false,
            rehearse_dir: default_rehearse_dir(),
            rehearse_dbname: default_rehearse_dbname(),
            current_url_secret: None,
            check_argv: None,
        }
    }
}

fn default_restore_argv() -> Vec<String> {
    ["deploy/scripts/db-restore.sh", "--date", "{date}", "--source", "{source}"].map(String::from).to_vec()
}
fn default_restore_timeout() -> String {
    "1h".into()
}

/// Integrity checks of a database: critical tables with minimum row counts, and SQL checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityConfig {
    /// Name of a `[secrets]` entry holding the database URL (`postgres://…`).
    pub url_secret: String,
    /// Table (or `schema.table`) → minimum number of rows.
    #[serde(default)]
    pub tables: BTreeMap<String, i64>,
    /// Queries returning one boolean; true means the check passed.
    #[serde(default)]
    pub checks: Vec<SqlCheckConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheckConfig {
    pub name: String,
    pub sql: String,
}

/// A database's backup archive and the freshness the backup monitor expects of it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `s3://bucket/prefix` (GCS through its S3-compatible endpoint).
    pub source: String,
    /// barman-cloud's server name (the folder under the prefix). Default: the database's name.
    #[serde(default)]
    pub server_name: Option<String>,
    /// S3-compatible endpoint, e.g. `https://storage.googleapis.com` or a local server.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Path-style addressing (most S3-compatible servers). Default: true when `endpoint` is set.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// Names of `[secrets]` entries holding the access key id and the secret access key.
    pub access_key_secret: String,
    pub secret_key_secret: String,
    /// The newest full backup may be this old before it is reported stale. Default `26h`.
    #[serde(default = "default_full_max_age")]
    pub full_max_age: String,
    /// The newest archived WAL may be this old before it is reported stale. Default `20m`.
    #[serde(default = "default_wal_max_age")]
    pub wal_max_age: String,
    /// How long backups are kept. Default `30d`.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// How often the backup monitor looks. Default `5m`.
    #[serde(default = "default_check_every")]
    pub check_every: String,
    /// Where the monitor posts, by platform (`{ slack = "C0DBA" }`). Default: the database
    /// environment's incident channel.
    #[serde(default)]
    pub alert_channels: BTreeMap<String, String>,
}

fn default_check_every() -> String {
    "5m".into()
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_full_max_age() -> String {
    "26h".into()
}
fn default_wal_max_age() -> String {
    "20m".into()
}
fn default_retention() -> String {
    "30d".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEnvConfig {
    /// The `[clusters.NAME]` this environment runs on. Default: the only cluster configured.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Kubernetes namespace, e.g. `promotions-ns`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Label selector of the service's pods, e.g. `app=promotions-api`.
    #[serde(default)]
    pub selector: Option<String>,
    /// The Deployment, e.g. `promotions-api`.
    #[serde(default)]
    pub deployment: Option<String>,
    /// Template variables for runbooks acting on the service in this environment.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// How `deploy` and `rollback` act: `helm`, `pipeline` or `swarm` (with the section of
    /// that name). Default: none (then those runbooks refuse).
    #[serde(default)]
    pub driver: Option<Driver>,
    /// The image repository without tag (`registry.local/promotions-api`): the preflight
    /// checks the version's tag exists, and pods must run `image:version`. Default: none.
    #[serde(default)]
    pub image: Option<String>,
    /// Kubernetes Secrets in `namespace` the service needs; the preflight checks they exist.
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub helm: Option<HelmConfig>,
    #[serde(default)]
    pub pipeline: Option<PipelineConfig>,
    #[serde(default)]
    pub swarm: Option<SwarmConfig>,
    #[serde(default)]
    pub smoke: Option<SmokeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The console's public address (e.g. `https://runbot.example.com`): timelines link
    /// each step's output there. Default: none — links are paths on the console's host.
    #[serde(default)]
    pub url: Option<String>,
    /// Serve the web console at `/console`. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How `runbot serve` knows who a console request is from: `loopback` (default) or `proxy`.
    #[serde(default)]
    pub auth: ConsoleAuthMode,
    /// `auth = "loopback"`: the one identity console requests act as. Default: none (the
    /// console shows messages but takes no commands).
    #[serde(default)]
    pub local_identity: Option<String>,
    /// `auth = "proxy"`: the authenticating proxy's addresses (IPs or CIDRs); only requests
    /// whose connection comes from one of them are answered.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `auth = "proxy"`: the request header carrying the authenticated user name. Default
    /// `X-Forwarded-User`.
    #[serde(default = "default_user_header")]
    pub user_header: String,
    /// Identities offered in the "acting as" picker of `runbot demo` (serve has no picker).
    #[serde(default)]
    pub identities: Vec<String>,
    /// Channels listed in the console. Default `["ops"]`.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// File (relative to the config file) where console messages are kept across restarts.
    /// Default: none — messages live in memory only.
    #[serde(default)]
    pub history: Option<String>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            url: None,
            enabled: true,
            auth: ConsoleAuthMode::default(),
            local_identity: None,
            trusted_proxies: Vec::new(),
            user_header: default_user_header(),
            identities: Vec::new(),
            channels: default_channels(),
            history: None,
        }
    }
}

/// Where the console's identity comes from under `runbot serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleAuthMode {
    /// Only connections from a loopback address are answered (checked on the socket), acting
    /// as `local_identity`; runbot refuses to start on a non-loopback `[server] listen`.
    #[default]
    Loopback,
    /// An authenticating proxy at `trusted_proxies` names the user in `user_header`.
    Proxy,
}

fn default_user_header() -> String {
    "X-Forwarded-User".into()
}

fn yes() -> bool {
    true
}
fn default_channels() -> Vec<String> {
    vec!["ops".into()]
}
