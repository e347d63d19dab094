//! `waymark`: the gateway daemon and its command line.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use waymark_gateway::{config::Config, demo, run, shutdown::Trigger, status, systemd};

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
            let notifier = systemd::Notifier::from_env()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let result = rt.block_on(async {
                let trigger = Trigger::new();
                tokio::spawn(run::signal_shutdown(trigger.clone()));
                let shutdown = trigger.subscribe();
                let gateway = run::run_with(config, trigger.subscribe(), |running| {
                    // READY=1 only now: store, pipeline, broker client and sources are set up.
                    tokio::spawn(systemd::supervise(
                        notifier,
                        running.health,
                        trigger.subscribe(),
                    ));
                });
                tokio::select! {
                    res = gateway => res.map_err(anyhow::Error::from),
                    () = async {
                        shutdown.recv().await;
                        tokio::time::sleep(systemd::STOP_DEADLINE).await;
                    } => Err(anyhow::anyhow!(
                        "the graceful stop did not finish within {:?}; exiting without it \
                         (committed data is safe, the open telemetry batch may be lost)",
                        systemd::STOP_DEADLINE
                    )),
                }
            });
            // A stop that hung leaves work behind; do not wait for it forever.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result?;
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
        LogFormat::Text if journal::stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(journal::Prefixed(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .init(),
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Text logs for journald: under systemd stderr is a journal stream (`JOURNAL_STREAM`), which
/// stamps every line itself and reads a leading `<N>` as the line's syslog priority. So the
/// lines go without colours and timestamp, each prefixed with its priority, and
/// `journalctl -p warning` filters by level. (`tracing-journald` would add native fields but
/// needs the journal socket; see docs/deploy.md.)
mod journal {
    use std::fmt;

    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Whether stderr is the journal stream systemd named in `JOURNAL_STREAM` (`DEV:INODE`),
    /// not merely inherited by a process whose stderr was redirected elsewhere.
    pub fn stderr_is_journal() -> bool {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        let Ok(stat) = rustix::fs::fstat(std::io::stderr()) else {
            return false;
        };
        value
            .to_str()
            .is_some_and(|v| matches_stream(v, stat.st_dev, stat.st_ino))
    }

    /// `JOURNAL_STREAM` is `DEV:INODE` in decimal.
    /// (`dev` and `ino` are 32-bit on some targets.)
    pub(crate) fn matches_stream(value: &str, dev: impl Into<u64>, ino: impl Into<u64>) -> bool {
        let (dev, ino) = (dev.into(), ino.into());
        let mut parts = value.splitn(2, ':');
        let (Some(d), Some(i)) = (parts.next(), parts.next()) else {
            return false;
        };
        d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
    }

    /// The syslog priority journald gives a line: `<3>` error ... `<7>` debug.
    pub(crate) fn priority(level: Level) -> u8 {
        match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        }
    }

    /// Writes `<N>` before what the wrapped format writes.
    pub struct Prefixed<F>(pub F);

    impl<S, N, F> FormatEvent<S, N> for Prefixed<F>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
        F: FormatEvent<S, N>,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            write!(writer, "<{}>", priority(*event.metadata().level()))?;
            self.0.format_event(ctx, writer, event)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn journal_stream_must_name_stderr() {
            assert!(matches_stream("64769:123456", 64769u64, 123_456u64));
            assert!(!matches_stream("64769:123456", 64769u64, 1u64));
            assert!(!matches_stream("1:123456", 64769u64, 123_456u64));
            for bad in ["", ":", "64769", "x:y", "64769:123456:7", "-1:2"] {
                assert!(!matches_stream(bad, 64769u64, 123_456u64), "{bad}");
            }
        }

        #[test]
        fn levels_map_to_syslog_priorities() {
            assert_eq!(priority(Level::ERROR), 3);
            assert_eq!(priority(Level::WARN), 4);
            assert_eq!(priority(Level::INFO), 6);
            assert_eq!(priority(Level::DEBUG), 7);
            assert_eq!(priority(Level::TRACE), 7);
        }
    }
}
