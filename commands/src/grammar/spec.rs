//! The command surface as data: one table that the parser, `help`, and the chat platforms'
//! command registrations are all generated from, so they cannot drift apart.

/// What kind of value an argument or flag takes; the parser validates each by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A configured service name (checked against config when the command is resolved).
    Service,
    /// A configured service name or a pod name.
    ServiceOrPod,
    /// A configured database name.
    Database,
    /// A release version such as `v1.2.5`.
    Version,
    /// A version (`v1.2.4`) or a Helm revision number (`7`).
    VersionOrRevision,
    /// An RFC 3339 timestamp with an explicit offset.
    Date,
    /// A backup location `s3://bucket/prefix` or `gs://bucket/prefix`.
    Source,
    /// An environment name such as `prod`.
    Env,
    /// An execution id such as `R-42`.
    ExecutionId,
    /// A positive count (1..=200).
    Limit,
    /// One of `status`, `now`, `prune`.
    BackupAction,
    /// A runbook or command name, for `help`.
    Topic,
    /// A team runbook name from the runbooks file.
    Runbook,
    /// The target of a team runbook: a configured service or database.
    Target,
    /// `key=value` parameter for a team runbook.
    Param,
}

impl ArgKind {
    /// The placeholder shown in usage lines.
    pub fn placeholder(self) -> &'static str {
        match self {
            ArgKind::Service => "service",
            ArgKind::ServiceOrPod => "service|pod",
            ArgKind::Database => "database",
            ArgKind::Version => "version",
            ArgKind::VersionOrRevision => "version|revision",
            ArgKind::Date => "RFC3339",
            ArgKind::Source => "s3://bucket/prefix",
            ArgKind::Env => "env",
            ArgKind::ExecutionId => "execution-id",
            ArgKind::Limit => "N",
            ArgKind::BackupAction => "status|now|prune",
            ArgKind::Topic => "runbook",
            ArgKind::Runbook => "runbook",
            ArgKind::Target => "target",
            ArgKind::Param => "key=value",
        }
    }
}

/// A positional argument.
#[derive(Debug)]
pub struct ArgSpec {
    pub name: &'static str,
    pub kind: ArgKind,
    pub required: bool,
    pub help: &'static str,
}

/// A `--flag`. `kind: None` is a switch that takes no value.
#[derive(Debug)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: Option<ArgKind>,
    pub required: bool,
    /// May be given more than once (collected in order).
    pub repeated: bool,
    pub help: &'static str,
}

/// One `/ops` subcommand.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub summary: &'static str,
    pub args: &'static [ArgSpec],
    pub flags: &'static [FlagSpec],
    /// Changes something (takes a lock, needs approval per policy).
    pub mutating: bool,
}

const fn arg(name: &'static str, kind: ArgKind, help: &'static str) -> ArgSpec {
    ArgSpec { name, kind, required: true, help }
}
const fn opt_arg(name: &'static str, kind: ArgKind, help: &'static str) -> ArgSpec {
    ArgSpec { name, kind, required: false, help }
}
const fn flag(name: &'static str, kind: ArgKind, help: &'static str) -> FlagSpec {
    FlagSpec { name, kind: Some(kind), required: false, repeated: false, help }
}
const fn switch(name: &'static str, help: &'static str) -> FlagSpec {
    FlagSpec { name, kind: None, required: false, repeated: false, help }
}

const ENV: FlagSpec = flag("env", ArgKind::Env, "environment (default: the service's default environment)");
const DRY_RUN: FlagSpec = switch("dry-run", "show every step and the exact action it would take; change nothing");

/// The whole command surface of PRODUCT.md, plus `run` for a team's own runbooks.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "deploy",
        summary: "Deploy a version of a service (CI gate, approval, roll out, verify, smoke test)",
        args: &[arg("service", ArgKind::Service, "a configured service"), arg("version", ArgKind::Version, "the version to deploy, e.g. v1.2.5")],
        flags: &[ENV, DRY_RUN],
        mutating: true,
    },
    CommandSpec {
        name: "rollback",
        summary: "Roll a service back to its previous stable version",
        args: &[arg("service", ArgKind::Service, "a configured service")],
        flags: &[flag("to", ArgKind::VersionOrRevision, "target version or revision (default: previous stable)"), ENV, DRY_RUN],
        mutating: true,
    },
    CommandSpec {
        name: "restore",
        summary: "Emergency point-in-time restore of a database",
        args: &[arg("database", ArgKind::Database, "a configured database")],
        flags: &[
            FlagSpec {
                name: "date",
                kind: Some(ArgKind::Date),
                required: true,
                repeated: false,
                help: "the point in time to restore to, RFC 3339 with offset, or latest (the newest archived point)",
            },
            flag("source", ArgKind::Source, "backup location (default: the database's configured source)"),
            DRY_RUN,
        ],
        mutating: true,
    },
    CommandSpec {
        name: "restart",
        summary: "Diagnose a stuck service and restart its unhealthy pods",
        args: &[arg("target", ArgKind::ServiceOrPod, "a configured service, or one of its pods")],
        flags: &[ENV, DRY_RUN],
        mutating: true,
    },
    CommandSpec {
        name: "backup",
        summary: "Backup status, an on-demand backup, or pruning past retention",
        args: &[arg("action", ArgKind::BackupAction, "status, now or prune"), arg("database", ArgKind::Database, "a configured database")],
        flags: &[],
        mutating: true,
    },
    CommandSpec {
        name: "run",
        summary: "Run one of your team's runbooks from the runbooks file",
        args: &[
            arg("runbook", ArgKind::Runbook, "a runbook defined in the runbooks file"),
            arg("target", ArgKind::Target, "the configured service or database it acts on"),
        ],
        flags: &[
            FlagSpec {
                name: "set",
                kind: Some(ArgKind::Param),
                required: false,
                repeated: true,
                help: "a runbook parameter, key=value (repeatable)",
            },
            ENV,
            DRY_RUN,
        ],
        mutating: true,
    },
    CommandSpec {
        name: "status",
        summary: "Show running executions, or one execution in detail",
        args: &[opt_arg("execution-id", ArgKind::ExecutionId, "an execution id such as R-42")],
        flags: &[],
        mutating: false,
    },
    CommandSpec {
        name: "timeline",
        summary: "A postmortem timeline of an execution from the audit trail",
        args: &[arg("execution-id", ArgKind::ExecutionId, "an execution id such as R-42")],
        flags: &[],
        mutating: false,
    },
    CommandSpec {
        name: "cancel",
        summary: "Cancel an execution that is waiting or running",
        args: &[arg("execution-id", ArgKind::ExecutionId, "an execution id such as R-42")],
        flags: &[],
        mutating: false,
    },
    CommandSpec {
        name: "history",
        summary: "Recent executions, optionally for one service",
        args: &[opt_arg("service", ArgKind::Service, "a configured service")],
        flags: &[flag("limit", ArgKind::Limit, "how many (1-200, default 10)")],
        mutating: false,
    },
    CommandSpec { name: "whoami", summary: "Your identity and the groups you belong to", args: &[], flags: &[], mutating: false },
    CommandSpec {
        name: "help",
        summary: "This help, or the steps of one runbook",
        args: &[opt_arg("runbook", ArgKind::Topic, "a command or runbook name")],
        flags: &[],
        mutating: false,
    },
];

/// Looks a command up by name.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.name == name)
}

impl CommandSpec {
    /// The usage line, e.g. `/ops deploy <service> <version> [--env <env>] [--dry-run]`.
    pub fn usage(&self) -> String {
        let mut s = format!("/ops {}", self.name);
        if self.name == "backup" {
            // `backup` reads better with its action spelled out.
            s.push_str(" status|now|prune <database>");
            return s;
        }
        for a in self.args {
            let p = a.kind.placeholder();
            if a.required {
                s.push_str(&format!(" <{p}>"));
            } else {
                s.push_str(&format!(" [<{p}>]"));
            }
        }
        for f in self.flags {
            let body = match f.kind {
                Some(k) => format!("--{} <{}>", f.name, k.placeholder()),
                None => format!("--{}", f.name),
            };
            let body = if f.repeated { format!("{body}...") } else { body };
            if f.required {
                s.push_str(&format!(" {body}"));
            } else {
                s.push_str(&format!(" [{body}]"));
            }
        }
        s
    }
}
