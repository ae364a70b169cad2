//! The `/ops` grammar: the command table ([`spec`]), the pure parser ([`parse`]) and the help
//! text generated from the table ([`help`]).

pub mod help;
mod parse;
pub mod spec;
mod tokenize;

#[cfg(test)]
mod tests;

pub use parse::{
    parse, BackupAction, BackupSource, Command, ExecutionId, ParseError, RollbackTo, Version, MAX_INPUT,
};
