//! `/ops` as a Discord application command, generated from the grammar's command table
//! (`runbot_commands::grammar::spec`) — the same table the parser and `/ops help` read — so
//! the registered command cannot drift from what the parser accepts. And the way back: an
//! interaction's sub-command and typed options rebuilt into the `/ops …` text the parser reads.
//!
//! Mapping: each table entry is a sub-command of `/ops`; each positional argument and each
//! `--flag` is an option of the same name (required ones first, as Discord requires). Option
//! types: `--limit` an integer (1–200), a switch (`--dry-run`) a boolean, everything else a
//! string; `backup`'s action has the choices status/now/prune; services, databases, targets,
//! pods, environments, runbooks and execution ids autocomplete. The repeatable `--set` is one
//! string option holding space-separated `key=value` pairs.

use runbot_commands::grammar::spec::{ArgKind, COMMANDS, CommandSpec};
use serde_json::{Value, json};

/// The registered command's name: `/ops`.
pub const COMMAND: &str = "ops";
/// Discord's option types.
const SUB_COMMAND: u64 = 1;
const STRING: u64 = 3;
const INTEGER: u64 = 4;
const BOOLEAN: u64 = 5;
/// Discord's limit on descriptions.
const MAX_DESCRIPTION: usize = 100;

/// One option of a sub-command, derived from an argument or a flag of the table.
#[derive(Debug, Clone, Copy)]
pub struct OptionSpec {
    pub name: &'static str,
    /// `None`: a switch (boolean).
    pub kind: Option<ArgKind>,
    pub required: bool,
    pub help: &'static str,
    /// A `--flag` (else a positional argument).
    pub flag: bool,
    /// Repeatable flag (`--set`): one option, space-separated values.
    pub repeated: bool,
}

/// The options of a sub-command, required ones first (otherwise in table order).
pub fn options_of(c: &CommandSpec) -> Vec<OptionSpec> {
    let args =
        c.args.iter().map(|a| OptionSpec { name: a.name, kind: Some(a.kind), required: a.required, help: a.help, flag: false, repeated: false });
    let flags =
        c.flags.iter().map(|f| OptionSpec { name: f.name, kind: f.kind, required: f.required, help: f.help, flag: true, repeated: f.repeated });
    let all: Vec<OptionSpec> = args.chain(flags).collect();
    let (mut req, opt): (Vec<_>, Vec<_>) = all.into_iter().partition(|o| o.required);
    req.extend(opt);
    req
}

/// Whether Discord offers autocompletion for this kind of value.
pub fn autocompletes(kind: ArgKind) -> bool {
    matches!(
        kind,
        ArgKind::Service
            | ArgKind::ServiceOrPod
            | ArgKind::Database
            | ArgKind::Target
            | ArgKind::ExecutionId
            | ArgKind::Env
            | ArgKind::Runbook
            | ArgKind::Topic
    )
}

fn description(s: &str) -> String {
    let mut d: String = s.chars().take(MAX_DESCRIPTION).collect();
    if d.is_empty() {
        d.push('-');
    }
    d
}

fn option_json(o: &OptionSpec) -> Value {
    let mut v = json!({"name": o.name, "description": description(o.help), "required": o.required});
    match o.kind {
        None => v["type"] = json!(BOOLEAN),
        Some(ArgKind::Limit) => {
            v["type"] = json!(INTEGER);
            v["min_value"] = json!(1);
            v["max_value"] = json!(200);
        }
        Some(ArgKind::BackupAction) => {
            v["type"] = json!(STRING);
            v["choices"] = json!(["status", "now", "prune"].iter().map(|c| json!({"name": c, "value": c})).collect::<Vec<_>>());
        }
        Some(k) => {
            v["type"] = json!(STRING);
            if autocompletes(k) {
                v["autocomplete"] = json!(true);
            }
        }
    }
    v
}

/// The bulk-overwrite body for `PUT /applications/{app}[/guilds/{guild}]/commands`: `/ops`
/// with one sub-command per table entry.
pub fn definitions() -> Value {
    let subs: Vec<Value> = COMMANDS
        .iter()
        .map(|c| {
            json!({
                "type": SUB_COMMAND,
                "name": c.name,
                "description": description(c.summary),
                "options": options_of(c).iter().map(option_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!([{
        "type": 1,
        "name": COMMAND,
        "description": "runbot: operate services from chat (deploy, restart, restore, status, help)",
        "options": subs,
    }])
}

/// The sub-command of an interaction's `data` and its typed options.
fn sub_command(data: &Value) -> Result<(&'static CommandSpec, &[Value]), String> {
    let name = data["name"].as_str().unwrap_or("");
    if name != COMMAND {
        return Err(format!("runbot only answers /{COMMAND}; /{} is not its command.", name.chars().take(32).collect::<String>()));
    }
    let top = data["options"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let Some(sub) = top.first().filter(|o| o["type"].as_u64() == Some(SUB_COMMAND)) else {
        return Err(format!("Choose a sub-command of /{COMMAND}, e.g. /{COMMAND} help."));
    };
    let sname = sub["name"].as_str().unwrap_or("");
    let spec = COMMANDS.iter().find(|c| c.name == sname).ok_or_else(|| {
        format!(
            "/{COMMAND} {} is not a runbot command; the registered commands may be out of date (runbot discord register-commands).",
            sname.chars().take(32).collect::<String>()
        )
    })?;
    Ok((spec, sub["options"].as_array().map(Vec::as_slice).unwrap_or(&[])))
}

/// One word of the rebuilt text: quoted when it has spaces. A value that would read as a flag
/// or could not be quoted is refused rather than change the command's meaning.
fn word(name: &str, v: &str) -> Result<String, String> {
    if v.starts_with('-') {
        return Err(format!("The value of {name} cannot start with '-'."));
    }
    if !v.chars().any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '“' | '”' | '‘' | '’')) {
        return Ok(v.to_string());
    }
    if v.contains(['"', '“', '”']) {
        if v.contains(['\'', '‘', '’']) {
            return Err(format!("The value of {name} cannot hold both kinds of quotes."));
        }
        return Ok(format!("'{v}'"));
    }
    Ok(format!("\"{v}\""))
}

/// The `/ops …` text of an APPLICATION_COMMAND interaction's `data`: sub-command, then the
/// positional options in table order, then the flags. Refuses (with a message for the person)
/// options the table does not have, values of the wrong JSON type, or missing required ones.
pub fn text_of(data: &Value) -> Result<String, String> {
    let (spec, given) = sub_command(data)?;
    let specs = options_of(spec);
    for g in given {
        let n = g["name"].as_str().unwrap_or("");
        if !specs.iter().any(|o| o.name == n) {
            return Err(format!(
                "/{COMMAND} {} has no option {}; the registered commands may be out of date (runbot discord register-commands).",
                spec.name,
                n.chars().take(32).collect::<String>()
            ));
        }
    }
    let value = |name: &str| given.iter().find(|g| g["name"] == name).map(|g| &g["value"]);
    let mut words = vec![format!("/{COMMAND}"), spec.name.to_string()];
    let ordered = spec.args.iter().map(|a| (a.name, false)).chain(spec.flags.iter().map(|f| (f.name, true)));
    for (name, _) in ordered {
        let o = specs.iter().find(|o| o.name == name).expect("options_of covers every argument and flag");
        let Some(v) = value(name) else {
            if o.required {
                return Err(format!("/{COMMAND} {} needs {name}.", spec.name));
            }
            continue;
        };
        match (o.kind, v) {
            (None, Value::Bool(b)) => {
                if *b {
                    words.push(format!("--{name}"));
                }
            }
            (Some(ArgKind::Limit), Value::Number(n)) if n.is_u64() || n.is_i64() => {
                if o.flag {
                    words.push(format!("--{name}"));
                }
                words.push(n.to_string());
            }
            (Some(k), Value::String(s)) if o.repeated && k != ArgKind::Limit => {
                for part in s.split_whitespace() {
                    words.push(format!("--{name}"));
                    words.push(word(name, part)?);
                }
            }
            (Some(k), Value::String(s)) if k != ArgKind::Limit => {
                let s = s.trim();
                if s.is_empty() {
                    if o.required {
                        return Err(format!("/{COMMAND} {} needs {name}.", spec.name));
                    }
                    continue;
                }
                if o.flag {
                    words.push(format!("--{name}"));
                }
                words.push(word(name, s)?);
            }
            _ => {
                return Err(format!(
                    "The option {name} of /{COMMAND} {} has the wrong type; the registered commands may be out of date (runbot discord register-commands).",
                    spec.name
                ));
            }
        }
    }
    Ok(words.join(" "))
}

/// The option being typed in an APPLICATION_COMMAND_AUTOCOMPLETE interaction: its kind of
/// value and what was typed so far.
pub fn focused(data: &Value) -> Option<(ArgKind, String)> {
    let (spec, given) = sub_command(data).ok()?;
    let f = given.iter().find(|g| g["focused"].as_bool() == Some(true))?;
    let name = f["name"].as_str()?;
    let kind = options_of(spec).into_iter().find(|o| o.name == name)?.kind?;
    let typed = match &f["value"] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    Some((kind, typed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbot_commands::grammar::parse;

    /// Builds the interaction `data` Discord sends for a sub-command and options.
    fn data(sub: &str, opts: &[(&str, Value)]) -> Value {
        let o: Vec<Value> = opts.iter().map(|(n, v)| json!({"name": n, "value": v})).collect();
        json!({"name": "ops", "type": 1, "options": [{"name": sub, "type": 1, "options": o}]})
    }

    /// A sample value for an option, of the JSON type its definition declares.
    fn sample(o: &OptionSpec) -> Value {
        match o.kind {
            None => json!(true),
            Some(ArgKind::Limit) => json!(7),
            Some(ArgKind::Service) | Some(ArgKind::ServiceOrPod) | Some(ArgKind::Target) => json!("promotions-api"),
            Some(ArgKind::Database) => json!("promotions-db"),
            Some(ArgKind::Version) => json!("v1.2.5"),
            Some(ArgKind::VersionOrRevision) => json!("7"),
            Some(ArgKind::Date) => json!("2023-10-27T10:00:00Z"),
            Some(ArgKind::Source) => json!("s3://backups/promotions"),
            Some(ArgKind::Env) => json!("prod"),
            Some(ArgKind::ExecutionId) => json!("R-42"),
            Some(ArgKind::BackupAction) => json!("status"),
            Some(ArgKind::Topic) | Some(ArgKind::Runbook) => json!("restart"),
            Some(ArgKind::Param) => json!("replicas=3 reason=stuck"),
        }
    }

    #[test]
    fn every_table_entry_is_a_subcommand_that_round_trips_through_the_parser() {
        let defs = definitions();
        let subs = defs[0]["options"].as_array().expect("sub-commands");
        assert_eq!(subs.len(), COMMANDS.len());
        for c in COMMANDS {
            let sub = subs.iter().find(|s| s["name"] == c.name).unwrap_or_else(|| panic!("{} has no Discord sub-command", c.name));
            assert!(c.summary.chars().count() <= MAX_DESCRIPTION, "{}: summary too long for Discord", c.name);
            let opts = options_of(c);
            let json_opts = sub["options"].as_array().expect("options");
            assert_eq!(json_opts.len(), c.args.len() + c.flags.len(), "{}: every argument and flag is an option", c.name);
            for (o, j) in opts.iter().zip(json_opts) {
                assert_eq!(j["name"], o.name);
                assert!(o.help.chars().count() <= MAX_DESCRIPTION, "{}.{}: help too long for Discord", c.name, o.name);
            }
            // All options given, and only the required ones: both parse to what the text says.
            for all in [true, false] {
                let given: Vec<(&str, Value)> = opts.iter().filter(|o| all || o.required).map(|o| (o.name, sample(o))).collect();
                let text = text_of(&data(c.name, &given)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
                let cmd = parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(cmd.name(), c.name, "{text}");
                // The same command typed by hand, in the table's order.
                let mut typed = format!("/ops {}", c.name);
                for a in c.args.iter().filter(|a| all || a.required) {
                    let o = opts.iter().find(|o| o.name == a.name).expect("option");
                    typed.push_str(&format!(" {}", sample(o).as_str().expect("positional values are strings")));
                }
                for f in c.flags.iter().filter(|f| all || f.required) {
                    let o = opts.iter().find(|o| o.name == f.name).expect("option");
                    match (o.kind, sample(o)) {
                        (None, _) => typed.push_str(&format!(" --{}", f.name)),
                        (_, Value::String(s)) if f.repeated => s.split(' ').for_each(|p| typed.push_str(&format!(" --{} {p}", f.name))),
                        (_, Value::String(s)) => typed.push_str(&format!(" --{} {s}", f.name)),
                        (_, v) => typed.push_str(&format!(" --{} {v}", f.name)),
                    }
                }
                assert_eq!(parse(&typed).map_err(|e| e.to_string()), Ok(cmd), "{typed} vs {text}");
            }
        }
    }

    #[test]
    fn definitions_follow_discords_rules() {
        let defs = definitions();
        let problems = runbot_sandbox::discord::limits::commands_problems(&defs);
        assert!(problems.is_empty(), "{problems:?}");
        let restart = &defs[0]["options"].as_array().expect("subs").iter().find(|s| s["name"] == "restart").expect("restart")["options"];
        assert_eq!(
            restart[0],
            json!({"name": "target", "description": "a configured service, or one of its pods", "required": true, "type": 3, "autocomplete": true})
        );
        assert_eq!(restart[2]["type"], BOOLEAN);
        let restore = &defs[0]["options"].as_array().expect("subs").iter().find(|s| s["name"] == "restore").expect("restore")["options"];
        // The required --date comes before the optional flags.
        assert_eq!((restore[1]["name"].as_str(), restore[1]["required"].as_bool()), (Some("date"), Some(true)));
    }

    #[test]
    fn bad_options_get_specific_messages() {
        assert!(text_of(&json!({"name": "deploy"})).unwrap_err().contains("only answers /ops"));
        assert!(text_of(&json!({"name": "ops", "options": []})).unwrap_err().contains("Choose a sub-command"));
        assert!(text_of(&data("explode", &[])).unwrap_err().contains("not a runbot command"));
        assert!(text_of(&data("restart", &[])).unwrap_err().contains("needs target"));
        assert!(text_of(&data("restart", &[("target", json!("a")), ("color", json!("red"))])).unwrap_err().contains("no option color"));
        assert!(text_of(&data("history", &[("limit", json!("ten"))])).unwrap_err().contains("wrong type"));
        assert!(text_of(&data("restart", &[("target", json!("--env"))])).unwrap_err().contains("cannot start with '-'"));
        assert_eq!(text_of(&data("help", &[("runbook", json!("restart"))])).as_deref(), Ok("/ops help restart"));
        assert_eq!(
            text_of(&data("restart", &[("target", json!("promotions-api")), ("dry-run", json!(false))])).as_deref(),
            Ok("/ops restart promotions-api")
        );
        assert_eq!(
            text_of(&data("run", &[("runbook", json!("x")), ("target", json!("y")), ("set", json!(" a=1  b=2 "))])).as_deref(),
            Ok("/ops run x y --set a=1 --set b=2")
        );
        assert_eq!(text_of(&data("help", &[("runbook", json!("two words"))])).as_deref(), Ok("/ops help \"two words\""));
    }

    #[test]
    fn the_focused_option_names_its_kind() {
        let d = json!({"name": "ops", "options": [{"name": "restart", "type": 1, "options": [{"name": "target", "type": 3, "value": "prom", "focused": true}]}]});
        assert_eq!(focused(&d), Some((ArgKind::ServiceOrPod, "prom".to_string())));
        let d = json!({"name": "ops", "options": [{"name": "cancel", "type": 1, "options": [{"name": "execution-id", "type": 3, "value": "", "focused": true}]}]});
        assert_eq!(focused(&d), Some((ArgKind::ExecutionId, String::new())));
        assert_eq!(focused(&json!({"name": "ops"})), None);
    }
}
