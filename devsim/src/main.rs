//! `waymark-devsim`: a firmware-proto device on a pseudo-terminal (or a given serial port),
//! driven by a small script: POD presses, probe temperatures, door changes, heartbeats, line
//! noise, corrupted and oversized frames, lost acks and unplugs. See docs/devices.md.
//!
//! Behaves like the firmware the protocol describes: acknowledged messages are resent every
//! `--retry-ms` until the gateway acks them (or nacks them with a reason that retrying cannot
//! fix). `Hello` is resent every `--retry-ms` until the gateway answers it with `Config`,
//! and sent again whenever a `TimeSync` arrives while no `Hello` is awaiting its answer (the
//! gateway sends one when it opens the port, so a restarted gateway learns who we are).
//!
//! Prints one line per thing that happened on stdout (`pty /dev/pts/3`, `sent pod seq=1`,
//! `ack 1`, `nack 0 version_mismatch`, ...). Exit status 0 when the script ran to its end,
//! 1 when a `wait` or `expect-nack` timed out, 2 on a usage, script or I/O error.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use waymark_devsim::{Sim, parse};

/// Simulates a firmware-proto device (POD button box, temperature probe, door sensor).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Create a pseudo-terminal and keep a symlink to its device at this path (replaced on
    /// every `unplug`), like `/dev/serial/by-id/...` for a USB adapter.
    #[arg(long)]
    link: Option<PathBuf>,
    /// Use this existing serial port or tty instead of creating a pseudo-terminal.
    #[arg(long, conflicts_with = "link")]
    device: Option<PathBuf>,
    /// Script file to run (`-` for stdin).
    #[arg(long, conflicts_with = "exec")]
    script: Option<PathBuf>,
    /// Script text on the command line; commands separated by `;`.
    #[arg(short = 'e', long)]
    exec: Option<String>,
    /// Resend interval of unacknowledged messages, ms.
    #[arg(long, default_value_t = 200)]
    retry_ms: u64,
    /// After the script ends, keep answering (and retrying) until killed.
    #[arg(long)]
    stay: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("waymark-devsim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<bool> {
    let text = match (&cli.script, &cli.exec) {
        (Some(p), _) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (Some(p), _) => {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, Some(e)) => e.clone(),
        (None, None) => String::new(),
    };
    let commands = parse(&text)?;
    let retry = Duration::from_millis(cli.retry_ms);
    let mut sim = match &cli.device {
        Some(p) => Sim::device(p, retry, Box::new(say))?,
        None => Sim::pty(cli.link.as_deref(), retry, Box::new(say))?,
    };
    for cmd in commands {
        if !sim.command(cmd)? {
            return Ok(false);
        }
    }
    if cli.stay {
        loop {
            sim.service(Instant::now() + Duration::from_secs(3600))?;
        }
    }
    Ok(true)
}

/// One line of output, flushed at once so a test reading the pipe sees it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ignored = writeln!(out, "{line}").and_then(|()| out.flush());
}
