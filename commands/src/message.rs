//! The platform-neutral message model: title, text, fields, step list, code block, buttons.
//! Adapters render it (Block Kit, Discord components, console HTML) within their limits.

use crate::model::StepStatus;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub title: String,
    pub text: String,
    pub fields: Vec<(String, String)>,
    pub steps: Vec<StepLine>,
    pub code: Option<String>,
    pub buttons: Vec<Button>,
    pub footer: Option<String>,
}

/// One step in a message's step list. Serialized with its status's icon (`icon`), so a
/// renderer outside Rust (the console page) shows the same one.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StepLine {
    pub status: StepStatus,
    pub name: String,
    pub detail: String,
}

impl StepLine {
    /// The step as one line of text, numbered from 1: `✅ 1. Diagnose (succeeded) — detail`.
    pub fn line(&self, index: usize) -> String {
        let detail = if self.detail.is_empty() { String::new() } else { format!(" — {}", self.detail.replace('\n', " ")) };
        format!("{} {}. {} ({}){detail}", self.status.icon(), index + 1, self.name, self.status.as_str())
    }
}

impl Serialize for StepLine {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("StepLine", 4)?;
        st.serialize_field("status", &self.status)?;
        st.serialize_field("icon", self.status.icon())?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("detail", &self.detail)?;
        st.end()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    Primary,
    Danger,
}

/// A button. Its `value` is never trusted: the engine re-reads the execution and re-checks
/// authorization on every click.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Button {
    pub label: String,
    pub action_id: String,
    pub value: String,
    pub style: Option<ButtonStyle>,
}

impl Message {
    /// A plain text message.
    pub fn text(text: impl Into<String>) -> Self {
        Message { text: text.into(), ..Default::default() }
    }
    /// A code block (command output, logs).
    pub fn code(code: impl Into<String>) -> Self {
        Message { code: Some(code.into()), ..Default::default() }
    }
    pub fn with_title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }
    /// Every piece of text in the message, for redaction checks and tests.
    pub fn all_text(&self) -> String {
        let mut s = format!("{}\n{}\n", self.title, self.text);
        for (k, v) in &self.fields {
            s.push_str(&format!("{k}: {v}\n"));
        }
        for l in &self.steps {
            s.push_str(&format!("[{}] {} {}\n", l.status.as_str(), l.name, l.detail));
        }
        if let Some(c) = &self.code {
            s.push_str(c);
            s.push('\n');
        }
        for b in &self.buttons {
            s.push_str(&format!("<{}>\n", b.label));
        }
        if let Some(f) = &self.footer {
            s.push_str(f);
        }
        s
    }
    /// Applies `f` to every piece of text (used for secret redaction before anything is posted).
    pub fn map_text(mut self, f: impl Fn(&str) -> String) -> Self {
        self.title = f(&self.title);
        self.text = f(&self.text);
        for (k, v) in &mut self.fields {
            *k = f(k);
            *v = f(v);
        }
        for l in &mut self.steps {
            l.name = f(&l.name);
            l.detail = f(&l.detail);
        }
        self.code = self.code.as_deref().map(&f);
        self.footer = self.footer.as_deref().map(&f);
        self
    }
}

/// Splits long text into pieces of at most `max` characters, on line boundaries where possible,
/// so nothing is ever silently cut.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for line in text.split_inclusive('\n') {
        let len = line.chars().count();
        if cur_len + len > max && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if len > max {
            let chars: Vec<char> = line.chars().collect();
            for chunk in chars.chunks(max) {
                out.push(chunk.iter().collect());
            }
            continue;
        }
        cur.push_str(line);
        cur_len += len;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_text;

    #[test]
    fn split_keeps_every_character() {
        let text: String = (0..500).map(|i| format!("line {i}\n")).collect();
        let parts = split_text(&text, 100);
        assert!(parts.iter().all(|p| p.chars().count() <= 100));
        assert_eq!(parts.concat(), text);
        let long = "x".repeat(250);
        let parts = split_text(&long, 100);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.concat(), long);
    }
}
