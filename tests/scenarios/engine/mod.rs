//! Engine scenarios on in-memory fakes, one file per concern. Each reads like a runbook being
//! used in a channel, and asserts the outcome that would break if the feature broke.

mod approvals;
mod faults;
mod inbox;
mod lifecycle;
mod mirror;
mod replicas;
mod restart;
mod secrets;
mod surface;
mod updates;
