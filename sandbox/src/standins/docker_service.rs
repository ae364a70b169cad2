//! `docker service inspect|ps|ls|update|rollback` for the stand-in, in the Engine API's
//! shapes (`inspect`'s JSON, `ps`'s task rows with `Running 12 seconds ago`, tabwriter
//! tables) and with the CLI's convergence display for attached updates.

use super::docker::{Fail, Out, parse, swarm};
use super::docker_progress::wait_converged;
use super::gotemplate;
use super::swarm::{Service, State};
use super::{Flag, Parsed, flag};
use serde_json::{Value, json};
/// RFC 3339 with nanoseconds in UTC, as the Engine API writes times.
fn api_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| {
            let s = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            // Go trims trailing zeros of the fraction.
            match s.split_once('.') {
                Some((a, b)) => {
                    let frac = b.trim_end_matches('Z').trim_end_matches('0');
                    if frac.is_empty() { format!("{a}Z") } else { format!("{a}.{frac}Z") }
                }
                None => s,
            }
        })
        .unwrap_or_default()
}

fn spec_json(svc: &Service, spec: &super::swarm::Spec) -> Value {
    let mut container = json!({"Image": spec.image, "Init": false, "StopGracePeriod": 10_000_000_000u64, "DNSConfig": {}, "Isolation": "default"});
    if let Some(stack) = &svc.stack {
        container["Labels"] = json!({"com.docker.stack.namespace": stack});
    }
    let update_config = json!({"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0, "Order": "stop-first"});
    json!({
        "Name": svc.name,
        "Labels": spec.labels,
        "TaskTemplate": {
            "ContainerSpec": container,
            "Resources": {"Limits": {}, "Reservations": {}},
            "RestartPolicy": {"Condition": "any", "Delay": 5_000_000_000u64, "MaxAttempts": 0},
            "Placement": {"Platforms": [{"Architecture": "amd64", "OS": "linux"}]},
            "ForceUpdate": 0,
            "Runtime": "container"
        },
        "Mode": {"Replicated": {"Replicas": spec.replicas}},
        "UpdateConfig": update_config,
        "RollbackConfig": update_config,
        "EndpointSpec": {"Mode": "vip"}
    })
}

/// The service as the Engine API's `GET /services/{id}` returns it.
fn service_json(svc: &Service) -> Value {
    let mut v = json!({
        "ID": svc.id,
        "Version": {"Index": svc.version},
        "CreatedAt": api_time(svc.created_at),
        "UpdatedAt": api_time(svc.updated_at),
        "Spec": spec_json(svc, &svc.spec),
        "Endpoint": {"Spec": {"Mode": "vip"}}
    });
    if let Some(prev) = &svc.previous_spec {
        v["PreviousSpec"] = spec_json(svc, prev);
    }
    if let Some(u) = &svc.update {
        let mut s = json!({"State": u.state, "StartedAt": api_time(u.started_at), "Message": u.message});
        if let Some(c) = u.completed_at {
            s["CompletedAt"] = json!(api_time(c));
        }
        v["UpdateStatus"] = s;
    }
    v
}

fn pretty_json(v: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    let _ = v.serialize(&mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

pub(super) fn service_inspect(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(args, &[flag("format", Some('f'), true), flag("pretty", None, false)], "service inspect")?;
    if p.args.is_empty() {
        return Err(Fail::Usage("\"docker service inspect\" requires at least 1 argument.".into(), "service inspect".into()));
    }
    let sw = swarm()?;
    let (found, missing) = sw.with(|st, _| {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for a in &p.args {
            match st.find(a) {
                Some(s) => found.push(service_json(s)),
                None => missing.push(a.clone()),
            }
        }
        Ok((found, missing))
    })?;
    match p.value("format") {
        Some(f) => {
            for v in &found {
                out.line(&gotemplate::render(f, v).map_err(Fail::Error)?);
            }
        }
        None => out.line(&pretty_json(&Value::Array(found))),
    }
    match missing.first() {
        Some(m) => Err(Fail::Error(format!("Error: no such service: {m}"))),
        None => Ok(()),
    }
}

/// docker/go-units `HumanDuration`, lower-cased as `docker service ps` shows it.
fn human_duration(ms: i64) -> String {
    let secs = ms / 1000;
    let mins = secs / 60;
    let hours = (ms as f64 / 3_600_000.0 + 0.5) as i64;
    if secs < 1 {
        "less than a second".to_string()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if mins == 1 {
        "about a minute".into()
    } else if mins < 60 {
        format!("{mins} minutes")
    } else if hours == 1 {
        "about an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 14 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 60 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 730 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", ms / 3_600_000 / 24 / 365)
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
}

/// text/tabwriter as the docker CLI configures it (min width 10, padding 3).
fn tabwrite(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| (rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0) + 3).max(10)).collect();
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

pub(super) fn service_ps(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(
        args,
        &[
            flag("filter", Some('f'), true),
            flag("format", None, true),
            flag("no-trunc", None, false),
            flag("quiet", Some('q'), false),
            flag("no-resolve", None, false),
        ],
        "service ps",
    )?;
    if p.args.is_empty() {
        return Err(Fail::Usage("\"docker service ps\" requires at least 1 argument.".into(), "service ps".into()));
    }
    let mut desired: Option<String> = None;
    for f in p.values("filter") {
        match f.split_once('=') {
            Some(("desired-state", v)) if matches!(v, "running" | "shutdown" | "accepted") => {
                desired = Some(if v == "accepted" { "running".into() } else { v.to_string() });
            }
            Some(("desired-state", v)) => {
                return Err(Fail::Error(format!("Error response from daemon: invalid filter 'desired-state={v}'")));
            }
            _ => {
                return Err(Fail::Error(format!("Error response from daemon: invalid filter '{f}'")));
            }
        }
    }
    let trunc = !p.on("no-trunc");
    let sw = swarm()?;
    let rows = sw.with(|st: &mut State, now| {
        let d = st.converge_ms;
        let mut rows = Vec::new();
        for a in &p.args {
            let svc = st.find(a).ok_or_else(|| format!("no such service: {a}"))?;
            let mut prev_slot = None;
            for t in &svc.tasks {
                let live = t.live(now, d);
                let desired_state = if live { "running" } else { "shutdown" };
                if desired.as_deref().is_some_and(|w| w != desired_state) {
                    continue;
                }
                let (state, since) = t.state(now, d);
                let mut err = t.error(now, d).unwrap_or_default();
                if trunc && err.chars().count() > 30 {
                    err = format!("{}…", err.chars().take(29).collect::<String>());
                }
                let name = format!("{}.{}", svc.name, t.slot);
                let first_of_slot = prev_slot != Some(t.slot);
                prev_slot = Some(t.slot);
                rows.push((
                    json!({
                        "ID": if trunc { t.id[..12].to_string() } else { t.id.clone() },
                        "Name": name,
                        "Image": t.image,
                        "Node": st.node_name,
                        "DesiredState": capitalize(desired_state),
                        "CurrentState": format!("{} {} ago", capitalize(state), human_duration(now - since)),
                        "Error": if err.is_empty() { String::new() } else { format!("\"{err}\"") },
                        "Ports": ""
                    }),
                    first_of_slot,
                ));
            }
        }
        Ok(rows)
    })?;
    if p.on("quiet") {
        for (r, _) in &rows {
            out.line(r["ID"].as_str().unwrap_or(""));
        }
        return Ok(());
    }
    if let Some(f) = p.value("format").filter(|f| !f.starts_with("table")) {
        for (r, _) in &rows {
            out.line(&gotemplate::render(f, r).map_err(Fail::Error)?);
        }
        return Ok(());
    }
    let mut table = vec![["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"].map(String::from).to_vec()];
    for (r, first) in &rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
        let name = if *first { s("Name") } else { format!(" \\_ {}", s("Name")) };
        table.push(vec![s("ID"), name, s("Image"), s("Node"), s("DesiredState"), s("CurrentState"), s("Error"), s("Ports")]);
    }
    out.text(&tabwrite(&table));
    Ok(())
}

pub(super) fn service_ls(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(args, &[flag("format", None, true), flag("quiet", Some('q'), false), flag("filter", Some('f'), true)], "service ls")?;
    let names: Vec<String> = p.values("filter").iter().filter_map(|f| f.strip_prefix("name=").map(String::from)).collect();
    let sw = swarm()?;
    let rows = sw.with(|st, now| {
        let d = st.converge_ms;
        Ok(st
            .services
            .values()
            .filter(|s| names.is_empty() || names.iter().any(|n| s.name.starts_with(n.as_str())))
            .map(|s| {
                let running = s.tasks.iter().filter(|t| t.live(now, d) && t.state(now, d).0 == "running").count();
                json!({"ID": s.id[..12].to_string(), "Name": s.name, "Mode": "replicated",
                       "Replicas": format!("{running}/{}", s.spec.replicas), "Image": s.spec.image, "Ports": ""})
            })
            .collect::<Vec<_>>())
    })?;
    if p.on("quiet") {
        rows.iter().for_each(|r| out.line(r["ID"].as_str().unwrap_or("")));
        return Ok(());
    }
    if let Some(f) = p.value("format").filter(|f| !f.starts_with("table")) {
        for r in &rows {
            out.line(&gotemplate::render(f, r).map_err(Fail::Error)?);
        }
        return Ok(());
    }
    let mut table = vec![["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"].map(String::from).to_vec()];
    for r in &rows {
        table.push(["ID", "Name", "Mode", "Replicas", "Image", "Ports"].iter().map(|k| r[*k].as_str().unwrap_or("").to_string()).collect());
    }
    out.text(&tabwrite(&table));
    Ok(())
}

const UPDATE_FLAGS: [Flag; 8] = [
    flag("image", None, true),
    flag("replicas", None, true),
    flag("detach", Some('d'), false),
    flag("quiet", Some('q'), false),
    flag("force", None, false),
    flag("rollback", None, false),
    flag("with-registry-auth", None, false),
    flag("no-resolve-image", None, false),
];

pub(super) fn service_update(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(args, &UPDATE_FLAGS, "service update")?;
    let [name] = p.args.as_slice() else {
        return Err(Fail::Usage("\"docker service update\" requires exactly 1 argument.".into(), "service update".into()));
    };
    let replicas = match p.value("replicas") {
        None => None,
        Some(r) => Some(r.parse::<u64>().map_err(|_| {
            Fail::Usage(format!("invalid argument \"{r}\" for \"--replicas\" flag: invalid replicas value {r}"), "service update".into())
        })?),
    };
    if p.on("rollback") {
        return rollback(name, &p, out);
    }
    let sw = swarm()?;
    let svc_name = sw.with(|st, now| {
        let svc_name = st.find_name(name).ok_or_else(|| format!("Error response from daemon: service {name} not found"))?;
        let svc = &st.services[&svc_name];
        let image = p.value("image").map(String::from).unwrap_or_else(|| svc.spec.image.clone());
        let replicas = replicas.unwrap_or(svc.spec.replicas);
        st.change_service(&svc_name, &image, replicas, now, false, p.on("force"));
        Ok(svc_name)
    })?;
    out.line(name);
    if p.on("detach") {
        return Ok(());
    }
    wait_converged(&sw, &svc_name, out, p.on("quiet"))
}

pub(super) fn service_rollback(args: &[String], out: &mut Out) -> Result<(), Fail> {
    let p = parse(args, &[flag("detach", Some('d'), false), flag("quiet", Some('q'), false)], "service rollback")?;
    let [name] = p.args.as_slice() else {
        return Err(Fail::Usage("\"docker service rollback\" requires exactly 1 argument.".into(), "service rollback".into()));
    };
    rollback(name, &p, out)
}

fn rollback(name: &str, p: &Parsed, out: &mut Out) -> Result<(), Fail> {
    let sw = swarm()?;
    let svc_name = sw.with(|st, now| {
        let svc_name = st.find_name(name).ok_or_else(|| format!("Error response from daemon: service {name} not found"))?;
        let Some(prev) = st.services[&svc_name].previous_spec.clone() else {
            return Err(format!(
                "Error response from daemon: rpc error: code = FailedPrecondition desc = service {} does not have a previous spec",
                st.services[&svc_name].id
            ));
        };
        st.change_service(&svc_name, &prev.image, prev.replicas, now, true, false);
        Ok(svc_name)
    })?;
    out.line(name);
    if p.on("detach") {
        return Ok(());
    }
    wait_converged(&sw, &svc_name, out, p.on("quiet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go_units() {
        assert_eq!(human_duration(500), "less than a second");
        assert_eq!(human_duration(1000), "1 second");
        assert_eq!(human_duration(12_000), "12 seconds");
        assert_eq!(human_duration(61_000), "about a minute");
        assert_eq!(human_duration(5 * 60_000), "5 minutes");
        assert_eq!(human_duration(3 * 3_600_000), "3 hours");
    }

    #[test]
    fn tables_pad_like_tabwriter() {
        let t = tabwrite(&[vec!["ID".into(), "NAME".into()], vec!["abc".into(), "x".into()]]);
        assert_eq!(t, "ID        NAME\nabc       x\n");
    }
}
