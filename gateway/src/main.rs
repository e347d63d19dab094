//! `waymark`: the gateway daemon and its command line.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use waymark_gateway::{config::Config, demo, run, shutdown::Trigger, status};

/// Waymark edge telematics gateway.
#[derive(Debug, Parser)]
#[command(name = "waymark", version, about, long_about = None)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `waymark_gateway=debug,info`).
    /// `RUST_LOG` overrides it. Default `info`; `warn` for `demo`, whose own output is the
    /// point.
    #[arg(long, global = true, env = "WAYMARK_LOG")]
    log: Option<String>,
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway daemon.
    Run {
        /// Configuration file.
        #[arg(
            long,
            short,
            default_value = "/etc/waymark/waymark.toml",
            env = "WAYMARK_CONFIG"
        )]
        config: PathBuf,
    },
    /// Check a configuration file; prints the first error with its key and line, exit code 2.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Show the store's backlog, counters and last PUBACK (works while the daemon runs).
    Status {
        /// Configuration file (to find the store).
        #[arg(
            long,
            short,
            default_value = "/etc/waymark/waymark.toml",
            env = "WAYMARK_CONFIG"
        )]
        config: PathBuf,
        /// Read this store file instead of the one named in the configuration.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Play a recorded trip through the real code paths with embedded defaults.
    Demo(demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Demo(_) => "warn,rumqttd=off",
        _ => "info",
    };
    init_tracing(cli.log.as_deref().unwrap_or(default_log), cli.log_format);
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("waymark: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::CheckConfig { file } => Ok(match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{:#}", anyhow::Error::from(e));
                ExitCode::from(2)
            }
        }),
        Command::Run { config } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{:#}", anyhow::Error::from(e));
                    return Ok(ExitCode::from(2));
                }
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let trigger = Trigger::new();
                tokio::spawn(run::signal_shutdown(trigger.clone()));
                run::run(config, trigger.subscribe()).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status {
            config,
            store,
            json,
        } => {
            let path = match store {
                Some(p) => p,
                None => match Config::load(&config) {
                    Ok(c) => c.store.path,
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(ExitCode::from(2));
                    }
                },
            };
            status::print(&path, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(demo::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn init_tracing(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
