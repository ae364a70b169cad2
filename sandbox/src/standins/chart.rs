//! Charts and values for the `helm` stand-in: a chart is a directory with `Chart.yaml` and
//! (optionally) `values.yaml`; its templates are not rendered. What a release deploys follows
//! the sandbox chart convention (see [`Workload::from_values`]). Values are merged like helm
//! merges them: `-f` files in order, then `--set`/`--set-string` (dotted keys, typed like
//! helm's strvals), all over the chart's `values.yaml`; `null` deletes a key.

use serde_json::{Map, Value, json};
use std::path::Path;

/// A loaded chart: `Chart.yaml` as helm's metadata and `values.yaml`.
pub(crate) struct Chart {
    pub metadata: Value,
    pub values: Value,
}

impl Chart {
    /// `LocateChart` + `loader.Load`, with helm's messages.
    pub fn load(reference: &str) -> Result<Chart, String> {
        let p = Path::new(reference);
        if !p.exists() {
            if p.is_absolute() || reference.starts_with('.') {
                return Err(format!("path \"{reference}\" not found"));
            }
            return Err(match reference.split_once('/') {
                Some((repo, _)) => format!("repo {repo} not found"),
                None => format!("non-absolute URLs should be in form of repo_name/path_to_chart, got: {reference}"),
            });
        }
        if !p.is_dir() {
            return Err(format!("the sandbox helm stand-in loads chart directories only, not packaged charts: {reference}"));
        }
        let meta_text = std::fs::read_to_string(p.join("Chart.yaml")).map_err(|_| "Chart.yaml file is missing".to_string())?;
        let mut meta = super::yaml(&meta_text).map_err(|e| format!("cannot load Chart.yaml: {e}"))?;
        let Some(m) = meta.as_object_mut() else {
            return Err("cannot load Chart.yaml: not a mapping".into());
        };
        // helm coerces numeric versions (`appVersion: 1.16`) to strings.
        for k in ["name", "version", "appVersion", "apiVersion", "kubeVersion", "description", "type"] {
            if let Some(v) = m.get_mut(k)
                && !v.is_string()
                && !v.is_null()
            {
                *v = Value::String(v.to_string());
            }
        }
        for k in ["apiVersion", "name", "version"] {
            if m.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(format!("validation: chart.metadata.{k} is required"));
            }
        }
        let values = match std::fs::read_to_string(p.join("values.yaml")) {
            Ok(t) => super::yaml(&t).map_err(|e| format!("cannot load values.yaml: {e}"))?,
            Err(_) => Value::Null,
        };
        let values = if values.is_null() { json!({}) } else { values };
        if !values.is_object() {
            return Err("cannot load values.yaml: error converting YAML to JSON: not a mapping".into());
        }
        Ok(Chart { metadata: meta, values })
    }

    /// The release document's `chart`.
    pub fn to_release_json(&self) -> Value {
        json!({"metadata": self.metadata, "lock": null, "templates": [], "values": self.values, "schema": null, "files": []})
    }
}

/// The user-supplied values (`config`): `-f` files, then `--set`, then `--set-string`
/// (helm applies them in that order).
pub(crate) fn user_values(files: &[String], sets: &[String], set_strings: &[String]) -> Result<Value, String> {
    let mut base = json!({});
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("open {f}: {}", go_io_error(&e)))?;
        let v = super::yaml(&text).map_err(|e| format!("failed to parse {f}: {e}"))?;
        match v {
            Value::Null => {}
            Value::Object(_) => merge_maps(&mut base, &v),
            _ => {
                return Err(format!("failed to parse {f}: error unmarshaling JSON: expected a mapping"));
            }
        }
    }
    for (list, typed) in [(sets, true), (set_strings, false)] {
        for s in list {
            for (k, v) in split_set(s)? {
                let val = if typed { typed_value(&v) } else { Value::String(v) };
                set_dotted(&mut base, &k, val).map_err(|e| format!("failed parsing --set data: {e}"))?;
            }
        }
    }
    Ok(base)
}

fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `a.b=1,c=x` → [("a.b","1"),("c","x")]; `\,` is a literal comma.
fn split_set(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut parts = vec![String::new()];
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '\\' if it.peek() == Some(&',') => {
                if let Some(p) = parts.last_mut() {
                    p.push(',');
                }
                it.next();
            }
            ',' => parts.push(String::new()),
            _ => {
                if let Some(p) = parts.last_mut() {
                    p.push(c);
                }
            }
        }
    }
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("failed parsing --set data: key \"{p}\" has no value")),
        })
        .collect()
}

/// helm's strvals typing: bools, `null`, integers without a leading zero; else a string.
fn typed_value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        "0" => Value::from(0),
        _ if !v.starts_with('0') && !v.starts_with("-0") => v.parse::<i64>().map(Value::from).unwrap_or(Value::String(v.into())),
        _ => Value::String(v.into()),
    }
}

fn set_dotted(root: &mut Value, key: &str, val: Value) -> Result<(), String> {
    if key.contains('[') {
        return Err(format!("list indexes in --set keys are not supported by the sandbox helm stand-in: {key}"));
    }
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() {
            return Err(format!("key \"{key}\" has an empty part"));
        }
        let m = cur.as_object_mut().ok_or_else(|| format!("key \"{key}\": parent is not a map"))?;
        if i == parts.len() - 1 {
            m.insert(p.to_string(), val);
            return Ok(());
        }
        let next = m.entry(p.to_string()).or_insert_with(|| json!({}));
        if !next.is_object() {
            *next = json!({});
        }
        cur = next;
    }
    Ok(())
}

/// Deep-merges `over` into `base` (maps merge, anything else replaces).
pub(crate) fn merge_maps(base: &mut Value, over: &Value) {
    match (base.as_object_mut(), over.as_object()) {
        (Some(b), Some(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge_maps(existing, v),
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        _ => *base = over.clone(),
    }
}

/// helm's `CoalesceValues`: the user's values over the chart's; a user `null` deletes the key.
pub(crate) fn coalesce(chart_values: &Value, config: &Value) -> Value {
    let mut out = chart_values.clone();
    merge_maps(&mut out, config);
    drop_nulls(&mut out);
    out
}

fn drop_nulls(v: &mut Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|_, x| !x.is_null());
        m.values_mut().for_each(drop_nulls);
    }
}

/// What a sandbox chart deploys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Workload {
    pub deployment: String,
    pub image: String,
    /// `None`: the Deployment's first container.
    pub container: Option<String>,
    pub replicas: i64,
}

impl Workload {
    /// The sandbox chart convention, from the coalesced values and the chart's metadata:
    /// - `deployment` — the Deployment's name (default: the release name);
    /// - `image.repository` (required) and `image.tag` (default: the chart's `appVersion`)
    ///   → the container image `repository:tag`;
    /// - `container` — the container to set it on (default: the first one);
    /// - `replicaCount` — replicas, used only when the Deployment does not exist yet
    ///   (default 1).
    pub fn from_values(release: &str, chart_name: &str, metadata: &Value, values: &Value) -> Result<Workload, String> {
        let s = |p: &str| -> Option<String> {
            match values.pointer(p)? {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            }
        };
        let tpl = format!("template: {chart_name}/templates/deployment.yaml");
        let repo = s("/image/repository").ok_or_else(|| format!("{tpl}: image.repository is required (sandbox chart convention)"))?;
        let tag = s("/image/tag")
            .or_else(|| metadata.get("appVersion").and_then(Value::as_str).filter(|v| !v.is_empty()).map(String::from))
            .ok_or_else(|| format!("{tpl}: image.tag is required when the chart has no appVersion"))?;
        let replicas = match values.get("replicaCount") {
            None | Some(Value::Null) => 1,
            Some(v) => v.as_i64().ok_or_else(|| format!("{tpl}: replicaCount must be an integer, not {v}"))?,
        };
        Ok(Workload {
            deployment: s("/deployment").unwrap_or_else(|| release.to_string()),
            image: format!("{repo}:{tag}"),
            container: s("/container"),
            replicas,
        })
    }

    /// The release's `manifest`: the Deployment as the chart would render it.
    pub fn manifest(&self, chart_name: &str, container: &str) -> String {
        format!(
            "---\n# Source: {chart_name}/templates/deployment.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {}\nspec:\n  template:\n    spec:\n      containers:\n        - name: {container}\n          image: \"{}\"\n",
            self.deployment, self.image
        )
    }
}

/// An empty map, for `config` when nothing was supplied.
pub(crate) fn empty() -> Value {
    Value::Object(Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_typed_like_strvals() {
        let v = user_values(&[], &["image.tag=1.2.4,replicaCount=3".into(), "a.b=true,c=007".into()], &["d=5".into()]).unwrap();
        assert_eq!(v, json!({"image": {"tag": "1.2.4"}, "replicaCount": 3, "a": {"b": true}, "c": "007", "d": "5"}));
    }

    #[test]
    fn convention_defaults() {
        let meta = json!({"name": "promotions", "appVersion": "1.2.3"});
        let vals = coalesce(&json!({"image": {"repository": "r/p", "tag": "x"}, "deployment": "api"}), &json!({"image": {"tag": null}}));
        let w = Workload::from_values("rel", "promotions", &meta, &vals).unwrap();
        assert_eq!(w, Workload { deployment: "api".into(), image: "r/p:1.2.3".into(), container: None, replicas: 1 });
        assert!(Workload::from_values("rel", "promotions", &meta, &json!({})).is_err());
    }
}
