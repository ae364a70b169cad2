//! Connects the `[clusters.NAME]` of the config: a URL (the sandbox, `kubectl proxy`), a
//! kubeconfig with an optional context, or the pod's service account. Clients are lazy: a
//! cluster that cannot be reached makes the steps that use it fail with the reason, not the bot.

use anyhow::Context;
use runbot_adapters::kubernetes::KubeCluster;
use runbot_commands::config::{Settings, parse_duration};
use runbot_commands::ports::Clusters;
use std::sync::Arc;

pub async fn connect(settings: &Settings) -> anyhow::Result<Clusters> {
    let mut clusters = Clusters::new();
    for (name, c) in &settings.config.clusters {
        let timeout = parse_duration(&c.timeout).map_err(anyhow::Error::msg).with_context(|| format!("clusters.{name}.timeout"))?;
        let driver = match (&c.url, &c.kubeconfig, c.in_cluster) {
            (Some(url), None, false) => KubeCluster::from_url(url, timeout),
            (None, Some(path), false) => KubeCluster::from_kubeconfig(path, c.context.as_deref(), timeout).await,
            (None, None, true) => KubeCluster::in_cluster(timeout),
            _ => Err("set exactly one of url, kubeconfig or in_cluster".to_string()),
        }
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("clusters.{name}"))?;
        tracing::info!(cluster = %name, "Kubernetes cluster configured");
        clusters = clusters.with(name.clone(), Arc::new(driver));
    }
    Ok(clusters)
}
