//! `handle_command`: quota, parse, record, authorize, then either answer (status, history,
//! whoami, help, cancel) or plan a runbook — dry run, or a new execution with its lock, its
//! status message and its runner.

use super::plan::{self, resolve};
use super::{Engine, Reply, Request, UpdateError};
use crate::grammar::{self, BackupAction, Command, ExecutionId, help, spec};
use crate::message::Message;
use crate::metrics::CommandOutcome;
use crate::model::{Decision, ExecState, Execution, MessageRef};
use crate::ports::{ListFilter, StoreError};
use serde_json::json;
use std::ops::ControlFlow;

impl Engine {
    /// Handles one typed command. The command is in the audit log before this returns.
    pub async fn handle_command(&self, req: Request) -> Reply {
        self.handle(req, None).await
    }

    /// [`Engine::handle_command`] for a command kept in the chat inbox under `key`
    /// (`Store::record_inbound`), whose inbox record carries [`Engine::command_detail`] (e.g.
    /// `slack.command`) and is its audit record, so none is appended again. An execution it
    /// creates consumes that entry in the same transaction. `None`: the entry was consumed already — the command was acted on (by
    /// another process, or before a restart) and its answer given there; nothing was done now.
    pub async fn handle_inbound_command(&self, req: Request, key: &str) -> Option<Reply> {
        let reply = self.handle(req, Some(key)).await;
        (reply != already_processed()).then_some(reply)
    }

    /// The answer to a command that needs nothing but the command and the configuration —
    /// help, whoami, a typo — worked out without touching the store, a cluster or a chat, and
    /// counted against this process's quotas as [`Engine::handle_inbound_command`] would.
    /// `None`: anything else, a quota that is shared through the store or already spent (the
    /// command then takes the usual way, which also records the refusal). The chat pipeline
    /// records such a command as processed when it records it, so its acknowledgement carries
    /// the answer with one write.
    pub fn answer_at_once(&self, req: &Request) -> Option<Reply> {
        if self.store().shared() {
            return None;
        }
        let parsed = grammar::parse(&req.text);
        if matches!(parsed, Ok(ref c) if !from_command_alone(c)) {
            return None;
        }
        self.inner.limits.check(&req.identity.0, &req.origin.channel).ok()?;
        self.settle(req, parsed).break_value()
    }

    /// A parsed command's answer when it needs nothing but the command (a typo, help, whoami:
    /// `Break`, counted in the metrics), else the command to act on. Shared by
    /// [`Engine::answer_at_once`] and the usual way.
    fn settle(&self, req: &Request, parsed: Result<Command, grammar::ParseError>) -> ControlFlow<Reply, Command> {
        match parsed {
            Err(e) => {
                self.inner.metrics.command(CommandOutcome::ParseError);
                ControlFlow::Break(Reply::private(e.to_string()))
            }
            Ok(Command::Help { topic }) => {
                self.inner.metrics.command(CommandOutcome::Ok);
                ControlFlow::Break(self.help(topic.as_deref()))
            }
            Ok(Command::Whoami) => {
                self.inner.metrics.command(CommandOutcome::Ok);
                ControlFlow::Break(self.whoami(req))
            }
            Ok(cmd) => ControlFlow::Continue(cmd),
        }
    }

    /// What the audit log keeps about a typed command: its text (the first 1,000 characters,
    /// redacted), where it came from, and whether it parsed.
    pub fn command_detail(&self, req: &Request) -> serde_json::Value {
        // At most 1,000 bytes is at most 1,000 characters: most commands are kept whole.
        let text = if req.text.len() <= 1000 {
            std::borrow::Cow::Borrowed(req.text.as_str())
        } else {
            std::borrow::Cow::Owned(crate::message::split_text(&req.text, 1000).into_iter().next().unwrap_or_default())
        };
        json!({"text": self.settings().redactor.redact(&text), "platform": req.origin.platform, "channel": req.origin.channel, "ok": grammar::parse(&req.text).is_ok()})
    }

    /// `inbox`: the command's inbox key, when it came through the chat inbox (recorded there).
    async fn handle(&self, req: Request, inbox: Option<&str>) -> Reply {
        if let Err((who, wait)) = self.check_quota(&req.identity.0, &req.origin.channel).await {
            let secs = wait.as_secs().max(1);
            self.inner.metrics.command(CommandOutcome::RateLimited);
            self.inner.metrics.rate_limited(if who == "you are" { "identity" } else { "channel" });
            self.audit("limit", Some(&req.identity), None, json!({"channel": req.origin.channel, "retry_after_s": secs})).await;
            return Reply::private(format!("Easy there — {who} sending commands faster than the configured limit. Try again in {secs} s."));
        }
        if inbox.is_none() {
            // Nothing is done for a command that is not on the record.
            let entry = self.audit_entry("command", Some(&req.identity), None, self.command_detail(&req));
            if let Err(e) = self.store().append_audit(&entry).await {
                tracing::error!(error = %e, "could not record a command");
                self.inner.metrics.command(CommandOutcome::Refused);
                return Reply::private(
                    "runbot could not record your command (its state store did not answer), so it did nothing. Try again in a moment.",
                );
            }
        }
        let cmd = match self.settle(&req, grammar::parse(&req.text)) {
            ControlFlow::Continue(cmd) => cmd,
            ControlFlow::Break(answered) => return answered,
        };
        if !matches!(
            cmd,
            Command::Status { .. }
                | Command::History { .. }
                | Command::Cancel { .. }
                | Command::Timeline { .. }
                | Command::Backup { action: BackupAction::Status, .. }
        ) {
            let (reply, outcome) = match self.plan_runbook(&req, cmd, Vec::new(), inbox).await {
                Ok((r, _)) => (r, CommandOutcome::Ok),
                Err(r) => (r, CommandOutcome::Refused),
            };
            self.inner.metrics.command(outcome);
            return reply;
        }
        self.inner.metrics.command(CommandOutcome::Ok);
        match cmd {
            Command::Status { id } => self.status(id).await,
            Command::History { service, limit } => self.history(service, limit).await,
            Command::Cancel { id } => self.cancel(&req, id).await,
            Command::Timeline { id } => self.timeline(id).await,
            Command::Backup { action: BackupAction::Status, database } => self.backup_status(&database).await,
            other => self.request_runbook(&req, other, inbox).await,
        }
    }

    fn help(&self, topic: Option<&str>) -> Reply {
        let Some(topic) = topic else {
            return Reply::private(help::overview());
        };
        let settings = self.settings();
        let mut parts = Vec::new();
        if let Some(c) = spec::find(topic) {
            parts.push(help::command(c));
        }
        if let Some(rb) = settings.runbooks.get(topic) {
            let mut s = format!(
                "Runbook {topic} ({} {}): {}\n",
                rb.target.as_str(),
                if rb.mutating { "· changes things" } else { "· read-only" },
                rb.summary
            );
            for (i, st) in rb.steps.iter().enumerate() {
                s.push_str(&format!("  {}. {} ({})\n", i + 1, st.name, st.kind));
            }
            for (n, p) in &rb.params {
                s.push_str(&format!(
                    "  --set {n}=<value> — {}{}\n",
                    p.help,
                    p.default.as_deref().map(|d| format!(" (default {d})")).unwrap_or_default()
                ));
            }
            parts.push(s.trim_end().to_string());
        }
        if parts.is_empty() {
            let names: Vec<&str> = spec::COMMANDS.iter().map(|c| c.name).chain(settings.runbooks.keys().map(|s| s.as_str())).collect();
            return Reply::private(format!("No help for '{topic}'. Try one of: {}.", names.join(", ")));
        }
        Reply::private(parts.join("\n\n"))
    }

    /// Who the person is, and per runbook the environments where they may request and approve
    /// it — computed with the rules that decide ([`Settings::may_request`],
    /// [`Settings::may_approve`] over the policy each (runbook, environment) resolves to).
    fn whoami(&self, req: &Request) -> Reply {
        let settings = self.settings();
        let groups = settings.groups_of(&req.identity, &req.roles);
        let person = settings.person(&req.identity);
        let mut envs: Vec<String> = settings.config.environments.keys().cloned().collect();
        if envs.is_empty() {
            envs = settings.config.services.values().flat_map(|s| s.environments.keys().cloned()).collect();
            envs.sort();
            envs.dedup();
        }
        let (mut request, mut approve) = (Vec::new(), Vec::new());
        for (name, rb) in &settings.runbooks {
            let (mut req_in, mut appr_in) = (Vec::new(), Vec::new());
            let gated = rb.steps.iter().any(|s| s.kind == crate::steps::APPROVAL);
            for env in &envs {
                let policy = settings.policy(name, env);
                let requesters = policy.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
                // A runbook with an approval step and no policy in this env cannot be planned.
                if (!gated || policy.is_some()) && settings.may_request(&req.identity, &req.roles, &requesters) {
                    req_in.push(env.as_str());
                }
                if gated && policy.as_ref().is_some_and(|(p, _)| settings.may_approve(&req.identity, &req.roles, p)) {
                    appr_in.push(env.as_str());
                }
            }
            let line = |v: &[&str]| {
                if v.len() == envs.len() && envs.len() > 1 { format!("{name} (all environments)") } else { format!("{name} ({})", v.join(", ")) }
            };
            if !req_in.is_empty() {
                request.push(line(&req_in));
            }
            if !appr_in.is_empty() {
                approve.push(line(&appr_in));
            }
        }
        let or_nothing = |v: Vec<String>| if v.is_empty() { "nothing".to_string() } else { v.join("; ") };
        let mut m = Message::text(format!("You are {} (person: {person}).", req.identity));
        m.fields = vec![
            ("Groups".into(), if groups.is_empty() { "none".into() } else { groups.join(", ") }),
            ("May request".into(), or_nothing(request)),
            ("May approve".into(), or_nothing(approve)),
        ];
        Reply { message: m, ephemeral: true }
    }

    async fn status(&self, id: Option<ExecutionId>) -> Reply {
        match id {
            Some(id) => match self.store().load(id).await {
                Ok(Some(v)) => Reply { message: super::render(&v.value, self.now()), ephemeral: true },
                Ok(None) => Reply::private(format!("There is no execution {id}.")),
                Err(e) => UpdateError::Store(e).reply(),
            },
            None => {
                let filter = ListFilter { active_only: true, target: None, limit: 50 };
                match self.store().list(&filter).await {
                    Ok(list) if list.is_empty() => Reply::private("Nothing is running or waiting for approval."),
                    Ok(list) => Reply::private(format!("Active executions:\n{}", lines(&list, self.now()))),
                    Err(e) => UpdateError::Store(e).reply(),
                }
            }
        }
    }

    async fn history(&self, service: Option<String>, limit: u32) -> Reply {
        let settings = self.settings();
        let target = match service {
            Some(s) => match settings.service(&s) {
                Some((name, _)) => Some(name.to_string()),
                None if settings.config.databases.contains_key(&s) => Some(s),
                None => return Reply::private(format!("'{s}' is not a configured service or database.")),
            },
            None => None,
        };
        let filter = ListFilter { active_only: false, target: target.clone(), limit };
        match self.store().list(&filter).await {
            Ok(list) if list.is_empty() => Reply::private("No executions yet."),
            Ok(list) => Reply::private(format!(
                "Last {} execution{}{}:\n{}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                target.map(|t| format!(" for {t}")).unwrap_or_default(),
                lines(&list, self.now())
            )),
            Err(e) => UpdateError::Store(e).reply(),
        }
    }

    async fn cancel(&self, req: &Request, id: ExecutionId) -> Reply {
        let settings = self.settings();
        let who = req.identity.clone();
        let res = self
            .update(id, |exec| {
                if exec.state.is_terminal() {
                    return Err(format!("{id} already finished ({}).", exec.state.as_str()));
                }
                let allowed = settings.person(&who) == exec.requester_person
                    || exec.policy.as_ref().is_some_and(|p| settings.in_any_group(&who, &req.roles, &p.groups));
                if !allowed {
                    return Err(format!("Only the requester or an approver of {id} may cancel it."));
                }
                if exec.state == ExecState::AwaitingApproval {
                    exec.state = ExecState::Cancelled;
                    exec.finished_at = Some(exec.updated_at);
                    exec.notes.push(format!("Cancelled by {who} before approval; nothing was changed after the approval step."));
                    Ok(true)
                } else {
                    exec.cancel_requested = Some(who.clone());
                    Ok(false)
                }
            })
            .await;
        match res {
            Ok((exec, immediate)) => {
                self.audit("cancel", Some(&req.identity), Some(id), json!({"immediate": immediate})).await;
                if immediate {
                    self.count_finished(&exec);
                    self.publish(&exec);
                } else {
                    self.signal_cancel(id);
                    self.kick_and_wake(id);
                }
                Reply::private(format!("Cancelling {id}."))
            }
            Err(e) => e.reply(),
        }
    }

    async fn request_runbook(&self, req: &Request, cmd: Command, inbox: Option<&str>) -> Reply {
        match self.plan_runbook(req, cmd, Vec::new(), inbox).await {
            Ok((r, _)) | Err(r) => r,
        }
    }

    /// Plans a runbook command and, unless it is a dry run, creates its execution, whose
    /// resolved targets start as `seed` (what an earlier execution recorded, e.g. writer
    /// counts, shown to and approved by the approvers). `Ok` carries the new execution's id
    /// (none for a dry run); `Err` is a refusal (nothing was created). `inbox`: the received
    /// command's inbox key, consumed by the creation (see [`Engine::handle_inbound_command`]).
    pub(super) async fn plan_runbook(
        &self,
        req: &Request,
        cmd: Command,
        seed: Vec<String>,
        inbox: Option<&str>,
    ) -> Result<(Reply, Option<ExecutionId>), Reply> {
        let settings = self.settings();
        let dry_run = matches!(
            cmd,
            Command::Deploy { dry_run: true, .. }
                | Command::Rollback { dry_run: true, .. }
                | Command::Restore { dry_run: true, .. }
                | Command::Restart { dry_run: true, .. }
                | Command::Run { dry_run: true, .. }
        );
        if dry_run {
            return self.dry_run(req, &cmd).await.map(|r| (r, None));
        }
        let id = match self.store().next_id().await {
            Ok(id) => id,
            Err(e) => return Err(UpdateError::Store(e).reply()),
        };
        let plan = resolve(&settings, self.kinds(), &cmd, &id.to_string(), &req.identity).map_err(Reply::private)?;
        // Authorization before anything changes.
        let allowed = settings.may_request(&req.identity, &req.roles, &plan.requesters);
        self.audit("authz", Some(&req.identity), Some(id), json!({"runbook": plan.runbook, "target": plan.target.lock_key(), "allowed": allowed}))
            .await;
        if !allowed {
            return Err(not_allowed(req, &plan));
        }
        let exec = self.new_execution(req, id, plan, seed, inbox);
        self.create(req, &exec).await?;
        let text = self.announce(req, &exec).await?;
        Ok((Reply::private(text), Some(id)))
    }

    /// A dry run: the plan, and nothing changed.
    async fn dry_run(&self, req: &Request, cmd: &Command) -> Result<Reply, Reply> {
        let settings = self.settings();
        let plan = resolve(&settings, self.kinds(), cmd, "R-(dry-run)", &req.identity).map_err(Reply::private)?;
        self.audit("dry_run", Some(&req.identity), None, json!({"runbook": plan.runbook, "target": plan.target.lock_key()})).await;
        let mut m = Message::text(format!(
            "Dry run — nothing was changed. {} on {} {} ({}) would:",
            plan.runbook, plan.target.kind, plan.target.name, plan.target.env
        ))
        .with_title(format!("Plan: {}", req.text.trim()));
        let steps: Vec<String> = plan.steps.iter().enumerate().map(|(i, s)| format!("{}. {} — {}", i + 1, s.name, s.action)).collect();
        m.code = Some(steps.join("\n"));
        Ok(Reply { message: m.map_text(|t| settings.redactor.redact(t)), ephemeral: true })
    }

    /// The execution a resolved plan becomes (not stored yet).
    pub(super) fn new_execution(&self, req: &Request, id: ExecutionId, plan: plan::Plan, seed: Vec<String>, inbox: Option<&str>) -> Execution {
        let settings = self.settings();
        let now = self.now();
        let incident_channel = settings.incident_channel(&plan.target.env, &req.origin.platform).unwrap_or(&req.origin.channel).to_string();
        let fingerprint = plan::fingerprint(&plan.runbook, &plan.target, &plan.vars, &plan.steps, &plan.policy, &[]);
        // Checked when the configuration was loaded; a runbook that lost a step keeps no button.
        let follow_up = settings.runbooks.get(&plan.runbook).and_then(|rb| rb.follow_up().ok().flatten());
        Execution {
            id,
            runbook: plan.runbook,
            command: settings.redactor.redact(req.text.trim()),
            vars: plan.vars,
            target: plan.target,
            mutating: plan.mutating,
            requester: req.identity.clone(),
            requester_person: settings.person(&req.identity),
            origin: req.origin.clone(),
            incident_channel,
            state: ExecState::Running,
            steps: plan.steps,
            current: 0,
            policy: plan.policy,
            approvals: Vec::new(),
            fingerprint,
            resolved: seed,
            rollback: None,
            expires_at: None,
            messages: Vec::new(),
            notes: Vec::new(),
            artifacts: Vec::new(),
            follow_up,
            inbox: inbox.map(str::to_string),
            cancel_requested: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
        }
    }

    /// Stores a new execution with its audit record and the target's lock. `Err` is the
    /// refusal to give: the target is busy, the store failed, or (never shown) the received
    /// command was acted on elsewhere.
    async fn create(&self, req: &Request, exec: &Execution) -> Result<(), Reply> {
        let id = exec.id;
        let lock = exec.mutating.then(|| exec.target.lock_key());
        let created = self.audit_entry(
            "execution",
            Some(&req.identity),
            Some(id),
            json!({"runbook": exec.runbook, "target": exec.target.lock_key(), "fingerprint": exec.fingerprint}),
        );
        match self.store().create_audited(exec, lock.as_deref(), &[created]).await {
            Ok(()) => Ok(()),
            Err(StoreError::Locked { key, holder }) => {
                let about = match self.store().load(holder).await {
                    Ok(Some(h)) => format!(
                        "{holder} ({} by {}, {}, started {} ago)",
                        h.value.runbook,
                        h.value.requester,
                        h.value.state.as_str().replace('_', " "),
                        ago(self.now() - h.value.created_at)
                    ),
                    _ => holder.to_string(),
                };
                self.audit("lock_refused", Some(&req.identity), Some(id), json!({"key": key, "holder": holder.to_string()})).await;
                let t = &exec.target;
                Err(Reply::private(format!(
                    "{} {} ({}) is busy: {about} is already working on it. Wait for it to finish, or see /ops status {holder}.",
                    t.kind, t.name, t.env
                )))
            }
            Err(StoreError::AlreadyProcessed(key)) => {
                tracing::info!(execution = %id, inbox = %key, "the received command was already acted on elsewhere; nothing created");
                Err(already_processed())
            }
            Err(e) => Err(UpdateError::Store(e).reply()),
        }
    }

    /// Posts the status message of a stored execution before any step runs, and stores its
    /// id, so every later update (also after a restart) edits the same message; then its
    /// mirrors. Held meanwhile: no sweep of any replica starts a step of it before then. `Ok`:
    /// the reply's text; `Err`: the message could not be posted (the execution is cancelled,
    /// or the reply says how to stop it).
    async fn announce(&self, req: &Request, exec: &Execution) -> Result<String, Reply> {
        let (id, settings) = (exec.id, self.settings());
        let incident_channel = exec.incident_channel.clone();
        let hold = self.hold_for_announcement(id).await;
        let platform = req.origin.platform.clone();
        let msg = super::render(exec, exec.created_at).map_text(|t| settings.redactor.redact(t));
        let posted = match self.chats().get(&platform) {
            Some(chat) => chat.post(&incident_channel, None, &msg).await.map_err(|e| e.to_string()),
            None => Err(format!("no {platform} adapter is running")),
        };
        let msg_id = match posted {
            Ok(msg_id) => msg_id,
            Err(why) => return Err(self.not_announced(id, &why).await),
        };
        // The mirrors (`[environments.ENV] mirror`): the same message on the other platforms.
        // One that cannot be posted is said on the origin's message and in the reply; the
        // execution goes on without it.
        let mut refs = vec![MessageRef { platform, channel: incident_channel.clone(), id: msg_id, final_sent: false }];
        let (mirrored, failed) = self.post_mirrors(exec, &msg).await;
        refs.extend(mirrored);
        let notes: Vec<String> = failed.iter().map(|(p, why)| format!("Could not mirror this message to {p} ({why}); it is only here.")).collect();
        let recorded = self
            .update(id, |ex| {
                ex.messages.extend(refs.iter().cloned());
                ex.notes.extend(notes.iter().cloned());
                Ok(())
            })
            .await;
        match recorded {
            Ok((saved, ())) if !failed.is_empty() => self.publish(&saved),
            Ok(_) => {}
            // Created and announced: the reply must not say nothing happened.
            Err(e) => {
                tracing::error!(execution = %id, error = ?e, "could not record the status message of a new execution");
                return Ok(format!(
                    "{id} was created and its status message posted, but runbot could not record that message (its state store did not answer); it goes on once the store answers, possibly under a new status message. /ops status {id} shows where it is; /ops cancel {id} stops it."
                ));
            }
        }
        for (p, why) in &failed {
            self.audit("mirror_failed", None, Some(id), json!({"platform": p, "error": why})).await;
        }
        hold.kick();
        let where_ = if incident_channel == req.origin.channel { "below".to_string() } else { format!("in #{incident_channel}") };
        let mut text = format!("{id} created — follow it {where_}.");
        for (p, why) in &failed {
            text.push_str(&format!(" Its mirror on {p} could not be posted: {why}."));
        }
        Ok(text)
    }

    /// The status message of `id` could not be posted: the execution is cancelled before it
    /// runs anything, and the reply says so — or, when even that cannot be stored, how to.
    async fn not_announced(&self, id: ExecutionId, why: &str) -> Reply {
        let cancelled = self
            .update(id, |ex| {
                ex.state = ExecState::Cancelled;
                ex.finished_at = Some(ex.updated_at);
                ex.notes.push(format!("Could not post the status message ({why}); nothing was run."));
                Ok(())
            })
            .await;
        self.audit("error", None, Some(id), json!({"error": why})).await;
        if let Err(e) = cancelled {
            // The execution is stored and could not be stopped: say so, and how to.
            tracing::error!(execution = %id, error = ?e, "could not cancel an execution whose status message was not posted");
            return Reply::private(format!(
                "{id} was created, but runbot could not post its status message ({why}) nor record that it must not run (its state store did not answer). Cancel it with /ops cancel {id}; /ops status {id} shows where it is."
            ));
        }
        Reply::private(format!("{id} was not started: runbot could not post its status message ({why}). Nothing was changed."))
    }
}

/// The refusal of a request its requester may not make.
fn not_allowed(req: &Request, plan: &plan::Plan) -> Reply {
    Reply::private(if plan.requesters.is_empty() {
        format!("You ({}) are not in any runbot group, so you cannot run {}. Ask an admin to add you under [groups].", req.identity, plan.runbook)
    } else {
        format!(
            "Running {} in {} needs membership of {}; you ({}) are not a member.",
            plan.runbook,
            plan.target.env,
            plan.requesters.join(" or "),
            req.identity
        )
    })
}

/// The (never shown) answer of a command whose inbox entry another process consumed first.
fn already_processed() -> Reply {
    Reply::private("runbot already acted on this command.")
}

fn ago(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

fn lines(list: &[Execution], now: chrono::DateTime<chrono::Utc>) -> String {
    list.iter()
        .map(|e| {
            format!(
                "• {} {} {} ({}) — {}{} · requested by {}, {} ago",
                e.id,
                e.runbook,
                e.target.name,
                e.target.env,
                e.state.as_str().replace('_', " "),
                decided(e),
                e.requester,
                ago(now - e.created_at)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who decided an execution's fate, as history shows it: who rejected or cancelled it, or who
/// approved the plan it ran.
fn decided(e: &Execution) -> String {
    let by_decision = |d: Decision| -> Vec<&str> {
        e.approvals.iter().filter(|a| a.decision == d && a.fingerprint == e.fingerprint).map(|a| a.identity.0.as_str()).collect()
    };
    match e.state {
        ExecState::Rejected => format!(" by {}", by_decision(Decision::Reject).join(", ")),
        ExecState::Cancelled if e.cancel_requested.is_some() => format!(" by {}", e.cancel_requested.as_ref().map(|i| i.0.as_str()).unwrap_or("")),
        _ => {
            let approvers = by_decision(Decision::Approve);
            if approvers.is_empty() { String::new() } else { format!(", approved by {}", approvers.join(", ")) }
        }
    }
}

/// Commands answered from the command and the configuration alone ([`Engine::settle`]).
fn from_command_alone(c: &Command) -> bool {
    matches!(c, Command::Help { .. } | Command::Whoami)
}
