//! Reading the chart without Helm: its template files as text (which kinds each one makes, the
//! rules its `define`s hold) and deploy/manifests' `# Source:` lines, which say which template
//! each rendered document came from.

use super::kubectl::{Kubectl, repo};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn chart_dir() -> PathBuf {
    repo().join("deploy/helm/runbot")
}

pub fn manifests_dir() -> PathBuf {
    repo().join("deploy/manifests")
}

/// `templates/*.yaml` by file name.
pub fn templates() -> BTreeMap<String, String> {
    let dir = chart_dir().join("templates");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if name.ends_with(".yaml") {
            out.insert(name, std::fs::read_to_string(&path).expect("read template"));
        }
    }
    out
}

/// The kinds a template writes (`kind: X` at the start of a line, outside `roleRef`s and
/// `subjects`, which are indented).
pub fn kinds(template: &str) -> Vec<String> {
    template.lines().filter_map(|l| l.strip_prefix("kind: ")).map(|k| k.trim().to_string()).collect()
}

/// The manifest files and, for each, the templates its documents name in `# Source:` lines.
pub fn manifest_sources() -> BTreeMap<String, Vec<String>> {
    let dir = manifests_dir();
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = e.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(&path).expect("read manifest");
        let sources = text.lines().filter_map(|l| l.strip_prefix("# Source: runbot/templates/")).map(str::to_string).collect();
        out.insert(name, sources);
    }
    out
}

/// The YAML a `{{- define "NAME" -}}` in `_helpers.tpl` holds (a list of rules), parsed.
pub fn define(k: &Kubectl, name: &str) -> Value {
    let text = std::fs::read_to_string(chart_dir().join("templates/_helpers.tpl")).expect("read _helpers.tpl");
    let start = format!("{{{{- define \"{name}\" -}}}}");
    let body =
        text.split_once(&start).unwrap_or_else(|| panic!("_helpers.tpl has no define {name}")).1.split_once("{{- end }}").expect("the define ends").0;
    assert!(!body.contains("{{"), "define {name} is expected to be plain YAML");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), format!("rules:\n{body}")).expect("write");
    k.read_yaml(file.path())["rules"].take()
}
