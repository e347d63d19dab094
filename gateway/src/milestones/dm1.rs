//! J1939 DM1 (active diagnostic trouble codes) as events when an ECU's fault set changes.
//!
//! Invariants:
//! - One `waymark.vehicle.dm1_changed` per change of an ECU's set of active `(SPN, FMI)` pairs
//!   or of its lamp status; a repeated identical snapshot (DM1 is broadcast every second)
//!   emits nothing, nor does a change of occurrence count alone (the new count travels with
//!   the next change).
//! - Bounded: at most [`MAX_ECUS`] ECUs are tracked and [`MAX_FAULTS`] faults per ECU (more
//!   are dropped, deterministically: the lowest `(SPN, FMI)` are kept, and `truncated` says so).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use waymark_wire::Timestamp;

use super::Fix;
use super::events::{self, Emitted, location_json};

/// Most ECUs (source addresses) tracked.
pub const MAX_ECUS: usize = 32;
/// Most faults kept per ECU.
pub const MAX_FAULTS: usize = 64;

/// J1939 lamp states (DM1 bytes 1-2), as the CAN source decodes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lamps {
    /// Malfunction indicator lamp.
    pub mil: bool,
    /// Red stop lamp.
    pub red_stop: bool,
    /// Amber warning lamp.
    pub amber_warning: bool,
    /// Protect lamp.
    pub protect: bool,
}

/// One active fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dm1Fault {
    /// Suspect parameter number (19 bits).
    pub spn: u32,
    /// Failure mode identifier (5 bits).
    pub fmi: u8,
    /// Occurrence count (7 bits; 127 = not available).
    pub oc: u8,
}

/// The active faults one ECU reported in one DM1 message (single frame or reassembled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dm1Snapshot {
    /// When the message was received (UTC ms).
    pub time: Timestamp,
    /// J1939 source address of the ECU.
    pub source_address: u8,
    /// Lamp status.
    pub lamps: Lamps,
    /// Active faults (empty: none; the "no fault" pattern SPN 0 FMI 0 is decoded as empty).
    pub faults: Vec<Dm1Fault>,
}

/// What one ECU reported last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcuFaults {
    /// Lamps.
    pub lamps: Lamps,
    /// Faults, sorted by `(spn, fmi)`, unique.
    pub faults: Vec<Dm1Fault>,
}

/// Per-ECU DM1 state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dm1 {
    /// Source address → last reported set.
    pub ecus: BTreeMap<u8, EcuFaults>,
    /// Snapshots dropped because [`MAX_ECUS`] ECUs were already tracked.
    pub ecus_dropped: u64,
}

fn key(f: &Dm1Fault) -> (u32, u8) {
    (f.spn, f.fmi)
}

fn fault_json(f: &Dm1Fault) -> serde_json::Value {
    json!({"spn": f.spn, "fmi": f.fmi, "oc": f.oc})
}

impl Dm1 {
    /// A snapshot at event time `t`.
    pub fn on_snapshot(
        &mut self,
        t: Timestamp,
        snap: &Dm1Snapshot,
        fix: Option<&Fix>,
        out: &mut Vec<Emitted>,
    ) {
        let mut faults: Vec<Dm1Fault> = snap
            .faults
            .iter()
            .filter(|f| f.spn != 0 || f.fmi != 0)
            .map(|f| Dm1Fault {
                spn: f.spn & 0x7_ffff,
                fmi: f.fmi & 0x1f,
                oc: f.oc & 0x7f,
            })
            .collect();
        faults.sort_by_key(key);
        faults.dedup_by_key(|f| key(f));
        let truncated = faults.len() > MAX_FAULTS;
        faults.truncate(MAX_FAULTS);
        let sa = snap.source_address;
        let empty = EcuFaults {
            lamps: Lamps::default(),
            faults: Vec::new(),
        };
        if !self.ecus.contains_key(&sa) && self.ecus.len() >= MAX_ECUS {
            self.ecus_dropped += 1;
            return;
        }
        let old = self.ecus.get(&sa).unwrap_or(&empty);
        let same_set = old.faults.iter().map(key).eq(faults.iter().map(key));
        if same_set && old.lamps == snap.lamps {
            // Keep the newest occurrence counts without an event.
            if let Some(e) = self.ecus.get_mut(&sa) {
                e.faults = faults;
            }
            return;
        }
        let added: Vec<_> = faults
            .iter()
            .filter(|f| !old.faults.iter().any(|o| key(o) == key(f)))
            .map(fault_json)
            .collect();
        let removed: Vec<_> = old
            .faults
            .iter()
            .filter(|o| !faults.iter().any(|f| key(o) == key(f)))
            .map(fault_json)
            .collect();
        out.push(Emitted::new(
            events::DM1_CHANGED,
            t,
            Some(format!("ecu-{sa}")),
            json!({
                "source_address": sa,
                "lamps": snap.lamps,
                "active": faults.iter().map(fault_json).collect::<Vec<_>>(),
                "added": added,
                "removed": removed,
                "truncated": truncated,
                "location": location_json(fix),
            }),
        ));
        if faults.is_empty() && snap.lamps == Lamps::default() {
            self.ecus.remove(&sa);
        } else {
            self.ecus.insert(
                sa,
                EcuFaults {
                    lamps: snap.lamps,
                    faults,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(sa: u8, amber: bool, faults: &[(u32, u8, u8)]) -> Dm1Snapshot {
        Dm1Snapshot {
            time: 0,
            source_address: sa,
            lamps: Lamps {
                amber_warning: amber,
                ..Lamps::default()
            },
            faults: faults
                .iter()
                .map(|&(spn, fmi, oc)| Dm1Fault { spn, fmi, oc })
                .collect(),
        }
    }

    #[test]
    fn changes_only() {
        let mut d = Dm1::default();
        let mut out = Vec::new();
        d.on_snapshot(1, &snap(0, false, &[]), None, &mut out);
        assert!(out.is_empty(), "no faults before, none now");
        d.on_snapshot(
            2,
            &snap(0, true, &[(100, 1, 1), (190, 2, 1)]),
            None,
            &mut out,
        );
        d.on_snapshot(
            3,
            &snap(0, true, &[(190, 2, 1), (100, 1, 1)]),
            None,
            &mut out,
        );
        d.on_snapshot(
            4,
            &snap(0, true, &[(190, 2, 5), (100, 1, 1)]),
            None,
            &mut out,
        );
        assert_eq!(
            out.len(),
            1,
            "order and occurrence counts alone change nothing"
        );
        assert_eq!(out[0].data["added"].as_array().unwrap().len(), 2);
        assert_eq!(out[0].subject.as_deref(), Some("ecu-0"));
        d.on_snapshot(5, &snap(0, true, &[(190, 2, 6)]), None, &mut out);
        assert_eq!(out[1].data["removed"][0]["spn"], 100);
        assert_eq!(out[1].data["active"][0]["oc"], 6);
        d.on_snapshot(6, &snap(0, false, &[(190, 2, 6)]), None, &mut out);
        assert_eq!(out.len(), 3, "a lamp change is a change");
        d.on_snapshot(7, &snap(0, false, &[(0, 0, 0)]), None, &mut out);
        assert_eq!(out[3].data["active"], json!([]));
        assert!(d.ecus.is_empty());
    }

    #[test]
    fn bounded() {
        let mut d = Dm1::default();
        let mut out = Vec::new();
        let many: Vec<_> = (1..=100).map(|s| (s, 3, 1)).collect();
        d.on_snapshot(1, &snap(1, false, &many), None, &mut out);
        assert_eq!(d.ecus[&1].faults.len(), MAX_FAULTS);
        assert_eq!(out[0].data["truncated"], true);
        for sa in 2..=40 {
            d.on_snapshot(2, &snap(sa, true, &[]), None, &mut out);
        }
        assert_eq!(d.ecus.len(), MAX_ECUS);
        assert_eq!(d.ecus_dropped, 40 - 32);
    }
}
