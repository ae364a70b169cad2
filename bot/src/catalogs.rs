//! Connects the databases' backup archives (`[databases.NAME.backup]`) as barman-cloud
//! catalogs on S3 or an S3-compatible store. Credentials come from `[secrets]`.

use anyhow::Context;
use runbot_adapters::backup::{BarmanS3Catalog, S3Config, S3Credentials};
use runbot_commands::config::Settings;
use runbot_commands::ports::Catalogs;
use std::sync::Arc;

pub fn connect(settings: &Settings) -> anyhow::Result<Catalogs> {
    let mut catalogs = Catalogs::new();
    for (name, db) in &settings.config.databases {
        let Some(b) = &db.backup else { continue };
        let secret = |s: &str| {
            settings.secrets.get(s).map(|v| v.expose().to_string()).with_context(|| format!("databases.{name}.backup: no secret '{s}'"))
        };
        let config = S3Config {
            endpoint_url: b.endpoint.clone(),
            region: b.region.clone(),
            force_path_style: b.path_style.unwrap_or(b.endpoint.is_some()),
            credentials: S3Credentials {
                access_key_id: secret(&b.access_key_secret)?,
                secret_access_key: secret(&b.secret_key_secret)?,
                session_token: None,
            },
        };
        let server = b.server_name.clone().unwrap_or_else(|| name.clone());
        let catalog = BarmanS3Catalog::new(&config, &b.source, &server).map_err(|e| anyhow::anyhow!("databases.{name}.backup: {e}"))?;
        tracing::info!(database = %name, location = %b.source, "backup catalog configured");
        catalogs = catalogs.with(name.clone(), Arc::new(catalog));
    }
    Ok(catalogs)
}
