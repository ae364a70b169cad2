//! runbot's adapters: the only code that knows a wire format or an SDK — the SQL state store
//! (sqlx: SQLite and PostgreSQL) and the local web console; later Slack, Discord, Kubernetes,
//! Helm, Swarm, GitHub and S3.

pub mod console;
pub mod store_sql;
