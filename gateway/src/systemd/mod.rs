//! systemd integration: `Type=notify` readiness, the watchdog, and the stop notice.
//!
//! # Invariants
//! - `READY=1` is sent only after [`crate::run::run_with`] has set up the store (recovery
//!   included), the pipeline, the broker client and every source: [`supervise`] is started
//!   from its `started` callback, never before.
//! - `WATCHDOG=1` is sent only when the store's writer thread and the pipeline task made
//!   progress (their [`Heartbeat`](crate::health::Heartbeat)s moved) within the stall bound of
//!   [`watchdog::stall_after`]; never from a bare timer. A stuck writer (a hung `fsync`, a
//!   blocked SQLite call) or a runtime that no longer polls the pipeline stops the pings, and
//!   systemd restarts the service (`Restart=on-failure`) within `2 × WatchdogSec`.
//! - `STOPPING=1` is sent as soon as shutdown begins; systemd stops enforcing the watchdog
//!   then, and the unit's `TimeoutStopSec=` bounds the graceful flush. The gateway bounds it
//!   itself too ([`STOP_DEADLINE`]).
//! - Without `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`) nothing is sent and
//!   nothing fails. A notification that cannot be sent is logged, never fatal.
//!
//! # Why not the sd-notify crate
//! The notify protocol is one datagram to the `AF_UNIX` socket in `NOTIFY_SOCKET` (a path, or
//! an abstract name starting with `@`). sd-notify 0.5 reads the environment on every call
//! and cannot be given a socket, so a test of the running watchdog would have to change this
//! process's environment, which is `unsafe` in edition 2024 and `unsafe` is forbidden here.
//! [`Notifier`] reads the environment once and can be pointed at any socket; it is the same
//! few lines the crate has.

pub mod watchdog;

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::health::Health;
use crate::shutdown::Shutdown;
use watchdog::{Transition, Watchdog};

/// How long the graceful stop may take after SIGTERM before the gateway exits anyway (with
/// an error). Below the unit's `TimeoutStopSec=30`, so that the gateway, not a SIGKILL, ends
/// a stop that hangs. Everything committed stays committed either way (SQLite transactions
/// are atomic); what a hung stop can lose is the open telemetry batch (DESIGN §3).
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);

/// The stages whose heartbeats the watchdog requires, in the order [`heartbeats`] reads them.
pub const WATCHED: [&str; 2] = ["store", "pipeline"];

/// Errors of the systemd integration.
#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    /// `WATCHDOG_USEC` is set but is not a positive whole number of microseconds; the service
    /// manager (or whoever set the environment) is misconfigured. Refused at start, because a
    /// watchdog we cannot honour would kill the service in a loop.
    #[error("WATCHDOG_USEC={0:?} is not a positive number of microseconds")]
    BadWatchdogUsec(String),
    /// `NOTIFY_SOCKET` is set but empty or not an absolute path or `@abstract` name.
    #[error("NOTIFY_SOCKET={0:?} is neither an absolute path nor an @abstract socket name")]
    BadNotifySocket(String),
    /// A notification could not be sent (socket gone, permission denied).
    #[error("cannot notify systemd at {socket}")]
    Send {
        /// The socket, as `NOTIFY_SOCKET` gave it.
        socket: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Sends `sd_notify(3)` messages to the service manager.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(Target, String)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From this process's environment: `NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`.
    ///
    /// # Errors
    /// [`SystemdError::BadNotifySocket`], [`SystemdError::BadWatchdogUsec`].
    pub fn from_env() -> Result<Notifier, SystemdError> {
        let socket = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_values(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// From the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` for the process
    /// `pid`. The watchdog applies only if `WATCHDOG_PID` is absent or equals `pid` (systemd
    /// sets it so that children do not inherit the duty), and only with a notify socket.
    ///
    /// # Errors
    /// [`SystemdError::BadNotifySocket`], [`SystemdError::BadWatchdogUsec`].
    pub fn from_values(
        notify_socket: Option<&OsStr>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Result<Notifier, SystemdError> {
        let target = match notify_socket {
            None => None,
            Some(raw) => {
                let shown = raw.to_string_lossy().into_owned();
                let bytes = raw.as_bytes();
                let target = match bytes.first() {
                    Some(b'@') if bytes.len() > 1 => Target::Abstract(bytes[1..].to_vec()),
                    Some(b'/') => Target::Path(PathBuf::from(raw)),
                    _ => return Err(SystemdError::BadNotifySocket(shown)),
                };
                Some((target, shown))
            }
        };
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = match watchdog_usec {
            Some(v) if for_us => match v.trim().parse::<u64>() {
                Ok(us) if us > 0 => Some(Duration::from_micros(us)),
                _ => return Err(SystemdError::BadWatchdogUsec(v.to_string())),
            },
            _ => None,
        };
        Ok(Notifier {
            watchdog: watchdog.filter(|_| target.is_some()),
            target,
        })
    }

    /// A notifier that sends to the socket at `path` with the given watchdog (tests, tools).
    pub fn to_path(path: impl Into<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        let path = path.into();
        Notifier {
            target: Some((Target::Path(path.clone()), path.display().to_string())),
            watchdog,
        }
    }

    /// Whether a service manager listens (`NOTIFY_SOCKET` was set).
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog timeout (`WatchdogSec=`) if systemd expects pings from this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=VALUE` assignments) in one datagram; does
    /// nothing without a socket.
    ///
    /// # Errors
    /// [`SystemdError::Send`].
    pub fn send(&self, state: &str) -> Result<(), SystemdError> {
        let Some((target, shown)) = &self.target else {
            return Ok(());
        };
        let err = |source| SystemdError::Send {
            socket: shown.clone(),
            source,
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        match target {
            Target::Path(p) => sock.send_to(state.as_bytes(), p).map_err(err)?,
            Target::Abstract(name) => {
                let addr = SocketAddr::from_abstract_name(name).map_err(err)?;
                sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?
            }
        };
        Ok(())
    }

    /// [`Notifier::send`], logging a failure instead of returning it.
    fn send_or_log(&self, state: &str) {
        if let Err(e) = self.send(state) {
            warn!(error = %e, state = state.trim_end(), "Notifying systemd failed.");
        }
    }
}

/// The watched heartbeat counters, in [`WATCHED`] order.
pub fn heartbeats(health: &Health) -> [u64; 2] {
    [
        health.heartbeats.store.count(),
        health.heartbeats.pipeline.count(),
    ]
}

/// Runs next to the gateway once it is set up: sends `READY=1`, then (if systemd enabled the
/// watchdog) checks the heartbeats every `WATCHDOG_USEC / 2` and pings when [`Watchdog`]
/// says so, and sends `STOPPING=1` as soon as `shutdown` fires. Returns after that.
pub async fn supervise(notifier: Notifier, health: Arc<Health>, shutdown: Shutdown) {
    if !notifier.is_enabled() {
        shutdown.recv().await;
        return;
    }
    notifier.send_or_log("READY=1\nSTATUS=Running\n");
    info!(watchdog = ?notifier.watchdog(), "Told systemd the gateway is ready.");
    if let Some(timeout) = notifier.watchdog() {
        let stall_after = watchdog::stall_after(timeout);
        let now = std::time::Instant::now();
        let mut core = Watchdog::new(now, stall_after, &WATCHED, &heartbeats(&health));
        let mut tick = tokio::time::interval((timeout / 2).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.recv() => break,
                _ = tick.tick() => {
                    // The real time, not the tick's schedule: a late tick is a silence too.
                    let check = core.check(std::time::Instant::now(), &heartbeats(&health));
                    report(&notifier, &check);
                    if check.ping {
                        notifier.send_or_log("WATCHDOG=1\n");
                    }
                }
            }
        }
    } else {
        shutdown.recv().await;
    }
    notifier.send_or_log("STOPPING=1\nSTATUS=Stopping: flushing the pipeline into the store\n");
}

/// Logs a change between pinging and withholding, and shows it in `systemctl status`.
fn report(notifier: &Notifier, check: &watchdog::Check) {
    match check.transition {
        Some(Transition::Stalled) => {
            let stages: Vec<String> = check
                .stalled
                .iter()
                .map(|s| format!("{} silent for {} s", s.stage, s.silent_for.as_secs()))
                .collect();
            let stages = stages.join(", ");
            error!(
                %stages,
                "Watchdog pings withheld: a stage makes no progress; systemd restarts the \
                 gateway unless it recovers."
            );
            notifier.send_or_log(&format!("STATUS=Stalled: {stages}\n"));
        }
        Some(Transition::Recovered) => {
            info!("Every watched stage makes progress again; watchdog pings resume.");
            notifier.send_or_log("STATUS=Running\n");
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
