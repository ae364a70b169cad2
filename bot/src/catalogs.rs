//! Connects the databases' backup archives (`[databases.NAME.backup]`) as barman-cloud
//! catalogs on S3 or an S3-compatible store. Credentials come from `[secrets]`.

use anyhow::Context;
use runbot_adapters::backup::{BarmanS3Catalog, S3Config};
use runbot_commands::config::Settings;
use runbot_commands::ports::Catalogs;
use std::sync::Arc;

pub fn connect(settings: &Settings) -> anyhow::Result<Catalogs> {
    let mut catalogs = Catalogs::new();
    for (name, db) in &settings.config.databases {
        let Some(b) = &db.backup else { continue };
        let secret =
            |s: &str| settings.secrets.get(s).map(|v| v.expose().to_string()).with_context(|| format!("databases.{name}.backup: no secret '{s}'"));
        let mut config = S3Config::new(b.endpoint.as_deref(), &b.region, &secret(&b.access_key_secret)?, &secret(&b.secret_key_secret)?);
        if let Some(path_style) = b.path_style {
            config.force_path_style = path_style;
        }
        let server = b.server_name.clone().unwrap_or_else(|| name.clone());
        let catalog = BarmanS3Catalog::new(&config, &b.source, &server).map_err(|e| anyhow::anyhow!("databases.{name}.backup: {e}"))?;
        tracing::info!(database = %name, location = %b.source, "backup catalog configured");
        catalogs = catalogs.with(name.clone(), Arc::new(catalog));
    }
    Ok(catalogs)
}
