//! The runner: drives one execution step by step while holding its lease. A step's intent is
//! saved before its side effect and its result after; a step found mid-flight after a restart
//! is resumed only if idempotent, otherwise it waits for [Resume] / [Abort].

use super::Engine;
use super::plan::fingerprint;
use crate::model::{ExecState, Execution, ExecutionId, StepStatus};
use crate::ports::{Fence, Versioned};
use crate::steps::{APPROVAL, StepContext, StepOutcome};
use chrono::Duration as ChronoDuration;
use serde_json::json;
use sha2::Digest as _;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

/// What the loop decided to do with the current step.
enum Next {
    Stop,
    Continue,
    /// Boxed: an execution is large, and the other two are common.
    Run(Box<Versioned<Execution>>),
}

/// An execution this process is driving.
pub(super) struct Driving {
    /// Its cancel switch.
    cancel: watch::Sender<bool>,
    /// Kicked again while being driven: the driver may already have read the state it is
    /// about to stop at (an approval arriving as it reaches the approval step), so it drives
    /// once more when it ends.
    again: bool,
}

impl Driving {
    pub(super) fn new(cancel: watch::Sender<bool>) -> Self {
        Driving { cancel, again: false }
    }
}

impl Engine {
    /// Starts driving an execution in the background; if this process already is, makes sure
    /// the driver looks at it once more before it lets go.
    pub fn kick(&self, id: ExecutionId) {
        let (tx, rx) = watch::channel(false);
        {
            let Ok(mut running) = self.inner.running.lock() else { return };
            if let Some(d) = running.get_mut(&id) {
                d.again = true;
                return;
            }
            running.insert(id, Driving { cancel: tx, again: false });
        }
        let engine = self.clone();
        // Every log line while driving (steps, leases, publishing) carries the execution id.
        let span = tracing::info_span!("drive", execution = %id);
        tokio::spawn(
            async move {
                engine.drive(id, rx).await;
                let again = engine.inner.running.lock().ok().and_then(|mut r| r.remove(&id)).is_some_and(|d| d.again);
                if again {
                    engine.kick(id);
                }
            }
            .instrument(span),
        );
    }

    /// Tells a locally running step to stop.
    pub(super) fn signal_cancel(&self, id: ExecutionId) {
        if let Ok(running) = self.inner.running.lock()
            && let Some(d) = running.get(&id)
        {
            let _ = d.cancel.send(true);
        }
    }

    /// Executions this process is driving right now.
    pub fn running_here(&self) -> Vec<ExecutionId> {
        self.inner.running.lock().map(|r| r.keys().copied().collect()).unwrap_or_default()
    }

    pub(super) fn lease(&self) -> Duration {
        Duration::from_secs(self.settings().config.engine.lease_secs)
    }

    /// Takes or renews the lease; returns its fencing token. A lease this process took or
    /// renewed less than a third of the lease ago is still its own — nobody else can have taken
    /// it before it expires — so the store is not asked again (the monotonic clock also counts
    /// time this process spent paused, so a process that was stopped re-checks).
    pub(super) async fn claim(&self, id: ExecutionId) -> Option<Fence> {
        let recent = self.inner.claims.lock().ok().and_then(|c| c.get(&id).copied());
        if let Some((t, epoch)) = recent
            && t.elapsed() < self.lease() / 3
        {
            return Some(Fence { owner: self.settings().instance.clone(), epoch });
        }
        self.claim_now(id).await
    }

    /// Takes or renews the lease in the store.
    pub(super) async fn claim_now(&self, id: ExecutionId) -> Option<Fence> {
        let started = tokio::time::Instant::now();
        let now = self.now();
        let until = now + ChronoDuration::from_std(self.lease()).unwrap_or(ChronoDuration::seconds(30));
        let owner = self.settings().instance.clone();
        let epoch = match self.store().claim(id, &owner, until, now).await {
            Ok(epoch) => epoch,
            Err(e) => {
                tracing::error!(execution = %id, error = %e, "lease claim failed");
                None
            }
        };
        if let Ok(mut claims) = self.inner.claims.lock() {
            match epoch {
                Some(e) => {
                    claims.insert(id, (started, e));
                }
                None => {
                    claims.remove(&id);
                }
            }
        }
        epoch.map(|epoch| Fence { owner, epoch })
    }

    /// Renews the lease every third of it until aborted.
    pub(super) fn spawn_renewal(&self, id: ExecutionId) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(
            async move {
                loop {
                    tokio::time::sleep(engine.lease() / 3).await;
                    if engine.claim_now(id).await.is_none() {
                        tracing::warn!(execution = %id, "lost the lease");
                    }
                }
            }
            .in_current_span(),
        )
    }

    async fn drive(&self, id: ExecutionId, cancel: watch::Receiver<bool>) {
        let Some(fence) = self.claim_now(id).await else {
            tracing::debug!(execution = %id, "lease held elsewhere; not driving");
            return;
        };
        let renew = self.spawn_renewal(id);
        // The message first: no step runs before the status message is posted.
        if self.announced(id, &fence).await {
            self.drive_steps(id, cancel).await;
        }
        renew.abort();
        if let Ok(mut claims) = self.inner.claims.lock() {
            claims.remove(&id);
        }
        // Free for whoever acts next (a click on another replica takes it at once).
        if let Err(e) = self.store().release(id, &fence.owner).await {
            tracing::warn!(execution = %id, error = %e, "could not release the lease; it expires");
        }
    }

    async fn drive_steps(&self, id: ExecutionId, cancel: watch::Receiver<bool>) {
        let mut first = true;
        // A step the previous step's result already started (saved as running with it).
        let mut started: Option<Versioned<Execution>> = None;
        loop {
            // Only the lease holder runs steps: a process that lost its lease (paused or cut off
            // for longer than the lease) stops here instead of racing the one that took over.
            let Some(fence) = self.claim(id).await else {
                tracing::warn!(execution = %id, "lease lost; not driving any further");
                break;
            };
            let exec = match started.take() {
                Some(exec) => exec,
                None => match self.next(id, first, &fence).await {
                    Next::Stop => break,
                    Next::Continue => {
                        first = false;
                        continue;
                    }
                    Next::Run(exec) => *exec,
                },
            };
            started = self.run_step(exec, cancel.clone()).await;
            first = false;
        }
    }

    /// Looks at the current step and moves the execution one notch. `fresh` is true on the
    /// first look after (re)starting to drive: a step found `running` then was interrupted.
    async fn next(&self, id: ExecutionId, fresh: bool, fence: &Fence) -> Next {
        let res = self
            .update_as(
                id,
                None,
                Some(fence),
                |exec| {
                    if exec.state.is_terminal() || exec.state == ExecState::AwaitingApproval {
                        return Err(String::new());
                    }
                    if let Some(who) = &exec.cancel_requested {
                        let done: Vec<String> = exec.steps.iter().filter(|s| s.status == StepStatus::Succeeded).map(|s| s.name.clone()).collect();
                        exec.notes.push(format!(
                            "Cancelled by {who}. Completed before that: {}.",
                            if done.is_empty() { "nothing".into() } else { done.join(", ") }
                        ));
                        finish(exec, ExecState::Cancelled);
                        return Ok(true);
                    }
                    if exec.current >= exec.steps.len() {
                        finish(exec, ExecState::Succeeded);
                        return Ok(true);
                    }
                    let now = exec.updated_at;
                    let i = exec.current;
                    let step = &mut exec.steps[i];
                    match (step.kind == APPROVAL, step.status) {
                        (true, StepStatus::Pending) => {
                            step.status = StepStatus::Waiting;
                            exec.state = ExecState::AwaitingApproval;
                            // The approvers see the plan with what the earlier steps resolved.
                            exec.fingerprint = fingerprint(&exec.runbook, &exec.target, &exec.vars, &exec.steps, &exec.policy, &exec.resolved);
                            let secs = exec.policy.as_ref().map(|p| p.expiry_secs).unwrap_or(1800);
                            exec.expires_at = Some(now + ChronoDuration::seconds(secs as i64));
                            Ok(true)
                        }
                        (_, StepStatus::Succeeded | StepStatus::Skipped) => {
                            exec.current += 1;
                            Ok(false)
                        }
                        (false, StepStatus::Running) if fresh && !step.idempotent => {
                            step.status = StepStatus::Interrupted;
                            let n =
                                format!("Step {} ({}) was running when runbot stopped; it may have partly run. Resume or Abort?", i + 1, step.name);
                            exec.notes.push(n);
                            Ok(true)
                        }
                        (false, StepStatus::Pending | StepStatus::Running) => {
                            if step.status == StepStatus::Running {
                                exec.notes.push(format!(
                                    "Step {} ({}) was running when runbot stopped; it is safe to repeat and was resumed.",
                                    i + 1,
                                    step.name
                                ));
                            }
                            step.status = StepStatus::Running;
                            step.attempts += 1;
                            step.started_at = Some(now);
                            step.summary = None;
                            Ok(false)
                        }
                        (_, StepStatus::Failed) => {
                            finish(exec, ExecState::Failed);
                            Ok(true)
                        }
                        // Interrupted or Waiting: a person has to act.
                        _ => Err(String::new()),
                    }
                },
                |exec, changed_visible| if *changed_visible || running(exec) { vec![self.state_entry(exec)] } else { Vec::new() },
            )
            .await;
        match res {
            Ok((v, changed_visible)) => {
                let exec = &v.value;
                // The closure refuses terminal executions, so a terminal one was finished here.
                self.count_finished(exec);
                if changed_visible || running(exec) {
                    self.publish(exec);
                }
                if exec.state.is_terminal() || exec.state == ExecState::AwaitingApproval {
                    return Next::Stop;
                }
                if exec.steps.get(exec.current).is_some_and(|s| s.status == StepStatus::Interrupted) {
                    return Next::Stop;
                }
                if running(exec) { Next::Run(Box::new(v)) } else { Next::Continue }
            }
            Err(_) => Next::Stop,
        }
    }

    /// The audit record of an execution's state (and current step) after a change.
    fn state_entry(&self, exec: &Execution) -> crate::audit::AuditEntry {
        let step = exec.steps.get(exec.current);
        self.audit_entry(
            "state",
            None,
            Some(exec.id),
            json!({"state": exec.state.as_str(), "step": exec.current + 1, "step_status": step.map(|s| s.status.as_str())}),
        )
    }

    /// Runs the current step (already saved as running) and stores its result; returns the
    /// execution when the result's save also started the next step.
    async fn run_step(&self, saved: Versioned<Execution>, cancel: watch::Receiver<bool>) -> Option<Versioned<Execution>> {
        let exec = saved.value.clone();
        let i = exec.current;
        let step = exec.steps[i].clone();
        let Some(kind) = self.kinds().get(&step.kind).cloned() else {
            let why = format!("step kind '{}' is not available in this runbot", step.kind);
            return self.complete(exec.id, i, step.attempts, StepOutcome::Failed(why), &[], Some(saved)).await;
        };
        // Never beside a live process of an earlier attempt (Resume, an idempotent resume).
        let mut saved = saved;
        if let Some(old) = &step.process {
            match self.stop_leftover(exec.id, i, &step.name, old).await {
                Ok(Some(v)) => saved = v,
                Ok(None) => {}
                Err(why) => return self.complete(exec.id, i, step.attempts, StepOutcome::Failed(why), &[], None).await,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let pump = self.spawn_output(&exec, i, rx);
        let (artifacts, mut kept) = mpsc::unbounded_channel();
        let processes = self.spawn_process_log(exec.id, i);
        let ctx =
            StepContext { execution: exec.clone(), step: i, output: tx, cancel, secrets: self.settings().secrets.clone(), artifacts, processes };
        tracing::info!(execution = %exec.id, step = i + 1, kind = %step.kind, "step started");
        let began = tokio::time::Instant::now();
        let outcome = kind.run(&step.params, ctx).instrument(tracing::info_span!("step", step = i + 1, kind = %step.kind)).await;
        self.inner.metrics.step_duration(&step.kind, began.elapsed());
        let _ = pump.await;
        let mut outcome = outcome;
        let mut kept_refs = Vec::new();
        while let Ok((name, content)) = kept.try_recv() {
            match self.keep_artifact(exec.id, &name, &content).await {
                Ok(r) => kept_refs.push(r),
                Err(e) => outcome = StepOutcome::Failed(format!("artifact {name} could not be stored: {e}")),
            }
        }
        let logged = self.settings().redactor.redact(&format!("{outcome:?}"));
        tracing::info!(execution = %exec.id, step = i + 1, outcome = %logged, "step finished");
        self.complete(exec.id, i, step.attempts, outcome, &kept_refs, Some(saved)).await
    }

    /// Ends a step's earlier process if it is still running, and says so in the execution.
    /// Returns the execution as saved with the note, or why the step must not run again.
    async fn stop_leftover(
        &self,
        id: ExecutionId,
        i: usize,
        name: &str,
        old: &crate::model::StepProcess,
    ) -> Result<Option<Versioned<Execution>>, String> {
        let found = crate::steps::process::stop_leftover(old).await;
        let Some(note) = found.note(i + 1, name, old) else { return Ok(None) };
        tracing::warn!(execution = %id, step = i + 1, pid = old.pid, found = ?found, "earlier process of the step");
        if found == crate::steps::process::Leftover::StillRunning {
            return Err(note);
        }
        // Only the lease holder writes; one that lost the lease must not run the step either.
        let Some(fence) = self.claim(id).await else { return Err(format!("{note} This process no longer holds the execution's lease.")) };
        match self
            .update_as(
                id,
                None,
                Some(&fence),
                |exec| {
                    exec.notes.push(note.clone());
                    Ok(())
                },
                |_, _| Vec::new(),
            )
            .await
        {
            Ok((v, ())) => {
                self.publish(&v.value);
                Ok(Some(v))
            }
            Err(e) => {
                tracing::error!(execution = %id, error = ?e, "could not save the note on the step's earlier process");
                Ok(None)
            }
        }
    }

    /// The engine's side of [`StepContext::processes`]: saves each process the step starts
    /// into its record (while the step is still the running one) and answers when saved.
    fn spawn_process_log(&self, id: ExecutionId, i: usize) -> crate::steps::ProcessLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<(crate::model::StepProcess, tokio::sync::oneshot::Sender<Result<(), String>>)>();
        let engine = self.clone();
        tokio::spawn(
            async move {
                while let Some((p, ack)) = rx.recv().await {
                    // A process that lost the lease records nothing; the step does not start.
                    let Some(fence) = engine.claim(id).await else {
                        let _ = ack.send(Err("this process no longer holds the execution's lease".to_string()));
                        continue;
                    };
                    let saved = engine
                        .update_as(
                            id,
                            None,
                            Some(&fence),
                            |exec| {
                                if exec.current != i || exec.steps.get(i).is_none_or(|s| s.status != StepStatus::Running) {
                                    return Err("the step is no longer running".to_string());
                                }
                                exec.steps[i].process = Some(p.clone());
                                Ok(())
                            },
                            |_, _| Vec::new(),
                        )
                        .await;
                    let _ = ack.send(saved.map(|_| ()).map_err(|e| match e {
                        super::UpdateError::Refused(why) => why,
                        super::UpdateError::Store(e) => format!("the store: {e}"),
                    }));
                }
            }
            .in_current_span(),
        );
        crate::steps::ProcessLog(tx)
    }

    /// Stores an artifact's content (redacted like everything runbot shows); the execution
    /// lists it, and the audit log records it, with the step's result.
    async fn keep_artifact(&self, id: ExecutionId, name: &str, content: &str) -> Result<KeptArtifact, String> {
        let content = self.settings().redactor.redact(content);
        self.store().put_artifact(id, name, &content).await.map_err(|e| e.to_string())?;
        let sha256 = hex::encode(sha2::Sha256::digest(content.as_bytes()));
        Ok(KeptArtifact { listed: crate::model::ArtifactRef { name: name.to_string(), bytes: content.len() }, sha256 })
    }

    /// Stores a step's result (after its side effect) and moves on: when the next step is an
    /// ordinary one, its intent (running) is saved in the same write, and the execution is
    /// returned to run it. The artifacts the step kept are listed, and audited, in that write.
    async fn complete(
        &self,
        id: ExecutionId,
        i: usize,
        attempt: u32,
        outcome: StepOutcome,
        kept: &[KeptArtifact],
        hint: Option<Versioned<Execution>>,
    ) -> Option<Versioned<Execution>> {
        // A process that lost its lease while the step ran must not overwrite what the new
        // holder decided (it will have marked the step interrupted or resumed it).
        let Some(fence) = self.claim(id).await else {
            let logged = self.settings().redactor.redact(&format!("{outcome:?}"));
            tracing::warn!(execution = %id, step = i + 1, outcome = %logged, "lease lost during the step; its result is not recorded here");
            return None;
        };
        let settings = self.settings();
        let res = self
            .update_as(
                id,
                hint,
                Some(&fence),
                |exec| {
                    // Only the run this result belongs to records it. A process paused through
                    // a takeover can take the lease again once the new holder let it go: it then
                    // finds the step resumed by another (a newer attempt), interrupted, or the
                    // execution over, and records nothing.
                    let current = exec.steps.get(i).filter(|s| s.status == StepStatus::Running && s.attempts == attempt);
                    if exec.state.is_terminal() || exec.current != i || current.is_none() {
                        return Err(format!("step {} (attempt {attempt}) is no longer this process's to record", i + 1));
                    }
                    let now = exec.updated_at;
                    // The changes made so far: steps done after the approval (steps before it are
                    // read-only by rule), or non-idempotent ones in a runbook without approval.
                    let approval = exec.steps.iter().position(|s| s.kind == APPROVAL);
                    let done_before: Vec<String> = exec.steps[..i]
                        .iter()
                        .enumerate()
                        .filter(|(j, s)| s.status == StepStatus::Succeeded && s.kind != APPROVAL && approval.map_or(!s.idempotent, |a| *j > a))
                        .map(|(_, s)| s.name.clone())
                        .collect();
                    for k in kept {
                        exec.artifacts.retain(|a| a.name != k.listed.name);
                        exec.artifacts.push(k.listed.clone());
                    }
                    let step = &mut exec.steps[i];
                    step.finished_at = Some(now);
                    match &outcome {
                        StepOutcome::Succeeded(s) => {
                            step.status = StepStatus::Succeeded;
                            step.summary = Some(settings.redactor.redact(s));
                            exec.current = i + 1;
                        }
                        StepOutcome::Resolved { summary, targets, rollback } => {
                            step.status = StepStatus::Succeeded;
                            step.summary = Some(settings.redactor.redact(summary));
                            exec.resolved = targets.clone();
                            if rollback.is_some() {
                                exec.rollback = rollback.clone();
                            }
                            exec.current = i + 1;
                        }
                        StepOutcome::Finished(s) => {
                            step.status = StepStatus::Succeeded;
                            step.summary = Some(settings.redactor.redact(s));
                            for later in &mut exec.steps[i + 1..] {
                                later.status = StepStatus::Skipped;
                                later.summary = Some("skipped: nothing to do".into());
                            }
                            exec.notes.push(format!("{} Nothing was changed.", settings.redactor.redact(s)));
                            exec.current = exec.steps.len();
                            finish(exec, ExecState::Succeeded);
                        }
                        StepOutcome::Failed(why) => {
                            step.status = StepStatus::Failed;
                            step.summary = Some(settings.redactor.redact(why));
                            let mut note = format!("Step {} ({}) failed: {}", i + 1, step.name, settings.redactor.redact(why));
                            if !done_before.is_empty() {
                                note.push_str(&format!(
                                    ". Already applied before the failure: {} — the target may be partly changed.",
                                    done_before.join(", ")
                                ));
                            }
                            exec.notes.push(note);
                            finish(exec, ExecState::Failed);
                        }
                        StepOutcome::Cancelled(why) => {
                            step.status = StepStatus::Cancelled;
                            step.summary = Some(settings.redactor.redact(why));
                            let who = exec.cancel_requested.as_ref().map(|w| w.0.clone()).unwrap_or_else(|| "someone".into());
                            let mut note = format!("Cancelled by {who} during step {} ({}), which was stopped part-way", i + 1, step.name);
                            if !done_before.is_empty() {
                                note.push_str(&format!("; already applied: {}", done_before.join(", ")));
                            }
                            exec.notes.push(note + ".");
                            finish(exec, ExecState::Cancelled);
                        }
                    }
                    Ok(start_next(exec))
                },
                |exec, _| {
                    let step = &exec.steps[i];
                    let artifacts = kept.iter().map(|k| {
                        self.audit_entry("artifact", None, Some(id), json!({"name": k.listed.name, "bytes": k.listed.bytes, "sha256": k.sha256}))
                    });
                    artifacts
                        .chain([
                            self.audit_entry(
                                "step",
                                None,
                                Some(id),
                                json!({"step": i + 1, "name": step.name, "status": step.status.as_str(), "summary": step.summary}),
                            ),
                            self.state_entry(exec),
                        ])
                        .collect()
                },
            )
            .await;
        match res {
            Ok((v, started)) => {
                // The step was running, so a terminal state now was reached by this result.
                self.count_finished(&v.value);
                self.publish(&v.value);
                started.then_some(v)
            }
            Err(e) => {
                tracing::error!(execution = %id, error = ?e, "could not store a step result");
                None
            }
        }
    }
}

/// An artifact whose content is stored, waiting to be listed with its step's result.
struct KeptArtifact {
    listed: crate::model::ArtifactRef,
    sha256: String,
}

/// The current step is an ordinary step that is running (its intent saved).
fn running(exec: &Execution) -> bool {
    exec.state == ExecState::Running && exec.steps.get(exec.current).is_some_and(|s| s.status == StepStatus::Running && s.kind != APPROVAL)
}

/// After a step succeeded: marks the next step running (its intent, saved with the previous
/// result) when it is an ordinary pending step and nobody asked to cancel. Approvals, the end
/// of the runbook and cancellation go through [`Engine::next`].
fn start_next(exec: &mut Execution) -> bool {
    if exec.state != ExecState::Running || exec.cancel_requested.is_some() {
        return false;
    }
    let now = exec.updated_at;
    match exec.steps.get_mut(exec.current) {
        Some(step) if step.kind != APPROVAL && step.status == StepStatus::Pending => {
            step.status = StepStatus::Running;
            step.attempts += 1;
            step.started_at = Some(now);
            step.summary = None;
            true
        }
        _ => false,
    }
}

/// Puts an execution in a terminal state.
pub(super) fn finish(exec: &mut Execution, state: ExecState) {
    exec.state = state;
    exec.finished_at = Some(exec.updated_at);
    exec.expires_at = None;
}
