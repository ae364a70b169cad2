//! Connects what the deploy and rollback runbooks act through: GitHub (`[github]`), the
//! container registries (`[registries]`), the smoke test's HTTP client, and the `helm` /
//! `docker` CLIs (`[tools]`, located once here). Credentials come from `[secrets]`.

use anyhow::Context;
use runbot_commands::config::{Settings, parse_duration};
use runbot_commands::ports::Clusters;
use runbot_commands::steps::deploy::{DeployConnections, Tools};
use std::sync::Arc;

pub fn connect(settings: &Settings, clusters: &Clusters) -> anyhow::Result<DeployConnections> {
    let secret = |at: &str, s: &str| settings.secrets.get(s).map(|v| v.expose().to_string()).with_context(|| format!("{at}: no secret '{s}'"));
    let ci: Option<Arc<dyn runbot_commands::ports::Ci>> = match &settings.config.github {
        Some(g) => {
            let token = g.token_secret.as_deref().map(|s| secret("github.token_secret", s)).transpose()?;
            let timeout = parse_duration(&g.timeout).map_err(|e| anyhow::anyhow!("github.timeout: {e}"))?;
            let gh = runbot_adapters::github::GitHubCi::new(&g.api_url, token.as_deref(), timeout).map_err(|e| anyhow::anyhow!("[github]: {e}"))?;
            tracing::info!(api = %g.api_url, "GitHub connected");
            Some(Arc::new(gh))
        }
        None => None,
    };
    let mut registry =
        runbot_adapters::registry::RegistryClient::new(std::time::Duration::from_secs(10)).map_err(|e| anyhow::anyhow!("[registries]: {e}"))?;
    for (host, r) in &settings.config.registries {
        let at = format!("registries.\"{host}\"");
        if let (Some(u), Some(p)) = (&r.username_secret, &r.password_secret) {
            let password = settings.secrets.get(p).cloned().with_context(|| format!("{at}: no secret '{p}'"))?;
            registry = registry.with_credentials(host, &secret(&at, u)?, password);
        }
        if r.insecure {
            registry = registry.with_insecure(host);
        }
    }
    let http = runbot_adapters::http_check::ReqwestCheck::new().map_err(|e| anyhow::anyhow!("smoke test HTTP client: {e}"))?;
    let tools = Tools::locate(&settings.config.tools).map_err(|e| anyhow::anyhow!(e))?;
    for (name, path) in [("helm", &tools.helm), ("docker", &tools.docker)] {
        match path {
            Some(p) => tracing::info!(tool = name, path = %p.display(), "tool located"),
            None => tracing::info!(tool = name, "tool not installed; runbooks that need it will say so"),
        }
    }
    Ok(DeployConnections {
        clusters: clusters.clone(),
        ci,
        registry: Some(Arc::new(registry)),
        http: Some(Arc::new(http)),
        tools,
        services: settings.config.services.clone(),
        databases: settings.config.databases.clone(),
    })
}
