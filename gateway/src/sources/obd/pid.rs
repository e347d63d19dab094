//! SAE J1979 (ISO 15031-5) response decoding: mode 01 PIDs, the supported-PID bitmaps, the
//! mode 09 VIN, and negative responses (service 0x7F).
//!
//! Invariant: every decoder checks the length it needs and returns `None` (never panics) on a
//! short or malformed payload; the signal names are COVESA VSS names.

use std::fmt;

/// Service (mode) 01: current powertrain data.
pub const MODE_CURRENT_DATA: u8 = 0x01;
/// Service (mode) 09: vehicle information.
pub const MODE_VEHICLE_INFO: u8 = 0x09;
/// Mode 09 info type 02: the VIN.
pub const INFO_VIN: u8 = 0x02;
/// A positive response's service id is the request's plus this.
pub const POSITIVE_OFFSET: u8 = 0x40;
/// The negative response service id.
pub const NEGATIVE_RESPONSE: u8 = 0x7F;
/// Negative response code "request correctly received, response pending".
pub const NRC_RESPONSE_PENDING: u8 = 0x78;
/// Negative response code "busy, repeat request".
pub const NRC_BUSY_REPEAT: u8 = 0x21;

/// The mode 01 PID of the odometer (total distance, 0.1 km).
pub const PID_ODOMETER: u8 = 0xA6;

/// Unit strings used in readings.
pub mod units {
    /// Kilometres per hour.
    pub const KMH: &str = "km/h";
    /// Revolutions per minute.
    pub const RPM: &str = "rpm";
    /// Degrees Celsius (same string as the temperature sources).
    pub const CELSIUS: &str = "celsius";
    /// Percent.
    pub const PERCENT: &str = "percent";
    /// Kilometres.
    pub const KM: &str = "km";
    /// Volts.
    pub const VOLT: &str = "V";
}

/// How often a PID is worth asking for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    /// Changes every second (speed, engine speed): `poll_interval_ms`.
    Fast,
    /// Changes over minutes (temperatures, fuel level, odometer): `slow_poll_interval_ms`.
    Slow,
}

/// One mode 01 PID the source polls: where it goes and how it is decoded.
#[derive(Debug, Clone, Copy)]
pub struct PidSpec {
    /// The PID.
    pub pid: u8,
    /// COVESA VSS signal name.
    pub signal: &'static str,
    /// Unit of the decoded value.
    pub unit: &'static str,
    /// Data bytes the formula needs (A, B, C, D ...).
    pub bytes: usize,
    /// Poll rate class.
    pub rate: Rate,
    /// The J1979 formula over the data bytes (exactly `bytes` long).
    decode: fn(&[u8]) -> f64,
}

impl PidSpec {
    /// Decodes the data bytes that follow `41 <pid>`; `None` when fewer than [`Self::bytes`].
    /// Extra bytes (padding) are ignored.
    pub fn decode(&self, data: &[u8]) -> Option<f64> {
        data.get(..self.bytes).map(self.decode)
    }
}

fn a(d: &[u8]) -> f64 {
    f64::from(d[0])
}

/// The PIDs the source polls, in polling order within a rate class.
pub const PIDS: &[PidSpec] = &[
    PidSpec {
        pid: 0x0D,
        signal: "Vehicle.Speed",
        unit: units::KMH,
        bytes: 1,
        rate: Rate::Fast,
        decode: a,
    },
    PidSpec {
        pid: 0x0C,
        signal: "Vehicle.Powertrain.CombustionEngine.Speed",
        unit: units::RPM,
        bytes: 2,
        rate: Rate::Fast,
        decode: |d| (f64::from(d[0]) * 256.0 + f64::from(d[1])) / 4.0,
    },
    PidSpec {
        pid: 0x05,
        signal: "Vehicle.Powertrain.CombustionEngine.ECT",
        unit: units::CELSIUS,
        bytes: 1,
        rate: Rate::Slow,
        decode: |d| f64::from(d[0]) - 40.0,
    },
    PidSpec {
        pid: 0x2F,
        signal: "Vehicle.Powertrain.FuelSystem.RelativeLevel",
        unit: units::PERCENT,
        bytes: 1,
        rate: Rate::Slow,
        decode: |d| f64::from(d[0]) * 100.0 / 255.0,
    },
    PidSpec {
        pid: 0x04,
        signal: "Vehicle.OBD.EngineLoad",
        unit: units::PERCENT,
        bytes: 1,
        rate: Rate::Slow,
        decode: |d| f64::from(d[0]) * 100.0 / 255.0,
    },
    PidSpec {
        pid: 0x5C,
        signal: "Vehicle.Powertrain.CombustionEngine.EOT",
        unit: units::CELSIUS,
        bytes: 1,
        rate: Rate::Slow,
        decode: |d| f64::from(d[0]) - 40.0,
    },
    PidSpec {
        pid: 0x46,
        signal: "Vehicle.Exterior.AirTemperature",
        unit: units::CELSIUS,
        bytes: 1,
        rate: Rate::Slow,
        decode: |d| f64::from(d[0]) - 40.0,
    },
    PidSpec {
        pid: 0x42,
        signal: "Vehicle.LowVoltageBattery.CurrentVoltage",
        unit: units::VOLT,
        bytes: 2,
        rate: Rate::Slow,
        decode: |d| (f64::from(d[0]) * 256.0 + f64::from(d[1])) / 1000.0,
    },
    PidSpec {
        pid: PID_ODOMETER,
        signal: "Vehicle.TraveledDistance",
        unit: units::KM,
        bytes: 4,
        rate: Rate::Slow,
        decode: |d| f64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])) / 10.0,
    },
];

/// The VSS signal of the VIN.
pub const VIN_SIGNAL: &str = "Vehicle.VehicleIdentification.VIN";

/// The spec of mode 01 `pid`, if the source polls it.
pub fn spec(pid: u8) -> Option<&'static PidSpec> {
    PIDS.iter().find(|s| s.pid == pid)
}

/// The set of mode 01 PIDs an ECU supports (0x01..=0xFF), built from the bitmap responses to
/// PIDs 0x00, 0x20, 0x40, ... (bit 7 of byte A of bitmap `base` is PID `base + 1`; the last
/// bit, PID `base + 0x20`, says the next bitmap exists).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Supported([u64; 4]);

impl Supported {
    /// Records the 4-byte bitmap answering PID `base` (0x00, 0x20, ... 0xE0).
    pub fn add_bitmap(&mut self, base: u8, bits: [u8; 4]) {
        let word = u32::from_be_bytes(bits);
        for i in 0..32u16 {
            if word & (1 << (31 - i)) != 0 {
                let pid = u16::from(base) + i + 1;
                if let Ok(pid) = u8::try_from(pid) {
                    self.insert(pid);
                }
            }
        }
    }

    /// Marks `pid` supported.
    pub fn insert(&mut self, pid: u8) {
        self.0[usize::from(pid / 64)] |= 1 << (pid % 64);
    }

    /// Marks `pid` unsupported (an ECU answered it with a negative response).
    pub fn remove(&mut self, pid: u8) {
        self.0[usize::from(pid / 64)] &= !(1 << (pid % 64));
    }

    /// Whether `pid` is supported.
    pub fn contains(&self, pid: u8) -> bool {
        self.0[usize::from(pid / 64)] & (1 << (pid % 64)) != 0
    }

    /// The next bitmap PID to ask after the one answering `base`, if that bitmap says there is
    /// one (its last bit set) and it is not past 0xE0.
    pub fn next_bitmap(&self, base: u8) -> Option<u8> {
        let next = base.checked_add(0x20)?;
        self.contains(next).then_some(next)
    }
}

/// A parsed response payload (the ISO-TP message, service id first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    /// `41 <pid> data...`.
    CurrentData {
        /// The PID echoed.
        pid: u8,
        /// Its data bytes (may carry padding after the formula's bytes).
        data: &'a [u8],
    },
    /// `49 <info type> data...`.
    VehicleInfo {
        /// The info type echoed (02 = VIN).
        info: u8,
        /// Its data bytes.
        data: &'a [u8],
    },
    /// `7F <service> <code>`.
    Negative {
        /// The service the ECU refused.
        service: u8,
        /// The negative response code.
        code: u8,
    },
}

/// Why a payload is not a response the source understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseError {
    /// Fewer bytes than the service's header.
    Short {
        /// Bytes received.
        len: usize,
    },
    /// A service id that answers nothing the source asks.
    UnknownService(u8),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Short { len } => write!(f, "response of {len} bytes is too short"),
            ResponseError::UnknownService(s) => write!(f, "unexpected service id 0x{s:02X}"),
        }
    }
}

/// Parses a response payload.
///
/// # Errors
/// A payload shorter than its service's header, or a service id the source never asks.
pub fn parse_response(payload: &[u8]) -> Result<Response<'_>, ResponseError> {
    let short = || ResponseError::Short { len: payload.len() };
    match payload.first().copied() {
        None => Err(short()),
        Some(s) if s == MODE_CURRENT_DATA + POSITIVE_OFFSET => match payload {
            [_, pid, data @ ..] => Ok(Response::CurrentData { pid: *pid, data }),
            _ => Err(short()),
        },
        Some(s) if s == MODE_VEHICLE_INFO + POSITIVE_OFFSET => match payload {
            [_, info, data @ ..] => Ok(Response::VehicleInfo { info: *info, data }),
            _ => Err(short()),
        },
        Some(NEGATIVE_RESPONSE) => match payload {
            [_, service, code, ..] => Ok(Response::Negative {
                service: *service,
                code: *code,
            }),
            _ => Err(short()),
        },
        Some(s) => Err(ResponseError::UnknownService(s)),
    }
}

/// Decodes the data of a mode 09 info type 02 response into a VIN.
///
/// CAN ECUs send `<count=01> <17 ASCII bytes>`; some gateways leave the count out, and some
/// pad with NUL or 0xFF. `None` unless exactly 17 characters of `0-9 A-Z` (without I, O, Q)
/// remain after dropping the count and padding.
pub fn decode_vin(data: &[u8]) -> Option<String> {
    let body = match data.len() {
        18.. if data[0] == 1 => &data[1..],
        _ => data,
    };
    let trimmed: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != 0xFF)
        .collect();
    let trimmed = trimmed.get(..17).filter(|_| trimmed.len() == 17)?;
    trimmed
        .iter()
        .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !b"IOQ".contains(c)))
        .then(|| String::from_utf8_lossy(trimmed).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(pid: u8, data: &[u8]) -> Option<f64> {
        spec(pid).and_then(|s| s.decode(data))
    }

    #[test]
    fn j1979_formulas() {
        assert_eq!(decode(0x0D, &[0x00]), Some(0.0));
        assert_eq!(decode(0x0D, &[0x5A]), Some(90.0));
        assert_eq!(decode(0x0D, &[0xFF]), Some(255.0));
        // (256 * 0x1A + 0xF8) / 4 = 1726 rpm
        assert_eq!(decode(0x0C, &[0x1A, 0xF8]), Some(1726.0));
        assert_eq!(decode(0x0C, &[0xFF, 0xFF]), Some(16383.75));
        assert_eq!(decode(0x05, &[0x00]), Some(-40.0));
        assert_eq!(decode(0x05, &[0x7B]), Some(83.0));
        assert_eq!(decode(0x05, &[0xFF]), Some(215.0));
        assert_eq!(decode(0x2F, &[0xFF]), Some(100.0));
        assert_eq!(decode(0x2F, &[0x00]), Some(0.0));
        let half = decode(0x2F, &[0x80]).expect("decodes");
        assert!((half - 50.196).abs() < 0.001, "{half}");
        assert_eq!(decode(0x04, &[0xFF]), Some(100.0));
        assert_eq!(decode(0x5C, &[0x82]), Some(90.0));
        assert_eq!(decode(0x46, &[0x28]), Some(0.0));
        assert_eq!(decode(0x46, &[0x00]), Some(-40.0));
        // 0x3138 = 12600 mV
        assert_eq!(decode(0x42, &[0x31, 0x38]), Some(12.6));
        assert_eq!(decode(0x42, &[0x31]), None);
        // 0x0012D687 = 1234567 -> 123456.7 km
        assert_eq!(decode(0xA6, &[0x00, 0x12, 0xD6, 0x87]), Some(123_456.7));
        assert_eq!(decode(0xA6, &[0xFF, 0xFF, 0xFF, 0xFF]), Some(429_496_729.5));
    }

    #[test]
    fn short_data_is_none_and_padding_is_ignored() {
        assert_eq!(decode(0x0C, &[0x1A]), None);
        assert_eq!(decode(0x0D, &[]), None);
        assert_eq!(decode(0xA6, &[0, 0, 1]), None);
        assert_eq!(decode(0x0D, &[0x30, 0x55, 0x55, 0x55]), Some(48.0));
        assert_eq!(decode(0x43, &[1, 2]), None, "not a polled PID");
    }

    #[test]
    fn every_polled_pid_has_a_vss_name_and_unit() {
        for s in PIDS {
            assert!(s.signal.starts_with("Vehicle."), "{}", s.signal);
            assert!(!s.unit.is_empty());
            assert_eq!(s.decode(&vec![0; s.bytes - 1]), None);
            assert!(s.decode(&vec![0; s.bytes]).is_some());
        }
    }

    #[test]
    fn supported_bitmaps() {
        let mut s = Supported::default();
        // BE 1F A8 13: a typical petrol car's 01 00 answer.
        s.add_bitmap(0x00, [0xBE, 0x1F, 0xA8, 0x13]);
        for pid in [
            0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x0D, 0x0E, 0x0F, 0x10,
        ] {
            assert!(s.contains(pid), "{pid:02X}");
        }
        for pid in [0x02, 0x08, 0x0A, 0x2F, 0xA6, 0x00] {
            assert!(!s.contains(pid), "{pid:02X}");
        }
        assert!(s.contains(0x20));
        assert_eq!(s.next_bitmap(0x00), Some(0x20));
        s.add_bitmap(0x20, [0x00, 0x02, 0x00, 0x00]);
        assert!(s.contains(0x2F));
        assert_eq!(s.next_bitmap(0x20), None);
        // The last bitmap: its bit for 0x100 does not exist.
        let mut t = Supported::default();
        t.add_bitmap(0xE0, [0, 0, 0, 0x03]);
        assert!(t.contains(0xFF));
        assert_eq!(t.next_bitmap(0xE0), None);
        t.add_bitmap(0xA0, [0x04, 0, 0, 0]);
        assert!(t.contains(0xA6));
        t.remove(0xA6);
        assert!(!t.contains(0xA6));
    }

    #[test]
    fn responses_parse() {
        assert_eq!(
            parse_response(&[0x41, 0x0D, 0x32]),
            Ok(Response::CurrentData {
                pid: 0x0D,
                data: &[0x32]
            })
        );
        assert_eq!(
            parse_response(&[0x49, 0x02, 0x01, b'W']),
            Ok(Response::VehicleInfo {
                info: 0x02,
                data: &[0x01, b'W']
            })
        );
        assert_eq!(
            parse_response(&[0x7F, 0x01, 0x12]),
            Ok(Response::Negative {
                service: 0x01,
                code: 0x12
            })
        );
        assert_eq!(parse_response(&[]), Err(ResponseError::Short { len: 0 }));
        assert_eq!(
            parse_response(&[0x41]),
            Err(ResponseError::Short { len: 1 })
        );
        assert_eq!(
            parse_response(&[0x7F, 0x01]),
            Err(ResponseError::Short { len: 2 })
        );
        assert_eq!(
            parse_response(&[0x62, 0xF1, 0x90]),
            Err(ResponseError::UnknownService(0x62))
        );
        assert!(
            ResponseError::UnknownService(0x62)
                .to_string()
                .contains("0x62")
        );
    }

    #[test]
    fn vin_forms() {
        let vin = b"WF0XXXTTGXKA12345";
        let mut with_count = vec![0x01];
        with_count.extend_from_slice(vin);
        assert_eq!(
            decode_vin(&with_count).as_deref(),
            Some("WF0XXXTTGXKA12345")
        );
        assert_eq!(decode_vin(vin).as_deref(), Some("WF0XXXTTGXKA12345"));
        let mut padded = vec![0x01, 0, 0];
        padded.extend_from_slice(vin);
        assert_eq!(decode_vin(&padded).as_deref(), Some("WF0XXXTTGXKA12345"));
        assert_eq!(decode_vin(&vin[..16]), None, "16 characters");
        assert_eq!(decode_vin(b"WF0XXXTTGXKA1234O"), None, "letter O");
        assert_eq!(decode_vin(b"wf0xxxttgxka12345"), None, "lower case");
        assert_eq!(decode_vin(&[]), None);
        let mut long = with_count.clone();
        long.push(b'9');
        assert_eq!(decode_vin(&long), None, "18 characters");
    }
}
