//! The database writers of the restore scenarios: `promotions-api` (3 replicas) and
//! `promotions-worker` (2) in the sandbox cluster's `promotions-ns`, as the test config's
//! `[databases.promotions-db] writers` names them.

use runbot_sandbox::kube::{FakeCluster, Timing};
use std::time::{Duration, Instant};

/// Ready, not terminating pods of Deployment `app` in `promotions-ns`.
pub fn ready_pods(cluster: &FakeCluster, app: &str) -> usize {
    cluster
        .pods("promotions-ns")
        .iter()
        .filter(|p| p["metadata"]["labels"]["app"] == app && p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")))
        .count()
}

/// A sandbox cluster with both writers deployed and Ready.
pub async fn start_cluster() -> FakeCluster {
    let cluster = FakeCluster::start("127.0.0.1:0".parse().expect("addr"), Timing::fast()).await.expect("sandbox cluster");
    cluster.deploy("promotions-ns", "promotions-api", "registry.local/promotions-api:1.4.2", 3);
    cluster.deploy("promotions-ns", "promotions-worker", "registry.local/promotions-worker:1.4.2", 2);
    let t = Instant::now();
    while ready_pods(&cluster, "promotions-api") < 3 || ready_pods(&cluster, "promotions-worker") < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "writers never Ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster
}
