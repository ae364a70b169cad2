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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(Redacted(std::io::stderr));
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
