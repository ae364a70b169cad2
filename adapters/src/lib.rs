//! runbot's adapters: the only code that knows a wire format or an SDK — the SQL state store
//! (sqlx: SQLite and PostgreSQL), the local web console, Slack (slack-morphism), Discord
//! (serenity's REST and Ed25519 check), the Kubernetes driver (kube-rs), GitHub (octocrab),
//! the backup catalog on S3 (aws-sdk-s3), container registries and HTTP checks (reqwest).

pub mod alerts;
pub mod audit_anchor;
pub mod backlog;
pub mod backoff;
pub mod backup;
pub mod console;
pub mod discord;
pub mod github;
pub mod http_check;
pub mod inbound;
pub mod integrity;
pub mod kubernetes;
pub mod overflow;
pub mod registry;
pub mod signature;
pub mod slack;
pub mod store_sql;
pub mod tls;
