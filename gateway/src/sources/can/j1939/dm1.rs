//! DM1 (active diagnostic trouble codes, PGN 65226) and the VIN (PGN 65260), and the
//! trackers that turn them into events only when they change (sans-IO).
//!
//! DM1 layout (J1939-73): byte 0 lamp status (2 bits each, MSB first: MIL, red stop, amber
//! warning, protect), byte 1 lamp flash, then 4 bytes per DTC: SPN (19 bits: byte 2, byte 3,
//! top 3 bits of byte 4), FMI (low 5 bits of byte 4), conversion method (bit 7 of byte 5)
//! and occurrence count (low 7 bits of byte 5). "No active fault" is sent as one DTC of all
//! zeros (or all ones); neither is a fault.
//!
//! Invariants:
//! - A change is reported when an ECU's set of active (SPN, FMI) pairs or its lamp states
//!   differ from what was last *confirmed* reported (occurrence counts and flash bits ride
//!   along but do not by themselves make a change): the caller confirms after the event was
//!   committed, so a failed commit is reported again on the next DM1 (ECUs repeat DM1 every
//!   second).
//! - Bounded: at most [`MAX_ECUS`] (bus, source address) pairs and [`MAX_DTCS`] DTCs per ECU
//!   are tracked; further ones are ignored.

use std::collections::BTreeMap;

use serde::Serialize;

/// DM1 PGN.
pub const PGN_DM1: u32 = 65226;
/// Vehicle identification PGN.
pub const PGN_VI: u32 = 65260;
/// Most ECUs whose DM1 state is kept.
pub const MAX_ECUS: usize = 64;
/// Most DTCs kept per ECU (a 1785-byte DM1 holds 445).
pub const MAX_DTCS: usize = 445;
/// Longest VIN text accepted (J1939 allows up to 200 characters; a VIN is 17).
pub const MAX_VIN: usize = 200;

/// One active fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Dtc {
    /// Suspect parameter number.
    pub spn: u32,
    /// Failure mode identifier.
    pub fmi: u8,
    /// Occurrence count (127 = not available).
    pub oc: u8,
}

/// Lamp states: 0 off, 1 on, 2 error, 3 not available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Lamps {
    /// Malfunction indicator lamp.
    pub mil: u8,
    /// Red stop lamp.
    pub red_stop: u8,
    /// Amber warning lamp.
    pub amber_warning: u8,
    /// Protect lamp.
    pub protect: u8,
}

/// One DM1 message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dm1 {
    /// Lamp states.
    pub lamps: Lamps,
    /// Active faults, sorted by (SPN, FMI), no pair twice.
    pub active: Vec<Dtc>,
}

/// Parses a DM1 payload (single frame or reassembled); `None` when shorter than 2 bytes.
pub fn parse_dm1(data: &[u8]) -> Option<Dm1> {
    let (&l, rest) = data.split_first()?;
    rest.first()?;
    let lamps = Lamps {
        mil: (l >> 6) & 3,
        red_stop: (l >> 4) & 3,
        amber_warning: (l >> 2) & 3,
        protect: l & 3,
    };
    let mut active: Vec<Dtc> = data[2..]
        .chunks_exact(4)
        .take(MAX_DTCS)
        .filter_map(|c| {
            let spn = u32::from(c[0]) | u32::from(c[1]) << 8 | u32::from(c[2] >> 5) << 16;
            let fmi = c[2] & 0x1F;
            let oc = c[3] & 0x7F;
            let none = (spn == 0 && fmi == 0) || spn == 0x7_FFFF;
            (!none).then_some(Dtc { spn, fmi, oc })
        })
        .collect();
    active.sort();
    active.dedup_by_key(|d| (d.spn, d.fmi));
    Some(Dm1 { lamps, active })
}

/// What changed in one ECU's DM1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dm1Change {
    /// Bus index.
    pub bus: u8,
    /// The ECU's source address.
    pub sa: u8,
    /// The new state.
    pub now: Dm1,
    /// Faults active now that were not before.
    pub appeared: Vec<Dtc>,
    /// Faults active before that are not now.
    pub cleared: Vec<Dtc>,
}

fn key_set(d: &Dm1) -> impl Iterator<Item = (u32, u8)> + '_ {
    d.active.iter().map(|t| (t.spn, t.fmi))
}

/// Remembers each ECU's last confirmed DM1.
#[derive(Debug, Default)]
pub struct Dm1Tracker {
    confirmed: BTreeMap<(u8, u8), Dm1>,
}

impl Dm1Tracker {
    /// A change against the confirmed state of `(bus, sa)`, if there is one. An ECU seen for
    /// the first time with no fault and all lamps off is no change.
    pub fn observe(&self, bus: u8, sa: u8, dm1: &Dm1) -> Option<Dm1Change> {
        let empty = Dm1::default();
        let before = match self.confirmed.get(&(bus, sa)) {
            Some(b) => b,
            None if self.confirmed.len() >= MAX_ECUS => return None,
            None => &empty,
        };
        let lamps_on = |l: &Lamps| [l.mil, l.red_stop, l.amber_warning, l.protect].map(|x| x == 1);
        if key_set(before).eq(key_set(dm1)) && lamps_on(&before.lamps) == lamps_on(&dm1.lamps) {
            return None;
        }
        let has = |d: &Dm1, t: &Dtc| d.active.iter().any(|x| (x.spn, x.fmi) == (t.spn, t.fmi));
        Some(Dm1Change {
            bus,
            sa,
            now: dm1.clone(),
            appeared: dm1
                .active
                .iter()
                .filter(|t| !has(before, t))
                .copied()
                .collect(),
            cleared: before
                .active
                .iter()
                .filter(|t| !has(dm1, t))
                .copied()
                .collect(),
        })
    }

    /// The change was reported (its event committed): it is the new reference.
    pub fn confirm(&mut self, change: &Dm1Change) {
        if self.confirmed.len() < MAX_ECUS || self.confirmed.contains_key(&(change.bus, change.sa))
        {
            self.confirmed
                .insert((change.bus, change.sa), change.now.clone());
        }
    }
}

/// The VIN in a PGN 65260 payload: the leading run of ASCII letters and digits (after
/// leading spaces), up to the `*` field delimiter; `None` when there is none. Real ECUs put
/// more after the VIN before the `*` (the two-bus capture sends `1L06130RELP969468>,` and
/// binary bytes), so the VIN ends at the first character a VIN cannot contain.
pub fn parse_vin(data: &[u8]) -> Option<String> {
    let end = data.iter().position(|&b| b == b'*').unwrap_or(data.len());
    let text = &data[..end.min(MAX_VIN)];
    let start = text.iter().position(|&b| b != b' ')?;
    let text = &text[start..];
    let len = text
        .iter()
        .position(|b| !b.is_ascii_alphanumeric())
        .unwrap_or(text.len());
    (len > 0).then(|| String::from_utf8_lossy(&text[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn dtc_bytes(spn: u32, fmi: u8, oc: u8) -> [u8; 4] {
        [
            spn as u8,
            (spn >> 8) as u8,
            ((spn >> 16) as u8) << 5 | fmi,
            oc & 0x7F,
        ]
    }

    #[test]
    fn parses_lamps_and_dtcs() {
        // Amber lamp on; SPN 100 (oil pressure) FMI 1, OC 3; SPN 524287-1 FMI 31.
        let mut d = vec![0b0000_0100, 0xFF];
        d.extend(dtc_bytes(100, 1, 3));
        d.extend(dtc_bytes(0x7_FFFE, 31, 1));
        let m = parse_dm1(&d).expect("dm1");
        assert_eq!(m.lamps.amber_warning, 1);
        assert_eq!(m.lamps.mil, 0);
        assert_eq!(
            m.active,
            vec![
                Dtc {
                    spn: 100,
                    fmi: 1,
                    oc: 3
                },
                Dtc {
                    spn: 0x7_FFFE,
                    fmi: 31,
                    oc: 1
                }
            ]
        );
        // The "no fault" forms.
        assert!(
            parse_dm1(&[0, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF])
                .expect("dm1")
                .active
                .is_empty()
        );
        assert!(
            parse_dm1(&[0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
                .expect("dm1")
                .active
                .is_empty()
        );
        assert!(parse_dm1(&[0]).is_none());
    }

    #[test]
    fn tracker_reports_changes_until_confirmed() {
        let mut t = Dm1Tracker::default();
        let none = parse_dm1(&[0, 0xFF, 0, 0, 0, 0, 0xFF, 0xFF]).expect("dm1");
        assert!(t.observe(0, 0, &none).is_none());
        let mut d = vec![0b0000_0100, 0xFF];
        d.extend(dtc_bytes(100, 1, 3));
        let one = parse_dm1(&d).expect("dm1");
        let c = t.observe(0, 0, &one).expect("change");
        assert_eq!(c.appeared.len(), 1);
        // Not confirmed (commit failed): reported again.
        assert!(t.observe(0, 0, &one).is_some());
        t.confirm(&c);
        assert!(t.observe(0, 0, &one).is_none());
        // Occurrence count going up alone is no change.
        let mut d2 = vec![0b0000_0100, 0xFF];
        d2.extend(dtc_bytes(100, 1, 4));
        assert!(t.observe(0, 0, &parse_dm1(&d2).expect("dm1")).is_none());
        // Same fault on another ECU is its own change.
        assert!(t.observe(0, 1, &one).is_some());
        // Cleared.
        let c = t.observe(0, 0, &none).expect("cleared");
        assert_eq!((c.appeared.len(), c.cleared.len()), (0, 1));
    }

    #[test]
    fn vins() {
        assert_eq!(
            parse_vin(b"1FUJGLDR9CLBP8834*").as_deref(),
            Some("1FUJGLDR9CLBP8834")
        );
        assert_eq!(
            parse_vin(b"WDB9634031L123456\0\0").as_deref(),
            Some("WDB9634031L123456")
        );
        assert_eq!(parse_vin(b"   *"), None);
        assert_eq!(parse_vin(b"\x01ABC*"), None);
        // The two-bus capture: VIN, then other bytes before the delimiter.
        assert_eq!(
            parse_vin(b"1L06130RELP969468>,\x05)]\x07\x01'\x01\x01*").as_deref(),
            Some("1L06130RELP969468")
        );
    }

    proptest! {
        #[test]
        fn dm1_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            if let Some(d) = parse_dm1(&data) {
                prop_assert!(d.active.len() <= MAX_DTCS);
                prop_assert!(d.active.windows(2).all(|w| (w[0].spn, w[0].fmi) < (w[1].spn, w[1].fmi)));
            }
            let _ = parse_vin(&data);
        }
    }
}
