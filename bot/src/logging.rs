//! Logging: text or JSON lines on stderr, every line passed through the secret redactor before
//! it is written, so no field of any event (a step's outcome, an error, a span) can carry a
//! secret — whatever code logged it.

use runbot_commands::config::Redactor;
use std::io::Write;
use std::sync::RwLock;
use tracing_subscriber::fmt::MakeWriter;

/// The secrets the log writer redacts: empty until a config is loaded (no secret is resolved
/// before that), then the config's redactor.
static REDACTOR: RwLock<Option<Redactor>> = RwLock::new(None);

/// From now on, log lines are redacted with `redactor`.
pub fn redact_with(redactor: &Redactor) {
    match REDACTOR.write() {
        Ok(mut r) => *r = Some(redactor.clone()),
        Err(poisoned) => *poisoned.into_inner() = Some(redactor.clone()),
    }
}

/// `text` redacted with the loaded config's secrets (for what runbot prints outside the log).
pub fn redact(text: &str) -> String {
    let r = match REDACTOR.read() {
        Ok(r) => r.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    r.map(|r| r.redact(text)).unwrap_or_else(|| text.to_string())
}

/// Installs the global subscriber: `RUNBOT_LOG` filter, text or JSON, redacted stderr.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUNBOT_LOG").unwrap_or_else(|_| "info,sqlx=warn".into());
    // Colours only for a person at a terminal: a file, a pipe or a log collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(Redacted(std::io::stderr));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A [`MakeWriter`] whose writers collect one formatted event and write it, redacted, to the
/// inner writer when dropped (the formatter writes each event with one `write_all`, then drops
/// the writer).
pub struct Redacted<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacted<M> {
    type Writer = Line<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        Line { buf: Vec::new(), inner: self.0.make_writer() }
    }
}

/// One event being formatted.
pub struct Line<W: Write> {
    buf: Vec<u8>,
    inner: W,
}

impl<W: Write> Write for Line<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for Line<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let out = redact(&String::from_utf8_lossy(&self.buf));
        let _ = self.inner.write_all(out.as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbot_commands::config::SecretRef;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_field_of_a_json_or_text_log_line_is_redacted_even_escaped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        let secret = r#"log"sec\ret-Wq7Zp2Kd"#;
        std::fs::write(&file, secret).expect("write secret");
        let resolved = format!("file:{}", file.display()).parse::<SecretRef>().expect("reference").resolve().expect("resolve");
        redact_with(&Redactor::new(vec![resolved]));
        for json in [true, false] {
            let buf = Buf::default();
            let sink = buf.clone();
            let builder = tracing_subscriber::fmt().with_ansi(false).with_writer(Redacted(move || sink.clone()));
            let event = || {
                let half = &secret[..10];
                tracing::info!(error = %format!("failed: {secret}"), detail = ?secret, half, "oops {secret}");
            };
            if json {
                tracing::subscriber::with_default(builder.json().finish(), event);
            } else {
                tracing::subscriber::with_default(builder.finish(), event);
            }
            let out = String::from_utf8(buf.0.lock().unwrap_or_else(|p| p.into_inner()).clone()).expect("utf-8");
            assert!(out.contains("failed: ***") && out.contains("oops ***"), "{out}");
            for form in [secret.to_string(), format!("{secret:?}"), serde_json::to_string(secret).expect("json")] {
                let form = form.trim_matches('"');
                let chars: Vec<char> = form.chars().collect();
                for w in chars.windows(8).map(|w| w.iter().collect::<String>()) {
                    assert!(!out.contains(&w), "'{w}' of the secret is in the log line: {out}");
                }
            }
        }
    }
}
