//! The four patch types the API server accepts.
//!
//! - `application/merge-patch+json`: RFC 7386 (faithful).
//! - `application/strategic-merge-patch+json`: a merge patch where the lists that Kubernetes
//!   types declare `patchStrategy: merge` are merged element by element on their merge key
//!   (`containers`/`env`/`volumes`/... by `name`, `ports` by `containerPort`, `volumeMounts`
//!   by `mountPath`, `conditions` by `type`, `ownerReferences` by `uid`, `finalizers` as a
//!   set). Directives: `$patch: delete|replace|merge`, `$deleteFromPrimitiveList/<f>`,
//!   `$setElementOrder/<f>` and `$retainKeys` (the last two are accepted and ignored).
//!   Simplified: the merge keys are chosen by field name, not by the object's Go type.
//! - `application/json-patch+json`: RFC 6902 `add`, `remove`, `replace`, `move`, `copy`,
//!   `test` with RFC 6901 pointers.
//! - `application/apply-patch+yaml` (server-side apply): the body must be JSON (which is
//!   YAML); it is applied like a strategic merge patch and creates the object if missing.
//!   Simplified: no field ownership (`managedFields`), so no apply conflicts.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match base.as_str() {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Why a patch could not be applied; the caller maps it onto a 400 or 422 Status.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchError {
    /// Malformed patch document (400 BadRequest).
    Malformed(String),
    /// Well-formed but does not apply: missing path, failed `test` (422 Invalid).
    DoesNotApply(String),
}

pub fn apply(kind: PatchType, target: &Value, patch: &Value) -> Result<Value, PatchError> {
    match kind {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(PatchError::Malformed("merge patch must be a JSON object".into()));
            }
            Ok(merge_patch(target, patch))
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err(PatchError::Malformed("strategic merge patch must be a JSON object".into()));
            }
            Ok(strategic(target, patch, ""))
        }
        PatchType::Json => json_patch(target, patch),
    }
}

/// RFC 7386.
pub fn merge_patch(target: &Value, patch: &Value) -> Value {
    match patch {
        Value::Object(p) => {
            let mut out = match target {
                Value::Object(t) => t.clone(),
                _ => Map::new(),
            };
            for (k, v) in p {
                if v.is_null() {
                    out.remove(k);
                } else {
                    let cur = out.get(k).cloned().unwrap_or(Value::Null);
                    out.insert(k.clone(), merge_patch(&cur, v));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// The merge key of a list field under strategic merge (None = replace the list).
/// `Some("")` marks a list of primitives merged as a set.
fn merge_key(field: &str, parent: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "hostAliases"
        | "resourceClaims"
        | "readinessGates" => match field {
            "hostAliases" => Some("ip"),
            "readinessGates" => Some("conditionType"),
            _ => Some("name"),
        },
        "ports" if parent == "containers" || parent == "initContainers" => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" | "volumeDevices" => Some("mountPath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "finalizers" => Some(""),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

fn strategic(target: &Value, patch: &Value, field: &str) -> Value {
    let Value::Object(p) = patch else { return patch.clone() };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut m = p.clone();
        m.remove("$patch");
        return Value::Object(m);
    }
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(cur)), Value::Array(del)) = (out.get(f).cloned(), v) {
                out.insert(f.to_string(), Value::Array(cur.into_iter().filter(|x| !del.contains(x)).collect()));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let cur = out.get(k).cloned().unwrap_or(Value::Null);
        let merged = match (v, merge_key(k, field)) {
            (Value::Array(items), Some(key)) => merge_list(cur.as_array().cloned().unwrap_or_default(), items, key, k),
            (Value::Object(_), _) => strategic(&cur, v, k),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

fn merge_list(mut cur: Vec<Value>, items: &[Value], key: &str, field: &str) -> Value {
    // `[{"$patch": "replace"}, ...]` replaces the whole list.
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Value::Array(items.iter().filter(|i| i.get("$patch").and_then(Value::as_str) != Some("replace")).cloned().collect());
    }
    if key.is_empty() {
        for i in items {
            if !cur.contains(i) {
                cur.push(i.clone());
            }
        }
        return Value::Array(cur);
    }
    for item in items {
        let Some(k) = item.get(key) else {
            cur.push(item.clone());
            continue;
        };
        let pos = cur.iter().position(|c| c.get(key) == Some(k));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => cur[i] = strategic(&cur[i], item, field),
            (None, false) => cur.push(strategic(&Value::Null, item, field)),
        }
    }
    Value::Array(cur)
}

/// RFC 6901 pointer → unescaped tokens.
fn pointer(p: &str) -> Result<Vec<String>, PatchError> {
    if p.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = p.strip_prefix('/') else {
        return Err(PatchError::Malformed(format!("invalid JSON pointer {p:?}")));
    };
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn get_at<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parent_mut<'a>(doc: &'a mut Value, toks: &[String], path: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in &toks[..toks.len().saturating_sub(1)] {
        cur = match cur {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::DoesNotApply(format!("missing path {path:?}")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), PatchError> {
    let toks = pointer(path)?;
    let Some(last) = toks.last().cloned() else {
        *doc = v;
        return Ok(());
    };
    match parent_mut(doc, &toks, path)? {
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
            } else {
                let i = last.parse::<usize>().ok().filter(|i| *i <= a.len());
                let i = i.ok_or_else(|| PatchError::DoesNotApply(format!("index out of range in {path:?}")))?;
                a.insert(i, v);
            }
        }
        _ => return Err(PatchError::DoesNotApply(format!("missing path {path:?}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let toks = pointer(path)?;
    let Some(last) = toks.last().cloned() else {
        return Err(PatchError::DoesNotApply("cannot remove the whole document".into()));
    };
    let missing = || PatchError::DoesNotApply(format!("unable to remove nonexistent key: {path}"));
    match parent_mut(doc, &toks, path)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i = last.parse::<usize>().ok().filter(|i| *i < a.len()).ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// RFC 6902.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(ops) = patch else {
        return Err(PatchError::Malformed("json patch must be an array of operations".into()));
    };
    let mut doc = target.clone();
    for op in ops {
        let name = op.get("op").and_then(Value::as_str).ok_or_else(|| PatchError::Malformed("operation without \"op\"".into()))?;
        let path = op.get("path").and_then(Value::as_str).ok_or_else(|| PatchError::Malformed(format!("{name} operation without \"path\"")))?;
        let value = || op.get("value").cloned().ok_or_else(|| PatchError::Malformed(format!("{name} operation without \"value\"")));
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| PatchError::Malformed(format!("{name} operation without \"from\"")));
        match name {
            "add" => add(&mut doc, path, value()?)?,
            "remove" => {
                remove(&mut doc, path)?;
            }
            "replace" => {
                remove(&mut doc, path)
                    .map_err(|_| PatchError::DoesNotApply(format!("replace operation does not apply: doc is missing key: {path}")))?;
                add(&mut doc, path, value()?)?;
            }
            "move" => {
                let v = remove(&mut doc, from()?)?;
                add(&mut doc, path, v)?;
            }
            "copy" => {
                let f = from()?;
                let v = get_at(&doc, &pointer(f)?).cloned().ok_or_else(|| PatchError::DoesNotApply(format!("missing path {f:?}")))?;
                add(&mut doc, path, v)?;
            }
            "test" => {
                let want = value()?;
                if get_at(&doc, &pointer(path)?) != Some(&want) {
                    return Err(PatchError::DoesNotApply(format!("testing value {path} failed: test failed")));
                }
            }
            other => return Err(PatchError::Malformed(format!("unexpected kind of operation: {other}"))),
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386() {
        let t = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let p = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(merge_patch(&t, &p), json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
        assert_eq!(merge_patch(&json!({"a": 1}), &json!({"b": {"c": null}})), json!({"a": 1, "b": {}}));
    }

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
            {"name": "side", "image": "s:1"}
        ]}}}, "metadata": {"finalizers": ["a"]}})
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        // `kubectl set image deployment/x app=a:2`
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:2"}]}}}});
        let out = apply(PatchType::Strategic, &deployment(), &p).unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "a:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "s:1");
    }

    #[test]
    fn strategic_directives() {
        let p = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "app"}],
            "containers": [{"name": "side", "$patch": "delete"}, {"name": "app", "env": [{"name": "X", "$patch": "delete"}, {"name": "Z", "value": "3"}]}]
        }}}, "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]}});
        let out = apply(PatchType::Strategic, &deployment(), &p).unwrap();
        let cs = out["spec"]["template"]["spec"]["containers"].as_array().unwrap().clone();
        assert_eq!(cs.len(), 1);
        let env: Vec<&str> = cs[0]["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
        assert_eq!(env, ["Y", "Z"]);
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let r = apply(PatchType::Strategic, &json!({"m": {"a": 1, "b": 2}}), &json!({"m": {"$patch": "replace", "c": 3}})).unwrap();
        assert_eq!(r, json!({"m": {"c": 3}}));
    }

    #[test]
    fn json_patch_ops() {
        let t = json!({"a": {"b": [1, 2]}, "x/y": 1, "t~": 2});
        let p = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/x~1y", "value": 5},
            {"op": "remove", "path": "/t~0"},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/c", "path": "/d"},
            {"op": "test", "path": "/x~1y", "value": 5}
        ]);
        assert_eq!(json_patch(&t, &p).unwrap(), json!({"a": {"b": [0, 1, 2, 3]}, "x/y": 5, "d": [0, 1, 2, 3]}));
        assert!(matches!(json_patch(&t, &json!([{"op": "test", "path": "/x~1y", "value": 9}])), Err(PatchError::DoesNotApply(_))));
        assert!(matches!(json_patch(&t, &json!([{"op": "replace", "path": "/nope", "value": 9}])), Err(PatchError::DoesNotApply(_))));
        assert!(matches!(json_patch(&t, &json!([{"op": "frob", "path": "/a"}])), Err(PatchError::Malformed(_))));
        assert!(matches!(json_patch(&t, &json!({"op": "add"})), Err(PatchError::Malformed(_))));
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
        assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), Some(PatchType::Apply));
        assert_eq!(PatchType::from_content_type("application/json"), None);
    }
}
