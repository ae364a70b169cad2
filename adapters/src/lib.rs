//! runbot's adapters: the only code that knows a wire format or an SDK — the SQL state store
//! (sqlx: SQLite and PostgreSQL), the local web console, Slack (slack-morphism), and the
//! Kubernetes driver (kube-rs); later Discord, Helm, Swarm, GitHub and S3.

pub mod backup;
pub mod console;
pub mod http_check;
pub mod github;
pub mod integrity;
pub mod kubernetes;
pub mod registry;
pub mod slack;
pub mod store_sql;
