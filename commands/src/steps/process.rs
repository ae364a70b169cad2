//! Running a local program for a step: argv only (never a shell), extra env, a timeout, the
//! whole process group ended (SIGTERM, then SIGKILL after [`STOP_GRACE`]) on timeout,
//! cancellation or drop, stdout and stderr streamed line by line to the step's output (the
//! execution log and the detail thread). Shared by the `command` kind and the drivers that wrap
//! `helm` and `docker`.
//!
//! Steps never outlive runbot unseen. In `runbot serve` every step program runs under a small
//! supervisor: runbot itself, re-executed with [`SUPERVISOR_FLAG`] ([`use_supervisor`]). The
//! supervisor leads a new process group, waits until runbot has recorded its pid and start time
//! in the execution ([`StepContext::processes`]), then starts the program in its group. When
//! runbot goes away — exit, crash, SIGKILL — the supervisor's stdin (a pipe only runbot holds)
//! reaches end of file and it ends the whole group: SIGTERM, then SIGKILL after the grace. This
//! needs no `unsafe` (no `pre_exec` for `PR_SET_PDEATHSIG`) and works on every Unix. Before a
//! step runs again (Resume, or an idempotent step resumed after a restart), [`stop_leftover`]
//! checks that the recorded process is gone, and ends its group if it is not.

use super::{StepContext, StepOutcome};
use crate::model::StepProcess;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// How long a step's process group has between SIGTERM and SIGKILL (cancel, timeout, shutdown,
/// runbot gone, a leftover found before a resume).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// The first argument that makes the runbot binary a step supervisor:
/// `runbot --step-supervisor GRACE_MS PROGRAM [ARGS...]`.
pub const SUPERVISOR_FLAG: &str = "--step-supervisor";

static SUPERVISOR: OnceLock<PathBuf> = OnceLock::new();

/// Runs every step program under `exe` (the runbot binary) as its supervisor. Without it (unit
/// tests, embedding) programs run directly: still in their own process group, ended as a group,
/// recorded, but not ended if this process is killed.
pub fn use_supervisor(exe: PathBuf) {
    let _ = SUPERVISOR.set(exe);
}

/// What to run.
pub(crate) struct Proc<'a> {
    pub argv: &'a [String],
    pub env: Vec<(String, String)>,
    pub cwd: Option<&'a str>,
    pub timeout: Duration,
    /// Forward stdout lines to the step output (stderr always is).
    pub stream_stdout: bool,
    /// Keep stdout (up to 4 MiB) for the caller to parse, e.g. `docker service inspect`.
    pub capture_stdout: bool,
}

/// How it ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Exit {
        code: Option<i32>,
        success: bool,
    },
    TimedOut(u64),
    Cancelled,
    /// Could not be started or waited for.
    Broken(String),
}

#[derive(Debug)]
pub(crate) struct Finished {
    pub ended: Ended,
    pub stdout: String,
    /// The last stderr lines (for the failure message).
    pub stderr_tail: Vec<String>,
    pub secs: f64,
}

impl Finished {
    /// The step outcome the way every process-running step reports it: `exit 0 in 1.2s`, or
    /// the exit code with the last stderr lines, a timeout, a cancellation. `program` names
    /// the tool in the message when the plan does not already show it.
    pub fn outcome(&self, program: Option<&str>) -> StepOutcome {
        let named = |msg: String| match program {
            Some(p) => format!("{p}: {msg}"),
            None => msg,
        };
        match &self.ended {
            Ended::Cancelled => StepOutcome::Cancelled("cancelled; the process was killed".into()),
            Ended::TimedOut(s) => StepOutcome::Failed(named(format!("timed out after {s}s; the process was killed"))),
            Ended::Broken(why) => StepOutcome::Failed(why.clone()),
            Ended::Exit { success: true, .. } => StepOutcome::Succeeded(format!("exit 0 in {:.1}s", self.secs)),
            Ended::Exit { code, .. } => {
                let code = code.map(|c| format!("exit code {c}")).unwrap_or_else(|| "killed by a signal".into());
                if self.stderr_tail.is_empty() {
                    StepOutcome::Failed(named(code))
                } else {
                    StepOutcome::Failed(named(format!("{code}: {}", self.stderr_tail.join(" | "))))
                }
            }
        }
    }
}

const STDERR_TAIL: usize = 5;
const CAPTURE_MAX: usize = 4 << 20;

pub(crate) async fn run(p: Proc<'_>, ctx: &StepContext) -> Finished {
    let broken = |why: String| Finished { ended: Ended::Broken(why), stdout: String::new(), stderr_tail: Vec::new(), secs: 0.0 };
    let Some(program) = p.argv.first() else { return broken("nothing to run".into()) };
    let supervisor = SUPERVISOR.get();
    let mut cmd = match supervisor {
        Some(exe) => {
            let mut cmd = tokio::process::Command::new(exe);
            cmd.arg(SUPERVISOR_FLAG).arg(STOP_GRACE.as_millis().to_string()).args(p.argv);
            // Its stdin is the lifeline: end of file = runbot is gone (or gave up the step).
            cmd.stdin(Stdio::piped());
            cmd
        }
        None => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args(&p.argv[1..]).stdin(Stdio::null()).kill_on_drop(true);
            cmd
        }
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    for (k, v) in &p.env {
        cmd.env(k, v);
    }
    if let Some(c) = p.cwd {
        cmd.current_dir(c);
    }
    let started = tokio::time::Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return broken(format!("could not start {program}: {e}")),
    };
    let pid = child.id();
    // Recorded before the program does anything (supervised: it has not been started yet).
    tracing::debug!(pid, supervised = supervisor.is_some(), "step process spawned; recording it");
    let recorded = match pid {
        Some(pid) => ctx.processes.record(this_process(pid)).await,
        None => Err("its process id could not be read".into()),
    };
    if let Err(why) = recorded {
        if let Some(pid) = pid {
            end_group(pid, &mut child, Duration::ZERO).await;
        }
        return broken(format!("{program} was not started: recording its process failed: {why}"));
    }
    tracing::debug!(pid, "step process recorded");
    // Kept open for the whole step: dropping it (this future dropped at shutdown) ends the group.
    let mut lifeline = child.stdin.take();
    if let Some(w) = lifeline.as_mut()
        && let Err(e) = w.write_all(b"go\n").await
    {
        return broken(format!("could not start {program} under its supervisor: {e}"));
    }
    let out = child.stdout.take().map(|s| {
        let tx = p.stream_stdout.then(|| ctx.output.clone());
        tokio::spawn(pump(s, tx, 0, p.capture_stdout))
    });
    let err = child.stderr.take().map(|s| tokio::spawn(pump(s, Some(ctx.output.clone()), STDERR_TAIL, false)));
    let timeout = tokio::time::sleep(p.timeout);
    tokio::pin!(timeout);
    let mut cancel = ctx.cancel.clone();
    let ended = loop {
        tokio::select! {
            status = child.wait() => break match status {
                Ok(s) => Ended::Exit { code: s.code(), success: s.success() },
                Err(e) => Ended::Broken(format!("waiting for {program} failed: {e}")),
            },
            _ = &mut timeout => break Ended::TimedOut(p.timeout.as_secs()),
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    break Ended::Cancelled;
                }
            }
        }
    };
    if !matches!(ended, Ended::Exit { .. })
        && let Some(pid) = pid
    {
        end_group(pid, &mut child, STOP_GRACE).await;
    }
    drop(lifeline);
    let stdout = match out {
        Some(h) => h.await.map(|(_, s)| s).unwrap_or_default(),
        None => String::new(),
    };
    let stderr_tail = match err {
        Some(h) => h.await.map(|(t, _)| t.into_iter().collect()).unwrap_or_default(),
        None => Vec::new(),
    };
    Finished { ended, stdout, stderr_tail, secs: started.elapsed().as_secs_f64() }
}

/// Ends the process group `pgid` that `child` leads: SIGTERM to the group, up to `grace` for
/// the leader to exit, then SIGKILL to the group (which also takes any member still left).
async fn end_group(pgid: u32, child: &mut tokio::process::Child, grace: Duration) {
    signal_group(pgid, rustix::process::Signal::TERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        tracing::warn!(pgid, grace_s = grace.as_secs(), "step process still running after SIGTERM; sending SIGKILL");
    }
    signal_group(pgid, rustix::process::Signal::KILL);
    let _ = child.wait().await;
}

fn signal_group(pgid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process_group(pid, sig);
    }
}

/// This host's name, to tell whether a recorded pid means anything here.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).or_else(|_| std::env::var("HOSTNAME")).unwrap_or_default()
}

/// When a process started, in clock ticks since boot (`/proc/PID/stat` field 22): with the
/// pid it names one process, not a later one that reused the pid. Also whether it is a zombie
/// (exited, not yet waited for). `None` without `/proc` or once the process is gone.
fn stat(pid: u32) -> Option<(bool, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces or `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (the state), so field 22 is fields[19].
    let zombie = fields.first().is_some_and(|s| *s == "Z" || *s == "X");
    Some((zombie, fields.get(19)?.parse().ok()?))
}

/// The record of a process this runbot started (start time 0 where `/proc` is missing: such a
/// record cannot be checked later).
fn this_process(pid: u32) -> StepProcess {
    StepProcess { host: host(), pid, start_ticks: stat(pid).map(|(_, t)| t).unwrap_or(0) }
}

/// What [`stop_leftover`] found of a step's earlier process.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// Not running any more (or never recorded in a way this host can check).
    Gone,
    /// It ran on another host: it cannot be checked from here.
    Elsewhere(String),
    /// It was still running and its group was ended; `forced`: SIGTERM was not enough.
    Stopped { forced: bool },
    /// It was still running and could not be ended.
    StillRunning,
}

impl Leftover {
    /// The execution note for a step about to run again, if there is something to say.
    pub fn note(&self, step: usize, name: &str, p: &StepProcess) -> Option<String> {
        let what = format!("step {step} ({name})'s earlier process (pid {} on {})", p.pid, p.host);
        match self {
            Leftover::Gone => None,
            Leftover::Elsewhere(_) => Some(format!("Before running it again: {what} ran on another host and could not be checked from {}.", host())),
            Leftover::Stopped { forced: false } => {
                Some(format!("Before running it again: {what} was still running; it was stopped (SIGTERM) first."))
            }
            Leftover::Stopped { forced: true } => Some(format!(
                "Before running it again: {what} was still running; it was stopped (SIGTERM, then SIGKILL after {}s) first.",
                STOP_GRACE.as_secs()
            )),
            Leftover::StillRunning => Some(format!("{what} is still running and could not be stopped; the step was not run again.")),
        }
    }
}

/// Makes sure a step's recorded process is not running before the step runs again: when it
/// still is (same host, same pid and start time), its group gets SIGTERM, then SIGKILL after
/// [`STOP_GRACE`].
pub(crate) async fn stop_leftover(p: &StepProcess) -> Leftover {
    if p.host != host() {
        return Leftover::Elsewhere(p.host.clone());
    }
    let alive = || p.start_ticks != 0 && stat(p.pid) == Some((false, p.start_ticks));
    if !alive() {
        return Leftover::Gone;
    }
    tracing::warn!(pid = p.pid, "a step's earlier process is still running; ending its process group");
    signal_group(p.pid, rustix::process::Signal::TERM);
    if wait_gone(&alive, STOP_GRACE).await {
        // Members of the group other than its leader go too.
        signal_group(p.pid, rustix::process::Signal::KILL);
        return Leftover::Stopped { forced: false };
    }
    signal_group(p.pid, rustix::process::Signal::KILL);
    if wait_gone(&alive, Duration::from_secs(2)).await { Leftover::Stopped { forced: true } } else { Leftover::StillRunning }
}

async fn wait_gone(alive: &impl Fn() -> bool, within: Duration) -> bool {
    let until = tokio::time::Instant::now() + within;
    while alive() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// The supervisor (`runbot --step-supervisor GRACE_MS PROGRAM [ARGS...]`): waits for `go` on
/// stdin (runbot has recorded it), runs the program in its own process group, and exits the way
/// the program did. When stdin reaches end of file (runbot is gone) or it gets SIGTERM, it ends
/// the group: SIGTERM, up to GRACE_MS for the program, then SIGKILL (itself included).
pub fn supervise_main(args: Vec<String>) -> i32 {
    let (Some(grace), Some(program)) = (args.first().and_then(|g| g.parse::<u64>().ok()), args.get(1)) else {
        eprintln!("runbot {SUPERVISOR_FLAG}: usage: runbot {SUPERVISOR_FLAG} GRACE_MS PROGRAM [ARGS...]");
        return 2;
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runbot {SUPERVISOR_FLAG}: cannot start: {e}");
            return 1;
        }
    };
    let code = rt.block_on(supervise(Duration::from_millis(grace), program, &args[2..]));
    // Not a plain drop: that waits for the blocking read of stdin, which runbot keeps open
    // until this process exits.
    rt.shutdown_background();
    code
}

async fn supervise(grace: Duration, program: &str, args: &[String]) -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    // Handled, not fatal: the group's SIGTERM reaches this process too.
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("runbot {SUPERVISOR_FLAG}: cannot handle SIGTERM: {e}");
            return 1;
        }
    };
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    match stdin.next_line().await {
        Ok(Some(line)) if line == "go" => {}
        // runbot went away (or could not record this process) before the start: nothing runs.
        _ => return 1,
    }
    let mut child = match tokio::process::Command::new(program).args(args).stdin(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("could not start {program}: {e}");
            return 127;
        }
    };
    let lifeline = async {
        // Anything after `go` is ignored; end of file or an error means runbot is gone.
        while let Ok(Some(_)) = stdin.next_line().await {}
    };
    tokio::select! {
        status = child.wait() => match status {
            Ok(s) => match s.code() {
                Some(code) => code,
                // Killed by a signal: so is the supervisor, for runbot to see the same.
                None => {
                    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
                    1
                }
            },
            Err(e) => {
                eprintln!("waiting for {program} failed: {e}");
                1
            }
        },
        () = lifeline => stop_own_group(&mut child, grace).await,
        _ = term.recv() => stop_own_group(&mut child, grace).await,
    }
}

async fn stop_own_group(child: &mut tokio::process::Child, grace: Duration) -> i32 {
    let _ = rustix::process::kill_current_process_group(rustix::process::Signal::TERM);
    let _ = tokio::time::timeout(grace, child.wait()).await;
    // Whatever is left of the group (background children), and this process.
    let _ = rustix::process::kill_current_process_group(rustix::process::Signal::KILL);
    1
}

/// Forwards each line (when `tx` is set); keeps the last `keep` lines and, with `capture`,
/// the whole text (bounded).
async fn pump(stream: impl AsyncRead + Unpin, tx: Option<mpsc::UnboundedSender<String>>, keep: usize, capture: bool) -> (VecDeque<String>, String) {
    let mut lines = BufReader::new(stream).lines();
    let mut tail = VecDeque::new();
    let mut all = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if keep > 0 {
            if tail.len() == keep {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        if capture && all.len() + line.len() < CAPTURE_MAX {
            all.push_str(&line);
            all.push('\n');
        }
        if let Some(tx) = &tx {
            let _ = tx.send(line);
        }
    }
    (tail, all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    /// A process group whose members ignore SIGTERM, as a stubborn step would.
    fn stubborn_group() -> std::process::Child {
        std::process::Command::new("sh").args(["-c", "trap '' TERM; sleep 30 & wait"]).process_group(0).spawn().expect("start sh")
    }

    /// Live (not zombie) processes in process group `pgid`.
    fn live_members(pgid: u32) -> usize {
        let entries = std::fs::read_dir("/proc").expect("/proc");
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            .filter(|stat| {
                let rest = stat.rfind(')').map(|i| &stat[i + 1..]).unwrap_or("");
                let f: Vec<&str> = rest.split_whitespace().collect();
                f.get(2) == Some(&pgid.to_string().as_str()) && f.first() != Some(&"Z")
            })
            .count()
    }

    fn alive(p: &StepProcess) -> bool {
        stat(p.pid) == Some((false, p.start_ticks))
    }

    #[tokio::test]
    async fn a_leftover_step_process_that_ignores_sigterm_is_killed_with_its_group_and_the_note_says_so() {
        let mut child = stubborn_group();
        let p = this_process(child.id());
        assert!(p.start_ticks > 0, "the start time is read from /proc");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let found = stop_leftover(&p).await;
        assert_eq!(found, Leftover::Stopped { forced: true });
        let _ = child.wait();
        assert!(!alive(&p));
        // `sleep`, the other member of the group, went too (zombies aside).
        assert!(wait_gone(&|| live_members(p.pid) > 0, Duration::from_secs(2)).await, "no live process is left in the group");
        let note = found.note(2, "Deploy", &p).expect("a note");
        assert!(note.contains("step 2 (Deploy)") && note.contains("SIGKILL") && note.contains(&p.pid.to_string()), "{note}");
    }

    #[tokio::test]
    async fn a_recorded_process_that_is_gone_reused_or_on_another_host_is_left_alone() {
        let mut child = std::process::Command::new("true").spawn().expect("start true");
        let p = this_process(child.id());
        let _ = child.wait();
        assert_eq!(stop_leftover(&p).await, Leftover::Gone);
        // This very process, under another start time: a reused pid, not the step's process.
        let me = this_process(std::process::id());
        let reused = StepProcess { start_ticks: me.start_ticks + 1, ..me.clone() };
        assert_eq!(stop_leftover(&reused).await, Leftover::Gone);
        assert!(alive(&me));
        let elsewhere = StepProcess { host: format!("{}-other", me.host), ..me };
        assert!(matches!(stop_leftover(&elsewhere).await, Leftover::Elsewhere(_)));
    }
}
