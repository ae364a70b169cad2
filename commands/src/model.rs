//! The execution record: what the store keeps and the engine advances, one JSON document per
//! execution so both store backends hold exactly the same shape.

pub use crate::grammar::ExecutionId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The chat platforms runbot knows (identities, incident channels, mirrors).
pub const PLATFORMS: &[&str] = &["slack", "discord", "console"];

/// A chat identity as `platform:id`, e.g. `slack:U024BE7LH` or `console:alice`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Identity(pub String);

impl Identity {
    pub fn new(s: impl Into<String>) -> Self {
        Identity(s.into())
    }
    /// The platform part (`slack`, `discord`, `console`).
    pub fn platform(&self) -> &str {
        self.0.split_once(':').map(|(p, _)| p).unwrap_or("")
    }
    /// Whether the string has the `platform:id` shape with a known platform.
    pub fn is_well_formed(s: &str) -> bool {
        match s.split_once(':') {
            Some((p, id)) => {
                PLATFORMS.contains(&p)
                    && !id.is_empty()
                    && id.len() <= 64
                    && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            }
            None => false,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a command came from: platform, channel and (optionally) thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub platform: String,
    pub channel: String,
    pub thread: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    AwaitingApproval,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Rejected,
    Expired,
}

impl ExecState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, ExecState::AwaitingApproval | ExecState::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ExecState::AwaitingApproval => "awaiting_approval",
            ExecState::Running => "running",
            ExecState::Succeeded => "succeeded",
            ExecState::Failed => "failed",
            ExecState::Cancelled => "cancelled",
            ExecState::Rejected => "rejected",
            ExecState::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Intent stored; the side effect may be under way.
    Running,
    /// An approval step waiting for clicks.
    Waiting,
    Succeeded,
    Failed,
    /// Found mid-flight after a restart and not safe to repeat: waits for [Resume] / [Abort].
    Interrupted,
    Cancelled,
    Skipped,
}

impl StepStatus {
    /// The one icon of a status, shown by every renderer (Slack, Discord, the console page,
    /// which gets it from the console API).
    pub fn icon(self) -> &'static str {
        match self {
            StepStatus::Pending => "▫️",
            StepStatus::Running => "▶️",
            StepStatus::Waiting => "⏳",
            StepStatus::Succeeded => "✅",
            StepStatus::Failed => "❌",
            StepStatus::Interrupted => "⚠️",
            StepStatus::Cancelled => "⊘",
            StepStatus::Skipped => "↷",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Interrupted => "interrupted",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Skipped => "skipped",
        }
    }
}

/// One step of an execution: the action prepared at plan time and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub name: String,
    pub kind: String,
    /// Safe to run again after a crash (checks, waits).
    pub idempotent: bool,
    /// The exact action, as shown in the plan.
    pub action: String,
    /// The prepared parameters the step kind runs with (stored so a restart runs the same thing).
    pub params: serde_json::Value,
    pub status: StepStatus,
    pub attempts: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// One line for the status message.
    pub summary: Option<String>,
    /// The process the step's latest attempt started (the leader of its process group), saved
    /// before the program runs: before the step runs again, runbot makes sure it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<StepProcess>,
}

/// A step's process: the pid and start time (clock ticks since boot, `/proc/PID/stat` field 22,
/// so a reused pid is not mistaken for it) on the host that started it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepProcess {
    pub host: String,
    pub pid: u32,
    pub start_ticks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Reject,
}

/// A recorded click on Approve or Reject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The person (the `people` entry, or the identity itself) — one vote per person.
    pub person: String,
    pub identity: Identity,
    pub decision: Decision,
    pub at: DateTime<Utc>,
    /// Fingerprint of the plan the approver was shown.
    pub fingerprint: String,
}

/// The approval rule that applies to this execution, copied from config when it was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySnapshot {
    pub groups: Vec<String>,
    pub required: u32,
    pub self_approval: bool,
    pub expiry_secs: u64,
}

/// Where a status message (or its mirror) lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    pub platform: String,
    pub channel: String,
    pub id: String,
    /// The final state has been delivered to this message.
    #[serde(default)]
    pub final_sent: bool,
}

/// What a runbook acts on; `lock_key` is the unit of mutual exclusion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `service` or `database`.
    pub kind: String,
    pub name: String,
    pub env: String,
}

impl Target {
    pub fn lock_key(&self) -> String {
        format!("{}:{}@{}", self.kind, self.name, self.env)
    }
}

/// An artifact kept with an execution: its name and size (the content is in the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub name: String,
    pub bytes: usize,
}

/// What a rollback goes from and back to, as its `rollback-target` step resolved it before the
/// approval: the later steps (`rollback-apply`, `deploy-verify`, `rollback-evidence`) act on
/// this, while the approvers see it as the execution's resolved lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackTarget {
    pub from: Deployed,
    pub to: Deployed,
}

/// One deployed state of a service: its version and, for a Helm release, the revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployed {
    pub revision: Option<u32>,
    pub version: String,
}

/// A follow-up button a failed or cancelled execution offers: it starts runbook `runbook` on
/// the same target, under that runbook's own approval policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub label: String,
    pub runbook: String,
    /// Offered once this step (index) has started: what it may have changed needs undoing.
    pub after_step: usize,
    /// … unless this step (index) succeeded (it undid it already).
    pub unless_step: Option<usize>,
    /// Resolved targets with this prefix are handed to the new execution (e.g. `writer `).
    pub carry: Option<String>,
    /// Set once the button has done its work or can no longer apply: the follow-up execution
    /// it created (`used by R-4 (console:bob)`) or why it went stale. A spent follow-up is
    /// refused and no longer rendered; the button is single-use.
    #[serde(default)]
    pub spent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub runbook: String,
    /// The command as typed, for the record.
    pub command: String,
    /// Typed arguments rendered as template variables.
    pub vars: BTreeMap<String, String>,
    pub target: Target,
    pub mutating: bool,
    pub requester: Identity,
    pub requester_person: String,
    pub origin: Origin,
    /// The channel where the status message lives.
    pub incident_channel: String,
    pub state: ExecState,
    pub steps: Vec<StepRecord>,
    /// Index of the step being worked on.
    pub current: usize,
    pub policy: Option<PolicySnapshot>,
    pub approvals: Vec<Approval>,
    /// Hash of the plan (runbook, target, vars, steps' actions, policy, resolved targets).
    /// Approvals are bound to it.
    pub fingerprint: String,
    /// What the steps before the approval resolved the target to (e.g. the pods to restart);
    /// part of the plan the approvers see.
    #[serde(default)]
    pub resolved: Vec<String>,
    /// A rollback's target in structured form, resolved with (and shown as) `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackTarget>,
    pub expires_at: Option<DateTime<Utc>>,
    pub messages: Vec<MessageRef>,
    /// Notable events shown under the steps (voided approvals, resumed after restart, ...).
    pub notes: Vec<String>,
    /// Artifacts kept in the store (e.g. a failed version's pod logs).
    #[serde(default)]
    pub artifacts: Vec<ArtifactRef>,
    /// What the failure of this execution offers (e.g. [Rollback] after a deploy failed past
    /// its rollout), fixed at plan time.
    #[serde(default)]
    pub follow_up: Option<FollowUp>,
    /// The chat inbox entry (the received command) this execution was created from: creating
    /// the execution marks that entry processed in the same transaction, so a command is
    /// acted on once however often it is recovered (see `ports::store::Inbound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox: Option<String>,
    pub cancel_requested: Option<Identity>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Execution {
    /// Approvals that count toward the quorum (approve decisions on the current plan).
    pub fn approvals_for_plan(&self) -> impl Iterator<Item = &Approval> {
        self.approvals.iter().filter(|a| a.decision == Decision::Approve && a.fingerprint == self.fingerprint)
    }

    pub fn title(&self) -> String {
        format!("{} · {} {} ({})", self.id, self.runbook, self.target.name, self.target.env)
    }
}
