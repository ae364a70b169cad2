//! Discord's documented limits, checked on every message and command body the fake receives,
//! reported like Discord: a list of `(path, code, message)` that becomes the nested `errors`
//! object of a `50035 Invalid Form Body` answer.
//!
//! Messages: content ≤ 2000; ≤ 10 embeds (title ≤ 256, description ≤ 4096, ≤ 25 fields with
//! name ≤ 256 and value ≤ 1024, both non-empty, footer ≤ 2048, author name ≤ 256, all embeds
//! together ≤ 6000 characters); ≤ 5 action rows of 1–5 buttons; a button's `custom_id` 1–100
//! and unique in the message, `label` ≤ 80, style 1–5 (5 = link: `url`, no `custom_id`).
//! Application commands: name 1–32 (letters, digits, `-`, `_`, `'`; lower case), description
//! 1–100, ≤ 25 options, ≤ 25 choices (string value ≤ 100), sub-command nesting, required
//! options before optional ones, no `autocomplete` together with `choices`, unique names.

use serde_json::{Map, Value, json};
use std::collections::HashSet;

/// One broken rule: where, Discord's error code, its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<String>,
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.path.join("."), self.message, self.code)
    }
}

fn p(path: &[&str], code: &'static str, message: impl Into<String>) -> Problem {
    Problem { path: path.iter().map(|s| s.to_string()).collect(), code, message: message.into() }
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

fn max_len(out: &mut Vec<Problem>, path: &[&str], v: &Value, max: usize) {
    if chars(v) > max {
        out.push(p(path, "BASE_TYPE_MAX_LENGTH", format!("Must be {max} or fewer in length.")));
    }
}

/// The `errors` object of Discord's 50035 answer: the problems nested by path, each leaf an
/// object with `_errors`.
pub fn errors_json(problems: &[Problem]) -> Value {
    fn insert(node: &mut Map<String, Value>, path: &[String], pr: &Problem) {
        match path.split_first() {
            Some((seg, rest)) => {
                let next = node.entry(seg.clone()).or_insert_with(|| json!({}));
                if let Some(o) = next.as_object_mut() {
                    insert(o, rest, pr);
                }
            }
            None => {
                let errs = node.entry("_errors".to_string()).or_insert_with(|| json!([]));
                if let Some(a) = errs.as_array_mut() {
                    a.push(json!({"code": pr.code, "message": pr.message}));
                }
            }
        }
    }
    let mut root = Map::new();
    for pr in problems {
        insert(&mut root, &pr.path, pr);
    }
    Value::Object(root)
}

/// Whether a message body would be empty to Discord (no content, embeds or components).
pub fn is_empty_message(body: &Value) -> bool {
    let content = body["content"].as_str().is_none_or(|c| c.trim().is_empty());
    let embeds = body["embeds"].as_array().is_none_or(|a| a.is_empty());
    let components = body["components"].as_array().is_none_or(|a| a.is_empty());
    content && embeds && components
}

/// Every broken limit in a message body (create, edit, interaction response, follow-up).
pub fn message_problems(body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    max_len(&mut out, &["content"], &body["content"], 2000);
    if let Some(embeds) = body["embeds"].as_array() {
        if embeds.len() > 10 {
            out.push(p(&["embeds"], "BASE_TYPE_BAD_LENGTH", "Must be between 0 and 10 in length."));
        }
        let mut total = 0usize;
        for (i, e) in embeds.iter().enumerate() {
            let i = i.to_string();
            let at = |k: &str| -> Vec<String> { vec!["embeds".into(), i.clone(), k.into()] };
            let check = |out: &mut Vec<Problem>, k: &str, v: &Value, max: usize| {
                if chars(v) > max {
                    out.push(Problem { path: at(k), code: "BASE_TYPE_MAX_LENGTH", message: format!("Must be {max} or fewer in length.") });
                }
            };
            check(&mut out, "title", &e["title"], 256);
            check(&mut out, "description", &e["description"], 4096);
            total += chars(&e["title"]) + chars(&e["description"]) + chars(&e["footer"]["text"]) + chars(&e["author"]["name"]);
            if chars(&e["footer"]["text"]) > 2048 {
                out.push(Problem {
                    path: vec!["embeds".into(), i.clone(), "footer".into(), "text".into()],
                    code: "BASE_TYPE_MAX_LENGTH",
                    message: "Must be 2048 or fewer in length.".into(),
                });
            }
            if chars(&e["author"]["name"]) > 256 {
                out.push(Problem {
                    path: vec!["embeds".into(), i.clone(), "author".into(), "name".into()],
                    code: "BASE_TYPE_MAX_LENGTH",
                    message: "Must be 256 or fewer in length.".into(),
                });
            }
            if let Some(fields) = e["fields"].as_array() {
                if fields.len() > 25 {
                    out.push(Problem { path: at("fields"), code: "BASE_TYPE_BAD_LENGTH", message: "Must be between 0 and 25 in length.".into() });
                }
                for (j, f) in fields.iter().enumerate() {
                    let fp = |k: &str| -> Vec<String> { vec!["embeds".into(), i.clone(), "fields".into(), j.to_string(), k.into()] };
                    for (k, max) in [("name", 256usize), ("value", 1024)] {
                        let n = chars(&f[k]);
                        if n == 0 {
                            out.push(Problem { path: fp(k), code: "BASE_TYPE_REQUIRED", message: "This field is required".into() });
                        } else if n > max {
                            out.push(Problem { path: fp(k), code: "BASE_TYPE_MAX_LENGTH", message: format!("Must be {max} or fewer in length.") });
                        }
                    }
                    total += chars(&f["name"]) + chars(&f["value"]);
                }
            }
            if e["description"].is_string() && chars(&e["description"]) == 0 {
                out.push(Problem { path: at("description"), code: "BASE_TYPE_REQUIRED", message: "This field is required".into() });
            }
        }
        if total > 6000 {
            out.push(p(&["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000"));
        }
    } else if !body["embeds"].is_null() {
        out.push(p(&["embeds"], "LIST_TYPE_CONVERT", "Must be an array."));
    }
    if let Some(rows) = body["components"].as_array() {
        if rows.len() > 5 {
            out.push(p(&["components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."));
        }
        let mut ids = HashSet::new();
        for (i, row) in rows.iter().enumerate() {
            let i = i.to_string();
            if row["type"] != 1 {
                out.push(p(&["components", &i, "type"], "UNION_TYPE_CHOICES", "Value of field \"type\" must be one of (1,)."));
                continue;
            }
            let els = row["components"].as_array().cloned().unwrap_or_default();
            if els.is_empty() || els.len() > 5 {
                out.push(p(&["components", &i, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length."));
            }
            for (j, b) in els.iter().enumerate() {
                let j = j.to_string();
                if b["type"] != 2 {
                    out.push(p(
                        &["components", &i, "components", &j, "type"],
                        "COMPONENT_TYPE_INVALID",
                        "Only buttons are used by runbot's messages.",
                    ));
                    continue;
                }
                let style = b["style"].as_u64().unwrap_or(0);
                if !(1..=5).contains(&style) {
                    out.push(p(&["components", &i, "components", &j, "style"], "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4, 5}."));
                }
                max_len(&mut out, &["components", &i, "components", &j, "label"], &b["label"], 80);
                if chars(&b["label"]) == 0 && b["emoji"].is_null() {
                    out.push(p(&["components", &i, "components", &j, "label"], "BASE_TYPE_REQUIRED", "This field is required"));
                }
                if style == 5 {
                    if chars(&b["url"]) == 0 || chars(&b["url"]) > 512 {
                        out.push(p(
                            &["components", &i, "components", &j, "url"],
                            "BASE_TYPE_REQUIRED",
                            "A link button needs a url of at most 512 characters.",
                        ));
                    }
                    if !b["custom_id"].is_null() {
                        out.push(p(
                            &["components", &i, "components", &j, "custom_id"],
                            "COMPONENT_LINK_CUSTOM_ID",
                            "A link button cannot have a custom id.",
                        ));
                    }
                    continue;
                }
                let n = chars(&b["custom_id"]);
                if n == 0 || n > 100 {
                    out.push(p(&["components", &i, "components", &j, "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."));
                } else if !ids.insert(b["custom_id"].as_str().unwrap_or("").to_string()) {
                    out.push(p(
                        &["components", &i, "components", &j, "custom_id"],
                        "COMPONENT_CUSTOM_ID_DUPLICATED",
                        "Component custom id cannot be duplicated",
                    ));
                }
            }
        }
    } else if !body["components"].is_null() {
        out.push(p(&["components"], "LIST_TYPE_CONVERT", "Must be an array."));
    }
    out
}

/// Discord's command and option name rule: 1–32 of letters, digits, `-`, `_`, `'`; letters
/// that have a lower-case form must be lower case.
pub fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=32).contains(&n) && name.chars().all(|c| (c.is_alphanumeric() || matches!(c, '-' | '_' | '\'')) && c.to_lowercase().eq(std::iter::once(c)))
}

fn check_description(out: &mut Vec<Problem>, path: &[String], v: &Value) {
    let n = chars(v);
    if n == 0 || n > 100 {
        let mut pth = path.to_vec();
        pth.push("description".into());
        out.push(Problem { path: pth, code: "BASE_TYPE_BAD_LENGTH", message: "Must be between 1 and 100 in length.".into() });
    }
}

fn check_options(out: &mut Vec<Problem>, path: &[String], options: &Value, depth: usize) {
    let Some(opts) = options.as_array() else {
        if !options.is_null() {
            let mut pth = path.to_vec();
            pth.push("options".into());
            out.push(Problem { path: pth, code: "LIST_TYPE_CONVERT", message: "Must be an array.".into() });
        }
        return;
    };
    let at = |i: usize, k: &str| -> Vec<String> {
        let mut v = path.to_vec();
        v.push("options".into());
        v.push(i.to_string());
        if !k.is_empty() {
            v.push(k.into());
        }
        v
    };
    if opts.len() > 25 {
        let mut pth = path.to_vec();
        pth.push("options".into());
        out.push(Problem { path: pth, code: "BASE_TYPE_BAD_LENGTH", message: "Must be between 0 and 25 in length.".into() });
    }
    let mut names = HashSet::new();
    let mut seen_optional = false;
    let subs = opts.iter().filter(|o| matches!(o["type"].as_u64(), Some(1 | 2))).count();
    if subs > 0 && subs != opts.len() {
        let mut pth = path.to_vec();
        pth.push("options".into());
        out.push(Problem {
            path: pth,
            code: "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
            message: "Sub-command and sub-command group option types are mutually exclusive to all other types".into(),
        });
    }
    for (i, o) in opts.iter().enumerate() {
        let name = o["name"].as_str().unwrap_or("");
        if !valid_name(name) {
            out.push(Problem { path: at(i, "name"), code: "APPLICATION_COMMAND_INVALID_NAME", message: "Command name is invalid".into() });
        }
        if !names.insert(name.to_string()) {
            out.push(Problem {
                path: at(i, "name"),
                code: "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                message: "Option name already exists".into(),
            });
        }
        check_description(out, &at(i, ""), &o["description"]);
        let kind = o["type"].as_u64().unwrap_or(0);
        if !(1..=11).contains(&kind) {
            out.push(Problem { path: at(i, "type"), code: "BASE_TYPE_CHOICES", message: "Value must be one of {1, …, 11}.".into() });
        }
        match kind {
            2 if depth > 0 => out.push(Problem {
                path: at(i, "type"),
                code: "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                message: "A sub-command group cannot be nested".into(),
            }),
            1 if depth > 1 => out.push(Problem {
                path: at(i, "type"),
                code: "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                message: "Sub-commands nest at most in one group".into(),
            }),
            1 | 2 => {
                // Recurse into `…options.i.options`.
                let mut here = path.to_vec();
                here.push("options".into());
                here.push(i.to_string());
                if kind == 2 && o["options"].as_array().is_some_and(|a| a.iter().any(|x| x["type"] != 1)) {
                    out.push(Problem {
                        path: at(i, "options"),
                        code: "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                        message: "A sub-command group holds sub-commands only".into(),
                    });
                }
                check_options(out, &here, &o["options"], depth + 1 + usize::from(kind == 1));
            }
            _ => {
                let required = o["required"].as_bool().unwrap_or(false);
                if required && seen_optional {
                    out.push(Problem {
                        path: at(i, "required"),
                        code: "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        message: "Required options must be placed before non-required options".into(),
                    });
                }
                seen_optional |= !required;
                if let Some(choices) = o["choices"].as_array() {
                    if choices.len() > 25 {
                        out.push(Problem {
                            path: at(i, "choices"),
                            code: "BASE_TYPE_BAD_LENGTH",
                            message: "Must be between 0 and 25 in length.".into(),
                        });
                    }
                    if o["autocomplete"].as_bool() == Some(true) && !choices.is_empty() {
                        out.push(Problem {
                            path: at(i, "autocomplete"),
                            code: "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                            message: "Autocomplete cannot be set with choices".into(),
                        });
                    }
                    for (j, c) in choices.iter().enumerate() {
                        let n = chars(&c["name"]);
                        if n == 0 || n > 100 {
                            let mut pth = at(i, "choices");
                            pth.extend([j.to_string(), "name".into()]);
                            out.push(Problem { path: pth, code: "BASE_TYPE_BAD_LENGTH", message: "Must be between 1 and 100 in length.".into() });
                        }
                        if c["value"].is_string() && chars(&c["value"]) > 100 {
                            let mut pth = at(i, "choices");
                            pth.extend([j.to_string(), "value".into()]);
                            out.push(Problem { path: pth, code: "BASE_TYPE_MAX_LENGTH", message: "Must be 100 or fewer in length.".into() });
                        }
                    }
                }
                if o["autocomplete"].as_bool() == Some(true) && !matches!(kind, 3 | 4 | 10) {
                    out.push(Problem {
                        path: at(i, "autocomplete"),
                        code: "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                        message: "Autocomplete is for string, integer and number options".into(),
                    });
                }
            }
        }
    }
}

/// Every broken rule in a bulk-overwrite body (an array of commands).
pub fn commands_problems(body: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let Some(cmds) = body.as_array() else {
        out.push(p(&[], "LIST_TYPE_CONVERT", "Must be an array."));
        return out;
    };
    if cmds.len() > 100 {
        out.push(p(&[], "BASE_TYPE_BAD_LENGTH", "Must be between 0 and 100 in length."));
    }
    let mut names = HashSet::new();
    for (i, c) in cmds.iter().enumerate() {
        let path = vec![i.to_string()];
        let kind = c["type"].as_u64().unwrap_or(1);
        let name = c["name"].as_str().unwrap_or("");
        let name_ok = if kind == 1 { valid_name(name) } else { (1..=32).contains(&name.chars().count()) };
        if !name_ok {
            out.push(Problem {
                path: vec![i.to_string(), "name".into()],
                code: "APPLICATION_COMMAND_INVALID_NAME",
                message: "Command name is invalid".into(),
            });
        }
        if !names.insert((kind, name.to_string())) {
            out.push(Problem {
                path: vec![i.to_string(), "name".into()],
                code: "APPLICATION_COMMANDS_DUPLICATE_NAME",
                message: format!("Application command names must be unique ({name})"),
            });
        }
        if kind == 1 {
            check_description(&mut out, &path, &c["description"]);
            check_options(&mut out, &path, &c["options"], 0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_nest_by_path() {
        let body = json!({"content": "x".repeat(2001), "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "a", "custom_id": "same"},
            {"type": 2, "style": 1, "label": "b", "custom_id": "same"}]}]});
        let probs = message_problems(&body);
        assert_eq!(probs.len(), 2, "{probs:?}");
        let e = errors_json(&probs);
        assert_eq!(e["content"]["_errors"][0]["code"], "BASE_TYPE_MAX_LENGTH");
        assert_eq!(e["components"]["0"]["components"]["1"]["custom_id"]["_errors"][0]["code"], "COMPONENT_CUSTOM_ID_DUPLICATED");
    }

    #[test]
    fn limits_at_the_edges() {
        let row = |n: usize| json!({"type": 1, "components": (0..n).map(|i| json!({"type": 2, "style": 2, "label": "l", "custom_id": format!("id{i}-{n}")})).collect::<Vec<_>>()});
        assert!(message_problems(&json!({"content": "x".repeat(2000), "components": [row(5), row(4), row(3), row(2), row(1)]})).is_empty());
        assert!(!message_problems(&json!({"components": [row(6)]})).is_empty());
        assert!(!message_problems(&json!({"components": [row(1), row(2), row(3), row(4), row(5), row(1)]})).is_empty());
        assert!(
            !message_problems(
                &json!({"components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "l", "custom_id": "c".repeat(101)}]}]})
            )
            .is_empty()
        );
        assert!(
            !message_problems(
                &json!({"components": [{"type": 1, "components": [{"type": 2, "style": 1, "label": "l".repeat(81), "custom_id": "c"}]}]})
            )
            .is_empty()
        );
        assert!(!message_problems(&json!({"embeds": [{"description": "d".repeat(4097)}]})).is_empty());
        assert!(!message_problems(&json!({"embeds": (0..11).map(|_| json!({"title": "t"})).collect::<Vec<_>>()})).is_empty());
        let big = json!({"embeds": [{"description": "d".repeat(4000)}, {"description": "d".repeat(2001)}]});
        assert_eq!(message_problems(&big)[0].code, "MAX_EMBED_SIZE_EXCEEDED");
        assert!(is_empty_message(&json!({"content": "", "embeds": [], "components": []})));
    }

    #[test]
    fn command_rules() {
        let ok = json!([{"name": "ops", "description": "Run runbooks", "type": 1, "options": [
            {"type": 1, "name": "restart", "description": "Restart a service", "options": [
                {"type": 3, "name": "service", "description": "Service", "required": true, "autocomplete": true},
                {"type": 3, "name": "env", "description": "Environment", "choices": [{"name": "prod", "value": "prod"}]}]},
            {"type": 2, "name": "backup", "description": "Backups", "options": [
                {"type": 1, "name": "status", "description": "Backup status"}]}]}]);
        assert!(commands_problems(&ok).is_empty(), "{:?}", commands_problems(&ok));
        assert!(!valid_name("Ops"));
        assert!(!valid_name(&"a".repeat(33)));
        assert!(valid_name("backup-now"));
        let bad = json!([{"name": "ops", "description": "", "options": [
            {"type": 3, "name": "a", "description": "a"}, {"type": 3, "name": "b", "description": "b", "required": true},
            {"type": 3, "name": "a", "description": "dup", "autocomplete": true, "choices": [{"name": "x", "value": "x"}]}]}]);
        let codes: Vec<&str> = commands_problems(&bad).iter().map(|p| p.code).collect();
        assert!(codes.contains(&"BASE_TYPE_BAD_LENGTH"), "{codes:?}");
        assert!(codes.contains(&"APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID"), "{codes:?}");
        assert!(codes.contains(&"APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS"), "{codes:?}");
        assert!(codes.contains(&"APPLICATION_COMMAND_AUTOCOMPLETE_INVALID"), "{codes:?}");
    }
}
