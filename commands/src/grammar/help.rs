//! Help text, generated from the same table the parser reads.

use super::spec::{COMMANDS, CommandSpec};

/// `/ops help`: every command's usage line and summary. Built once: the table is static.
pub fn overview() -> String {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(build_overview).clone()
}

fn build_overview() -> String {
    let mut s = String::from("runbot commands:\n");
    for c in COMMANDS {
        s.push_str(&format!("• `{}` — {}\n", c.usage(), c.summary));
    }
    s.push_str("Add --dry-run to a runbook command to see its plan without changing anything.");
    s
}

/// `/ops help <command>`: usage, then each argument and flag.
pub fn command(spec: &CommandSpec) -> String {
    let mut s = format!("`{}`\n{}\n", spec.usage(), spec.summary);
    for a in spec.args {
        s.push_str(&format!("  <{}> — {}\n", a.name, a.help));
    }
    for f in spec.flags {
        match f.kind {
            Some(k) => s.push_str(&format!("  --{} <{}> — {}\n", f.name, k.placeholder(), f.help)),
            None => s.push_str(&format!("  --{} — {}\n", f.name, f.help)),
        }
    }
    s.trim_end().to_string()
}
