//! The pure parser: chat text in, a typed [`Command`] or a specific [`ParseError`] out.
//! No I/O, no configuration: names are checked for shape here and against config later.

use super::spec::{self, ArgKind, COMMANDS, CommandSpec};
use super::tokenize::tokenize;
use chrono::{DateTime, FixedOffset};
use std::collections::BTreeMap;
use std::fmt;

/// Longest command text accepted (bytes). Real commands are well under 200.
pub const MAX_INPUT: usize = 1000;

/// A release version as typed, e.g. `v1.2.5`. The service's own pattern is checked on resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub String);

/// `--to` of rollback: a version or a Helm revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackTo {
    Version(Version),
    Revision(u32),
}

/// A backup location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSource {
    pub scheme: String,
    pub bucket: String,
    pub prefix: String,
}

impl fmt::Display for BackupSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{}://{}", self.scheme, self.bucket)
        } else {
            write!(f, "{}://{}/{}", self.scheme, self.bucket, self.prefix)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupAction {
    Status,
    Now,
    Prune,
}

/// An execution id such as `R-42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub u64);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "R-{}", self.0)
    }
}

impl std::str::FromStr for ExecutionId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits =
            s.strip_prefix("R-").or_else(|| s.strip_prefix("r-")).ok_or_else(|| format!("'{s}' is not an execution id; they look like R-42"))?;
        if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("'{s}' is not an execution id; they look like R-42"));
        }
        digits.parse().map(ExecutionId).map_err(|_| format!("'{s}' is not an execution id"))
    }
}

/// What `/ops restore --date` names: an instant, or `latest` — the newest archived point (the
/// end of the archive: every archived WAL replayed, no recovery target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreDate {
    At(DateTime<FixedOffset>),
    Latest,
}

impl std::fmt::Display for RestoreDate {
    /// RFC 3339, or `latest`: the `{date}` runbooks and the restore command get.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreDate::At(d) => f.write_str(&d.to_rfc3339()),
            RestoreDate::Latest => f.write_str("latest"),
        }
    }
}

/// A parsed, type-checked command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Deploy { service: String, version: Version, env: Option<String>, dry_run: bool },
    Rollback { service: String, to: Option<RollbackTo>, env: Option<String>, dry_run: bool },
    Restore { database: String, date: RestoreDate, source: Option<BackupSource>, dry_run: bool },
    Restart { target: String, env: Option<String>, dry_run: bool },
    Backup { action: BackupAction, database: String },
    Run { runbook: String, target: String, params: BTreeMap<String, String>, env: Option<String>, dry_run: bool },
    Status { id: Option<ExecutionId> },
    Cancel { id: ExecutionId },
    Timeline { id: ExecutionId },
    History { service: Option<String>, limit: u32 },
    Whoami,
    Help { topic: Option<String> },
}

impl Command {
    /// The subcommand name, as in the grammar table.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Deploy { .. } => "deploy",
            Command::Rollback { .. } => "rollback",
            Command::Restore { .. } => "restore",
            Command::Restart { .. } => "restart",
            Command::Backup { .. } => "backup",
            Command::Run { .. } => "run",
            Command::Status { .. } => "status",
            Command::Cancel { .. } => "cancel",
            Command::Timeline { .. } => "timeline",
            Command::History { .. } => "history",
            Command::Whoami => "whoami",
            Command::Help { .. } => "help",
        }
    }
}

/// Why a command was refused, with the usage line to show next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub message: String,
    pub usage: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\nUsage: {}", self.message, self.usage)
    }
}

impl std::error::Error for ParseError {}

fn general_usage() -> String {
    let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    format!("/ops <{}> ... (try /ops help)", names.join("|"))
}

/// A value that passed its type check.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Version(Version),
    Rollback(RollbackTo),
    Date(RestoreDate),
    Source(BackupSource),
    Id(ExecutionId),
    Count(u32),
    Action(BackupAction),
    Param(String, String),
}

/// Parses one line of chat text (with or without the leading `/ops`).
pub fn parse(input: &str) -> Result<Command, ParseError> {
    if input.len() > MAX_INPUT {
        return Err(ParseError {
            message: format!("That command is {} characters long; the limit is {MAX_INPUT}.", input.chars().count()),
            usage: general_usage(),
        });
    }
    if let Some((pos, c)) = input.chars().enumerate().find(|(_, c)| is_forbidden(*c)) {
        return Err(ParseError {
            message: format!("The command contains a control character (U+{:04X}) at position {}; type it as plain text.", c as u32, pos + 1),
            usage: general_usage(),
        });
    }
    let mut tokens = tokenize(input).map_err(|message| ParseError { message, usage: general_usage() })?;
    if tokens.first().is_some_and(|t| t == "/ops" || t == "ops") {
        tokens.remove(0);
    }
    let Some(name) = tokens.first().cloned() else {
        return Ok(Command::Help { topic: None });
    };
    let Some(spec) = spec::find(&name.to_ascii_lowercase()) else {
        return Err(ParseError { message: format!("Unknown command '{}'.", shorten(&name)), usage: general_usage() });
    };
    let (args, flags) = bind(spec, &tokens[1..]).map_err(|message| ParseError { message, usage: spec.usage() })?;
    build(spec, args, flags).map_err(|message| ParseError { message, usage: spec.usage() })
}

/// Control characters and the bidirectional overrides used to disguise text.
fn is_forbidden(c: char) -> bool {
    (c.is_control() && c != ' ') || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200B}' | '\u{FEFF}')
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 { format!("{}…", s.chars().take(40).collect::<String>()) } else { s.to_string() }
}

type Flags = BTreeMap<&'static str, Vec<Value>>;

/// Binds tokens to the spec's positionals and flags, type-checking each value.
fn bind(spec: &'static CommandSpec, tokens: &[String]) -> Result<(Vec<Value>, Flags), String> {
    let mut args = Vec::new();
    let mut flags: Flags = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        let tok = &tokens[i];
        if let Some(body) = tok.strip_prefix("--") {
            let (fname, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(fspec) = spec.flags.iter().find(|f| f.name == fname) else {
                let known: Vec<String> = spec.flags.iter().map(|f| format!("--{}", f.name)).collect();
                let hint =
                    if known.is_empty() { format!("{} takes no flags", spec.name) } else { format!("{} accepts {}", spec.name, known.join(", ")) };
                return Err(format!("Unknown flag '--{}'; {hint}.", shorten(fname)));
            };
            if flags.contains_key(fspec.name) && !fspec.repeated {
                return Err(format!("--{} is given more than once.", fspec.name));
            }
            let value = match fspec.kind {
                None => {
                    if inline.is_some() {
                        return Err(format!("--{} is a switch and takes no value.", fspec.name));
                    }
                    Value::Text(String::new())
                }
                Some(kind) => {
                    let raw = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            match tokens.get(i) {
                                Some(v) if !v.starts_with("--") => v.clone(),
                                _ => {
                                    return Err(format!("--{} needs a value: <{}>.", fspec.name, kind.placeholder()));
                                }
                            }
                        }
                    };
                    check(kind, &raw).map_err(|e| format!("--{}: {e}", fspec.name))?
                }
            };
            flags.entry(fspec.name).or_default().push(value);
        } else {
            let Some(aspec) = spec.args.get(args.len()) else {
                return Err(format!("Unexpected extra argument '{}': {} takes {}.", shorten(tok), spec.name, count_args(spec)));
            };
            let v = check(aspec.kind, tok).map_err(|e| format!("<{}>: {e}", aspec.name))?;
            args.push(v);
        }
        i += 1;
    }
    if let Some(missing) = spec.args.iter().skip(args.len()).find(|a| a.required) {
        return Err(format!("Missing <{}> ({}).", missing.name, missing.help));
    }
    if let Some(missing) = spec.flags.iter().find(|f| f.required && !flags.contains_key(f.name)) {
        return Err(format!("Missing --{} ({}).", missing.name, missing.help));
    }
    Ok((args, flags))
}

fn count_args(spec: &CommandSpec) -> String {
    let req = spec.args.iter().filter(|a| a.required).count();
    let all = spec.args.len();
    match (req, all) {
        (0, 0) => "no arguments".into(),
        (r, a) if r == a => format!("{r} argument{}", if r == 1 { "" } else { "s" }),
        (r, a) => format!("{r} to {a} arguments"),
    }
}

/// Checks one raw value against its kind.
fn check(kind: ArgKind, raw: &str) -> Result<Value, String> {
    match kind {
        ArgKind::Service | ArgKind::Database | ArgKind::Env | ArgKind::Runbook | ArgKind::Target | ArgKind::Topic => name(raw, 63).map(Value::Text),
        ArgKind::ServiceOrPod => name(raw, 253).map(Value::Text),
        ArgKind::Version => version(raw).map(Value::Version),
        ArgKind::VersionOrRevision => {
            if raw.bytes().all(|b| b.is_ascii_digit()) {
                raw.parse::<u32>()
                    .ok()
                    .filter(|r| *r > 0)
                    .map(|r| Value::Rollback(RollbackTo::Revision(r)))
                    .ok_or_else(|| format!("'{}' is not a revision number (1 or more).", shorten(raw)))
            } else {
                version(raw).map(|v| Value::Rollback(RollbackTo::Version(v)))
            }
        }
        ArgKind::Date if raw == "latest" => Ok(Value::Date(RestoreDate::Latest)),
        ArgKind::Date => DateTime::parse_from_rfc3339(raw)
            .map(|d| Value::Date(RestoreDate::At(d)))
            .map_err(|e| format!("'{}' is not an RFC 3339 date ({e}); write it like 2023-10-27T10:00:00Z, or latest.", shorten(raw))),
        ArgKind::Source => source(raw).map(Value::Source),
        ArgKind::ExecutionId => raw.parse().map(Value::Id),
        ArgKind::Limit => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .map(Value::Count)
            .ok_or_else(|| format!("'{}' is not a number from 1 to 200.", shorten(raw))),
        ArgKind::BackupAction => match raw {
            "status" => Ok(Value::Action(BackupAction::Status)),
            "now" => Ok(Value::Action(BackupAction::Now)),
            "prune" => Ok(Value::Action(BackupAction::Prune)),
            _ => Err(format!("'{}' is not a backup action; use status, now or prune.", shorten(raw))),
        },
        ArgKind::Param => {
            let (k, v) = raw.split_once('=').ok_or_else(|| format!("'{}' is not key=value.", shorten(raw)))?;
            let key_ok = !k.is_empty()
                && k.len() <= 63
                && k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !key_ok {
                return Err(format!("'{}' is not a parameter name (a-z, 0-9, _).", shorten(k)));
            }
            if v.is_empty() {
                return Err(format!("parameter '{k}' has an empty value."));
            }
            Ok(Value::Param(k.to_string(), v.to_string()))
        }
    }
}

/// A DNS-label-like name: lowercase letters, digits, `-`, `.`, `_`; starts with a letter or digit.
fn name(raw: &str, max: usize) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= max
        && raw.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(format!("'{}' is not a valid name (lowercase letters, digits and '-', at most {max} characters).", shorten(raw)))
    }
}

/// `v1.2.5`, `1.2.5`, `v2.0.0-rc.1`, `v1.2.5+build.7`.
fn version(raw: &str) -> Result<Version, String> {
    let bad = || format!("'{}' is not a version; versions look like v1.2.5 (optionally -rc.1).", shorten(raw));
    if raw.len() > 128 {
        return Err(bad());
    }
    let body = raw.strip_prefix('v').unwrap_or(raw);
    let (core, rest) = match body.find(['-', '+']) {
        Some(i) => (&body[..i], &body[i + 1..]),
        None => (body, ""),
    };
    let parts: Vec<&str> = core.split('.').collect();
    let core_ok = parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    let rest_ok =
        rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')) && (body.len() == core.len() || !rest.is_empty());
    if core_ok && rest_ok { Ok(Version(raw.to_string())) } else { Err(bad()) }
}

fn source(raw: &str) -> Result<BackupSource, String> {
    let bad = |why: &str| format!("'{}' is not a backup source ({why}); use s3://bucket/prefix.", shorten(raw));
    let (scheme, rest) = raw.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme != "s3" && scheme != "gs" {
        return Err(bad("scheme must be s3 or gs"));
    }
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !bucket_ok {
        return Err(bad("bucket names are 3-63 lowercase letters, digits, '-' or '.'"));
    }
    if prefix.split('/').any(|seg| seg == "..") {
        return Err(bad("'..' is not allowed in the prefix"));
    }
    Ok(BackupSource { scheme: scheme.to_string(), bucket: bucket.to_string(), prefix: prefix.trim_end_matches('/').to_string() })
}

/// Turns bound values into the typed command.
fn build(spec: &CommandSpec, args: Vec<Value>, mut flags: Flags) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut text = || match args.next() {
        Some(Value::Text(s)) => Some(s),
        _ => None,
    };
    let env = match flags.remove("env").and_then(|v| v.into_iter().next()) {
        Some(Value::Text(s)) => Some(s),
        _ => None,
    };
    let dry_run = flags.contains_key("dry-run");
    let one = |flags: &mut Flags, name: &str| flags.remove(name).and_then(|v| v.into_iter().next());
    let cmd = match spec.name {
        "deploy" => {
            let service = text().unwrap_or_default();
            let version = match args.next() {
                Some(Value::Version(v)) => v,
                _ => return Err("Missing <version>.".into()),
            };
            Command::Deploy { service, version, env, dry_run }
        }
        "rollback" => {
            let service = text().unwrap_or_default();
            let to = match one(&mut flags, "to") {
                Some(Value::Rollback(r)) => Some(r),
                _ => None,
            };
            Command::Rollback { service, to, env, dry_run }
        }
        "restore" => {
            let database = text().unwrap_or_default();
            let Some(Value::Date(date)) = one(&mut flags, "date") else {
                return Err("Missing --date.".into());
            };
            let source = match one(&mut flags, "source") {
                Some(Value::Source(s)) => Some(s),
                _ => None,
            };
            Command::Restore { database, date, source, dry_run }
        }
        "restart" => Command::Restart { target: text().unwrap_or_default(), env, dry_run },
        "backup" => {
            let action = match args.next() {
                Some(Value::Action(a)) => a,
                _ => return Err("Missing the backup action.".into()),
            };
            let database = match args.next() {
                Some(Value::Text(s)) => s,
                _ => return Err("Missing <database>.".into()),
            };
            Command::Backup { action, database }
        }
        "run" => {
            let runbook = text().unwrap_or_default();
            let target = text().unwrap_or_default();
            let mut params = BTreeMap::new();
            for v in flags.remove("set").unwrap_or_default() {
                if let Value::Param(k, val) = v
                    && params.insert(k.clone(), val).is_some()
                {
                    return Err(format!("parameter '{k}' is set more than once."));
                }
            }
            Command::Run { runbook, target, params, env, dry_run }
        }
        "status" => Command::Status {
            id: match args.next() {
                Some(Value::Id(id)) => Some(id),
                _ => None,
            },
        },
        "cancel" => match args.next() {
            Some(Value::Id(id)) => Command::Cancel { id },
            _ => return Err("Missing <execution-id>.".into()),
        },
        "timeline" => match args.next() {
            Some(Value::Id(id)) => Command::Timeline { id },
            _ => return Err("Missing <execution-id>.".into()),
        },
        "history" => Command::History {
            service: text(),
            limit: match one(&mut flags, "limit") {
                Some(Value::Count(n)) => n,
                _ => 10,
            },
        },
        "whoami" => Command::Whoami,
        "help" => Command::Help { topic: text() },
        other => return Err(format!("'{other}' has no handler.")),
    };
    Ok(cmd)
}
