//! The SocketCAN side of the `can` source: one reader task per interface, and the sans-IO
//! interpretation of error frames.
//!
//! Each reader opens its interface (raw socket; FD-enabled when configured), installs the
//! decoder's acceptance filters and an error mask, and forwards frames to the source's
//! decode loop over a bounded channel (when the loop is behind, the reader waits and the
//! kernel queue absorbs the burst; what overflows it is counted from the interface's
//! `rx_dropped` statistic, polled every [`RX_DROPPED_POLL`]).
//!
//! Invariants:
//! - Error frames are enabled for bus-off, controller problems (warning, passive, RX/TX
//!   overflow), restarts, protocol violations and missing ACKs ([`ERROR_MASK`]); they are
//!   counted, and change the interface's health: bus-off is `down` and closes the socket,
//!   which is reopened after the backoff delay; warning / error-passive is `degraded`; a
//!   restart or "back to error-active" is `ok` again.
//! - A failing open, a read error (interface gone or down) or bus-off closes the socket and
//!   reopens it with exponential backoff with jitter (`reopen_min_ms` … `reopen_max_ms`,
//!   reset after [`STABLE_AFTER`] of good reading).
//! - Nothing here names an interface: every name comes from the config.

use std::path::PathBuf;
use std::time::Duration;

use rand::SeedableRng;
use socketcan::{CanAnyFrame, CanFilter, EmbeddedFrame, Frame as _, SocketOptions};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::frame::Frame;
use crate::health::HealthState;
use crate::shutdown::Shutdown;
use crate::uplink::backoff::Backoff;

/// How often the interface's `rx_dropped` statistic is read.
pub const RX_DROPPED_POLL: Duration = Duration::from_secs(5);
/// An interface read without failure this long resets the reopen backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

/// `CAN_ERR_TX_TIMEOUT`.
pub const ERR_TX_TIMEOUT: u32 = 0x001;
/// `CAN_ERR_LOSTARB`.
pub const ERR_LOSTARB: u32 = 0x002;
/// `CAN_ERR_CRTL`: controller problems, details in data\[1\].
pub const ERR_CRTL: u32 = 0x004;
/// `CAN_ERR_PROT`: protocol violation.
pub const ERR_PROT: u32 = 0x008;
/// `CAN_ERR_TRX`: transceiver status.
pub const ERR_TRX: u32 = 0x010;
/// `CAN_ERR_ACK`: no ACK on transmission.
pub const ERR_ACK: u32 = 0x020;
/// `CAN_ERR_BUSOFF`.
pub const ERR_BUSOFF: u32 = 0x040;
/// `CAN_ERR_BUSERROR`.
pub const ERR_BUSERROR: u32 = 0x080;
/// `CAN_ERR_RESTARTED`: the controller restarted.
pub const ERR_RESTARTED: u32 = 0x100;
/// The error classes this source asks the kernel for.
pub const ERROR_MASK: u32 =
    ERR_CRTL | ERR_PROT | ERR_ACK | ERR_BUSOFF | ERR_BUSERROR | ERR_RESTARTED;

/// `CAN_ERR_CRTL_*` bits of data\[1\].
const CRTL_RX_OVERFLOW: u8 = 0x01;
const CRTL_RX_WARNING: u8 = 0x04;
const CRTL_TX_WARNING: u8 = 0x08;
const CRTL_RX_PASSIVE: u8 = 0x10;
const CRTL_TX_PASSIVE: u8 = 0x20;
const CRTL_ACTIVE: u8 = 0x40;

/// What an error frame says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorReport {
    /// The controller went bus-off.
    pub bus_off: bool,
    /// Error-passive (RX or TX).
    pub passive: bool,
    /// Error warning level (RX or TX).
    pub warning: bool,
    /// The controller restarted, or is error-active again.
    pub recovered: bool,
    /// The controller's receive buffer overflowed (frames lost).
    pub rx_overflow: bool,
}

impl ErrorReport {
    /// The interface health this report implies, if it implies one.
    pub fn health(&self) -> Option<(HealthState, &'static str)> {
        if self.bus_off {
            Some((HealthState::Down, "bus-off"))
        } else if self.passive {
            Some((HealthState::Degraded, "error-passive"))
        } else if self.warning {
            Some((HealthState::Degraded, "error warning"))
        } else if self.recovered {
            Some((HealthState::Ok, "restarted"))
        } else {
            None
        }
    }
}

/// Interprets an error frame: `class` the `CAN_ERR_*` bits of its id, `data` its payload.
pub fn classify(class: u32, data: &[u8]) -> ErrorReport {
    let ctrl = if class & ERR_CRTL != 0 {
        data.get(1).copied().unwrap_or(0)
    } else {
        0
    };
    ErrorReport {
        bus_off: class & ERR_BUSOFF != 0,
        passive: ctrl & (CRTL_RX_PASSIVE | CRTL_TX_PASSIVE) != 0,
        warning: ctrl & (CRTL_RX_WARNING | CRTL_TX_WARNING) != 0,
        recovered: class & ERR_RESTARTED != 0 || ctrl & CRTL_ACTIVE != 0,
        rx_overflow: ctrl & CRTL_RX_OVERFLOW != 0,
    }
}

/// What a reader tells the decode loop.
#[derive(Debug)]
pub enum Event {
    /// A data (or remote) frame from bus `.0`.
    Frame(u8, Frame),
    /// An error frame from bus `.0`, interpreted.
    Error(u8, ErrorReport),
    /// Bus `.0`'s interface is now in this state.
    State(u8, HealthState, Option<String>),
    /// Frames the kernel dropped on bus `.0` since the last report.
    RxDropped(u8, u64),
}

/// Settings of one reader.
#[derive(Debug, Clone)]
pub struct Reader {
    /// Interface name.
    pub ifname: String,
    /// Bus index in the decoder.
    pub bus: u8,
    /// Open an FD socket.
    pub fd: bool,
    /// Acceptance filters (`None` = everything).
    pub filters: Option<Vec<(u32, u32)>>,
    /// Reopen backoff floor.
    pub reopen_min: Duration,
    /// Reopen backoff ceiling.
    pub reopen_max: Duration,
}

enum Sock {
    Classic(socketcan::tokio::CanSocket),
    Fd(socketcan::tokio::CanFdSocket),
}

impl Sock {
    fn open(r: &Reader) -> std::io::Result<Sock> {
        let s = if r.fd {
            Sock::Fd(socketcan::tokio::CanFdSocket::open(&r.ifname)?)
        } else {
            Sock::Classic(socketcan::tokio::CanSocket::open(&r.ifname)?)
        };
        let filters: Vec<CanFilter> = match &r.filters {
            Some(f) => f
                .iter()
                .map(|&(id, mask)| CanFilter::new(id, mask))
                .collect(),
            None => vec![CanFilter::new(0, 0)],
        };
        match &s {
            Sock::Classic(c) => {
                c.set_filters(&filters)?;
                c.set_error_filter(ERROR_MASK)?;
            }
            Sock::Fd(c) => {
                c.set_filters(&filters)?;
                c.set_error_filter(ERROR_MASK)?;
            }
        }
        Ok(s)
    }

    async fn read(&self) -> std::io::Result<(u32, bool, Vec<u8>)> {
        let any: CanAnyFrame = match self {
            Sock::Classic(c) => c.read_frame().await?.into(),
            Sock::Fd(c) => c.read_frame().await?,
        };
        let fd = matches!(any, CanAnyFrame::Fd(_));
        Ok((any.id_word(), fd, any.data().to_vec()))
    }
}

fn rx_dropped_path(ifname: &str) -> PathBuf {
    PathBuf::from("/sys/class/net")
        .join(ifname)
        .join("statistics/rx_dropped")
}

fn read_rx_dropped(ifname: &str) -> Option<u64> {
    std::fs::read_to_string(rx_dropped_path(ifname))
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Reader {
    /// Reads until `shutdown` fires or the decode loop is gone.
    pub async fn run(self, tx: mpsc::Sender<Event>, mut shutdown: Shutdown) {
        let mut backoff = Backoff::new(self.reopen_min, self.reopen_max, STABLE_AFTER);
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let why = match Sock::open(&self) {
                Ok(sock) => {
                    backoff.connected(Instant::now().into_std());
                    if tx
                        .send(Event::State(self.bus, HealthState::Ok, None))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    match self.read_loop(&sock, &tx, &mut shutdown).await {
                        Some(why) => why,
                        None => return,
                    }
                }
                Err(e) => format!("cannot open {}: {e}", self.ifname),
            };
            let delay = backoff.next_delay(Instant::now().into_std(), &mut rng);
            let detail = format!("{why}; reopening in {} ms", delay.as_millis());
            if tx
                .send(Event::State(self.bus, HealthState::Down, Some(detail)))
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.recv() => return,
            }
        }
    }

    /// `None`: stop (shutdown, or the loop is gone); `Some(why)`: reopen.
    async fn read_loop(
        &self,
        sock: &Sock,
        tx: &mpsc::Sender<Event>,
        shutdown: &mut Shutdown,
    ) -> Option<String> {
        let mut dropped = read_rx_dropped(&self.ifname);
        let mut poll = tokio::time::interval(RX_DROPPED_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                r = sock.read() => match r {
                    Ok((word, fd, data)) => match Frame::from_id_word(word, fd, &data) {
                        Ok(f) if f.kind == super::frame::Kind::Error => {
                            let report = classify(f.id, f.data());
                            let bus_off = report.bus_off;
                            if tx.send(Event::Error(self.bus, report)).await.is_err() {
                                return None;
                            }
                            if bus_off {
                                return Some(format!("{}: bus-off", self.ifname));
                            }
                            continue;
                        }
                        Ok(f) => Event::Frame(self.bus, f),
                        Err(_) => continue,
                    },
                    Err(e) => return Some(format!("{}: read failed: {e}", self.ifname)),
                },
                _ = poll.tick() => {
                    let now = read_rx_dropped(&self.ifname);
                    let delta = match (dropped, now) {
                        (Some(a), Some(b)) if b > a => b - a,
                        _ => 0,
                    };
                    dropped = now.or(dropped);
                    if delta == 0 {
                        continue;
                    }
                    Event::RxDropped(self.bus, delta)
                }
                () = shutdown.recv() => return None,
            };
            if tx.send(event).await.is_err() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_error_frames() {
        // Bus-off.
        let r = classify(ERR_BUSOFF, &[0; 8]);
        assert!(r.bus_off);
        assert_eq!(r.health(), Some((HealthState::Down, "bus-off")));
        // Controller: RX error-passive.
        let r = classify(ERR_CRTL, &[0, CRTL_RX_PASSIVE, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.health(), Some((HealthState::Degraded, "error-passive")));
        // Controller: TX warning.
        let r = classify(ERR_CRTL, &[0, CRTL_TX_WARNING, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.health(), Some((HealthState::Degraded, "error warning")));
        // Restarted.
        let r = classify(ERR_RESTARTED, &[0; 8]);
        assert_eq!(r.health(), Some((HealthState::Ok, "restarted")));
        // Back to error-active.
        let r = classify(ERR_CRTL, &[0, CRTL_ACTIVE, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.health(), Some((HealthState::Ok, "restarted")));
        // RX overflow: counted, no health change.
        let r = classify(ERR_CRTL, &[0, CRTL_RX_OVERFLOW, 0, 0, 0, 0, 0, 0]);
        assert!(r.rx_overflow);
        assert_eq!(r.health(), None);
        // data[1] is only meaningful with the CRTL class; a short frame is no panic.
        assert_eq!(classify(ERR_PROT, &[0, 0xFF]), ErrorReport::default());
        assert_eq!(classify(ERR_CRTL, &[]), ErrorReport::default());
    }

    #[test]
    fn open_fails_cleanly_without_the_interface() {
        let r = Reader {
            ifname: "wmnocan0".into(),
            bus: 0,
            fd: false,
            filters: Some(vec![(0x8000_0000, 0x8000_0000)]),
            reopen_min: Duration::from_millis(10),
            reopen_max: Duration::from_millis(20),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let err = rt.block_on(async { Sock::open(&r).err() });
        assert!(err.is_some(), "opening a missing interface must fail");
    }
}
