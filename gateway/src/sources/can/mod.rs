//! CAN bus sources: `can` (SocketCAN interfaces) and `candump` (replay of a can-utils log).
//! `docs/can.md` is the user documentation.
//!
//! ```text
//! can:      Reader per interface (socket.rs) ─► mpsc<Event> ─┐
//!           (filters, error frames, reopen with backoff)     │
//! candump:  file ─► lines ─► candump::parse_line ─► Pacer ───┤
//!                                                            ▼
//!                          Decoder (decode.rs: J1939/FMS, TP, DM1, VIN, NMEA 2000, DBC)
//!                               │ readings                      │ Pending events
//!                               ▼                               ▼
//!                 ctx.readings (pipeline: deadband,      Store::append_event, then
//!                 min interval, heartbeat per signal)    Decoder::confirm
//! ```
//!
//! Invariants:
//! - Both kinds share one decode path ([`decode::Decoder`]); frames from several interfaces
//!   go through one decoder (one VIN, one DM1 state per ECU and bus).
//! - Readings are stamped with the gateway clock ([`crate::clock::Clock::now`]) when the
//!   frame is decoded. A candump replay keeps the log's relative timing for its pacing; in
//!   as-fast-as-possible mode (`speed = 0`) the stamps are the clock at the start of the
//!   pass plus the log's offset from its first frame, so the pipeline's per-signal minimum
//!   interval and heartbeat still see the capture's real sample spacing.
//! - A frame becomes a reading only through the pipeline's filter: the sources add default
//!   `[[pipeline.signals]]` entries for what they decode ([`default_filters`]), after the
//!   user's own, so a 100 Hz frame becomes a reading only when it says something new.
//! - Events (VIN, DM1 changes) are committed before the decoder takes them as reported; a
//!   failed commit is retried with the next repetition on the bus.
//! - The source waits when the pipeline's channel is full (backpressure reaches the kernel
//!   socket queue, whose overflow is counted as `can_rx_dropped`).

pub mod candump;
pub mod config;
pub mod dbc;
pub mod decode;
pub mod frame;
pub mod j1939;
pub mod replay;
pub mod socket;

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};
use uuid::Uuid;
use waymark_wire::{Reading, Timestamp};

use super::{Source, SourceContext, SourceError};
use crate::clock::system_ms;
use crate::health::{Health, HealthState};
use crate::shutdown::Shutdown;
use crate::store::{Lane, NewEvent};
pub use config::{CanConfig, CandumpConfig, DbcConfig, DbcSignalConfig, default_filters};
use decode::{Decoder, Pending};

/// Event type of a new VIN.
pub const EVENT_VIN: &str = "waymark.vehicle.vin";
/// Event type of a change in an ECU's active faults (DM1).
pub const EVENT_DTC: &str = "waymark.vehicle.dtc_changed";
/// Frames buffered between the interface readers and the decode loop.
pub const FRAME_QUEUE: usize = 1024;

/// Why a CAN source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CanError {
    /// A DBC file is unusable.
    #[error("{component}: {source}")]
    Dbc {
        /// The source.
        component: String,
        /// Why.
        #[source]
        source: dbc::DbcError,
    },
}

/// The event for `p`, stamped `time_ms`.
pub fn event(p: &Pending, decoder: &Decoder, source: &str, time_ms: Timestamp) -> NewEvent {
    match p {
        Pending::Vin { vin, bus, sa } => NewEvent {
            id: Uuid::now_v7(),
            type_: EVENT_VIN.into(),
            time_ms,
            lane: Lane::Milestone,
            subject: None,
            data: json!({
                "vin": vin,
                "bus": decoder.bus_name(*bus),
                "source_address": sa,
                "source": source,
            }),
        },
        Pending::Dm1(c) => NewEvent {
            id: Uuid::now_v7(),
            type_: EVENT_DTC.into(),
            time_ms,
            lane: Lane::Alert,
            subject: Some(format!("ecu:{}:{}", decoder.bus_name(c.bus), c.sa)),
            data: json!({
                "bus": decoder.bus_name(c.bus),
                "source_address": c.sa,
                "lamps": c.now.lamps,
                "active": c.now.active,
                "appeared": c.appeared,
                "cleared": c.cleared,
                "source": source,
            }),
        },
    }
}

/// Sends `readings` to the pipeline (waiting when it is full) and commits `events`,
/// confirming each committed one to the decoder. Both vectors are left empty.
///
/// # Errors
/// The pipeline is gone.
pub(crate) async fn deliver(
    ctx: &SourceContext,
    decoder: &mut Decoder,
    component: &str,
    source: &str,
    readings: &mut Vec<Reading>,
    events: &mut Vec<Pending>,
) -> Result<(), SourceError> {
    for r in readings.drain(..) {
        ctx.readings
            .send(r)
            .await
            .map_err(|_| SourceError::PipelineClosed)?;
    }
    for p in std::mem::take(events) {
        let ev = event(&p, decoder, source, ctx.clock.now());
        let type_ = ev.type_.clone();
        match ctx.store.append_event(ev).await {
            Ok(_) => {
                info!(source = %component, event = %type_, "Vehicle event stored.");
                decoder.confirm(&p);
            }
            Err(e) => {
                // Not confirmed: the next repetition on the bus reports it again.
                warn!(source = %component, error = %e, "Vehicle event not stored; will retry.");
            }
        }
    }
    Ok(())
}

/// `[[sources]] type = "can"`.
#[derive(Debug)]
pub struct Can {
    cfg: CanConfig,
    decoder: Decoder,
}

impl Can {
    /// Loads the DBC files; the interfaces are opened when it runs (an interface that comes
    /// up later is picked up by the reopen loop).
    ///
    /// # Errors
    /// A DBC file or a mapped signal is unusable.
    pub fn new(cfg: &CanConfig) -> Result<Self, CanError> {
        let decoder = Decoder::new(&cfg.name, &cfg.decode()).map_err(|source| CanError::Dbc {
            component: format!("can:{}", cfg.name),
            source,
        })?;
        Ok(Can {
            cfg: cfg.clone(),
            decoder,
        })
    }
}

/// Per-interface health, folded into the source's one health entry.
#[derive(Debug, Default)]
struct BusStates {
    states: Vec<(HealthState, Option<String>)>,
}

impl BusStates {
    fn set(&mut self, bus: usize, state: HealthState, detail: Option<String>) {
        if self.states.len() <= bus {
            self.states.resize(bus + 1, (HealthState::Down, None));
        }
        self.states[bus] = (state, detail);
    }

    /// Worst state, and the details of the interfaces not ok.
    fn fold(&self, names: &[String]) -> (HealthState, Option<String>) {
        let rank = |s: HealthState| match s {
            HealthState::Ok => 0,
            HealthState::Degraded => 1,
            HealthState::Down => 2,
        };
        let worst = self
            .states
            .iter()
            .map(|(s, _)| *s)
            .max_by_key(|s| rank(*s))
            .unwrap_or(HealthState::Down);
        let details: Vec<String> = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, (s, _))| *s != HealthState::Ok)
            .map(|(i, (s, d))| {
                let name = names.get(i).map_or("?", String::as_str);
                match d {
                    Some(d) => format!("{name}: {d}"),
                    None => format!("{name}: {s:?}"),
                }
            })
            .collect();
        (worst, (!details.is_empty()).then(|| details.join("; ")))
    }
}

impl Source for Can {
    const NAME: &'static str = "can";

    fn component(&self) -> String {
        format!("{}:{}", Self::NAME, self.cfg.name)
    }

    async fn run(mut self, ctx: SourceContext, shutdown: Shutdown) -> Result<(), SourceError> {
        let component = self.component();
        let filters = if self.cfg.kernel_filters {
            self.decoder.kernel_filters()
        } else {
            None
        };
        let (tx, mut rx) = mpsc::channel(FRAME_QUEUE);
        let mut readers = tokio::task::JoinSet::new();
        for name in &self.cfg.interfaces {
            let reader = socket::Reader {
                ifname: name.clone(),
                bus: self.decoder.bus(name),
                fd: self.cfg.fd,
                filters: filters.clone(),
                reopen_min: Duration::from_millis(self.cfg.reopen_min_ms),
                reopen_max: Duration::from_millis(self.cfg.reopen_max_ms),
            };
            readers.spawn(reader.run(tx.clone(), shutdown.clone()));
        }
        drop(tx);
        ctx.health.set(
            &component,
            HealthState::Down,
            Some("opening".into()),
            system_ms(),
        );
        let started = tokio::time::Instant::now();
        let mut states = BusStates::default();
        let mut last = None;
        let (mut readings, mut events) = (Vec::new(), Vec::new());
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => ev,
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    self.decoder.expire(started.elapsed().as_millis() as u64);
                    continue;
                }
                () = shutdown.recv() => {
                    readers.shutdown().await;
                    return Ok(());
                }
            };
            let now_ms = started.elapsed().as_millis() as u64;
            match ev {
                socket::Event::Frame(bus, f) => {
                    Health::add(&ctx.health.counters.can_frames, 1);
                    let stamp = ctx.clock.now();
                    self.decoder
                        .on_frame(now_ms, stamp, bus, &f, &mut readings, &mut events);
                    if !readings.is_empty() || !events.is_empty() {
                        deliver(
                            &ctx,
                            &mut self.decoder,
                            &component,
                            &self.cfg.name,
                            &mut readings,
                            &mut events,
                        )
                        .await?;
                    }
                    continue;
                }
                socket::Event::Error(bus, report) => {
                    Health::add(&ctx.health.counters.can_error_frames, 1);
                    if report.rx_overflow {
                        Health::add(&ctx.health.counters.can_rx_dropped, 1);
                    }
                    if report.bus_off {
                        Health::add(&ctx.health.counters.can_bus_off, 1);
                    }
                    if let Some((state, what)) = report.health() {
                        states.set(usize::from(bus), state, Some(what.into()));
                    }
                }
                socket::Event::State(bus, state, detail) => {
                    if let Some(d) = &detail {
                        warn!(source = %component, "{d}");
                    }
                    states.set(usize::from(bus), state, detail);
                }
                socket::Event::RxDropped(_, n) => {
                    Health::add(&ctx.health.counters.can_rx_dropped, n);
                    continue;
                }
            }
            let folded = states.fold(&self.cfg.interfaces);
            if last.as_ref() != Some(&folded) {
                ctx.health
                    .set(&component, folded.0, folded.1.clone(), system_ms());
                last = Some(folded);
            }
        }
    }
}
