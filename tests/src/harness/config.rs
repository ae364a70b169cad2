//! The test world's configuration and runbooks, written like a team would write them.

/// The config file. `{interval}` and `{instance}` are filled in by the harness; `{extra}` is
/// where a test appends sections (e.g. `[limits]`).
pub const CONFIG: &str = r#"
[engine]
instance = "{instance}"
runbooks = "runbooks.toml"
update_interval_ms = {interval}
lease_secs = 30

[groups]
sre = ["console:alice", "console:bob", "console:carol"]
dba = ["console:dana", "console:erin", "console:frank"]
dev = ["console:dave"]

# bob also answers as console:bob2: one person, one vote.
[people]
bob = ["console:bob", "console:bob2"]

[[approvals]]
approvers = ["sre"]
required = 1
expiry = "30m"

[[approvals]]
runbook = "double"
approvers = ["sre"]
required = 2
expiry = "30m"

[environments.prod]
[environments.staging]

[services.promotions]
aliases = ["promotions-api"]
[services.promotions.environments.prod]
# Where the restart runbook acts (a `[clusters.NAME]` comes from tests that start the sandbox).
namespace = "promotions-ns"
selector = "app=promotions-api"
deployment = "promotions-api"
[services.promotions.environments.staging]

[services.billing]
[services.billing.environments.prod]

[databases.promotions-db]
env = "prod"
# What the restore runbook stops and restarts (in tests that start the sandbox cluster).
writers = ["promotions-ns/promotions-api", "promotions-ns/promotions-worker"]
backup_cronjob = "promotions-ns/promotions-db-backup"

{extra}
"#;

/// The runbooks file. `probe` is a test-only step kind (see [`super::probe`]).
pub const RUNBOOKS: &str = r#"
# A read-only check, an approval, then a real process.
[runbooks.hello]
summary = "Says hello to the target after a read-only check"
target = "service"

[[runbooks.hello.steps]]
name = "check"
kind = "probe"
idempotent = true
counter = "hello-check"

[[runbooks.hello.steps]]
name = "approve"
kind = "approval"

[[runbooks.hello.steps]]
name = "greet"
kind = "command"
argv = ["echo", "hello {target}"]
timeout = "30s"

# Two approvals from sre (see [[approvals]]), then one change.
[runbooks.double]
summary = "A change that needs two approvers"
target = "service"

[[runbooks.double.steps]]
name = "approve"
kind = "approval"

[[runbooks.double.steps]]
name = "apply"
kind = "probe"
counter = "double-apply"
note = "v1"

# A long step that only stops when cancelled.
[runbooks.slow]
summary = "Drains traffic until told to stop"
target = "service"

[[runbooks.slow.steps]]
name = "approve"
kind = "approval"

[[runbooks.slow.steps]]
name = "prepare"
kind = "probe"
counter = "slow-prepare"

[[runbooks.slow.steps]]
name = "drain"
kind = "probe"
counter = "slow-drain"
outcome = "block"

[[runbooks.slow.steps]]
name = "after"
kind = "probe"
counter = "slow-after"

# A real long process.
[runbooks.sleepy]
summary = "Sleeps for half a minute"
target = "service"

[[runbooks.sleepy.steps]]
name = "approve"
kind = "approval"

[[runbooks.sleepy.steps]]
name = "nap"
kind = "command"
argv = ["sleep", "30"]
timeout = "1m"

# A safe-to-repeat wait that hangs the first time (the process "dies" during it).
[runbooks.settle]
summary = "Waits for the target to settle"
target = "service"

[[runbooks.settle.steps]]
name = "approve"
kind = "approval"

[[runbooks.settle.steps]]
name = "wait-ready"
kind = "probe"
idempotent = true
counter = "settle-wait"
hang_runs = 1

[[runbooks.settle.steps]]
name = "done"
kind = "probe"
counter = "settle-done"

# A safe-to-repeat minute-long wait, then a change that must not run twice.
[runbooks.handover]
summary = "Waits a minute, then applies a change"
target = "service"

[[runbooks.handover.steps]]
name = "approve"
kind = "approval"

[[runbooks.handover.steps]]
name = "wait"
kind = "probe"
idempotent = true
counter = "handover-wait"
sleep_ms = 60000

[[runbooks.handover.steps]]
name = "apply"
kind = "probe"
counter = "handover-apply"
sleep_ms = 40000

# Long output: 400 lines.
[runbooks.count]
summary = "Counts to 400"
target = "service"

[[runbooks.count.steps]]
name = "approve"
kind = "approval"

[[runbooks.count.steps]]
name = "count"
kind = "command"
argv = ["seq", "1", "400"]
timeout = "30s"

# A change that is not safe to repeat, hanging the first time.
[runbooks.apply]
summary = "Applies a change that must not run twice"
target = "service"

[[runbooks.apply.steps]]
name = "approve"
kind = "approval"

[[runbooks.apply.steps]]
name = "apply"
kind = "probe"
idempotent = false
counter = "apply-apply"
hang_runs = 1

[[runbooks.apply.steps]]
name = "after"
kind = "probe"
counter = "apply-after"
"#;

/// A runbook of an approval then `n` quick probe steps (counter `many`), each `sleep_ms` long.
pub fn many_steps(n: usize, sleep_ms: u64) -> String {
    let mut s = String::from(
        "\n[runbooks.many]\nsummary = \"Many quick steps\"\ntarget = \"service\"\n\n\
         [[runbooks.many.steps]]\nname = \"approve\"\nkind = \"approval\"\n",
    );
    for i in 1..=n {
        s.push_str(&format!("\n[[runbooks.many.steps]]\nname = \"step-{i}\"\nkind = \"probe\"\ncounter = \"many\"\nsleep_ms = {sleep_ms}\n"));
    }
    s
}
