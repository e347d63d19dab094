//! `obd`: OBD-II (SAE J1979 / ISO 15765-4) mode 01 PID polling and the mode 09 VIN over the
//! kernel's ISO-TP sockets, for vans without an FMS gateway. `docs/obd.md` is the user
//! documentation.
//!
//! Layout: [`pid`] decodes answers, [`poller`] decides every request and timeout (sans-IO,
//! time as an argument), [`link`] holds the sockets, [`distance`] is the GNSS odometer
//! fallback. The task in this file only carries requests out and answers in.
//!
//! Invariants:
//! - One request on the bus at a time ([`poller::Poller`]); the task waits only on the socket
//!   the outstanding request was sent to (the raw socket during discovery).
//! - Readings are stamped with the gateway clock when the answer arrives.
//! - A socket error (interface down or gone, module missing) closes every socket; they are
//!   reopened after a [`Backoff`] delay, and health says why meanwhile. Polling then restarts
//!   with a discovery.

pub mod distance;
pub mod link;
pub mod pid;
pub mod poller;

use std::collections::BTreeMap;
use std::io;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use socketcan::{CanFrame, EmbeddedFrame, Frame, SocketOptions};
use tracing::{info, warn};
use waymark_wire::{Reading, Value};

use self::link::{AsyncIsoTp, MAX_MESSAGE, can_id};
use self::poller::{Addressing, Decoded, Phase, Poll, Poller, Status, Target, Timing};
use super::cargo::KeyProblem;
use super::{Source, SourceContext, SourceError};
use crate::clock::system_ms;
use crate::health::HealthState;
use crate::shutdown::Shutdown;
use crate::uplink::backoff::Backoff;

/// `[[sources]] type = "obd"`: OBD-II polling on a SocketCAN interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObdConfig {
    /// Source name in readings, logs and health. Default `obd`.
    #[serde(default = "default_name")]
    pub name: String,
    /// SocketCAN interface of the diagnostic connector. Default `can0`.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// `11bit` (0x7DF / 0x7E0+n / 0x7E8+n) or `29bit` (0x18DB33F1 / 0x18DAxxF1 / 0x18DAF1xx).
    /// Default `11bit`.
    #[serde(default = "default_addressing")]
    pub addressing: Addressing,
    /// Period of vehicle speed and engine speed. 100 to 3600000 ms. Default 1000.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Period of the other PIDs (coolant, fuel level, odometer, load, oil and air temperature,
    /// battery voltage). 1000 to 3600000 ms. Default 30000.
    #[serde(default = "default_slow_poll_interval_ms")]
    pub slow_poll_interval_ms: u64,
    /// How long to wait for an answer (and the discovery window). 20 to 5000 ms. Default 150.
    #[serde(default = "default_response_timeout_ms")]
    pub response_timeout_ms: u64,
    /// Pause between discoveries while no ECU answers (ignition off). 1000 to 3600000 ms.
    /// Default 5000.
    #[serde(default = "default_discovery_retry_ms")]
    pub discovery_retry_ms: u64,
    /// Byte that pads transmitted frames to 8 bytes (ISO 15765-4 wants DLC 8), 0 to 255.
    /// Default 0xCC (204).
    #[serde(default = "default_padding")]
    pub padding: u8,
    /// First delay before reopening the interface after an error, ms (100 to 600000).
    /// Default 1000.
    #[serde(default = "default_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reopen attempts, ms (100 to 3600000). Default 60000.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
}

fn default_name() -> String {
    "obd".into()
}
fn default_interface() -> String {
    "can0".into()
}
fn default_addressing() -> Addressing {
    Addressing::Normal11
}
fn default_poll_interval_ms() -> u64 {
    1000
}
fn default_slow_poll_interval_ms() -> u64 {
    30_000
}
fn default_response_timeout_ms() -> u64 {
    150
}
fn default_discovery_retry_ms() -> u64 {
    5000
}
fn default_padding() -> u8 {
    0xCC
}
fn default_reconnect_min_ms() -> u64 {
    1000
}
fn default_reconnect_max_ms() -> u64 {
    60_000
}

/// The extended-frame flag of a SocketCAN id word (`CAN_EFF_FLAG`).
const CAN_EFF_FLAG: u32 = 0x8000_0000;

/// Consecutive unanswered requests after which the vehicle is taken to be asleep.
const MAX_TIMEOUTS: u32 = 3;

impl ObdConfig {
    /// A config with every default on `interface`.
    pub fn on(interface: &str) -> Self {
        Self {
            name: default_name(),
            interface: interface.into(),
            addressing: default_addressing(),
            poll_interval_ms: default_poll_interval_ms(),
            slow_poll_interval_ms: default_slow_poll_interval_ms(),
            response_timeout_ms: default_response_timeout_ms(),
            discovery_retry_ms: default_discovery_retry_ms(),
            padding: default_padding(),
            reconnect_min_ms: default_reconnect_min_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
        }
    }

    /// Checks the ranges.
    pub fn problems(&self) -> Vec<KeyProblem> {
        let mut out = Vec::new();
        if self.interface.is_empty() || self.interface.len() > 15 {
            out.push(KeyProblem::at(
                "interface",
                "must be a network interface name of 1 to 15 characters",
            ));
        }
        let ranges: [(&'static str, u64, (u64, u64)); 6] = [
            ("poll_interval_ms", self.poll_interval_ms, (100, 3_600_000)),
            (
                "slow_poll_interval_ms",
                self.slow_poll_interval_ms,
                (1000, 3_600_000),
            ),
            ("response_timeout_ms", self.response_timeout_ms, (20, 5000)),
            (
                "discovery_retry_ms",
                self.discovery_retry_ms,
                (1000, 3_600_000),
            ),
            ("reconnect_min_ms", self.reconnect_min_ms, (100, 600_000)),
            ("reconnect_max_ms", self.reconnect_max_ms, (100, 3_600_000)),
        ];
        for (key, v, r) in ranges {
            out.extend(KeyProblem::range(key, v, r));
        }
        out
    }

    fn timing(&self) -> Timing {
        Timing {
            fast: Duration::from_millis(self.poll_interval_ms),
            slow: Duration::from_millis(self.slow_poll_interval_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            discovery_retry: Duration::from_millis(self.discovery_retry_ms),
            max_timeouts: MAX_TIMEOUTS,
        }
    }
}

/// The source's health from the poller's status: `ok` while polling, `degraded` while no ECU
/// answers (ignition off, wrong addressing), with a detail naming the ECUs and the odometer.
pub fn health_of(status: &Status, addressing: Addressing) -> (HealthState, String) {
    match status.phase {
        Phase::Polling => {
            let ecus: Vec<String> = status
                .ecus
                .iter()
                .map(|e| addressing.ecu_name(*e))
                .collect();
            let odo = match status.odometer {
                Some(true) => "odometer from PID 0xA6",
                Some(false) => {
                    "no PID 0xA6: Vehicle.TraveledDistance needs the GNSS fallback (docs/obd.md)"
                }
                None => "reading supported PIDs",
            };
            (
                HealthState::Ok,
                format!("polling ECUs {}; {odo}", ecus.join(", ")),
            )
        }
        Phase::Discovering | Phase::Idle => (
            HealthState::Degraded,
            format!(
                "no ECU answers a functional 01 00 on 0x{:X} (ignition off?)",
                addressing.functional_id()
            ),
        ),
    }
}

/// The single frame carrying a functional request `payload` (at most 7 bytes), padded.
pub fn single_frame(payload: &[u8], padding: u8) -> Option<[u8; 8]> {
    let len = u8::try_from(payload.len()).ok().filter(|l| *l <= 7)?;
    let mut f = [padding; 8];
    f[0] = len;
    f[1..=payload.len()].copy_from_slice(payload);
    Some(f)
}

/// The payload of a single frame (`0L d1..dL`), `None` for other frame kinds.
pub fn single_frame_payload(data: &[u8]) -> Option<&[u8]> {
    let pci = *data.first()?;
    let len = usize::from(pci & 0x0F);
    (pci >> 4 == 0 && len > 0).then(|| data.get(1..=len))?
}

/// The `obd` source.
#[derive(Debug)]
pub struct Obd {
    cfg: ObdConfig,
}

impl Obd {
    /// A source for `cfg`; the interface is opened when it runs (and reopened after errors).
    pub fn new(cfg: &ObdConfig) -> Self {
        Self { cfg: cfg.clone() }
    }
}

/// Why a polling session ended.
enum End {
    Shutdown,
    Io(io::Error),
}

impl Source for Obd {
    const NAME: &'static str = "obd";

    fn component(&self) -> String {
        format!("{}:{}", Self::NAME, self.cfg.name)
    }

    async fn run(self, ctx: SourceContext, mut shutdown: Shutdown) -> Result<(), SourceError> {
        let component = self.component();
        let mut backoff = Backoff::new(
            Duration::from_millis(self.cfg.reconnect_min_ms),
            Duration::from_millis(self.cfg.reconnect_max_ms),
            Duration::from_secs(60),
        );
        loop {
            let started = Instant::now();
            let end = self
                .session(&ctx, &component, &mut shutdown, &mut backoff)
                .await?;
            let e = match end {
                End::Shutdown => return Ok(()),
                End::Io(e) => e,
            };
            let delay = backoff.next_delay(started.max(Instant::now()), &mut rand::rng());
            let detail = format!(
                "{}: {e}; reopening in {} ms",
                self.cfg.interface,
                delay.as_millis()
            );
            warn!(source = %component, "{detail}");
            ctx.health
                .set(&component, HealthState::Down, Some(detail), system_ms());
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.recv() => return Ok(()),
            }
        }
    }
}

impl Obd {
    /// Opens the sockets and polls until an I/O error or shutdown.
    async fn session(
        &self,
        ctx: &SourceContext,
        component: &str,
        shutdown: &mut Shutdown,
        backoff: &mut Backoff,
    ) -> Result<End, SourceError> {
        let cfg = &self.cfg;
        let addressing = cfg.addressing;
        let raw = match open_raw(cfg) {
            Ok(r) => r,
            Err(e) => return Ok(End::Io(e)),
        };
        backoff.connected(Instant::now());
        info!(source = %component, interface = %cfg.interface, "OBD-II interface open.");
        let mut ecus: BTreeMap<u8, AsyncIsoTp> = BTreeMap::new();
        let mut poller = Poller::new(cfg.timing(), Instant::now());
        let mut last_health = None;
        let mut awaiting: Option<Target> = None;
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            let health = health_of(&poller.status(), addressing);
            if last_health.as_ref() != Some(&health) {
                info!(source = %component, "{}", health.1);
                ctx.health
                    .set(component, health.0, Some(health.1.clone()), system_ms());
                last_health = Some(health);
            }
            let until = match poller.poll(Instant::now()) {
                Poll::Send(req) => {
                    let sent = match req.to {
                        Target::Functional => match functional_frame(&req.payload, cfg) {
                            Ok(frame) => {
                                // The raw socket is read only in discovery windows: drop what
                                // queued up since (answers the ISO-TP sockets already took).
                                while raw.try_read_frame().is_ok() {}
                                raw.write_frame(frame).await
                            }
                            Err(e) => Err(e),
                        },
                        Target::Ecu(ecu) => match ecu_socket(&mut ecus, cfg, ecu) {
                            Ok(s) => s.send(&req.payload).await,
                            Err(e) => Err(e),
                        },
                    };
                    if let Err(e) = sent {
                        return Ok(End::Io(e));
                    }
                    awaiting = Some(req.to);
                    continue;
                }
                Poll::Until(t) => t,
            };
            let sleep = tokio::time::sleep_until(until.into());
            let answer: io::Result<Option<(u8, Vec<u8>)>> = tokio::select! {
                () = sleep => Ok(None),
                () = shutdown.recv() => return Ok(End::Shutdown),
                r = recv_answer(&raw, &ecus, awaiting, addressing, &mut buf) => r,
            };
            let (ecu, payload) = match answer {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(e) => return Ok(End::Io(e)),
            };
            let Some(decoded) = poller.on_response(Instant::now(), ecu, &payload) else {
                continue;
            };
            let (signal, value, unit) = match decoded {
                Decoded::Signal {
                    signal,
                    value,
                    unit,
                } => (signal, Value::Num(value), unit),
                Decoded::Vin(vin) => {
                    info!(source = %component, %vin, "VIN read.");
                    (pid::VIN_SIGNAL, Value::Text(vin), "")
                }
            };
            let reading = Reading {
                signal: signal.into(),
                value,
                unit: unit.into(),
                time: ctx.clock.now(),
                source: cfg.name.clone(),
            };
            ctx.readings
                .send(reading)
                .await
                .map_err(|_| SourceError::PipelineClosed)?;
        }
    }
}

/// The padded single frame of a functional request.
fn functional_frame(payload: &[u8], cfg: &ObdConfig) -> io::Result<CanFrame> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "request does not fit a single frame",
        )
    };
    let data = single_frame(payload, cfg.padding).ok_or_else(bad)?;
    let id = can_id(cfg.addressing.functional_id(), cfg.addressing.is_extended())?;
    CanFrame::new(id, &data).ok_or_else(bad)
}

/// The raw socket for the functional request, passing only response identifiers.
fn open_raw(cfg: &ObdConfig) -> io::Result<socketcan::tokio::CanSocket> {
    let raw = socketcan::tokio::CanSocket::open(&cfg.interface)?;
    let (id, mask) = cfg.addressing.response_filter();
    let flag = if cfg.addressing.is_extended() {
        CAN_EFF_FLAG
    } else {
        0
    };
    raw.set_filters(&[socketcan::CanFilter::new(id | flag, mask | CAN_EFF_FLAG)])?;
    Ok(raw)
}

fn ecu_socket<'a>(
    ecus: &'a mut BTreeMap<u8, AsyncIsoTp>,
    cfg: &ObdConfig,
    ecu: u8,
) -> io::Result<&'a AsyncIsoTp> {
    use std::collections::btree_map::Entry;
    match ecus.entry(ecu) {
        Entry::Occupied(o) => Ok(o.into_mut()),
        Entry::Vacant(v) => {
            let ext = cfg.addressing.is_extended();
            let rx = can_id(cfg.addressing.response_id(ecu), ext)?;
            let tx = can_id(cfg.addressing.request_id(ecu), ext)?;
            let sock =
                AsyncIsoTp::open(&cfg.interface, rx, tx, Some(cfg.padding)).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("ISO-TP socket (is the can-isotp module loaded?): {e}"),
                    )
                })?;
            Ok(v.insert(sock))
        }
    }
}

/// Waits for the answer to what was sent last: a single frame on the raw socket after a
/// functional request, a message on that ECU's ISO-TP socket after a physical one.
async fn recv_answer(
    raw: &socketcan::tokio::CanSocket,
    ecus: &BTreeMap<u8, AsyncIsoTp>,
    awaiting: Option<Target>,
    addressing: Addressing,
    buf: &mut [u8],
) -> io::Result<Option<(u8, Vec<u8>)>> {
    match awaiting {
        Some(Target::Ecu(ecu)) => match ecus.get(&ecu) {
            Some(sock) => {
                let n = sock.recv(buf).await?;
                Ok(Some((ecu, buf[..n].to_vec())))
            }
            None => std::future::pending().await,
        },
        Some(Target::Functional) => loop {
            let frame = raw.read_frame().await?;
            let CanFrame::Data(frame) = frame else {
                continue;
            };
            let (Some(ecu), Some(payload)) = (
                addressing.ecu_of(frame.raw_id()),
                single_frame_payload(frame.data()),
            ) else {
                continue;
            };
            return Ok(Some((ecu, payload.to_vec())));
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_frames() {
        assert_eq!(
            single_frame(&[0x01, 0x00], 0xCC),
            Some([0x02, 0x01, 0x00, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC])
        );
        assert_eq!(single_frame(&[0; 8], 0), None);
        assert_eq!(
            single_frame_payload(&[0x06, 0x41, 0x00, 0xBE, 0x1F, 0xA8, 0x13, 0xCC]),
            Some(&[0x41, 0x00, 0xBE, 0x1F, 0xA8, 0x13][..])
        );
        assert_eq!(
            single_frame_payload(&[0x10, 0x14, 0x49]),
            None,
            "first frame"
        );
        assert_eq!(single_frame_payload(&[0x07, 0x41]), None, "short");
        assert_eq!(single_frame_payload(&[0x00, 0x41]), None, "empty");
        assert_eq!(single_frame_payload(&[]), None);
    }

    #[test]
    fn health_texts() {
        let mut st = Status {
            phase: Phase::Idle,
            ecus: vec![],
            odometer: None,
            timeouts: 0,
            negative: 0,
            ignored: 0,
        };
        let (s, d) = health_of(&st, Addressing::Normal29);
        assert_eq!(s, HealthState::Degraded);
        assert!(d.contains("0x18DB33F1"), "{d}");
        st.phase = Phase::Polling;
        st.ecus = vec![0, 1];
        st.odometer = Some(false);
        let (s, d) = health_of(&st, Addressing::Normal11);
        assert_eq!(s, HealthState::Ok);
        assert!(d.contains("0x7E8, 0x7E9") && d.contains("GNSS"), "{d}");
        st.odometer = Some(true);
        assert!(health_of(&st, Addressing::Normal11).1.contains("PID 0xA6"));
    }

    #[test]
    fn config_defaults_and_ranges() {
        let c: ObdConfig = toml::from_str("interface = \"can1\"").expect("parses");
        assert_eq!(c, ObdConfig::on("can1"));
        assert!(c.problems().is_empty());
        let c: ObdConfig =
            toml::from_str("addressing = \"29bit\"\nresponse_timeout_ms = 5").expect("parses");
        assert_eq!(c.addressing, Addressing::Normal29);
        let p = c.problems();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key, "response_timeout_ms");
        let err = toml::from_str::<ObdConfig>("addressing = \"16bit\"").expect_err("bad");
        assert!(err.to_string().contains("16bit"), "{err}");
        let err = toml::from_str::<ObdConfig>("pids = []").expect_err("unknown key");
        assert!(err.to_string().contains("pids"), "{err}");
        let mut long = ObdConfig::on("averyveryverylongname");
        long.poll_interval_ms = 10;
        assert_eq!(long.problems().len(), 2);
    }
}
