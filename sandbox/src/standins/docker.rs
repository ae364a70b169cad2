//! The `docker` stand-in (Docker 24 CLI and Engine behaviour) on the sandbox Swarm named by
//! `RUNBOT_SANDBOX_SWARM`: `version`, `stack deploy`, `service inspect|ps|ls|update|rollback`.
//! Output formats are the real ones (indented JSON for `inspect`, `--format` templates with
//! `{{json .}}` one object per line, tabwriter tables, `Running 12 seconds ago`); errors go to
//! stderr with exit 1 (125 for bad flags), as the real CLI does. Without the environment
//! variable (or its file) there is no daemon, and the CLI says so.

use super::docker_progress::wait_converged;
use super::docker_service::{service_inspect, service_ls, service_ps, service_rollback, service_update};
use super::gotemplate;
use super::swarm::{NO_DAEMON, SandboxSwarm};
use super::{Flag, Parsed, flag, parse_flags};
use serde_json::{Value, json};

const VERSION: &str = "24.0.7";
const API: &str = "1.43";

/// Runs `docker` with `args` (without argv[0]); returns the exit code.
pub fn docker_main(args: Vec<String>) -> i32 {
    let mut out = Out;
    match run(&args, &mut out) {
        Ok(()) => 0,
        Err(Fail::Usage(m, cmd)) => {
            out.err(&format!("{m}\nSee 'docker {cmd} --help'."));
            125
        }
        Err(Fail::Error(m)) => {
            out.err(&m);
            1
        }
    }
}

/// Writes straight through, so progress shows while a command waits.
pub(super) struct Out;

impl Out {
    pub fn line(&mut self, s: &str) {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    }
    pub fn text(&mut self, s: &str) {
        use std::io::Write;
        let mut o = std::io::stdout().lock();
        let _ = write!(o, "{s}");
        let _ = o.flush();
    }
    pub fn err(&mut self, s: &str) {
        eprintln!("{s}");
    }
}

pub(super) enum Fail {
    /// A flag or argument error (exit 125), with the command path for the help hint.
    Usage(String, String),
    Error(String),
}

impl From<String> for Fail {
    fn from(m: String) -> Fail {
        Fail::Error(m)
    }
}

pub(super) fn parse(args: &[String], known: &[Flag], cmd: &str) -> Result<Parsed, Fail> {
    parse_flags(args, known).map_err(|m| Fail::Usage(m, cmd.to_string()))
}

/// The daemon address given with `-H`/`--host` in this process, if any.
static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The Swarm this call acts on: `-H sandbox:///path/swarm.json` (the sandbox's daemon address,
/// as runbot passes a swarm driver's `host`), else `RUNBOT_SANDBOX_SWARM`.
pub(super) fn swarm() -> Result<SandboxSwarm, Fail> {
    if let Some(h) = HOST.get() {
        return match h.strip_prefix("sandbox://") {
            Some(p) if !p.is_empty() => Ok(SandboxSwarm::open(p)),
            _ => Err(Fail::Error(format!("Cannot connect to the Docker daemon at {h}. Is the docker daemon running?"))),
        };
    }
    match std::env::var("RUNBOT_SANDBOX_SWARM") {
        Ok(p) if !p.is_empty() => Ok(SandboxSwarm::open(p)),
        _ => Err(Fail::Error(NO_DAEMON.into())),
    }
}

fn run(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let mut i = 0;
    // Global flags before the command: `-H`/`--host` picks the daemon (see [`swarm`]);
    // `--context`, `--log-level`, `--config` are accepted and ignored.
    while i < args.len() && args[i].starts_with('-') {
        if args[i] == "--version" || args[i] == "-v" {
            out.line(&format!("Docker version {VERSION}, build sandbox"));
            return Ok(());
        }
        if let Some(h) = match args[i].as_str() {
            "-H" | "--host" => args.get(i + 1).cloned(),
            a => a.strip_prefix("--host=").map(str::to_string),
        } {
            let _ = HOST.set(h);
            if !args[i].contains('=') {
                i += 2;
                continue;
            }
        }
        let takes = matches!(args[i].as_str(), "-H" | "--host" | "-c" | "--context" | "-l" | "--log-level" | "--config");
        i += if takes { 2 } else { 1 };
    }
    let rest = &args[(i + 1).min(args.len())..];
    match args.get(i).map(String::as_str) {
        Some("version") => version(rest, out),
        Some("stack") => match rest.first().map(String::as_str) {
            Some("deploy" | "up") => stack_deploy(&rest[1..], out),
            _ => Err(Fail::Usage("the sandbox docker stand-in knows `docker stack deploy` only".into(), "stack".into())),
        },
        Some("service") => {
            let sub = &rest[1.min(rest.len())..];
            match rest.first().map(String::as_str) {
                Some("inspect") => service_inspect(sub, out),
                Some("ps") => service_ps(sub, out),
                Some("ls" | "list") => service_ls(sub, out),
                Some("update") => service_update(sub, out),
                Some("rollback") => service_rollback(sub, out),
                _ => Err(Fail::Usage("the sandbox docker stand-in knows `docker service inspect|ps|ls|update|rollback`".into(), "service".into())),
            }
        }
        Some(other) => Err(Fail::Error(format!("docker: '{other}' is not a docker command.\nSee 'docker --help'"))),
        None => Err(Fail::Usage("the sandbox docker stand-in needs a command".into(), "".into())),
    }
}

fn version(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(args, &[flag("format", Some('f'), true)], "version")?;
    let client = json!({"Platform": {"Name": ""}, "Version": VERSION, "ApiVersion": API, "DefaultAPIVersion": API,
        "GitCommit": "sandbox", "GoVersion": "go1.20.10", "Os": "linux", "Arch": "amd64", "Context": "default"});
    let st = swarm().and_then(|s| s.with(|st, _| Ok(st.server_version.clone())).map_err(Fail::Error));
    let server = st.as_ref().ok().map(|v| {
        json!({"Platform": {"Name": "Docker Engine - Community"}, "Version": v, "ApiVersion": API, "MinAPIVersion": "1.12",
            "GitCommit": "sandbox", "GoVersion": "go1.20.10", "Os": "linux", "Arch": "amd64", "KernelVersion": "sandbox"})
    });
    if let Some(f) = p.value("format") {
        st?;
        let data = json!({"Client": client, "Server": server});
        out.line(&gotemplate::render(f, &data).map_err(Fail::Error)?);
        return Ok(());
    }
    out.text(&format!(
        "Client:\n Version:           {VERSION}\n API version:       {API}\n Go version:        go1.20.10\n Git commit:        sandbox\n OS/Arch:           linux/amd64\n Context:           default\n"
    ));
    let v = st?;
    out.text(&format!(
        "\nServer: Docker Engine - Community\n Engine:\n  Version:          {v}\n  API version:      {API} (minimum version 1.12)\n  Go version:       go1.20.10\n  Git commit:       sandbox\n  OS/Arch:          linux/amd64\n  Experimental:     false\n"
    ));
    Ok(())
}

/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `$VAR`, `$$`, as
/// `docker stack deploy` interpolates a compose file from the environment.
fn interpolate(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut it = s.char_indices().peekable();
    while let Some((_, c)) = it.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match it.peek().map(|(_, c)| *c) {
            Some('$') => {
                it.next();
                out.push('$');
            }
            Some('{') => {
                it.next();
                let mut expr = String::new();
                loop {
                    match it.next() {
                        Some((_, '}')) => break,
                        Some((_, c)) => expr.push(c),
                        None => return Err(format!("invalid interpolation format for {s:?}")),
                    }
                }
                let (name, op, arg) = match expr.find([':', '-', '?']) {
                    Some(i) => {
                        let op_len = if expr[i..].starts_with(":-") || expr[i..].starts_with(":?") { 2 } else { 1 };
                        (&expr[..i], &expr[i..i + op_len], &expr[i + op_len..])
                    }
                    None => (expr.as_str(), "", ""),
                };
                let val = std::env::var(name).ok();
                out.push_str(&match (op, val) {
                    ("", v) => v.unwrap_or_default(),
                    (":-", v) => v.filter(|v| !v.is_empty()).unwrap_or_else(|| arg.to_string()),
                    ("-", v) => v.unwrap_or_else(|| arg.to_string()),
                    (":?" | "?", Some(v)) if op == "?" || !v.is_empty() => v,
                    (":?" | "?", _) => {
                        return Err(format!("required variable {name} is missing a value: {arg}"));
                    }
                    _ => return Err(format!("invalid interpolation format for {s:?}")),
                });
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let mut name = String::new();
                while let Some((_, c)) = it.peek().copied() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        name.push(c);
                        it.next();
                    } else {
                        break;
                    }
                }
                out.push_str(&std::env::var(&name).unwrap_or_default());
            }
            _ => out.push('$'),
        }
    }
    Ok(out)
}

fn stack_deploy(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(
        args,
        &[
            flag("compose-file", Some('c'), true),
            flag("prune", None, false),
            flag("with-registry-auth", None, false),
            flag("resolve-image", None, true),
            flag("detach", Some('d'), false),
            flag("quiet", Some('q'), false),
        ],
        "stack deploy",
    )?;
    let [stack] = p.args.as_slice() else {
        return Err(Fail::Usage("\"docker stack deploy\" requires exactly 1 argument.".into(), "stack deploy".into()));
    };
    let files = p.values("compose-file");
    if files.is_empty() {
        return Err(Fail::Error("Please specify only one compose file (with --compose-file).".into()));
    }
    let mut services = serde_json::Map::new();
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("open {f}: {e}"))?;
        let doc = super::yaml(&interpolate(&text)?).map_err(|e| format!("{f}: {e}"))?;
        if let Some(m) = doc.get("services").and_then(Value::as_object) {
            for (k, v) in m {
                let mut merged = services.get(k).cloned().unwrap_or(json!({}));
                super::chart::merge_maps(&mut merged, v);
                services.insert(k.clone(), merged);
            }
        }
    }
    let mut wanted = Vec::new();
    for (name, svc) in &services {
        let image = svc
            .get("image")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty())
            .ok_or_else(|| format!("service {name} has neither an image nor a build context specified: invalid compose project"))?;
        let replicas = match svc.pointer("/deploy/replicas") {
            None | Some(Value::Null) => 1,
            Some(v) => v.as_u64().ok_or_else(|| format!("services.{name}.deploy.replicas must be a integer"))?,
        };
        wanted.push((format!("{stack}_{name}"), image.to_string(), replicas));
    }
    let sw = swarm()?;
    let (lines, changed) = sw.with(|st, now| {
        let mut lines = Vec::new();
        let mut changed = Vec::new();
        if !st.services.values().any(|s| s.stack.as_deref() == Some(stack.as_str())) {
            lines.push(format!("Creating network {stack}_default"));
        }
        if p.on("prune") {
            let gone: Vec<String> = st
                .services
                .values()
                .filter(|s| s.stack.as_deref() == Some(stack.as_str()) && !wanted.iter().any(|(n, _, _)| *n == s.name))
                .map(|s| s.name.clone())
                .collect();
            for g in gone {
                st.services.remove(&g);
                lines.push(format!("Removing service {g}"));
            }
        }
        for (full, image, replicas) in &wanted {
            if let Some(id) = st.services.get(full).map(|s| s.id.clone()) {
                lines.push(format!("Updating service {full} (id: {id})"));
                st.change_service(full, image, *replicas, now, false, false);
            } else {
                lines.push(format!("Creating service {full}"));
                st.create_service(full, Some(stack), image, *replicas, now);
            }
            changed.push(full.clone());
        }
        Ok((lines, changed))
    })?;
    for l in lines {
        out.line(&l);
    }
    // Docker 24 deploys stacks detached; `--detach=false` (Docker 26+) waits for each service.
    if p.flags.contains_key("detach") && !p.on("detach") {
        for name in changed {
            wait_converged(&sw, &name, out, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_interpolation() {
        // Only variables that are certainly unset.
        assert_eq!(interpolate("a:${RUNBOT_TEST_UNSET_X:-v1.2.4} $$HOME").unwrap(), "a:v1.2.4 $HOME");
        assert!(interpolate("${RUNBOT_TEST_UNSET_X:?need it}").is_err());
    }
}
