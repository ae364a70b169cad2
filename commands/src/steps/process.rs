//! Running a local program for a step: argv only (never a shell), extra env, a timeout, the
//! child and its process group killed on timeout, cancellation or drop, stdout and stderr
//! streamed line by line to the step's output (the execution log and the detail thread).
//! Shared by the `command` kind and the drivers that wrap `helm` and `docker`.

use super::StepOutcome;
use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

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
    Exit { code: Option<i32>, success: bool },
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

pub(crate) async fn run(p: Proc<'_>, output: &mpsc::UnboundedSender<String>, cancel: &watch::Receiver<bool>) -> Finished {
    let broken = |why: String| Finished { ended: Ended::Broken(why), stdout: String::new(), stderr_tail: Vec::new(), secs: 0.0 };
    let Some(program) = p.argv.first() else { return broken("nothing to run".into()) };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&p.argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
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
    let out = child.stdout.take().map(|s| {
        let tx = p.stream_stdout.then(|| output.clone());
        tokio::spawn(pump(s, tx, 0, p.capture_stdout))
    });
    let err = child.stderr.take().map(|s| tokio::spawn(pump(s, Some(output.clone()), STDERR_TAIL, false)));
    let timeout = tokio::time::sleep(p.timeout);
    tokio::pin!(timeout);
    let mut cancel = cancel.clone();
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
    if !matches!(ended, Ended::Exit { .. }) {
        kill_group(pid);
        let _ = child.kill().await;
    }
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

/// Forwards each line (when `tx` is set); keeps the last `keep` lines and, with `capture`,
/// the whole text (bounded).
async fn pump(
    stream: impl AsyncRead + Unpin,
    tx: Option<mpsc::UnboundedSender<String>>,
    keep: usize,
    capture: bool,
) -> (VecDeque<String>, String) {
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

/// Kills the whole process group the child leads (so `sh -c 'sleep 100'` goes too).
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
