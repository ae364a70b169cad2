//! Secrets by reference (`env:NAME`, `file:PATH`), resolved into a type that never prints its
//! value, and the redactor that scrubs resolved values from everything posted or logged.

use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// Where a secret comes from. Literal values are not accepted in config.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{p}"),
        }
    }
}

impl std::str::FromStr for SecretRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("env", n)) if !n.is_empty() => Ok(SecretRef::Env(n.to_string())),
            Some(("file", p)) if !p.is_empty() => Ok(SecretRef::File(p.to_string())),
            _ => Err("a secret must be a reference, env:NAME or file:PATH (literal secrets are not accepted)".into()),
        }
    }
}

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl SecretRef {
    /// Reads the value. Errors name the reference, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        let v = match self {
            SecretRef::Env(n) => std::env::var(n).map_err(|_| format!("environment variable {n} is not set"))?,
            SecretRef::File(p) => {
                std::fs::read_to_string(p).map_err(|e| format!("cannot read secret file {p}: {e}"))?.trim_end_matches(['\n', '\r']).to_string()
            }
        };
        if v.is_empty() {
            return Err(format!("secret {self:?} is empty"));
        }
        Ok(Secret(Arc::from(v)))
    }
}

/// A resolved secret. `Debug` and `Display` print `***`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
    #[cfg(test)]
    pub(crate) fn for_test(value: &str) -> Secret {
        Secret(Arc::from(value))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The shortest run of a secret's characters that is redacted on its own: any 8 consecutive
/// characters of a secret, wherever they appear, become `***` (a secret printed in halves, or
/// cut by a line break, is still hidden). A secret shorter than this is redacted whole.
pub const REDACT_RUN: usize = 8;

/// Secrets shorter than this are not redacted at all (every `ok` in a log would go).
const REDACT_MIN: usize = 4;

/// Replaces every known secret value, and every run of at least [`REDACT_RUN`] consecutive
/// characters of one, with `***`. Each secret is also looked for in the escaped forms logs
/// and JSON give it (`\"`, `\\`, `\n`, `\u0001`), so a formatted log line is covered too.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every `REDACT_RUN`-character window of every form of every long secret.
    windows: Arc<HashSet<String>>,
    /// Forms of secrets shorter than `REDACT_RUN` (replaced whole), longest first.
    short: Arc<Vec<String>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} windows, {} short secrets)", self.windows.len(), self.short.len())
    }
}

impl Redactor {
    pub fn new(values: Vec<Secret>) -> Self {
        let mut windows = HashSet::new();
        let mut short = Vec::new();
        for s in &values {
            let raw = s.expose();
            if raw.chars().count() < REDACT_MIN {
                continue;
            }
            let json = serde_json::to_string(raw).unwrap_or_default();
            let debug = format!("{raw:?}");
            let forms = [raw.to_string(), json[1..json.len() - 1].to_string(), debug[1..debug.len() - 1].to_string()];
            for form in forms {
                let chars: Vec<(usize, char)> = form.char_indices().collect();
                if chars.len() < REDACT_RUN {
                    if !short.contains(&form) {
                        short.push(form);
                    }
                    continue;
                }
                for k in 0..=chars.len() - REDACT_RUN {
                    let end = chars.get(k + REDACT_RUN).map_or(form.len(), |c| c.0);
                    windows.insert(form[chars[k].0..end].to_string());
                }
            }
        }
        // Longest first so a short secret containing another is replaced whole.
        short.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Redactor { windows: Arc::new(windows), short: Arc::new(short) }
    }

    /// Whether `text` holds a secret, or a run of [`REDACT_RUN`] characters of one.
    pub fn finds_secret_in(&self, text: &str) -> bool {
        !self.covered(text).is_empty() || self.short.iter().any(|s| text.contains(s.as_str()))
    }

    pub fn redact(&self, text: &str) -> String {
        let spans = self.covered(text);
        let mut out = if spans.is_empty() {
            text.to_string()
        } else {
            let mut out = String::with_capacity(text.len());
            let mut at = 0;
            for (start, end) in spans {
                out.push_str(&text[at..start]);
                out.push_str("***");
                at = end;
            }
            out.push_str(&text[at..]);
            out
        };
        for s in self.short.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }

    /// The byte ranges of `text` covered by some window of a secret, merged where they
    /// overlap or touch, in order.
    fn covered(&self, text: &str) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        if self.windows.is_empty() {
            return spans;
        }
        let starts: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        if starts.len() < REDACT_RUN {
            return spans;
        }
        for k in 0..=starts.len() - REDACT_RUN {
            let (start, end) = (starts[k], starts.get(k + REDACT_RUN).copied().unwrap_or(text.len()));
            if self.windows.contains(&text[start..end]) {
                match spans.last_mut() {
                    Some(last) if last.1 >= start => last.1 = last.1.max(end),
                    _ => spans.push((start, end)),
                }
            }
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_are_redacted() {
        let s = Secret(Arc::from("hunter2-token"));
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        let r = Redactor::new(vec![s]);
        assert_eq!(r.redact("auth hunter2-token ok"), "auth *** ok");
        assert!(r.finds_secret_in("xhunter2-tokenx") && !r.finds_secret_in("hunter2"));
        assert!("plain".parse::<SecretRef>().is_err());
        assert_eq!("env:X".parse::<SecretRef>(), Ok(SecretRef::Env("X".into())));
    }

    #[test]
    fn any_eight_characters_of_a_secret_are_redacted_but_shorter_runs_are_not() {
        let r = Redactor::new(vec![Secret(Arc::from("canary-7Qx9mZ4tLp2Vw8"))]);
        // The first half alone, the second half alone, and the whole value inside other text.
        assert_eq!(r.redact("half:canary-7Qx9m"), "half:***");
        assert_eq!(r.redact("tail=Lp2Vw8 and 4tLp2Vw8!"), "tail=Lp2Vw8 and ***!");
        assert_eq!(r.redact("err:canary-7Qx9mZ4tLp2Vw8|canary-7Qx9mZ4tLp2Vw8"), "err:***|***");
        // Seven characters are not a run.
        assert_eq!(r.redact("canary-"), "canary-");
        // Multi-byte text around a secret is kept intact.
        assert_eq!(r.redact("é→canary-7Qx9mZ←ü"), "é→***←ü");
    }

    #[test]
    fn a_secret_is_found_in_its_json_and_debug_escaped_forms() {
        let r = Redactor::new(vec![Secret(Arc::from("quo\"te\\back-slash"))]);
        let json = serde_json::to_string("x quo\"te\\back-slash y").unwrap();
        assert_eq!(r.redact(&json), "\"x *** y\"");
        let debug = format!("{:?}", "x quo\"te\\back-slash y");
        assert_eq!(r.redact(&debug), "\"x *** y\"");
    }

    #[test]
    fn a_short_secret_is_redacted_whole_only() {
        let r = Redactor::new(vec![Secret(Arc::from("pw-123")), Secret(Arc::from("abc"))]);
        assert_eq!(r.redact("a pw-123 b pw-12 abc"), "a *** b pw-12 abc");
    }
}
