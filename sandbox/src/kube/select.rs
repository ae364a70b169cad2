//! Label selectors (`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, `a>1`,
//! `a<1`, comma-separated, as in `k8s.io/apimachinery/pkg/labels`) and field selectors
//! (`f=v`, `f==v`, `f!=v`, comma-separated, `\,` `\=` `\\` escapes) with the per-resource
//! field sets the real registries support. Errors are 400 BadRequest like the API server's.

use super::resources::Resource;
use super::status::{ApiError, ApiResult};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: LabelOp,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'))
    {
        return false;
    }
    valid_value(name) && !name.is_empty()
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && (v.is_empty() || (v.starts_with(|c: char| c.is_ascii_alphanumeric()) && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn bad(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {why} (in label selector {sel:?})"))
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return None;
    }
    out.push(&s[start..]);
    Some(out)
}

fn parse_set(sel: &str, rest: &str) -> ApiResult<Vec<String>> {
    let rest = rest.trim();
    let inner = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| bad(sel, "expected a parenthesised set of values"))?;
    let vals: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &vals {
        if !valid_value(v) {
            return Err(bad(sel, &format!("invalid label value {v:?}")));
        }
    }
    Ok(vals)
}

impl LabelSelector {
    pub fn parse(sel: &str) -> ApiResult<LabelSelector> {
        let mut reqs = Vec::new();
        if sel.trim().is_empty() {
            return Ok(LabelSelector { reqs });
        }
        let parts = split_top(sel).ok_or_else(|| bad(sel, "unbalanced parentheses"))?;
        for part in parts {
            let p = part.trim();
            if p.is_empty() {
                return Err(bad(sel, "found '', expected: identifier"));
            }
            let req = if let Some(k) = p.strip_prefix('!') {
                Requirement { key: k.trim().to_string(), op: LabelOp::DoesNotExist }
            } else if let Some((k, v)) = p.split_once("!=") {
                Requirement { key: k.trim().to_string(), op: LabelOp::NotEq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once("==") {
                Requirement { key: k.trim().to_string(), op: LabelOp::Eq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once('=') {
                Requirement { key: k.trim().to_string(), op: LabelOp::Eq(v.trim().to_string()) }
            } else if let Some((k, v)) = p.split_once('>') {
                let n = v.trim().parse().map_err(|_| bad(sel, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
                Requirement { key: k.trim().to_string(), op: LabelOp::Gt(n) }
            } else if let Some((k, v)) = p.split_once('<') {
                let n = v.trim().parse().map_err(|_| bad(sel, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
                Requirement { key: k.trim().to_string(), op: LabelOp::Lt(n) }
            } else if let Some(idx) = p.find(" notin ").or_else(|| p.find(" notin(")) {
                Requirement { key: p[..idx].trim().to_string(), op: LabelOp::NotIn(parse_set(sel, &p[idx + 6..])?) }
            } else if let Some(idx) = p.find(" in ").or_else(|| p.find(" in(")) {
                Requirement { key: p[..idx].trim().to_string(), op: LabelOp::In(parse_set(sel, &p[idx + 3..])?) }
            } else if p.contains(char::is_whitespace) || p.contains('(') {
                return Err(bad(sel, &format!("unexpected input {p:?}")));
            } else {
                Requirement { key: p.to_string(), op: LabelOp::Exists }
            };
            if !valid_key(&req.key) {
                return Err(bad(sel, &format!("invalid label key {:?}", req.key)));
            }
            if let LabelOp::Eq(v) | LabelOp::NotEq(v) = &req.op
                && !valid_value(v)
            {
                return Err(bad(sel, &format!("invalid label value {v:?}")));
            }
            reqs.push(req);
        }
        Ok(LabelSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|r| match &r.op {
            LabelOp::Eq(v) => get(&r.key) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(&r.key) != Some(v.as_str()),
            LabelOp::In(vs) => get(&r.key).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelOp::NotIn(vs) => get(&r.key).is_none_or(|x| !vs.iter().any(|v| v == x)),
            LabelOp::Exists => get(&r.key).is_some(),
            LabelOp::DoesNotExist => get(&r.key).is_none(),
            LabelOp::Gt(n) => get(&r.key).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x > *n),
            LabelOp::Lt(n) => get(&r.key).and_then(|x| x.parse::<i64>().ok()).is_some_and(|x| x < *n),
        })
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`) as a selector.
    pub fn from_object(sel: &Value) -> LabelSelector {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                reqs.push(Requirement { key: k.clone(), op: LabelOp::Eq(v.as_str().unwrap_or_default().to_string()) });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default().to_string();
                let vals: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
                    .unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or_default() {
                    "In" => LabelOp::In(vals),
                    "NotIn" => LabelOp::NotIn(vals),
                    "Exists" => LabelOp::Exists,
                    _ => LabelOp::DoesNotExist,
                };
                reqs.push(Requirement { key, op });
            }
        }
        LabelSelector { reqs }
    }

    /// The selector as a string (`Scale.status.selector`).
    pub fn to_string_form(&self) -> String {
        let mut parts: Vec<String> = self
            .reqs
            .iter()
            .map(|r| match &r.op {
                LabelOp::Eq(v) => format!("{}={v}", r.key),
                LabelOp::NotEq(v) => format!("{}!={v}", r.key),
                LabelOp::In(vs) => format!("{} in ({})", r.key, vs.join(",")),
                LabelOp::NotIn(vs) => format!("{} notin ({})", r.key, vs.join(",")),
                LabelOp::Exists => r.key.clone(),
                LabelOp::DoesNotExist => format!("!{}", r.key),
                LabelOp::Gt(n) => format!("{}>{n}", r.key),
                LabelOp::Lt(n) => format!("{}<{n}", r.key),
            })
            .collect();
        parts.sort();
        parts.join(",")
    }
}

#[derive(Debug, Clone, PartialEq)]
struct FieldReq {
    field: String,
    value: String,
    negate: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

/// Splits on unescaped commas, keeping escapes for the next step.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> ApiResult<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ ('\\' | ',' | '=' | '!')) => out.push(n),
                Some(n) => {
                    return Err(ApiError::bad_request(format!("invalid field selector: invalid escape sequence: \\{n}")));
                }
                None => return Err(ApiError::bad_request("invalid field selector: trailing backslash")),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Finds the first unescaped occurrence of an operator (byte offsets; the operators are
/// ASCII, so the offsets are char boundaries).
fn find_op(s: &str) -> Option<(usize, &'static str)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i..].starts_with(b"!=") {
            return Some((i, "!="));
        }
        if b[i..].starts_with(b"==") {
            return Some((i, "=="));
        }
        if b[i] == b'=' {
            return Some((i, "="));
        }
        i += 1;
    }
    None
}

impl FieldSelector {
    /// Parses and checks the fields against what `res` supports (plus `metadata.name` and
    /// `metadata.namespace`): `field label not supported: x` otherwise, as the registries say.
    pub fn parse(sel: &str, res: &Resource) -> ApiResult<FieldSelector> {
        let mut reqs = Vec::new();
        if sel.trim().is_empty() {
            return Ok(FieldSelector { reqs });
        }
        for part in split_unescaped(sel, ',') {
            let p = part.trim();
            let (idx, op) = find_op(p).ok_or_else(|| ApiError::bad_request(format!("invalid selector: '{sel}'; can't understand '{p}'")))?;
            let field = unescape(p[..idx].trim())?;
            let value = unescape(p[idx + op.len()..].trim())?;
            if field != "metadata.name" && field != "metadata.namespace" && !res.fields.contains(&field.as_str()) {
                return Err(ApiError::bad_request(format!("field label not supported: {field}")));
            }
            reqs.push(FieldReq { field, value, negate: op == "!=" });
        }
        Ok(FieldSelector { reqs })
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let actual = field_value(obj, &r.field);
            (actual == r.value) != r.negate
        })
    }

    /// `metadata.name=x` (used for `GET .../pods/x?watch=true`).
    pub fn name(name: &str) -> FieldSelector {
        FieldSelector { reqs: vec![FieldReq { field: "metadata.name".into(), value: name.into(), negate: false }] }
    }
}

/// The string form of a selectable field, as the registries' `GetAttrs`/`ToSelectableFields`
/// produce it (absent = "", booleans "true"/"false", numbers in decimal).
fn field_value(obj: &Value, field: &str) -> String {
    let v = match field {
        // `source` on events means source.component.
        "source" => obj.get("source").and_then(|s| s.get("component")),
        "status.successful" => obj.get("status").and_then(|s| s.get("succeeded")),
        _ => {
            let mut cur = Some(obj);
            for p in field.split('.') {
                cur = cur.and_then(|c| c.get(p));
            }
            cur
        }
    };
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Null) | None => {
            if field == "status.successful" || field == "status.replicas" {
                "0".into()
            } else if field == "spec.unschedulable" {
                "false".into()
            } else {
                String::new()
            }
        }
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{EVENTS, PODS, res};
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_sets() {
        let p = pod(json!({"app": "web", "tier": "front", "n": "5"}));
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches(&p);
        assert!(ok("app=web"));
        assert!(ok("app==web"));
        assert!(!ok("app!=web"));
        assert!(ok("app=web,tier=front"));
        assert!(!ok("app=web,tier=back"));
        assert!(ok("app in (web,api)"));
        assert!(ok("app in (api, web)"));
        assert!(!ok("app notin (web)"));
        assert!(ok("missing notin (x)"));
        assert!(ok("app"));
        assert!(!ok("!app"));
        assert!(ok("!missing"));
        assert!(ok("n>4"));
        assert!(!ok("n<4"));
        assert!(ok("app in (web),tier notin (back,x),!missing"));
        assert!(ok(""));
    }

    #[test]
    fn bad_label_selectors_are_400() {
        for s in ["app in web", "a b", "app in (x", "=x", "app=has space", "app=web,", "Bad_/x=1", "n>x"] {
            let e = LabelSelector::parse(s).unwrap_err();
            assert_eq!(e.code, 400, "{s}");
        }
    }

    #[test]
    fn selector_objects_and_strings() {
        let s = LabelSelector::from_object(
            &json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}),
        );
        assert_eq!(s.to_string_form(), "app=web,tier in (a,b)");
        assert!(s.matches(&pod(json!({"app": "web", "tier": "a"}))));
        assert!(!s.matches(&pod(json!({"app": "web"}))));
    }

    #[test]
    fn field_selectors() {
        let p = pod(json!({}));
        let pods = res(PODS);
        let ok = |s: &str| FieldSelector::parse(s, pods).unwrap().matches(&p);
        assert!(ok("metadata.name=p"));
        assert!(ok("metadata.name==p,metadata.namespace=ns"));
        assert!(ok("status.phase!=Pending"));
        assert!(!ok("status.phase=Pending"));
        assert!(ok("spec.nodeName="));
        assert_eq!(FieldSelector::parse("spec.foo=x", pods).unwrap_err().message, "field label not supported: spec.foo");
        assert_eq!(FieldSelector::parse("nonsense", pods).unwrap_err().code, 400);

        let ev = json!({"metadata": {"name": "e"}, "involvedObject": {"name": "a,b", "uid": "u"}, "source": {"component": "kubelet"}});
        let evs = res(EVENTS);
        assert!(FieldSelector::parse(r"involvedObject.name=a\,b,involvedObject.uid=u", evs).unwrap().matches(&ev));
        assert!(FieldSelector::parse("source=kubelet", evs).unwrap().matches(&ev));
        // Non-ASCII input is an ordinary (non-matching or malformed) selector, never a panic.
        assert!(!FieldSelector::parse("metadata.name=é", pods).unwrap().matches(&p));
        assert_eq!(FieldSelector::parse("é=x", pods).unwrap_err().code, 400);
        assert_eq!(FieldSelector::parse("éé", pods).unwrap_err().code, 400);
        assert_eq!(LabelSelector::parse("é=x").unwrap_err().code, 400);
        assert_eq!(LabelSelector::parse("a in (é)").unwrap_err().code, 400);
    }
}
