//! The decode path both CAN sources share (sans-IO): frames in, readings and vehicle events
//! out.
//!
//! ```text
//! Frame ─┬─ extended ─► J1939Id ─┬─ TP.CM / TP.DT ─► Reassembler ─► (PGN, payload) ─┐
//!        │                       └─────────────────────────────► (PGN, payload) ───┤
//!        │                                                                         ├─► FMS / NMEA 2000 tables ─► Reading
//!        │                                                                         ├─► DBC (J1939 files: by PGN)─► Reading
//!        │                                                                         ├─► DM1 ─► Dm1Tracker ─► Pending::Dm1
//!        │                                                                         └─► VIN ─► Pending::Vin
//!        └─ any ─► DBC by exact (id, extended) ─────────────────────────────────────────► Reading
//! ```
//!
//! Invariants:
//! - J1939 groups are matched on the PGN, never on the source address (the FMS tables, the
//!   J1939 DBCs, DM1 and the VIN alike).
//! - "Not available" / "error" raw values and signals that do not fit the frame yield no
//!   reading; nothing here panics on any frame.
//! - Readings carry the caller's `stamp` (the gateway clock); the transport protocol's
//!   timeouts run on the caller's `now_ms` (a monotonic clock, or the log's time).
//! - Events are reported as [`Pending`] and become the new reference only when the caller
//!   confirms them (after the store committed the event).
//! - Memory is bounded by the config (tables, DBC messages) plus the reassembler's and the
//!   DM1 tracker's own bounds; at most [`MAX_BUSES`] bus names are told apart.

use std::collections::HashMap;
use std::sync::Arc;

use waymark_wire::{Reading, Timestamp, Value};

use super::config::{DecodeConfig, resolve};
use super::dbc::{DbcError, DbcFile, DbcMessage, MessageIndex, SignalValue};
use super::frame::{self, Frame, Kind};
use super::j1939::dm1::{Dm1Change, Dm1Tracker, PGN_DM1, PGN_VI, parse_dm1, parse_vin};
use super::j1939::fms::{Decoded, FMS, NMEA2000, Param};
use super::j1939::id::J1939Id;
use super::j1939::tp::{PGN_TP_CM, PGN_TP_DT, Reassembler, TpStats};

/// Most distinct bus (interface) names; frames from further names share the last index.
pub const MAX_BUSES: usize = 16;
/// The kernel accepts at most 512 filters per socket (`CAN_RAW_FILTER_MAX`).
pub const MAX_KERNEL_FILTERS: usize = 512;

/// A vehicle event waiting to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A VIN different from the last confirmed one.
    Vin {
        /// The VIN.
        vin: String,
        /// Bus index.
        bus: u8,
        /// Sender.
        sa: u8,
    },
    /// An ECU's active faults or lamps changed.
    Dm1(Dm1Change),
}

/// Counters of the decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames seen.
    pub frames: u64,
    /// Error frames seen (not decoded).
    pub error_frames: u64,
    /// Readings produced.
    pub readings: u64,
    /// Transport protocol counters.
    pub tp: TpStats,
}

/// (signal index, our name, unit).
type MappedSignal = (usize, Arc<str>, Arc<str>);

#[derive(Debug)]
struct Mapped {
    msg: usize,
    signals: Vec<MappedSignal>,
    text_values: bool,
}

/// The decoder of one source.
#[derive(Debug)]
pub struct Decoder {
    source: String,
    /// Built-in parameters by PGN.
    params: HashMap<u32, Vec<&'static Param>>,
    j1939: bool,
    messages: Vec<DbcMessage>,
    dbc: MessageIndex<Mapped>,
    any_pgn_dbc: bool,
    tp: Reassembler,
    dm1: Dm1Tracker,
    vin: Option<String>,
    buses: Vec<String>,
    stats: DecodeStats,
}

impl Decoder {
    /// A decoder for `cfg` (loading its DBC files); readings name `source`.
    ///
    /// # Errors
    /// A DBC file is unusable, or a mapped message or signal is not in it.
    pub fn new(source: &str, cfg: &DecodeConfig<'_>) -> Result<Self, DbcError> {
        let mut params: HashMap<u32, Vec<&'static Param>> = HashMap::new();
        let tables: [(bool, &'static [Param]); 2] = [(cfg.j1939, FMS), (cfg.nmea2000, NMEA2000)];
        for p in tables
            .iter()
            .filter(|(on, _)| *on)
            .flat_map(|(_, t)| t.iter())
        {
            params.entry(p.pgn).or_default().push(p);
        }
        let mut messages = Vec::new();
        let mut dbc = MessageIndex::default();
        let mut any_pgn_dbc = false;
        for f in cfg.dbc {
            let file = DbcFile::load(&f.file)?;
            let by_pgn = f.j1939.unwrap_or(file.j1939);
            let mut per_msg: HashMap<usize, Vec<MappedSignal>> = HashMap::new();
            for s in &f.signals {
                let (mi, si) = resolve(&file, s).map_err(|message| DbcError::Syntax {
                    path: f.file.display().to_string(),
                    line: 0,
                    column: 0,
                    message,
                })?;
                let unit = s
                    .unit
                    .clone()
                    .unwrap_or_else(|| file.messages[mi].signals[si].unit.clone());
                per_msg.entry(mi).or_default().push((
                    si,
                    Arc::from(s.name.as_str()),
                    Arc::from(unit.as_str()),
                ));
            }
            let mut per_msg: Vec<_> = per_msg.into_iter().collect();
            per_msg.sort_by_key(|(mi, _)| *mi);
            for (mi, signals) in per_msg {
                let m = file.messages[mi].clone();
                any_pgn_dbc |= by_pgn && m.extended;
                dbc.insert(
                    m.id,
                    m.extended,
                    by_pgn,
                    Mapped {
                        msg: messages.len(),
                        signals,
                        text_values: f.text_values,
                    },
                );
                messages.push(m);
            }
        }
        Ok(Decoder {
            source: source.to_string(),
            params,
            j1939: cfg.j1939,
            messages,
            dbc,
            any_pgn_dbc,
            tp: Reassembler::new(),
            dm1: Dm1Tracker::default(),
            vin: None,
            buses: Vec::new(),
            stats: DecodeStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> DecodeStats {
        DecodeStats {
            tp: self.tp.stats(),
            ..self.stats
        }
    }

    /// The index of bus `name` (interned; at most [`MAX_BUSES`]).
    pub fn bus(&mut self, name: &str) -> u8 {
        if let Some(i) = self.buses.iter().position(|b| b == name) {
            return i as u8;
        }
        if self.buses.len() < MAX_BUSES {
            self.buses.push(name.to_string());
        }
        (self.buses.len() - 1) as u8
    }

    /// The name of bus `i`.
    pub fn bus_name(&self, i: u8) -> &str {
        self.buses.get(usize::from(i)).map_or("", String::as_str)
    }

    fn wants_pgns(&self) -> bool {
        self.j1939 || !self.params.is_empty() || self.any_pgn_dbc
    }

    /// Decodes one frame from bus `bus`, pushing readings stamped `stamp` to `readings` and
    /// changes to `events`. `now_ms` drives the transport protocol timeouts.
    pub fn on_frame(
        &mut self,
        now_ms: u64,
        stamp: Timestamp,
        bus: u8,
        frame: &Frame,
        readings: &mut Vec<Reading>,
        events: &mut Vec<Pending>,
    ) {
        self.stats.frames += 1;
        match frame.kind {
            Kind::Data => {}
            Kind::Error => {
                self.stats.error_frames += 1;
                return;
            }
            Kind::Remote => return,
        }
        let before = readings.len();
        let data = frame.data();
        let pgn = if frame.extended && self.wants_pgns() {
            let id = J1939Id::from_raw(frame.id);
            if self.j1939 && (id.pgn == PGN_TP_CM || id.pgn == PGN_TP_DT) {
                if let Some(m) = self.tp.on_frame(now_ms, bus, id, data) {
                    self.on_pgn(m.pgn, bus, m.sa, &m.data, stamp, readings, events);
                }
            } else {
                self.on_pgn(id.pgn, bus, id.sa, data, stamp, readings, events);
            }
            Some(id.pgn)
        } else {
            None
        };
        // DBC messages matched on the exact id (and J1939 DBCs on the PGN).
        for mapped in self.dbc.get(frame.id, frame.extended, pgn) {
            let m = &self.messages[mapped.msg];
            for (si, name, unit) in &mapped.signals {
                if !m.present(*si, data) {
                    continue;
                }
                let Some(v) = m.signals[*si].decode(data, mapped.text_values) else {
                    continue;
                };
                let value = match v {
                    SignalValue::Num(n) if n.is_finite() => Value::Num(n),
                    SignalValue::Num(_) => continue,
                    SignalValue::Text(t) => Value::Text(t),
                };
                readings.push(Reading {
                    signal: name.to_string(),
                    value,
                    unit: unit.to_string(),
                    time: stamp,
                    source: self.source.clone(),
                });
            }
        }
        self.stats.readings += (readings.len() - before) as u64;
    }

    #[allow(clippy::too_many_arguments)]
    fn on_pgn(
        &mut self,
        pgn: u32,
        bus: u8,
        sa: u8,
        data: &[u8],
        stamp: Timestamp,
        readings: &mut Vec<Reading>,
        events: &mut Vec<Pending>,
    ) {
        if let Some(params) = self.params.get(&pgn) {
            for p in params {
                let value = match p.decode(data) {
                    Some(Decoded::Num(v)) => Value::Num(v),
                    Some(Decoded::Bool(b)) => Value::Bool(b),
                    None => continue,
                };
                readings.push(Reading {
                    signal: p.signal.to_string(),
                    value,
                    unit: p.unit.to_string(),
                    time: stamp,
                    source: self.source.clone(),
                });
            }
        }
        if !self.j1939 {
            return;
        }
        match pgn {
            PGN_DM1 => {
                if let Some(dm1) = parse_dm1(data)
                    && let Some(change) = self.dm1.observe(bus, sa, &dm1)
                {
                    events.push(Pending::Dm1(change));
                }
            }
            PGN_VI => {
                if let Some(vin) = parse_vin(data)
                    && self.vin.as_deref() != Some(vin.as_str())
                {
                    events.push(Pending::Vin { vin, bus, sa });
                }
            }
            _ => {}
        }
    }

    /// `p` was committed: it is the new reference.
    pub fn confirm(&mut self, p: &Pending) {
        match p {
            Pending::Vin { vin, .. } => self.vin = Some(vin.clone()),
            Pending::Dm1(c) => self.dm1.confirm(c),
        }
    }

    /// Drops timed-out transport sessions at `now_ms` (call when idle).
    pub fn expire(&mut self, now_ms: u64) {
        self.tp.expire(now_ms);
    }

    /// Kernel acceptance filters `(id word, mask)` for what this decoder uses; `None` when
    /// it would need more than [`MAX_KERNEL_FILTERS`] (then everything is received).
    /// Remote frames never pass (the mask includes the RTR flag).
    pub fn kernel_filters(&self) -> Option<Vec<(u32, u32)>> {
        let mut out = Vec::new();
        let mut pgns: Vec<u32> = self.params.keys().copied().collect();
        if self.j1939 {
            pgns.extend([PGN_DM1, PGN_VI, PGN_TP_CM, PGN_TP_DT]);
        }
        for (id, extended, by_pgn) in self.dbc.keys() {
            if by_pgn {
                pgns.push(id);
            } else if extended {
                out.push((
                    id | frame::EFF_FLAG,
                    frame::EFF_MASK | frame::EFF_FLAG | frame::RTR_FLAG,
                ));
            } else {
                out.push((id, frame::SFF_MASK | frame::EFF_FLAG | frame::RTR_FLAG));
            }
        }
        pgns.sort_unstable();
        pgns.dedup();
        for pgn in pgns {
            let (id, mask) = J1939Id::filter(pgn);
            out.push((
                id | frame::EFF_FLAG,
                mask | frame::EFF_FLAG | frame::RTR_FLAG,
            ));
        }
        out.sort_unstable();
        out.dedup();
        (out.len() <= MAX_KERNEL_FILTERS).then_some(out)
    }
}

/// Whether `frame` passes `filters` as the kernel would (any filter matches).
pub fn passes(filters: &[(u32, u32)], frame: &Frame) -> bool {
    let mut word = frame.id;
    if frame.extended {
        word |= frame::EFF_FLAG;
    }
    if frame.kind == Kind::Remote {
        word |= frame::RTR_FLAG;
    }
    filters.iter().any(|(id, mask)| word & mask == id & mask)
}

#[cfg(test)]
mod tests;
