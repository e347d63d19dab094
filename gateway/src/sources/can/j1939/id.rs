//! J1939 29-bit identifiers: priority, parameter group number (PGN), source and destination
//! address.
//!
//! ```text
//! bits 28-26 priority | 25 EDP | 24 DP | 23-16 PDU format (PF) | 15-8 PDU specific (PS) | 7-0 SA
//! ```
//! PF < 240 is PDU1: PS is the destination address and not part of the PGN. PF ≥ 240 is
//! PDU2: PS is the group extension, part of the PGN, and the message is broadcast.
//!
//! Decoders match on the PGN only: the same parameter group from another source address
//! (another ECU, a DBC whose ids carry the placeholder SA `0xFE`) is the same data.

/// Broadcast destination address.
pub const GLOBAL: u8 = 0xFF;

/// The parts of a 29-bit J1939 id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct J1939Id {
    /// 0 (highest) to 7.
    pub priority: u8,
    /// Parameter group number (18 bits).
    pub pgn: u32,
    /// Source address.
    pub sa: u8,
    /// Destination address: the PS field for PDU1, [`GLOBAL`] for PDU2.
    pub da: u8,
}

impl J1939Id {
    /// Splits a 29-bit id (higher bits are ignored).
    pub fn from_raw(id: u32) -> Self {
        let id = id & 0x1FFF_FFFF;
        let pf = (id >> 16) & 0xFF;
        let ps = (id >> 8) & 0xFF;
        let dp_edp = (id >> 24) & 0x3;
        let (pgn, da) = if pf < 240 {
            ((dp_edp << 16) | (pf << 8), ps as u8)
        } else {
            ((dp_edp << 16) | (pf << 8) | ps, GLOBAL)
        };
        J1939Id {
            priority: ((id >> 26) & 0x7) as u8,
            pgn,
            sa: (id & 0xFF) as u8,
            da,
        }
    }

    /// Whether `pgn` is a PDU1 (destination-specific) group.
    pub fn is_pdu1(pgn: u32) -> bool {
        (pgn >> 8) & 0xFF < 240
    }

    /// The kernel acceptance filter `(id, mask)` (29-bit part, without flags) that passes
    /// every frame of `pgn`, whatever its priority, source and (PDU1) destination.
    pub fn filter(pgn: u32) -> (u32, u32) {
        let id = (pgn & 0x3_FFFF) << 8;
        if Self::is_pdu1(pgn) {
            (id & 0x03FF_0000, 0x03FF_0000)
        } else {
            (id, 0x03FF_FF00)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pdu2() {
        // EEC1 from the idle-truck capture: 0CF00400.
        let id = J1939Id::from_raw(0x0CF0_0400);
        assert_eq!(
            id,
            J1939Id {
                priority: 3,
                pgn: 61444,
                sa: 0,
                da: GLOBAL
            }
        );
        // NMEA 2000 position rapid update, data page 1: 09F80123.
        assert_eq!(J1939Id::from_raw(0x09F8_0123).pgn, 129_025);
    }

    #[test]
    fn pdu1() {
        // ISO request to global from 0x05: 18EAFF05.
        let id = J1939Id::from_raw(0x18EA_FF05);
        assert_eq!((id.pgn, id.da, id.sa, id.priority), (59904, 0xFF, 5, 6));
        // TP.DT to 0x23: 1CEB2300 → PGN 60160 whatever the destination.
        let id = J1939Id::from_raw(0x1CEB_2300);
        assert_eq!((id.pgn, id.da), (60160, 0x23));
    }

    #[test]
    fn filters_ignore_sa_and_priority() {
        for (raw, pgn) in [
            (0x0CF0_0400, 61444),
            (0x18EB_FF00, 60160),
            (0x09F8_0123, 129_025),
        ] {
            let (id, mask) = J1939Id::filter(pgn);
            assert_eq!(raw & mask, id, "{raw:08X}");
            // Another SA, another priority, another destination: still passes.
            let other = (raw & !0x1C00_00FF) | 0x1800_0042;
            assert_eq!(other & mask, id);
            // Another PGN does not.
            assert_ne!((raw ^ 0x0001_0000) & mask, id);
        }
    }
}
