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
    /// `^[A-Za-z0-9_][A-Za-z0-9._/:-]{0,199}$`.
    #[serde(default)]
    pub pattern: Option<String>,
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

/// Substitutes `{name}` with `vars[name]`; `{{` and `}}` are literal braces. Unknown names are
/// an error naming the variable, so a runbook cannot run with a hole in its argv.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
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
                match vars.get(&name) {
                    Some(v) => out.push_str(v),
                    None => return Err(format!("unknown variable {{{name}}} in \"{template}\"")),
                }
            }
            '}' => return Err(format!("stray '}}' in \"{template}\"")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The variable names a template refers to.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template.replace("{{", "").replace("}}", "");
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else { break };
        out.push(rest[start + 1..start + end].to_string());
        rest = rest[start + end + 1..].to_string();
    }
    out
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
}
