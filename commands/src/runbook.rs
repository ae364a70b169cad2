//! Runbooks as data: the runbooks file (TOML) with typed steps, and the `{var}` templating
//! that turns a step definition plus an execution's variables into an exact action.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The runbooks file: `[runbooks.<name>]` tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbooksFile {
    #[serde(default)]
    pub runbooks: BTreeMap<String, RunbookDef>,
}

/// One runbook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunbookDef {
    /// One line for help and the status message.
    pub summary: String,
    /// What it acts on: `service` or `database`.
    pub target: TargetKind,
    /// Changes something: takes the target's lock. Default true.
    #[serde(default = "yes")]
    pub mutating: bool,
    /// Parameters given with `--set key=value`.
    #[serde(default)]
    pub params: BTreeMap<String, ParamDef>,
    /// Approvals needed when no `[[approvals]]` policy names this runbook: the generic
    /// policy's count is raised to it (the built-in `restore` asks for 2). A policy naming the
    /// runbook decides alone. Default: the policy's count.
    #[serde(default)]
    pub approvals_required: Option<u32>,
    pub steps: Vec<StepDef>,
    /// A button a failed or cancelled execution offers, e.g. [Rollback] on a deploy.
    #[serde(default)]
    pub on_failure: Option<OnFailureDef>,
}

/// `[runbooks.NAME.on_failure]`: once step `after` has started, a failed or cancelled
/// execution offers a button that starts runbook `runbook` on the same target and environment
/// (under that runbook's own approval policy).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnFailureDef {
    /// The button's label, e.g. `Rollback`.
    pub label: String,
    pub runbook: String,
    /// Name of the step from which on the button is offered.
    pub after: String,
    /// Name of a step that, once succeeded, makes the button pointless (it undid the change).
    #[serde(default)]
    pub unless: Option<String>,
    /// Resolved targets starting with this prefix are handed to the new execution (e.g. the
    /// `writer ` counts a restore recorded).
    #[serde(default)]
    pub carry: Option<String>,
}

impl RunbookDef {
    /// The follow-up with step names turned into indexes; `Err` names what is wrong.
    pub fn follow_up(&self) -> Result<Option<crate::model::FollowUp>, String> {
        let Some(f) = &self.on_failure else { return Ok(None) };
        let index = |name: &str| self.steps.iter().position(|s| s.name == name).ok_or_else(|| format!("no step named '{name}'"));
        Ok(Some(crate::model::FollowUp {
            label: f.label.clone(),
            runbook: f.runbook.clone(),
            after_step: index(&f.after)?,
            unless_step: f.unless.as_deref().map(index).transpose()?,
            carry: f.carry.clone(),
            spent: None,
        }))
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    Service,
    Database,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Service => "service",
            TargetKind::Database => "database",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamDef {
    /// Shown in help.
    #[serde(default)]
    pub help: String,
    /// Used when the parameter is not given; without a default the parameter is required.
    #[serde(default)]
    pub default: Option<String>,
    /// The whole value must match this regular expression (it is anchored for you). Default
    /// `^[A-Za-z0-9_][A-Za-z0-9._/:-]{0,199}$` with no `..` segment.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `value` (default): the text as given. `path`: a file or directory under `root`; the
    /// variable becomes its canonical absolute path, refused if it escapes `root`.
    #[serde(default, rename = "type")]
    pub kind: ParamKind,
    /// For a `path` parameter: the directory (a template, e.g. `{reports_dir}`) it is resolved
    /// under.
    #[serde(default)]
    pub root: Option<String>,
}

/// What a parameter's value is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    #[default]
    Value,
    Path,
}

/// A step: a name, a kind, and the kind's own parameters (checked by the kind).
#[derive(Debug, Clone, Deserialize)]
pub struct StepDef {
    pub name: String,
    pub kind: String,
    /// Override the kind's default: may this step run again after a crash?
    #[serde(default)]
    pub idempotent: Option<bool>,
    #[serde(flatten)]
    pub params: toml::Table,
}

/// A template parsed once: literal text and `{name}` placeholders, as the author wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Var(String),
}

/// Parses a template: `{name}` is a placeholder, `{{` and `}}` are literal braces.
pub fn parse(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for n in chars.by_ref() {
                    if n == '}' {
                        closed = true;
                        break;
                    }
                    name.push(n);
                }
                if !closed {
                    return Err(format!("unclosed '{{' in \"{template}\""));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Var(name));
            }
            '}' => return Err(format!("stray '}}' in \"{template}\"")),
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// Substitutes `{name}` with `vars[name]` in one pass: a value is inserted as it is and never
/// read again for placeholders. `{{` and `}}` are literal braces. Unknown names are an error
/// naming the variable, so a runbook cannot run with a hole in its argv.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var(name) => match vars.get(&name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("unknown variable {{{name}}} in \"{template}\"")),
            },
        }
    }
    Ok(out)
}

/// `{` and `}` doubled: the text reads as itself in a template.
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Renders the variables of a template whose `{secret.NAME}` placeholders are filled in only
/// when the step runs: the result is again a template, in which every variable's value is
/// escaped and the only placeholders left are the secrets the author wrote. A value that came
/// from a parameter, a chat argument or a program can therefore never name a secret.
pub fn render_keeping_secrets(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(&escape(&t)),
            Piece::Var(name) if name.starts_with("secret.") => {
                if !vars.contains_key(&name) {
                    return Err(format!("unknown variable {{{name}}} in \"{template}\" (no such secret under [secrets])"));
                }
                out.push('{');
                out.push_str(&name);
                out.push('}');
            }
            Piece::Var(name) => match vars.get(&name) {
                Some(v) => out.push_str(&escape(v)),
                None => return Err(format!("unknown variable {{{name}}} in \"{template}\"")),
            },
        }
    }
    Ok(out)
}

/// Fills in a template made by [`render_keeping_secrets`], in one pass: each `{secret.NAME}`
/// becomes the secret's value, escaped braces become braces. Any other placeholder, or a
/// secret that is not configured, is an error (naming it, never a value).
pub fn expand_secrets(template: &str, secrets: &BTreeMap<String, crate::config::Secret>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    for piece in parse(template)? {
        match piece {
            Piece::Text(t) => out.push_str(&t),
            Piece::Var(name) => {
                let secret = name.strip_prefix("secret.").and_then(|n| secrets.get(n));
                match secret {
                    Some(s) => out.push_str(s.expose()),
                    None => return Err(format!("{{{name}}} is not a configured secret")),
                }
            }
        }
    }
    Ok(out)
}

/// The variable names a template refers to.
pub fn placeholders(template: &str) -> Vec<String> {
    parse(template)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_substitutes_and_refuses_unknown() {
        let vars: BTreeMap<String, String> = [("service".to_string(), "promotions".to_string())].into();
        assert_eq!(render("app={service} {{x}}", &vars).unwrap(), "app=promotions {x}");
        assert!(render("{nope}", &vars).unwrap_err().contains("unknown variable {nope}"));
        assert!(render("{service", &vars).is_err());
        assert_eq!(placeholders("a {b} {{c}} {d}"), vec!["b", "d"]);
    }

    #[test]
    fn a_value_is_inserted_once_and_never_expanded_again() {
        let vars: BTreeMap<String, String> =
            [("note".to_string(), "{secret.canary}".to_string()), ("secret.canary".to_string(), String::new())].into();
        assert_eq!(render("n={note}", &vars).unwrap(), "n={secret.canary}");
        // The author's secret stays a placeholder; the parameter's braces are escaped.
        let stored = render_keeping_secrets("{note}:{secret.canary}", &vars).unwrap();
        assert_eq!(stored, "{{secret.canary}}:{secret.canary}");
        let secret = crate::config::Secret::for_test("canary-value-1234");
        let secrets: BTreeMap<String, crate::config::Secret> = [("canary".to_string(), secret)].into();
        assert_eq!(expand_secrets(&stored, &secrets).unwrap(), "{secret.canary}:canary-value-1234");
        assert!(expand_secrets("{secret.other}", &secrets).unwrap_err().contains("not a configured secret"));
        assert!(render_keeping_secrets("{secret.other}", &vars).unwrap_err().contains("no such secret"));
    }
}
