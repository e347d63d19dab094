//! `waymark-bridge`: the cloud bridge daemon and its command line.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use waymark_bridge::config::Config;
use waymark_bridge::run::{self, now_ms};
use waymark_bridge::store::{DlqFilter, Store};

/// Waymark cloud bridge: MQTT to ERP and portal, exactly once.
#[derive(Debug, Parser)]
#[command(name = "waymark-bridge", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "/etc/waymark-bridge/bridge.toml",
        env = "WAYMARK_BRIDGE_CONFIG"
    )]
    config: PathBuf,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it. Default `info`.
    #[arg(
        long,
        global = true,
        env = "WAYMARK_BRIDGE_LOG",
        default_value = "info"
    )]
    log: String,
    /// Log as one JSON object per line.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bridge.
    Run,
    /// Check the configuration file (and the secret files it names); exit code 2 if bad.
    CheckConfig,
    /// Per-target backlog, oldest age, DLQ size, vehicles with open gaps, counters (JSON).
    Status,
    /// The last rejected messages (JSON lines): time, topic, kind, detail, size.
    Rejects {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters (JSON lines).
    List(Filter),
    /// Show the dead-letter rows and the stored body of one event.
    Show {
        /// Event id.
        id: String,
    },
    /// Move dead letters back to their outboxes; a running bridge delivers them within 1 s.
    Replay(Filter),
}

#[derive(Debug, Args)]
struct Filter {
    /// Only this event id (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Only this target.
    #[arg(long)]
    target: Option<String>,
    /// Dead-lettered at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Replay: required when no other filter is given, to replay everything.
    #[arg(long)]
    all: bool,
}

impl Filter {
    fn to_filter(&self) -> anyhow::Result<DlqFilter> {
        let time = |s: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
            s.as_deref()
                .map(|t| {
                    waymark_wire::time::parse_rfc3339_ms(t)
                        .map_err(|e| anyhow::anyhow!("--{flag}: {e}"))
                })
                .transpose()
        };
        Ok(DlqFilter {
            ids: self.ids.clone(),
            target: self.target.clone(),
            since_ms: time(&self.since, "since")?,
            until_ms: time(&self.until, "until")?,
        })
    }
    fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.target.is_none() && self.since.is_none() && self.until.is_none()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
    // One TLS provider for the whole process (ring; CRATES.md pitfall 5).
    // `Err` only if a provider is already installed, which is just as good.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a TLS crypto provider was already installed");
    }
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match command(cli.command, config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("waymark-bridge: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn command(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    let open = || Store::open(&config.store.path, config.store.reject_keep_bytes);
    match command {
        Command::CheckConfig => {
            println!(
                "configuration OK: {} target(s), store {}",
                config.targets.len(),
                config.store.path.display()
            );
        }
        Command::Run => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(run::run(config, shutdown_signal()))?;
        }
        Command::Status => {
            let names: Vec<String> = config
                .targets
                .iter()
                .map(|t| t.config.name.clone())
                .collect();
            let status = open()?.status(&names, now_ms())?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        Command::Rejects { limit } => {
            for (ms, topic, kind, detail, len) in open()?.rejects(limit)? {
                let line = serde_json::json!({
                    "received": waymark_wire::time::format_rfc3339_ms(ms),
                    "topic": topic, "kind": kind, "detail": detail, "bytes": len,
                });
                println!("{line}");
            }
        }
        Command::Dlq(DlqCommand::List(f)) => {
            for d in open()?.dlq_list(&f.to_filter()?)? {
                println!("{}", serde_json::to_string(&d)?);
            }
        }
        Command::Dlq(DlqCommand::Show { id }) => {
            let store = open()?;
            let rows = store.dlq_list(&DlqFilter {
                ids: vec![id.clone()],
                ..DlqFilter::default()
            })?;
            if rows.is_empty() {
                eprintln!("no dead letter for event {id}");
                return Ok(ExitCode::from(1));
            }
            for d in rows {
                println!("{}", serde_json::to_string(&d)?);
            }
            if let Some(body) = store.event_body(&id)? {
                println!("{}", String::from_utf8_lossy(&body));
            }
        }
        Command::Dlq(DlqCommand::Replay(f)) => {
            if f.is_empty() && !f.all {
                eprintln!("dlq replay: give --id, --target, --since/--until, or --all");
                return Ok(ExitCode::from(2));
            }
            let n = open()?.replay(&f.to_filter()?, now_ms())?;
            println!("{n} event(s) moved back to their outboxes");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
