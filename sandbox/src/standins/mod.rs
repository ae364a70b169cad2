//! `helm` and `docker` stand-ins: command-line programs that behave like the real CLIs (argv,
//! output formats, error messages, exit codes) but act on the sandbox — `helm` on a
//! [`crate::kube::FakeCluster`] through its HTTP API, `docker` on a [`swarm::SandboxSwarm`]
//! (a Swarm kept in a JSON file). runbot's deploy and rollback steps run them as child
//! processes, exactly as they run the real ones; `runbot` is multi-call (argv[0] `helm` or
//! `docker`) and this crate has two tiny bins of the same names for its own tests.
//!
//! # Code map
//! - [`helm_main`] (`helm.rs`): dispatch, global flags, `version`, `history`, `status`;
//!   `helm_deploy.rs`: `upgrade [--install]` and `rollback`; `release.rs`: Helm's release
//!   documents and their storage in Secrets ([`encode_release`]); `chart.rs`: chart
//!   directories, values and the sandbox chart convention; `kubeapi.rs`: the small HTTP client
//!   to the API server.
//! - [`docker_main`] (`docker.rs`): dispatch, `version`, `stack deploy`;
//!   `docker_service.rs`: `service inspect|ps|ls|update|rollback`; `docker_progress.rs`: the
//!   convergence display of attached updates; `swarm.rs`: the Swarm's state and how it moves
//!   with time ([`swarm::SandboxSwarm`]); `gotemplate.rs`: Go templates for `--format`.
//! - YAML (charts, values files, kubeconfigs, compose files) is read with `serde_yaml_ng` ([`yaml`]).
//! - Here: flag parsing as cobra/pflag do it, Go durations.
//!
//! # The sandbox chart convention
//! A chart is a directory with `Chart.yaml` (`apiVersion`, `name`, `version`, `appVersion`)
//! and `values.yaml`; its templates are not rendered. The coalesced values (chart values, then
//! `-f` files, then `--set`) say what a release runs: `deployment` (the Deployment's name,
//! default the release name), `image.repository` and `image.tag` (default the chart's
//! `appVersion`) → the image `repository:tag`, `container` (default the Deployment's first
//! container), `replicaCount` (only when the Deployment has to be created, default 1).
//!
//! # The sandbox Swarm
//! `docker` reads the Swarm file named by `RUNBOT_SANDBOX_SWARM`; tests and `runbot demo`
//! create and script it with [`swarm::SandboxSwarm`] (`create`, `deploy_service`,
//! `set_behavior`, `set_timing`, `service`, `running_images`).

pub mod swarm;

mod chart;
mod docker;
mod docker_progress;
mod docker_service;
mod gotemplate;
mod helm;
mod helm_deploy;
mod kubeapi;
mod release;

pub use docker::docker_main;
pub use helm::helm_main;
pub use release::encode_release;

use std::collections::BTreeMap;
use std::time::Duration;

/// One YAML document (a chart's `Chart.yaml` and `values.yaml`, `-f` values files, kubeconfigs,
/// compose files) as JSON. An empty document, or one of comments only, is `null`.
pub(crate) fn yaml(src: &str) -> Result<serde_json::Value, String> {
    if src.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---") {
        return Ok(serde_json::Value::Null);
    }
    serde_yaml_ng::from_str(src).map_err(|e| e.to_string())
}

/// One flag a command accepts.
#[derive(Clone, Copy)]
pub(crate) struct Flag {
    pub long: &'static str,
    pub short: Option<char>,
    /// `false`: a boolean flag (`--wait`, `--wait=false`).
    pub takes_value: bool,
}

pub(crate) const fn flag(long: &'static str, short: Option<char>, takes_value: bool) -> Flag {
    Flag { long, short, takes_value }
}

/// Parsed command line: flags by long name (each occurrence kept, in order) and positionals.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub flags: BTreeMap<String, Vec<String>>,
    pub args: Vec<String>,
}

impl Parsed {
    /// The last value given for `long`.
    pub fn value(&self, long: &str) -> Option<&str> {
        self.flags.get(long).and_then(|v| v.last()).map(String::as_str)
    }
    /// Every value given for `long`, in order.
    pub fn values(&self, long: &str) -> Vec<String> {
        self.flags.get(long).cloned().unwrap_or_default()
    }
    /// A boolean flag: absent → false; `--x` → true; `--x=false` → false.
    pub fn on(&self, long: &str) -> bool {
        self.value(long).is_some_and(|v| v != "false")
    }
}

/// Parses `args` like pflag (interspersed flags, `--x=v`, `--x v`, `-n v`, `-nv`, `--` ends
/// the flags). Errors carry pflag's messages (`unknown flag: --x`, ...).
pub(crate) fn parse_flags(args: &[String], known: &[Flag]) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.args.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let f = known.iter().find(|f| f.long == name).ok_or_else(|| format!("unknown flag: --{name}"))?;
            let v = take_value(f, inline, args, &mut i, &format!("--{name}"))?;
            p.flags.entry(f.long.to_string()).or_default().push(v);
        } else if a.len() > 1 && a.starts_with('-') {
            let mut chars = a[1..].chars();
            while let Some(c) = chars.next() {
                let f = known.iter().find(|f| f.short == Some(c)).ok_or_else(|| format!("unknown shorthand flag: '{c}' in {a}"))?;
                if f.takes_value {
                    let rest: String = chars.collect();
                    let inline = if rest.is_empty() { None } else { Some(rest.trim_start_matches('=').to_string()) };
                    let v = take_value(f, inline, args, &mut i, &format!("-{c}"))?;
                    p.flags.entry(f.long.to_string()).or_default().push(v);
                    break;
                }
                p.flags.entry(f.long.to_string()).or_default().push("true".into());
            }
        } else {
            p.args.push(a.clone());
        }
    }
    Ok(p)
}

fn take_value(f: &Flag, inline: Option<String>, args: &[String], i: &mut usize, shown: &str) -> Result<String, String> {
    if !f.takes_value {
        return match inline.as_deref() {
            None => Ok("true".into()),
            Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok("true".into()),
            Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok("false".into()),
            Some(v) => Err(format!("invalid argument \"{v}\" for \"{shown}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax")),
        };
    }
    if let Some(v) = inline {
        return Ok(v);
    }
    let v = args.get(*i).ok_or_else(|| format!("flag needs an argument: {shown}"))?;
    *i += 1;
    Ok(v.clone())
}

/// Parses a Go duration (`5m0s`, `300s`, `1m30s`, `500ms`, `1h`, `2.5s`).
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration \"{s}\"");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let secs = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[unit_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// A current-thread runtime for a CLI's async work.
pub(crate) fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_like_pflag() {
        let known = [flag("namespace", Some('n'), true), flag("wait", None, false), flag("set", None, true)];
        let p = parse_flags(&s(&["upgrade", "-n", "ns", "r", "--wait", "--set=a=b", "--set", "c=d", "-nother"]), &known).unwrap();
        assert_eq!(p.args, s(&["upgrade", "r"]));
        assert_eq!(p.value("namespace"), Some("other"));
        assert!(p.on("wait"));
        assert_eq!(p.values("set"), s(&["a=b", "c=d"]));
        assert_eq!(parse_flags(&s(&["--nope"]), &known).unwrap_err(), "unknown flag: --nope");
        assert_eq!(parse_flags(&s(&["-n"]), &known).unwrap_err(), "flag needs an argument: -n");
        assert!(!parse_flags(&s(&["--wait=false"]), &known).unwrap().on("wait"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_go_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_go_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("3x").is_err());
    }
}
