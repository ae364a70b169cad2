//! runbot's adapters: the only code that knows a wire format or an SDK — the SQL state store
//! (sqlx: SQLite and PostgreSQL), the local web console, and the Kubernetes driver (kube-rs);
//! later Slack, Discord, Helm, Swarm, GitHub and S3.

pub mod console;
pub mod kubernetes;
pub mod store_sql;
