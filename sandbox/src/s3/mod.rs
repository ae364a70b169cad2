//! An S3-compatible server on loopback for tests, benchmarks and the demo, served in-process
//! by [s3s] on `127.0.0.1` and a random port, path-style buckets, with real SigV4 checking
//! against one fixed test key pair ([`ACCESS_KEY`] / [`SECRET_KEY`]): a client signing with
//! another secret gets `SignatureDoesNotMatch`, so credential bugs are not hidden (moto accepts
//! any). Two backends, chosen at start:
//! - [`start`]: [s3s-fs] on a directory (buckets are directories, objects plain files). Its
//!   ListObjectsV2 walks the whole bucket for every page, so listing n objects costs O(n²/1000):
//!   fine for a few thousand objects;
//! - [`start_in_memory`]: [`memory::MemoryStore`], ordered maps in memory — a page costs
//!   O(page + log n) — with direct inserts for large fixtures ([`S3Server::memory`]).
//!
//! barman-cloud (boto3) and aws-sdk-s3 both talk to either:
//! `--endpoint-url <url>` plus the variables of [`S3Server::client_env`];
//! `endpoint_url(url).force_path_style(true)` with the same keys.
//!
//! The server runs on its own thread and Tokio runtime, so it works from synchronous tests
//! that block on child processes as well as from async ones; dropping the handle stops it.
//!
//! [s3s]: https://crates.io/crates/s3s
//! [s3s-fs]: https://crates.io/crates/s3s-fs

use runbot_commands::setup::{Doing, SetupError, SetupResult};
pub mod memory;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use memory::MemoryStore;
use tokio::sync::oneshot;

/// The test access key id the server accepts.
pub const ACCESS_KEY: &str = "runbot-sandbox";
/// The test secret the server checks signatures against.
pub const SECRET_KEY: &str = "runbot-sandbox-secret-key";
/// The region clients should sign for (s3s accepts any; boto3 and the SDK need one).
pub const REGION: &str = "us-east-1";

/// A running server. Dropping it stops the server (open connections are cut).
pub struct S3Server {
    addr: SocketAddr,
    url: String,
    backend: Backend,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// Where a server keeps its buckets.
enum Backend {
    Dir(PathBuf),
    Memory(MemoryStore),
}

/// Starts a server whose buckets are the directories of `root` (which must exist).
/// Returns once the port is bound: requests can be sent right away.
pub fn start(root: &Path) -> SetupResult<S3Server> {
    let root = root.canonicalize().doing(format!("S3 root directory {}", root.display()))?;
    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| SetupError(format!("s3s-fs on {}: {e:?}", root.display())))?;
    serve(fs, Backend::Dir(root))
}

/// Starts a server keeping its buckets in memory (gone when it stops).
/// Returns once the port is bound: requests can be sent right away.
pub fn start_in_memory() -> SetupResult<S3Server> {
    let store = MemoryStore::new();
    serve(store.clone(), Backend::Memory(store))
}

fn serve(s3: impl s3s::S3, backend: Backend) -> SetupResult<S3Server> {
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(s3);
        b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        // No set_host: every request is path-style (`/bucket/key`).
        b.build()
    };

    let listener = std::net::TcpListener::bind("127.0.0.1:0").doing("bind 127.0.0.1:0 for the S3 server")?;
    listener.set_nonblocking(true).doing("S3 listener: set_nonblocking")?;
    let addr = listener.local_addr().doing("S3 listener address")?;
    let (shutdown, mut stop) = oneshot::channel::<()>();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().thread_name("sandbox-s3").build().doing("S3 server runtime")?;
    let thread = std::thread::Builder::new()
        .name(format!("sandbox-s3-{}", addr.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("sandbox S3: listener: {e}");
                        return;
                    }
                };
                let http = ConnBuilder::new(TokioExecutor::new());
                loop {
                    let socket = tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => match accepted {
                            Ok((socket, _)) => socket,
                            Err(e) => {
                                tracing::warn!("sandbox S3: accept: {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
            // Dropping the runtime here cancels the connection tasks still running.
        })
        .doing("spawn the S3 server thread")?;

    Ok(S3Server { addr, url: format!("http://{addr}"), backend, shutdown: Some(shutdown), thread: Some(thread) })
}

impl S3Server {
    /// `http://127.0.0.1:PORT` — the endpoint URL for clients (path-style).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory the buckets live in (`None` for an in-memory server).
    pub fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Dir(root) => Some(root),
            Backend::Memory(_) => None,
        }
    }

    /// The in-memory store, for direct inserts (`None` for a directory-backed server).
    pub fn memory(&self) -> Option<&MemoryStore> {
        match &self.backend {
            Backend::Dir(_) => None,
            Backend::Memory(store) => Some(store),
        }
    }

    /// The environment a child process (barman-cloud, the aws CLI, a PostgreSQL whose
    /// `archive_command` uploads) needs to sign requests for this server.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
        ]
    }

    /// Creates an empty bucket (what `CreateBucket` does: a directory, or an empty map).
    pub fn create_bucket(&self, name: &str) -> SetupResult<()> {
        let valid = (3..=63).contains(&name.len())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && name.as_bytes()[0].is_ascii_alphanumeric()
            && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
        if !valid {
            return Err(SetupError(format!("invalid bucket name {name:?}: 3-63 characters of a-z, 0-9, '-' and '.'")));
        }
        match &self.backend {
            Backend::Dir(root) => {
                let dir = root.join(name);
                if dir.exists() {
                    return Err(SetupError(format!("bucket {name:?} already exists")));
                }
                std::fs::create_dir(&dir).doing(format!("create bucket directory {}", dir.display()))
            }
            Backend::Memory(store) => {
                if !store.create_bucket(name) {
                    return Err(SetupError(format!("bucket {name:?} already exists")));
                }
                Ok(())
            }
        }
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

impl std::fmt::Debug for S3Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Server").field("url", &self.url).field("root", &self.root()).field("in_memory", &self.memory().is_some()).finish()
    }
}
