//! The `/ops` grammar: the command table ([`spec`]), the pure parser ([`parse`]) and the help
//! text generated from the table ([`help`]).

pub mod help;
mod parse;
pub mod spec;
mod tokenize;

#[cfg(test)]
mod tests;

pub use parse::{BackupAction, BackupSource, Command, ExecutionId, MAX_INPUT, ParseError, RestoreDate, RollbackTo, Version, parse};
