//! `SetupError`: why something could not be set up or pass a start-up check — an adapter from
//! the config (a secret that does not resolve, the store's connection or migrations), a
//! sandbox server — one sentence that says what was being done and why. `bot/` reports it as
//! it is; `anyhow` is used only there.

use std::fmt::Display;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// `result.doing("connecting to the store")?`: the error as a [`SetupError`] that says what
/// was being done, then the cause.
pub trait Doing<T> {
    fn doing(self, what: impl Display) -> Result<T, SetupError>;
}

impl<T, E: Display> Doing<T> for Result<T, E> {
    fn doing(self, what: impl Display) -> Result<T, SetupError> {
        self.map_err(|e| SetupError(format!("{what}: {e}")))
    }
}

/// Fails with `message` unless `ok`.
pub fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<(), SetupError> {
    if ok { Ok(()) } else { Err(SetupError(message())) }
}

/// Binding, reading or writing a file or socket at start-up.
impl From<std::io::Error> for SetupError {
    fn from(e: std::io::Error) -> Self {
        SetupError(e.to_string())
    }
}

pub type SetupResult<T> = Result<T, SetupError>;
