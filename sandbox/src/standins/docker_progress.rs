//! The convergence display of an attached `docker service update`/`rollback` (and
//! `stack deploy --detach=false`), as the CLI prints it on a non-terminal: one line per change
//! of `overall progress: …`, `N/M: running [====>]`, `verify: …`.

use super::docker::{Fail, Out};
use super::swarm::SandboxSwarm;
use std::time::Duration;
/// What the progress display needs from one look at the service.
struct Snapshot {
    replicas: u64,
    /// Per slot: the up-to-date task's state (or its error).
    slots: Vec<String>,
    running: u64,
    converged: bool,
    paused: Option<String>,
    rollback_message: Option<String>,
    monitor_ms: i64,
}

/// Follows the service until it converges, like the CLI's progress display (one line per
/// change, as on a non-terminal): `overall progress: …`, `N/M: running [====>]`, then
/// `verify: Service converged`. A paused update is an error; so is no convergence within
/// max(2 min, 60·d per replica).
pub(super) fn wait_converged(sw: &SandboxSwarm, name: &str, out: &mut Out, quiet: bool) -> Result<(), Fail> {
    let mut said: Vec<String> = Vec::new();
    let mut say = |out: &mut Out, key: usize, line: String| {
        if said.len() <= key {
            said.resize(key + 1, String::new());
        }
        if said[key] != line {
            if !quiet {
                out.line(&line);
            }
            said[key] = line;
        }
    };
    let started = std::time::Instant::now();
    let mut converged_at: Option<std::time::Instant> = None;
    loop {
        let snap = sw.with(|st, now| {
            let d = st.converge_ms;
            let svc = st.find(name).ok_or_else(|| format!("Error response from daemon: service {name} not found"))?;
            let mut slots = Vec::new();
            let mut running = 0;
            for slot in 1..=svc.spec.replicas {
                let t = svc.tasks.iter().find(|t| t.slot == slot && t.image == svc.spec.image);
                let s = match t {
                    Some(t) => match t.error(now, d) {
                        Some(e) => e,
                        None => t.state(now, d).0.to_string(),
                    },
                    None => "new".into(),
                };
                if t.is_some_and(|t| t.live(now, d) && t.state(now, d).0 == "running") {
                    running += 1;
                }
                slots.push(s);
            }
            let u = svc.update.as_ref();
            Ok(Snapshot {
                replicas: svc.spec.replicas,
                slots,
                running,
                converged: svc.converged(now, d),
                paused: u
                    .filter(|u| u.state.ends_with("paused"))
                    .map(|u| format!("service {} paused: {}", if u.state.starts_with("rollback") { "rollback" } else { "update" }, u.message)),
                rollback_message: u.filter(|u| u.state.starts_with("rollback")).map(|u| u.message.clone()),
                monitor_ms: d / 2,
            })
        })?;
        if let Some(m) = &snap.rollback_message {
            say(out, 0, format!("rollback: {m}"));
        }
        if let Some(p) = snap.paused {
            return Err(Fail::Error(p));
        }
        let verb = if snap.rollback_message.is_some() { "rolling back update: " } else { "" };
        say(out, 1, format!("overall progress: {verb}{} out of {} tasks", snap.running, snap.replicas));
        for (i, s) in snap.slots.iter().enumerate() {
            say(out, 3 + i, format!("{}/{}: {}", i + 1, snap.replicas, progress_cell(s)));
        }
        if snap.converged {
            let at = *converged_at.get_or_insert_with(std::time::Instant::now);
            if at.elapsed().as_millis() as i64 >= snap.monitor_ms {
                if !quiet {
                    out.line("verify: Service converged");
                }
                return Ok(());
            }
            say(out, 2, format!("verify: Waiting {} seconds to verify that tasks are stable...", snap.monitor_ms / 1000 + 1));
        } else if converged_at.take().is_some() {
            say(out, 2, "verify: Detected task failure".into());
        }
        let limit = Duration::from_secs(120).max(Duration::from_millis((snap.monitor_ms * 2 * 60) as u64 * snap.replicas.max(1)));
        if started.elapsed() > limit {
            return Err(Fail::Error(format!("Error: timed out after {}s waiting for service {name} to converge", limit.as_secs())));
        }
        std::thread::sleep(Duration::from_millis((snap.monitor_ms / 4).clamp(20, 200) as u64));
    }
}

/// A task state with docker's progress bar (`running   [=====>]`), or an error as is.
fn progress_cell(s: &str) -> String {
    let step = match s {
        "new" => 1,
        "preparing" => 6,
        "starting" => 8,
        "running" => 9,
        _ => return s.chars().take(75).collect(),
    };
    let width = 50 * step / 9;
    let bar = format!("{}>{}", "=".repeat(width - 1), " ".repeat(50 - width));
    format!("{s:<9} [{bar}]")
}
