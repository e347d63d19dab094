//! Built-in parameter tables: the FMS-standard subset of J1939-71 that fleet telematics
//! uses, and the NMEA 2000 GNSS groups (NMEA 2000 is J1939 underneath). Signal names are
//! COVESA VSS 4 where VSS has the signal; the `Vehicle.Tachograph.*` branch is Waymark's own.
//!
//! Every parameter is little-endian ("Intel") at a fixed byte and bit. Validity follows the
//! standard of its table:
//! - **J1939** measured values: a byte-aligned value whose top byte is above `0xFA` is
//!   "error" (`0xFE..`) or "not available" (`0xFF..`) or reserved, and yields no reading;
//!   a discrete field of n bits is not available at all ones and error at all ones minus 1.
//! - **NMEA 2000**: unsigned fields at all ones (not available) and all ones minus 1 (out of
//!   range), signed fields at the largest and largest-minus-1 positive values, yield none.
//!
//! Each parameter carries the pipeline filter defaults the CAN sources add for its signal
//! (`sources::can::default_filters`): a deadband that ignores noise well below what a
//! fleet cares about, and a heartbeat so a constant signal still reports.

/// How a raw field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A number: `raw × factor + offset`.
    Measured,
    /// A 2-bit J1939 state (00 off / 01 on) as a boolean.
    Bool,
    /// An n-bit J1939 state number (e.g. tachograph working state 0–5).
    State,
}

/// Which standard's "not available" rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Std {
    /// SAE J1939-71.
    J1939,
    /// NMEA 2000.
    Nmea2000,
}

/// One parameter (SPN / NMEA 2000 field).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Param {
    /// The parameter group.
    pub pgn: u32,
    /// The J1939 SPN (0 for NMEA 2000 fields); documentation and tests.
    pub spn: u32,
    /// Our signal name.
    pub signal: &'static str,
    /// Unit of the reading.
    pub unit: &'static str,
    /// First byte (0-based).
    pub byte: u8,
    /// First bit in that byte (0 = least significant).
    pub bit: u8,
    /// Field width in bits (1 to 32).
    pub bits: u8,
    /// Two's complement.
    pub signed: bool,
    /// Scale.
    pub factor: f64,
    /// Offset added after scaling.
    pub offset: f64,
    /// How to read it.
    pub kind: Kind,
    /// Validity rules.
    pub std: Std,
    /// Default pipeline deadband, in `unit`.
    pub deadband: f64,
    /// Default pipeline minimum interval, ms.
    pub min_interval_ms: u64,
    /// Default pipeline heartbeat, ms.
    pub max_interval_ms: u64,
}

/// A decoded value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoded {
    /// A number.
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Param {
    /// The parameter's value in `data`, or `None` when the frame is too short or the raw
    /// value is "not available", "error" or reserved.
    pub fn decode(&self, data: &[u8]) -> Option<Decoded> {
        let raw = extract_le(data, self.byte, self.bit, self.bits)?;
        let bits = u32::from(self.bits);
        let all = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        match (self.kind, self.std) {
            (Kind::Bool, _) => match raw {
                0 => Some(Decoded::Bool(false)),
                1 => Some(Decoded::Bool(true)),
                _ => None,
            },
            (Kind::State, _) => (raw + 2 <= all || bits == 1).then_some(Decoded::Num(raw as f64)),
            (Kind::Measured, Std::J1939) => {
                let valid = if bits.is_multiple_of(8) {
                    raw >> (bits - 8) <= 0xFA
                } else {
                    raw + 2 <= all
                };
                valid.then_some(Decoded::Num(raw as f64 * self.factor + self.offset))
            }
            (Kind::Measured, Std::Nmea2000) => {
                if self.signed {
                    let max = all >> 1;
                    if raw == max || raw == max - 1 {
                        return None;
                    }
                    let v = sign_extend(raw, bits);
                    Some(Decoded::Num(v as f64 * self.factor + self.offset))
                } else {
                    (raw + 2 <= all).then_some(Decoded::Num(raw as f64 * self.factor + self.offset))
                }
            }
        }
    }
}

/// `bits` (1..=64) little-endian bits starting at `byte`/`bit`; `None` if `data` is short.
pub fn extract_le(data: &[u8], byte: u8, bit: u8, bits: u8) -> Option<u64> {
    let start = usize::from(byte) * 8 + usize::from(bit);
    let bits = usize::from(bits);
    if bits == 0 || bits > 64 || start + bits > data.len() * 8 {
        return None;
    }
    let first = start / 8;
    let last = (start + bits - 1) / 8;
    let mut acc: u128 = 0;
    for (i, b) in data[first..=last].iter().enumerate() {
        acc |= u128::from(*b) << (8 * i);
    }
    let v = (acc >> (start % 8)) & ((1u128 << bits) - 1);
    Some(v as u64)
}

fn sign_extend(raw: u64, bits: u32) -> i64 {
    if bits == 0 || bits >= 64 {
        return raw as i64;
    }
    let shift = 64 - bits;
    ((raw << shift) as i64) >> shift
}

const fn j(
    pgn: u32,
    spn: u32,
    signal: &'static str,
    unit: &'static str,
    (byte, bit, bits): (u8, u8, u8),
    (factor, offset): (f64, f64),
    (deadband, min_interval_ms, max_interval_ms): (f64, u64, u64),
) -> Param {
    Param {
        pgn,
        spn,
        signal,
        unit,
        byte,
        bit,
        bits,
        signed: false,
        factor,
        offset,
        kind: Kind::Measured,
        std: Std::J1939,
        deadband,
        min_interval_ms,
        max_interval_ms,
    }
}

const fn with_kind(mut p: Param, kind: Kind) -> Param {
    p.kind = kind;
    p
}

/// CCVS1: cruise control / vehicle speed.
pub const PGN_CCVS1: u32 = 65265;
/// EEC1: electronic engine controller 1.
pub const PGN_EEC1: u32 = 61444;
/// EEC2: electronic engine controller 2.
pub const PGN_EEC2: u32 = 61443;
/// LFE1: fuel economy (liquid).
pub const PGN_LFE1: u32 = 65266;
/// DD1: dash display.
pub const PGN_DD1: u32 = 65276;
/// LFC1: fuel consumption (liquid).
pub const PGN_LFC1: u32 = 65257;
/// VDHR: high resolution vehicle distance.
pub const PGN_VDHR: u32 = 65217;
/// VD: vehicle distance.
pub const PGN_VD: u32 = 65248;
/// HOURS: engine hours, revolutions.
pub const PGN_HOURS: u32 = 65253;
/// ET1: engine temperature 1.
pub const PGN_ET1: u32 = 65262;
/// AMB: ambient conditions.
pub const PGN_AMB: u32 = 65269;
/// TCO1: tachograph.
pub const PGN_TCO1: u32 = 65132;
/// AT1T1I: aftertreatment 1 diesel exhaust fluid tank 1 information.
pub const PGN_AT1T1I: u32 = 65110;

/// Engine speed signal.
pub const ENGINE_SPEED: &str = "Vehicle.Powertrain.CombustionEngine.Speed";
/// Vehicle speed signal.
pub const SPEED: &str = "Vehicle.Speed";

/// The FMS set (J1939-71 SPNs). Deadband / min interval / heartbeat defaults in the last
/// tuple.
pub const FMS: &[Param] = &[
    j(
        PGN_CCVS1,
        84,
        SPEED,
        "km/h",
        (1, 0, 16),
        (1.0 / 256.0, 0.0),
        (1.0, 1000, 60_000),
    ),
    with_kind(
        j(
            PGN_CCVS1,
            70,
            "Vehicle.Chassis.ParkingBrake.IsEngaged",
            "",
            (0, 2, 2),
            (1.0, 0.0),
            (0.0, 0, 300_000),
        ),
        Kind::Bool,
    ),
    with_kind(
        j(
            PGN_CCVS1,
            595,
            "Vehicle.ADAS.CruiseControl.IsActive",
            "",
            (3, 0, 2),
            (1.0, 0.0),
            (0.0, 0, 300_000),
        ),
        Kind::Bool,
    ),
    j(
        PGN_EEC1,
        190,
        ENGINE_SPEED,
        "rpm",
        (3, 0, 16),
        (0.125, 0.0),
        (50.0, 1000, 60_000),
    ),
    j(
        PGN_EEC2,
        91,
        "Vehicle.Chassis.Accelerator.PedalPosition",
        "percent",
        (1, 0, 8),
        (0.4, 0.0),
        (5.0, 1000, 60_000),
    ),
    j(
        PGN_LFE1,
        183,
        "Vehicle.OBD.FuelRate",
        "l/h",
        (0, 0, 16),
        (0.05, 0.0),
        (1.0, 1000, 60_000),
    ),
    j(
        PGN_DD1,
        96,
        "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        "percent",
        (1, 0, 8),
        (0.4, 0.0),
        (1.0, 10_000, 300_000),
    ),
    j(
        PGN_LFC1,
        250,
        "Vehicle.Powertrain.FuelSystem.AccumulatedConsumption",
        "l",
        (4, 0, 32),
        (0.5, 0.0),
        (0.5, 10_000, 300_000),
    ),
    j(
        PGN_VDHR,
        917,
        "Vehicle.TraveledDistance",
        "km",
        (0, 0, 32),
        (0.005, 0.0),
        (0.1, 10_000, 300_000),
    ),
    j(
        PGN_HOURS,
        247,
        "Vehicle.Powertrain.CombustionEngine.EngineHours",
        "h",
        (0, 0, 32),
        (0.05, 0.0),
        (0.05, 60_000, 900_000),
    ),
    j(
        PGN_ET1,
        110,
        "Vehicle.Powertrain.CombustionEngine.ECT",
        "celsius",
        (0, 0, 8),
        (1.0, -40.0),
        (1.0, 10_000, 300_000),
    ),
    j(
        PGN_AMB,
        171,
        "Vehicle.Exterior.AirTemperature",
        "celsius",
        (3, 0, 16),
        (0.03125, -273.0),
        (0.5, 10_000, 300_000),
    ),
    j(
        PGN_AT1T1I,
        1761,
        "Vehicle.Powertrain.CombustionEngine.DieselExhaustFluid.Level",
        "percent",
        (0, 0, 8),
        (0.4, 0.0),
        (1.0, 10_000, 300_000),
    ),
    with_kind(
        j(
            PGN_TCO1,
            1612,
            "Vehicle.Tachograph.Driver1.WorkingState",
            "",
            (0, 0, 3),
            (1.0, 0.0),
            (0.0, 0, 300_000),
        ),
        Kind::State,
    ),
    with_kind(
        j(
            PGN_TCO1,
            1613,
            "Vehicle.Tachograph.Driver2.WorkingState",
            "",
            (0, 3, 3),
            (1.0, 0.0),
            (0.0, 0, 300_000),
        ),
        Kind::State,
    ),
    with_kind(
        j(
            PGN_TCO1,
            1611,
            "Vehicle.Tachograph.IsVehicleMoving",
            "",
            (0, 6, 2),
            (1.0, 0.0),
            (0.0, 0, 300_000),
        ),
        Kind::Bool,
    ),
    j(
        PGN_TCO1,
        1624,
        "Vehicle.Tachograph.VehicleSpeed",
        "km/h",
        (6, 0, 16),
        (1.0 / 256.0, 0.0),
        (1.0, 1000, 60_000),
    ),
];

/// NMEA 2000 PGN 129025, position rapid update.
pub const PGN_N2K_POSITION: u32 = 129_025;
/// NMEA 2000 PGN 129026, COG and SOG rapid update.
pub const PGN_N2K_COG_SOG: u32 = 129_026;

const fn n(
    pgn: u32,
    signal: &'static str,
    unit: &'static str,
    (byte, bits, signed): (u8, u8, bool),
    factor: f64,
    (deadband, min_interval_ms, max_interval_ms): (f64, u64, u64),
) -> Param {
    Param {
        pgn,
        spn: 0,
        signal,
        unit,
        byte,
        bit: 0,
        bits,
        signed,
        factor,
        offset: 0.0,
        kind: Kind::Measured,
        std: Std::Nmea2000,
        deadband,
        min_interval_ms,
        max_interval_ms,
    }
}

/// NMEA 2000 GNSS rapid updates: position in degrees (1e-7), course over ground in degrees
/// (from 1e-4 rad), speed over ground in km/h (from 0.01 m/s). The position's filtering is
/// the pipeline's adaptive position logic, so no deadband here.
pub const NMEA2000: &[Param] = &[
    n(
        PGN_N2K_POSITION,
        "Vehicle.CurrentLocation.Latitude",
        "deg",
        (0, 32, true),
        1e-7,
        (0.0, 0, 0),
    ),
    n(
        PGN_N2K_POSITION,
        "Vehicle.CurrentLocation.Longitude",
        "deg",
        (4, 32, true),
        1e-7,
        (0.0, 0, 0),
    ),
    n(
        PGN_N2K_COG_SOG,
        "Vehicle.CurrentLocation.Heading",
        "deg",
        (2, 16, false),
        1e-4 * 180.0 / std::f64::consts::PI,
        (5.0, 1000, 60_000),
    ),
    n(
        PGN_N2K_COG_SOG,
        SPEED,
        "km/h",
        (4, 16, false),
        0.036,
        (1.0, 1000, 60_000),
    ),
];

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn param(pgn: u32, spn: u32) -> &'static Param {
        FMS.iter()
            .find(|p| p.pgn == pgn && p.spn == spn)
            .expect("in table")
    }

    #[test]
    fn eec1_engine_speed() {
        // 0CF00400#607D84481400F084 from the idle-truck capture: 0x1448 × 0.125 = 649 rpm.
        let d = [0x60, 0x7D, 0x84, 0x48, 0x14, 0x00, 0xF0, 0x84];
        assert_eq!(param(PGN_EEC1, 190).decode(&d), Some(Decoded::Num(649.0)));
        // Not available and error.
        let mut na = d;
        na[3..5].copy_from_slice(&[0xFF, 0xFF]);
        assert_eq!(param(PGN_EEC1, 190).decode(&na), None);
        na[3..5].copy_from_slice(&[0x00, 0xFE]);
        assert_eq!(param(PGN_EEC1, 190).decode(&na), None);
        // The largest valid value, 0xFAFF × 0.125.
        na[3..5].copy_from_slice(&[0xFF, 0xFA]);
        assert_eq!(
            param(PGN_EEC1, 190).decode(&na),
            Some(Decoded::Num(8031.875))
        );
        // Too short.
        assert_eq!(param(PGN_EEC1, 190).decode(&d[..4]), None);
    }

    #[test]
    fn discrete_fields() {
        let pb = param(PGN_CCVS1, 70);
        assert_eq!(
            pb.decode(&[0b0000_0100, 0, 0, 0]),
            Some(Decoded::Bool(true))
        );
        assert_eq!(
            pb.decode(&[0b0000_0000, 0, 0, 0]),
            Some(Decoded::Bool(false))
        );
        assert_eq!(pb.decode(&[0b0000_1000, 0, 0, 0]), None);
        assert_eq!(pb.decode(&[0b0000_1100, 0, 0, 0]), None);
        let ws = param(PGN_TCO1, 1612);
        assert_eq!(ws.decode(&[3]), Some(Decoded::Num(3.0)));
        assert_eq!(ws.decode(&[6]), None);
        assert_eq!(ws.decode(&[7]), None);
    }

    #[test]
    fn nmea2000_position() {
        // 09F80123#... position rapid: lat/lon i32 × 1e-7.
        let lat: i32 = 557_123_456;
        let lon: i32 = -123_456_789;
        let mut d = [0u8; 8];
        d[..4].copy_from_slice(&lat.to_le_bytes());
        d[4..].copy_from_slice(&lon.to_le_bytes());
        let Some(Decoded::Num(la)) = NMEA2000[0].decode(&d) else {
            panic!("lat")
        };
        let Some(Decoded::Num(lo)) = NMEA2000[1].decode(&d) else {
            panic!("lon")
        };
        assert!((la - 55.712_345_6).abs() < 1e-9 && (lo + 12.345_678_9).abs() < 1e-9);
        d[..4].copy_from_slice(&i32::MAX.to_le_bytes());
        assert_eq!(NMEA2000[0].decode(&d), None);
    }

    proptest! {
        #[test]
        fn extract_matches_u64_reference(data in any::<[u8; 8]>(), start in 0u8..64, len in 1u8..=32) {
            let whole = u64::from_le_bytes(data);
            let got = extract_le(&data, start / 8, start % 8, len);
            if u32::from(start) + u32::from(len) > 64 {
                prop_assert_eq!(got, None);
            } else {
                let want = (whole >> start) & ((1u64 << len) - 1);
                prop_assert_eq!(got, Some(want));
            }
        }

        #[test]
        fn every_param_decodes_any_payload(data in proptest::collection::vec(any::<u8>(), 0..9)) {
            for p in FMS.iter().chain(NMEA2000) {
                if let Some(Decoded::Num(v)) = p.decode(&data) {
                    prop_assert!(v.is_finite());
                }
            }
        }
    }
}
