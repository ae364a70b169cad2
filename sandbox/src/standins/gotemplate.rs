//! The part of Go's `text/template` that `docker ... --format` is used with: literal text,
//! `{{.}}`, `{{.Field.Field}}` and `{{json .}}` / `{{json .Field}}`. Fields are looked up in
//! the JSON document the real CLI would format.
//! Anything else (`range`, `if`, pipelines) is refused with Go's style of message instead of
//! printing something wrong.

use serde_json::Value;

/// Renders `tmpl` against `data`.
pub(crate) fn render(tmpl: &str, data: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tmpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("template: :1: unclosed action in {tmpl:?}"))?;
        let action = after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim();
        out.push_str(&action_value(action, data, tmpl)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn action_value(action: &str, data: &Value, tmpl: &str) -> Result<String, String> {
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        ["json", path] => Ok(serde_json::to_string(lookup(data, path, tmpl)?).unwrap_or_default()),
        [path] if path.starts_with('.') => Ok(plain(lookup(data, path, tmpl)?)),
        _ => Err(format!("template parsing error: template: :1: function {:?} not defined", words.first().unwrap_or(&""))),
    }
}

fn lookup<'a>(data: &'a Value, path: &str, tmpl: &str) -> Result<&'a Value, String> {
    if path == "." {
        return Ok(data);
    }
    let mut v = data;
    for field in path.trim_start_matches('.').split('.') {
        v = match v {
            Value::Object(m) => m.get(field).unwrap_or(&Value::Null),
            Value::Null => &Value::Null,
            _ => {
                return Err(format!("template: {tmpl}:1: executing \"\" at <{path}>: can't evaluate field {field} in type {}", go_type(v)));
            }
        };
    }
    Ok(v)
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "string",
        Value::Number(_) => "int",
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        _ => "interface {}",
    }
}

/// How Go prints a value with `{{.X}}`.
fn plain(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(plain).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", plain(v))).collect::<Vec<_>>().join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde_json::json;

    #[test]
    fn fields_and_json() {
        let d = json!({"Server": {"Version": "24.0.7"}, "Spec": {"Name": "s", "Labels": {"a": "b"}}});
        assert_eq!(render("{{.Server.Version}}", &d).unwrap(), "24.0.7");
        assert_eq!(render("v={{ .Server.Version }}!", &d).unwrap(), "v=24.0.7!");
        assert_eq!(render("{{json .Spec.Labels}}", &d).unwrap(), r#"{"a":"b"}"#);
        assert_eq!(render("{{.Spec.Labels}}", &d).unwrap(), "map[a:b]");
        assert_eq!(render("{{.Nope.X}}", &d).unwrap(), "<no value>");
        assert!(render("{{range .}}x{{end}}", &d).is_err());
        assert!(render("{{.Spec.Name.X}}", &d).is_err());
    }
}
