//! `runbot`: the command line. Wires settings to adapters and runs; no business logic here.

mod audit_cmd;
mod catalogs;
mod clusters;
mod connections;
mod deploy;
mod logging;
mod serve;

use anyhow::Context;
use clap::{Parser, Subcommand};
use runbot_commands::config::Settings;
use runbot_commands::steps::StepKinds;
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: glibc's malloc/free took ~16% of the CPU per Slack command (perf, one core). With
/// its `override` feature it is also the C code's `malloc` (SQLite's).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "runbot", version, about = "ChatOps runbooks with approvals, live status and an audit trail")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "RUNBOT_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the embedded demo: SQLite store, web console at /console, local runbooks.
    Demo {
        /// Where to listen (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Where the demo keeps its state.
        #[arg(long, default_value = "runbot-demo")]
        state_dir: PathBuf,
    },
    /// Run the bot with a config file.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file; report every problem with its key path.
    CheckConfig { file: PathBuf },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Artifacts kept with executions (e.g. a failed version's pod logs).
    Artifacts {
        #[command(subcommand)]
        cmd: ArtifactsCmd,
    },
    /// The Discord application.
    Discord {
        #[command(subcommand)]
        cmd: DiscordCmd,
    },
}

#[derive(Subcommand)]
enum DiscordCmd {
    /// Register (bulk-overwrite) the `/ops` application command, generated from the grammar:
    /// in `[discord] guild_id` (or --guild; instant), or globally (--global).
    RegisterCommands {
        #[arg(long)]
        config: PathBuf,
        /// The server (guild) id to register in.
        #[arg(long, conflicts_with = "global")]
        guild: Option<String>,
        /// Register for every server the application is in.
        #[arg(long)]
        global: bool,
    },
}

#[derive(Subcommand)]
enum ArtifactsCmd {
    /// Write an execution's artifacts as files into a directory.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// The execution, e.g. R-12.
        id: String,
        /// Directory to write into (created if missing). Default: the current directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Verify the hash chain: detects edited, inserted and deleted records.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// Where the newest anchor is: `s3://bucket/prefix` (with `[audit.s3]`'s endpoint and
        /// credentials) or a file holding an anchor (its JSON, or the line posted in the audit
        /// channel). Default: `[audit.s3]`.
        #[arg(long)]
        anchor: Option<String>,
    },
    /// Write the audit trail as JSON lines.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A postmortem timeline of one execution from the audit trail (times in UTC and the
    /// environment's time zone, steps linked to their output in the console).
    Timeline {
        /// The execution, e.g. R-5.
        id: String,
        #[arg(long)]
        config: PathBuf,
        /// `md` (Markdown) or `json`.
        #[arg(long, default_value = "md", value_parser = ["md", "json"])]
        format: String,
    },
}

fn load(path: &std::path::Path) -> anyhow::Result<Settings> {
    let settings = Settings::load(path, &StepKinds::shipped()).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        anyhow::anyhow!("{} has {} problem(s):\n{}", path.display(), problems.len(), lines.join("\n"))
    })?;
    logging::redact_with(&settings.redactor);
    Ok(settings)
}

fn main() -> ExitCode {
    // Called as `helm` or `docker` (the demo links runbot under those names): the sandbox's
    // stand-ins for those CLIs, before any runtime starts (they run their own).
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let standin: Option<fn(Vec<String>) -> i32> = match argv0.as_deref().and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
        Some("helm") => Some(runbot_sandbox::standins::helm_main),
        Some("docker") => Some(runbot_sandbox::standins::docker_main),
        _ => None,
    };
    if let Some(run) = standin {
        let code = run(std::env::args().skip(1).collect());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // `runbot --step-supervisor ...`: the parent of one step program (see `steps::process`).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(runbot_commands::steps::SUPERVISOR_FLAG) {
        let code = runbot_commands::steps::supervise_main(args[1..].to_vec());
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Serve { .. } | Cmd::Demo { .. }) {
        // Step programs die with this process: each runs under a supervisor (this binary).
        match std::env::current_exe() {
            Ok(exe) => runbot_commands::steps::use_supervisor(exe),
            Err(e) => eprintln!("runbot: warning: cannot locate its own executable ({e}); step programs will not be ended if runbot is killed"),
        }
    }
    logging::init(cli.log_json);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runbot: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Demo { listen, state_dir } => {
                let addr: std::net::SocketAddr = listen.parse().context("--listen must be an address like 127.0.0.1:8080")?;
                anyhow::ensure!(addr.ip().is_loopback(), "the demo console trusts its identity picker, so it listens on loopback only");
                // Bound before anything is printed: the banner names an address that answers.
                let bound = tokio::net::TcpListener::bind(addr).await.map_err(|e| match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        anyhow::anyhow!("{listen} is already in use: start the demo on another port with --listen 127.0.0.1:PORT")
                    }
                    _ => anyhow::anyhow!("cannot listen on {listen} ({e}); choose another address with --listen 127.0.0.1:PORT"),
                })?;
                let world = runbot_sandbox::demo::start().await.context("starting the sandbox")?;
                let exe = std::env::current_exe().context("locating the runbot executable")?;
                let path = runbot_sandbox::demo::prepare(&state_dir, &listen, &world.urls(), &exe)?;
                let kube = world.cluster.url();
                tokio::task::block_in_place(|| runbot_sandbox::demo::install_release(&state_dir, &kube))?;
                let settings = load(&path)?;
                println!("runbot demo: console at http://{listen}/console  (state in {})", state_dir.display());
                println!("sandbox Kubernetes API at {kube} (kubectl --server {kube} get pods -n promotions-ns)");
                println!("try: /ops restart promotions-api   — then approve as console:bob");
                println!("     /ops deploy promotions v1.2.5 — approve as console:bob; then v1.2.6 (it crashes) and press Rollback");
                // The demo's console lets loopback users pick who they act as; serve never does.
                let picker = Some(runbot_adapters::console::ConsoleAuth::Picker);
                let served = serve::serve(settings, path.parent().map(|p| p.to_path_buf()).unwrap_or_default(), picker, Some(bound)).await;
                world.shutdown().await;
                served
            }
            Cmd::Serve { config } => {
                let settings = load(&config)?;
                if let Some(w) = audit_cmd::unkeyed_warning(&settings) {
                    tracing::warn!("{w}");
                }
                serve::serve(settings, config.parent().map(|p| p.to_path_buf()).unwrap_or_default(), None, None).await
            }
            Cmd::CheckConfig { file } => {
                let s = load(&file)?;
                println!(
                    "{}: ok ({} runbooks, {} groups, {} approval policies)",
                    file.display(),
                    s.runbooks.len(),
                    s.groups.len(),
                    s.config.approvals.len()
                );
                tls_preflight(&s.config);
                if let Some(w) = audit_cmd::unkeyed_warning(&s) {
                    eprintln!("warning: {w}");
                }
                Ok(())
            }
            // Only the store is read: the rest of the config need not resolve.
            Cmd::Audit { cmd: AuditCmd::Verify { config, anchor } } => audit_cmd::verify(&config, anchor.as_deref()).await,
            Cmd::Audit { cmd: AuditCmd::Export { config, out } } => {
                let redactor = match load(&config) {
                    Ok(settings) => Some(settings.redactor.clone()),
                    Err(e) => {
                        eprintln!("runbot: the config does not fully load ({e}); exporting the records as stored (redacted when written)");
                        None
                    }
                };
                audit_cmd::export(&audit_cmd::store_url(&config)?, redactor.as_ref(), out.as_deref()).await
            }
            Cmd::Audit { cmd: AuditCmd::Timeline { id, config, format } } => {
                let settings = match load(&config) {
                    Ok(settings) => Some(settings),
                    Err(e) => {
                        eprintln!("runbot: the config does not fully load ({e}); the timeline is in UTC, without output links");
                        None
                    }
                };
                audit_cmd::timeline(&audit_cmd::store_url(&config)?, settings.as_ref(), &id, format == "json").await
            }
            Cmd::Artifacts { cmd: ArtifactsCmd::Export { config, id, out } } => audit_cmd::export_artifacts(&load(&config)?, &id, &out).await,
            Cmd::Discord { cmd: DiscordCmd::RegisterCommands { config, guild, global } } => {
                let settings = load(&config)?;
                let cfg = settings.config.discord.as_ref().with_context(|| format!("{} has no [discord] section", config.display()))?;
                let scope = match (guild, global) {
                    (_, true) => None,
                    (Some(g), false) => Some(g),
                    (None, false) => Some(cfg.guild_id.clone().context("say where: --guild ID, --global, or set [discord] guild_id")?),
                };
                let discord = runbot_adapters::discord::Discord::from_config(cfg)?;
                let subs = discord.register_commands(scope.as_deref()).await?;
                let place =
                    scope.map(|g| format!("in guild {g} (available now)")).unwrap_or_else(|| "globally (may take up to an hour to appear)".into());
                println!("registered /ops {place}: {}", subs.join(", "));
                Ok(())
            }
        }
    });
    // Tasks still running (a step cut off by shutdown) are dropped, not waited for: the next
    // start applies the crash-safety rules to them.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runbot: {}", logging::redact(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// runbot loads the system's TLS root certificates at its first `https://` call, not at
/// start-up; check-config says now whether an `https://` API configured here will find any
/// (a warning: the config may be checked on another machine than the one that runs it).
fn tls_preflight(cfg: &runbot_commands::config::Config) {
    let urls = [
        cfg.slack.as_ref().map(|c| ("[slack] api_url", c.api_url.as_str())),
        cfg.discord.as_ref().map(|c| ("[discord] api_url", c.api_url.as_str())),
        cfg.github.as_ref().map(|c| ("[github] api_url", c.api_url.as_str())),
    ];
    let https: Vec<&str> = urls.iter().flatten().filter(|(_, u)| u.starts_with("https://")).map(|(k, _)| *k).collect();
    if https.is_empty() {
        return;
    }
    match runbot_adapters::tls::native_root_count() {
        Ok(n) => println!("TLS: {n} root certificates on this system (for {})", https.join(", ")),
        Err(e) => eprintln!("warning: {e}; {} will fail on this machine (install ca-certificates or set SSL_CERT_FILE)", https.join(", ")),
    }
}
