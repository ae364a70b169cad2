//! Secrets by reference (`env:NAME`, `file:PATH`), resolved into a type that never prints its
//! value, and the redactor that scrubs resolved values from everything posted or logged.

use serde::{Deserialize, Deserializer};
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
            SecretRef::File(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read secret file {p}: {e}"))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
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

/// Replaces every known secret value with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<Vec<Secret>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.values.len())
    }
}

impl Redactor {
    pub fn new(mut values: Vec<Secret>) -> Self {
        // Longest first so a secret containing another is replaced whole.
        values.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        values.retain(|s| s.0.len() >= 4);
        Redactor { values: Arc::new(values) }
    }
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in self.values.iter() {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), "***");
            }
        }
        out
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
        assert!("plain".parse::<SecretRef>().is_err());
        assert_eq!("env:X".parse::<SecretRef>(), Ok(SecretRef::Env("X".into())));
    }
}
