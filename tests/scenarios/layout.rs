//! The core crate stays SDK-free: `commands/Cargo.toml` must not depend on any chat, cloud,
//! database or HTTP SDK — those belong in `adapters/`.

const SDK_CRATES: &[&str] = &[
    "slack-morphism",
    "serenity",
    "kube",
    "kube-client",
    "kube-runtime",
    "k8s-openapi",
    "aws-sdk-s3",
    "aws-config",
    "sqlx",
    "octocrab",
    "axum",
    "hyper",
    "reqwest",
];

#[test]
fn commands_crate_names_no_sdk() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../commands/Cargo.toml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{path} is not TOML: {e}"));
    let deps = manifest.get("dependencies").and_then(|d| d.as_table()).expect("commands has [dependencies]");
    assert!(deps.contains_key("tokio"), "sanity: the table read is the real one");
    let offending: Vec<&String> = deps
        .iter()
        .filter(|(name, spec)| {
            // A dependency may be renamed: `k = { package = "kube", ... }`.
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(name.as_str());
            SDK_CRATES.contains(&name.as_str()) || SDK_CRATES.contains(&package)
        })
        .map(|(name, _)| name)
        .collect();
    assert!(offending.is_empty(), "commands/Cargo.toml depends on SDK crate(s) {offending:?}; move that code to adapters/");
}
