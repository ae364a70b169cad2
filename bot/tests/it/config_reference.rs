//! The configuration reference cannot drift from the code:
//!
//! - every section and key of the configuration types (`commands/src/config/types.rs`, read as
//!   text: each `pub struct …` and its `pub name: Type` fields, starting from `Config`) has its
//!   heading and table row in docs/configuration.md, with its default (`#[serde(default =
//!   "f")]` → the literal `f` returns; a plain `#[serde(default)]` bool → `false`; no default →
//!   "required"), and the page documents no section or key the types do not have;
//! - the runbooks and config of docs/adding-a-runbook.md (its blocks marked `<!-- file: … -->`)
//!   pass `runbot check-config`, and the check-config output it shows is what runbot prints;
//! - every shipped step kind is described there, and listed in the README (which lists no
//!   kind that is not shipped); the README lists every command of the grammar's table;
//! - the config and runbooks the Helm chart ships (deploy/helm/runbot/values.yaml) pass
//!   `runbot check-config`.

use crate::common::BIN;
use runbot_commands::steps::StepKinds;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[derive(Debug, Clone, PartialEq)]
enum DefaultIs {
    /// `#[serde(default = "f")]`: the literal `f` returns.
    Fn(String),
    /// `#[serde(default)]`.
    Plain,
    /// No default: the key is required.
    Required,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    default: DefaultIs,
}

/// The structs of types.rs with their fields, and the default functions' literals.
fn parse_types(text: &str) -> BTreeMap<String, Vec<Field>> {
    let literal = |f: &str| -> String {
        let start = format!("fn {f}() -> ");
        let body = text.split_once(&start).unwrap_or_else(|| panic!("types.rs: no fn {f}")).1;
        let body = body.split_once('{').expect("fn body").1.split_once("\n}").expect("fn end").0;
        match body.split('"').nth(1) {
            Some(s) => s.to_string(),
            None => body.trim().to_string(),
        }
    };
    let mut structs = BTreeMap::new();
    let mut current: Option<(String, Vec<Field>)> = None;
    let mut attrs: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some((name.trim().to_string(), Vec::new()));
                attrs.clear();
            }
            continue;
        }
        let Some((_, fields)) = current.as_mut() else { continue };
        if t == "}" {
            let (name, fields) = current.take().expect("in a struct");
            structs.insert(name, fields);
            continue;
        }
        if t.starts_with("#[serde(") {
            attrs.push(t.to_string());
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub ").and_then(|r| r.strip_suffix(',')) {
            let (name, ty) = rest.split_once(':').expect("pub name: Type");
            let default = match attrs.iter().find_map(|a| a.split_once("default = \"")) {
                Some((_, f)) => DefaultIs::Fn(literal(f.split('"').next().unwrap_or_default())),
                None if attrs.iter().any(|a| a.contains("default")) => DefaultIs::Plain,
                None => DefaultIs::Required,
            };
            fields.push(Field { name: name.trim().to_string(), ty: ty.trim().to_string(), default });
            attrs.clear();
        }
    }
    structs
}

/// A section of the file: its path with `*` for names you choose (`services.*.environments.*`),
/// whether it is an array of tables (`[[approvals]]`), and its struct (None: a free map).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Section {
    path: String,
    array: bool,
    of: Option<String>,
}

impl Section {
    fn header(&self) -> String {
        if self.array { format!("[[{}]]", self.path) } else { format!("[{}]", self.path) }
    }
}

/// `Option<X>` / `Vec<X>` / `BTreeMap<String, X>` → (array, map, X).
fn shape(ty: &str) -> (bool, bool, &str) {
    if let Some(x) = ty.strip_prefix("Option<").and_then(|t| t.strip_suffix('>')) {
        return (false, false, x);
    }
    if let Some(x) = ty.strip_prefix("Vec<").and_then(|t| t.strip_suffix('>')) {
        return (true, false, x);
    }
    if let Some(x) = ty.strip_prefix("BTreeMap<String,").and_then(|t| t.strip_suffix('>')) {
        return (false, true, x.trim());
    }
    (false, false, ty)
}

fn sections(structs: &BTreeMap<String, Vec<Field>>, of: &str, path: &str, out: &mut Vec<Section>) {
    for f in &structs[of] {
        let (array, map, inner) = shape(&f.ty);
        let child = if path.is_empty() { f.name.clone() } else { format!("{path}.{}", f.name) };
        if structs.contains_key(inner) {
            let child = if map { format!("{child}.*") } else { child };
            out.push(Section { path: child.clone(), array, of: Some(inner.to_string()) });
            sections(structs, inner, &child, out);
        } else if path.is_empty() {
            // A top-level table of names you choose (`[secrets]`, `[groups]`, `[people]`).
            out.push(Section { path: child, array: false, of: None });
        }
    }
}

/// docs/configuration.md: for each section heading, the rows of its key table (key → default
/// cell).
fn documented(doc: &str) -> BTreeMap<(String, bool), BTreeMap<String, String>> {
    let mut out: BTreeMap<(String, bool), BTreeMap<String, String>> = BTreeMap::new();
    let mut current: Option<(String, bool)> = None;
    for line in doc.lines() {
        if line.starts_with('#') {
            current = line.split('`').nth(1).filter(|h| h.starts_with('[')).map(|h| {
                let array = h.starts_with("[[");
                let inner = h.trim_matches(|c| c == '[' || c == ']');
                let path: Vec<&str> =
                    inner.split('.').map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') { "*" } else { s }).collect();
                (path.join("."), array)
            });
            if let Some(key) = &current {
                assert!(out.insert(key.clone(), BTreeMap::new()).is_none(), "docs/configuration.md documents {key:?} twice");
            }
            continue;
        }
        let (Some(key), Some(row)) = (&current, line.strip_prefix("| `")) else { continue };
        let name = row.split('`').next().unwrap_or_default().to_string();
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let default = cells.get(3).copied().unwrap_or_default().to_string();
        out.get_mut(key).expect("section").insert(name, default);
    }
    out
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let structs = parse_types(&read("commands/src/config/types.rs"));
    assert!(structs.contains_key("Config") && structs.len() > 10, "types.rs was read: {:?}", structs.keys());
    let mut derived = Vec::new();
    sections(&structs, "Config", "", &mut derived);
    let doc = documented(&read("docs/configuration.md"));
    let mut problems = Vec::new();
    for s in &derived {
        let Some(rows) = doc.get(&(s.path.clone(), s.array)) else {
            problems.push(format!("{}: no section heading", s.header()));
            continue;
        };
        let Some(of) = &s.of else { continue };
        for f in &structs[of] {
            let Some(cell) = rows.get(&f.name) else {
                problems.push(format!("{}: `{}` is not documented", s.header(), f.name));
                continue;
            };
            let want = match &f.default {
                DefaultIs::Fn(lit) => Some(lit.clone()),
                DefaultIs::Plain if f.ty == "bool" => Some("false".into()),
                DefaultIs::Plain => None,
                DefaultIs::Required => Some("required".into()),
            };
            if let Some(w) = want.filter(|w| !cell.contains(w)) {
                problems.push(format!("{}: `{}` defaults to {w} (types.rs), the page says {cell:?}", s.header(), f.name));
            }
        }
        for key in rows.keys() {
            if !structs[of].iter().any(|f| &f.name == key) {
                problems.push(format!("{}: documents `{key}`, which runbot does not have", s.header()));
            }
        }
    }
    let known: BTreeSet<(String, bool)> = derived.iter().map(|s| (s.path.clone(), s.array)).collect();
    for (path, array) in doc.keys() {
        if !known.contains(&(path.clone(), *array)) {
            problems.push(format!("docs/configuration.md documents section {path} (array: {array}), which runbot does not have"));
        }
    }
    assert!(problems.is_empty(), "docs/configuration.md is out of date:\n{}", problems.join("\n"));
}

#[test]
fn the_reference_check_notices_drift() {
    // The same checks on a made-up struct, so a broken parser cannot pass silently.
    let types = "pub struct Config {\n    #[serde(default)]\n    pub server: ServerConfig,\n}\n\
                 pub struct ServerConfig {\n    #[serde(default = \"default_listen\")]\n    pub listen: String,\n    pub extra: u32,\n    #[serde(default)]\n    pub flag: bool,\n}\n\
                 fn default_listen() -> String {\n    \"127.0.0.1:8080\".into()\n}\n";
    let structs = parse_types(types);
    let fields = &structs["ServerConfig"];
    assert_eq!(
        fields.iter().map(|f| (f.name.as_str(), f.default.clone())).collect::<Vec<_>>(),
        [("listen", DefaultIs::Fn("127.0.0.1:8080".into())), ("extra", DefaultIs::Required), ("flag", DefaultIs::Plain),]
    );
    let mut derived = Vec::new();
    sections(&structs, "Config", "", &mut derived);
    assert_eq!(derived, [Section { path: "server".into(), array: false, of: Some("ServerConfig".into()) }]);
    let doc = documented(
        "## `[server]`\n\n| key | type | default | meaning |\n|---|---|---|---|\n| `listen` | address | `\"127.0.0.1:8080\"` | x |\n\n## `[services.NAME.environments.ENV]`\n",
    );
    assert_eq!(doc[&("server".to_string(), false)]["listen"], "`\"127.0.0.1:8080\"`");
    assert!(doc.contains_key(&("services.*.environments.*".to_string(), false)));
}

/// `runbot check-config DIR/runbot.toml`, with a dummy value for every `env:NAME` it names.
fn check_config(dir: &Path) -> (bool, String) {
    let config = dir.join("runbot.toml");
    let text = std::fs::read_to_string(&config).expect("runbot.toml");
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg(&config).env("RUNBOT_LOG", "warn");
    for part in text.split("\"env:").skip(1) {
        let var = part.split('"').next().unwrap_or_default();
        cmd.env(var, format!("dummy-value-of-{var}"));
    }
    let out = cmd.output().expect("run runbot check-config");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Fenced blocks after a `<!-- … -->` marker line: (marker, block text).
fn marked_blocks(doc: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim();
        if let Some(marker) = t.strip_prefix("<!--").and_then(|m| m.strip_suffix("-->")) {
            let fence = lines.get(i + 1).copied().unwrap_or_default();
            assert!(fence.trim().starts_with("```"), "a marker is followed by a fenced block: {marker}");
            let indent = fence.len() - fence.trim_start().len();
            let mut body = Vec::new();
            i += 2;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push(lines[i].get(indent..).unwrap_or_else(|| lines[i].trim_start()));
                i += 1;
            }
            out.push((marker.trim().to_string(), body.join("\n") + "\n"));
        }
        i += 1;
    }
    out
}

/// `ok (6 runbooks,` → `ok (N runbooks,`.
fn any_runbook_count(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once(": ok (").and_then(|(head, rest)| Some((head, rest.split_once(" runbooks, ")?.1))) {
            Some((head, rest)) => format!("{head}: ok (N runbooks, {rest}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_runbook_guide_passes_check_config_as_shown() {
    let doc = read("docs/adding-a-runbook.md");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut expect: BTreeMap<String, (bool, String)> = BTreeMap::new();
    for (marker, body) in marked_blocks(&doc) {
        if let Some(path) = marker.strip_prefix("file: ") {
            files.entry(path.to_string()).or_default().push_str(&format!("{body}\n"));
        } else if let Some(rest) = marker.strip_prefix("check-config ") {
            let (dir, outcome) = rest.split_once(' ').expect("check-config DIR ok|fails");
            let dir = if dir == "." { String::new() } else { dir.to_string() };
            expect.insert(dir, (outcome == "ok", body));
        } else {
            panic!("unknown marker {marker}");
        }
    }
    assert!(files.contains_key("runbot.toml") && files.contains_key("runbooks.toml"), "{:?}", files.keys());
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for (path, text) in &files {
        let full = tmp.path().join(path);
        std::fs::create_dir_all(full.parent().expect("dir")).expect("mkdir");
        std::fs::write(&full, text).expect("write");
        dirs.insert(Path::new(path).parent().and_then(|p| p.to_str()).unwrap_or_default().to_string());
    }
    assert_eq!(dirs, expect.keys().cloned().collect(), "every set of files has its check-config outcome in the page");
    for dir in dirs {
        let at = tmp.path().join(&dir);
        if !at.join("runbot.toml").exists() {
            std::fs::write(at.join("runbot.toml"), "[engine]\nrunbooks = \"runbooks.toml\"\n").expect("write");
        }
        let (ok, output) = check_config(&at);
        let (want_ok, shown) = &expect[&dir];
        assert_eq!(ok, *want_ok, "check-config of the page's {dir:?} files:\n{output}");
        // The number of runbooks includes the built-in ones, which grow: it is not compared.
        let output = any_runbook_count(&output);
        for line in shown.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let line = any_runbook_count(line);
            assert!(output.contains(&line), "the page shows {line:?}; runbot printed:\n{output}");
        }
    }
}

/// The lines of `doc` from the heading `heading` to the next heading of its level.
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.split(' ').next().unwrap_or("##");
    doc.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !(l.starts_with(level) && l.as_bytes().get(level.len()) == Some(&b' ')))
        .collect()
}

/// Every `backticked` word of `lines`.
fn backticked<'a>(lines: &[&'a str]) -> BTreeSet<&'a str> {
    lines.iter().flat_map(|l| l.split('`').skip(1).step_by(2)).collect()
}

#[test]
fn every_shipped_step_kind_is_described() {
    let shipped: BTreeSet<&str> = StepKinds::shipped().names().into_iter().collect();
    let doc = read("docs/adding-a-runbook.md");
    let table: BTreeSet<&str> =
        section(&doc, "## Step kinds").into_iter().filter_map(|l| l.strip_prefix("| `")).filter_map(|l| l.split('`').next()).collect();
    assert_eq!(table, shipped, "docs/adding-a-runbook.md's step kind table and the shipped kinds differ");
    // The README's list names each shipped kind, and no kind that is not shipped.
    let readme = read("README.md");
    let listed = backticked(&section(&readme, "## Runbooks are data"));
    let missing: Vec<&&str> = shipped.iter().filter(|k| !listed.contains(**k)).collect();
    assert!(missing.is_empty(), "README's \"Runbooks are data\" does not list {missing:?}");
    let looks_like_kind =
        |w: &&str| w.contains('-') && w.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') && !shipped.contains(*w);
    let stale: Vec<&&str> = listed.iter().filter(|w| looks_like_kind(w) && !w.ends_with('-')).filter(|w| !readme_runbook(w)).collect();
    assert!(stale.is_empty(), "README's \"Runbooks are data\" lists kinds that are not shipped: {stale:?}");
}

/// Names in the README that are runbooks, not step kinds.
fn readme_runbook(word: &str) -> bool {
    let builtin = read("commands/runbooks/default.toml");
    builtin.contains(&format!("[runbooks.{word}]"))
}

/// The README's command block and `/ops help` come from the same table: every command, no
/// other.
#[test]
fn the_readme_lists_every_command() {
    let readme = read("README.md");
    let block = section(&readme, "## Commands");
    let listed: BTreeSet<&str> = block.iter().filter_map(|l| l.strip_prefix("/ops ")).filter_map(|l| l.split_whitespace().next()).collect();
    let more: BTreeSet<&str> = block.iter().flat_map(|l| l.split("/ops ").skip(2)).filter_map(|l| l.split_whitespace().next()).collect();
    let listed: BTreeSet<&str> = listed.union(&more).copied().collect();
    let commands: BTreeSet<&str> = runbot_commands::grammar::spec::COMMANDS.iter().map(|c| c.name).collect();
    assert_eq!(listed, commands, "README's command list and the grammar's table differ");
}

/// A top-level `key: |` block of a YAML file, unindented.
fn yaml_block(text: &str, key: &str) -> String {
    let start = format!("{key}: |");
    let mut lines = text.lines().skip_while(|l| *l != start);
    assert!(lines.next().is_some(), "values.yaml has no `{start}` block");
    let body: Vec<&str> = lines.take_while(|l| l.is_empty() || l.starts_with("  ")).map(|l| l.get(2..).unwrap_or("")).collect();
    let mut s = body.join("\n").trim_end().to_string();
    s.push('\n');
    s
}

#[test]
fn the_helm_charts_config_passes_check_config() {
    let values = read("deploy/helm/runbot/values.yaml");
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = yaml_block(&values, "config");
    assert!(config.contains("in_cluster = true"), "{config}");
    std::fs::write(tmp.path().join("runbot.toml"), &config).expect("write");
    std::fs::write(tmp.path().join("runbooks.toml"), yaml_block(&values, "runbooks")).expect("write");
    let (ok, output) = check_config(tmp.path());
    assert!(ok && output.contains("runbot.toml: ok ("), "{output}");
}

#[test]
fn the_readmes_first_cluster_config_passes_check_config() {
    let readme = read("README.md");
    let section = readme.split_once("\n## A first real cluster\n").expect("README has the first-cluster section").1;
    let block = section.split_once("```toml\n").expect("a toml block").1.split_once("\n```").expect("the block ends").0;
    assert!(block.contains("kubeconfig = ") && block.contains("[services.promotions.environments.prod]"), "{block}");
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("runbot.toml"), format!("{block}\n")).expect("write");
    let (ok, output) = check_config(tmp.path());
    assert!(ok && output.contains("runbot.toml: ok ("), "{output}");
}

/// docs/operations.md, "Restoring a database": its in-place example passes `runbot
/// check-config`, so does the same database switched instead, and the in-place one without
/// the server's data directory is refused naming the key.
#[test]
fn the_restore_guide_passes_check_config_as_shown() {
    let doc = read("docs/operations.md");
    let blocks: BTreeMap<String, String> = marked_blocks(&doc).into_iter().collect();
    let (in_place, switch) = (&blocks["file: runbot.toml"], &blocks["file: switch.toml"]);
    let run = |text: &str| {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("runbot.toml"), text).expect("write");
        check_config(tmp.path())
    };
    let (ok, output) = run(in_place);
    assert!(ok, "the in-place example:\n{output}");

    let base = in_place.split("[databases.promotions-db.restore]").next().expect("the part before the restore section");
    let switched = base.replace("[secrets]\n", "[secrets]\nrestored_db_url = \"env:RUNBOT_RESTORED_DB_URL\"\n") + switch;
    let (ok, output) = run(&switched);
    assert!(ok, "the switch example:\n{switched}\n{output}");

    let (ok, output) = run(&in_place.replace("pgdata = \"/var/lib/postgresql/15/main\"\n", ""));
    assert!(!ok && output.contains("databases.promotions-db.restore.pgdata"), "{output}");
}

/// docs/operations.md's alert example: the runbot config passes `runbot check-config`, and the
/// Alertmanager receiver beside it sends a bearer token to runbot's endpoint.
#[test]
fn the_alerts_guide_passes_check_config_as_shown() {
    let doc = read("docs/operations.md");
    let blocks: BTreeMap<String, String> = marked_blocks(&doc).into_iter().collect();
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("runbot.toml"), &blocks["file: alerts.toml"]).expect("write");
    let (ok, output) = check_config(tmp.path());
    assert!(ok, "the alerts example:\n{output}");
    let example = &blocks["file: alerts.toml"];
    for want in ["diagnosis_timeout = ", "time_zone = \"Europe/Madrid\"", "[console]\nurl = "] {
        assert!(example.contains(want), "the example shows {want}");
    }
    // The same example with a zone that does not exist is refused, naming the key.
    std::fs::write(tmp.path().join("runbot.toml"), example.replace("Europe/Madrid", "Europe/Nowhere")).expect("write");
    let (ok, output) = check_config(tmp.path());
    assert!(!ok && output.contains("environments.prod.time_zone: 'Europe/Nowhere' is not an IANA time zone"), "{output}");
    let am = &blocks["file: alertmanager.yml"];
    for want in ["/alerts/alertmanager", "authorization:", "type: Bearer", "send_resolved: true"] {
        assert!(am.contains(want), "the Alertmanager example has {want}:\n{am}");
    }
}

/// docs/operations.md's audit key and anchors example passes `runbot check-config` without
/// the unkeyed warning, and the same config without `[audit]` warns that the trail is unkeyed.
#[test]
fn the_audit_guide_passes_check_config_as_shown() {
    let doc = read("docs/operations.md");
    let blocks: BTreeMap<String, String> = marked_blocks(&doc).into_iter().collect();
    let block = &blocks["file: audit.toml"];
    let run = |text: &str| {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("runbot.toml"), text).expect("write");
        check_config(tmp.path())
    };
    let (ok, output) = run(block);
    assert!(ok && !output.contains("[audit] key is not set"), "the audit example:\n{output}");
    let secrets = block.split("[audit]").next().expect("the secrets");
    let (ok, output) = run(secrets);
    assert!(ok && output.contains("warning: [audit] key is not set"), "without a key check-config warns:\n{output}");
    let (ok, output) = run(&block.replace("key = \"env:RUNBOT_AUDIT_HMAC_KEY\"\n", ""));
    assert!(!ok && output.contains("audit.key") && output.contains("anchors"), "anchors need the key:\n{output}");
}
