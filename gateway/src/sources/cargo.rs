//! What the cargo sources (`device`, `onewire`) share: the probe → compartment map of the
//! config, the signal names of our `Vehicle.Cargo.*` branch, and probe faults.
//!
//! Invariants:
//! - A temperature reading is only ever made from a valid probe value; a probe fault (CRC
//!   failure, the DS18B20 power-on value, a disconnected or missing probe, a value out of the
//!   probe's range) is counted and reported in health, never stored as a temperature.
//! - Signal names are fixed by the config: `Vehicle.Cargo.<compartment>.Temperature` for a
//!   mapped probe, `Vehicle.Cargo.Probe.<probe id>.Temperature` for one that is not.

use serde::{Deserialize, Serialize};

/// Unit of every temperature reading.
pub const CELSIUS: &str = "celsius";
/// Longest compartment name.
pub const COMPARTMENT_LEN: usize = 32;
/// Rated range of a DS18B20 (and the range accepted from any probe), °C.
pub const PROBE_RANGE_C: (f64, f64) = (-55.0, 125.0);

/// `[[sources.probes]]`: which compartment a probe measures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Probe id as Linux names 1-Wire devices: family byte, `-`, 48-bit serial in 12 lower-case
    /// hex digits (`28-0000075a1b2c`). A device's 64-bit ROM code maps to the same name.
    pub id: String,
    /// Compartment name, the signal segment in `Vehicle.Cargo.<compartment>.Temperature`:
    /// 1 to 32 characters of `A-Z a-z 0-9 _`.
    pub compartment: String,
}

/// A config problem found by a source module, relative to its `[[sources]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyProblem {
    /// The entry's key (`device`, `probes`).
    pub key: &'static str,
    /// For an array-of-tables key: the item and its key (`probes[1].id` = `(1, "id")`).
    pub item: Option<(usize, &'static str)>,
    /// What is wrong.
    pub message: String,
}

impl KeyProblem {
    /// A problem with `key`.
    pub fn at(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            item: None,
            message: message.into(),
        }
    }

    /// `Some` problem when `value` of `key` is outside `lo..=hi`.
    pub fn range<T: PartialOrd + std::fmt::Display>(
        key: &'static str,
        value: T,
        (lo, hi): (T, T),
    ) -> Option<Self> {
        (value < lo || value > hi).then(|| {
            Self::at(
                key,
                format!("{value} is out of range; allowed {lo} to {hi}"),
            )
        })
    }

    /// `Some` problem when the reopen backoff bounds (`reopen_min_ms`, `reopen_max_ms`) are
    /// unusable: a zero first delay, or a first delay longer than the longest.
    pub fn reopen_delays(min_ms: u64, max_ms: u64) -> Option<Self> {
        if min_ms == 0 {
            Some(Self::at("reopen_min_ms", "must be at least 1"))
        } else if min_ms > max_ms {
            Some(Self::at(
                "reopen_min_ms",
                format!("{min_ms} is greater than reopen_max_ms ({max_ms})"),
            ))
        } else {
            None
        }
    }
}

/// Checks a probe map: ids in the Linux 1-Wire form, compartment names valid signal
/// segments, no id twice.
pub fn check_probes(probes: &[ProbeConfig], out: &mut Vec<KeyProblem>) {
    for (i, p) in probes.iter().enumerate() {
        let mut bad = |k, m: String| {
            out.push(KeyProblem {
                key: "probes",
                item: Some((i, k)),
                message: m,
            });
        };
        if parse_probe_id(&p.id).is_none() {
            bad(
                "id",
                format!(
                    "`{}` is not a 1-Wire id: family byte, `-`, 12 lower-case hex digits \
                     (`28-0000075a1b2c`)",
                    p.id
                ),
            );
        } else if let Some(j) = probes[..i].iter().position(|q| q.id == p.id) {
            bad(
                "id",
                format!("probe `{}` is already mapped by probes[{j}]", p.id),
            );
        }
        if p.compartment.is_empty()
            || p.compartment.len() > COMPARTMENT_LEN
            || !p
                .compartment
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            bad(
                "compartment",
                format!("must be 1 to {COMPARTMENT_LEN} characters of A-Z a-z 0-9 _"),
            );
        }
    }
}

/// Parses a Linux 1-Wire device name (`28-0000075a1b2c`) into family and serial.
pub fn parse_probe_id(id: &str) -> Option<(u8, u64)> {
    let (family, serial) = id.split_once('-')?;
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if family.len() != 2 || serial.len() != 12 || !lower_hex(family) || !lower_hex(serial) {
        return None;
    }
    Some((
        u8::from_str_radix(family, 16).ok()?,
        u64::from_str_radix(serial, 16).ok()?,
    ))
}

/// The Linux name of a 64-bit 1-Wire ROM code as read from the bus (family code in the low
/// byte, then the 48-bit serial, then the CRC byte, which the name leaves out):
/// `0x8c00_0007_5a1b_2c28` → `28-0000075a1b2c`.
pub fn probe_id_from_rom(rom: u64) -> String {
    format!("{:02x}-{:012x}", rom & 0xff, (rom >> 8) & 0xffff_ffff_ffff)
}

/// The temperature signal of probe `id`: `Vehicle.Cargo.<compartment>.Temperature` when the
/// map names it, `Vehicle.Cargo.Probe.<id>.Temperature` otherwise.
pub fn temperature_signal(probes: &[ProbeConfig], id: &str) -> String {
    match probes.iter().find(|p| p.id == id) {
        Some(p) => format!("Vehicle.Cargo.{}.Temperature", p.compartment),
        None => format!("Vehicle.Cargo.Probe.{id}.Temperature"),
    }
}

/// The signal of a cargo door: `Vehicle.Cargo.Door.IsOpen` for door 0 (a single-door
/// sensor), `Vehicle.Cargo.Door<n>.IsOpen` for door `n` ≥ 1.
pub fn door_signal(door_id: u8) -> String {
    if door_id == 0 {
        "Vehicle.Cargo.Door.IsOpen".to_string()
    } else {
        format!("Vehicle.Cargo.Door{door_id}.IsOpen")
    }
}

/// Why a probe gave no temperature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeFault {
    /// The scratchpad CRC did not match (`crc=.. NO`, or the device said so).
    CrcError,
    /// 85.0 °C: the DS18B20's power-on value, read before a conversion completed.
    PowerOnReset,
    /// -127 °C (Linux w1 reports this for a probe that stopped answering), or the device said
    /// the probe did not answer.
    Disconnected,
    /// A configured probe is not on the bus (no sysfs directory).
    Missing,
    /// A value outside the rated -55 to 125 °C, or the device said so.
    OutOfRange,
}

impl ProbeFault {
    /// The fault's name in health details and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeFault::CrcError => "crc_error",
            ProbeFault::PowerOnReset => "power_on_reset",
            ProbeFault::Disconnected => "disconnected",
            ProbeFault::Missing => "missing",
            ProbeFault::OutOfRange => "out_of_range",
        }
    }
}

/// Classifies a temperature in millidegrees as read from a DS18B20: the exact power-on value
/// 85000 and the w1 driver's -127000 are faults, as is anything outside the rated range.
pub fn classify_millicelsius(milli: i64) -> Result<f64, ProbeFault> {
    match milli {
        85_000 => Err(ProbeFault::PowerOnReset),
        -127_000 => Err(ProbeFault::Disconnected),
        _ => {
            // i64 → f64 is exact for every value a probe can report.
            #[allow(clippy::cast_precision_loss)]
            let c = milli as f64 / 1000.0;
            if c < PROBE_RANGE_C.0 || c > PROBE_RANGE_C.1 {
                Err(ProbeFault::OutOfRange)
            } else {
                Ok(c)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rom_codes_map_to_linux_names_and_back() {
        let rom = 0x8c00_0007_5a1b_2c28_u64;
        let id = probe_id_from_rom(rom);
        assert_eq!(id, "28-0000075a1b2c");
        assert_eq!(parse_probe_id(&id), Some((0x28, 0x0000_075a_1b2c)));
        for bad in [
            "28-0000075A1B2C",
            "28-75a1b2c",
            "280000075a1b2c",
            "zz-0000075a1b2c",
            "",
        ] {
            assert_eq!(parse_probe_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn signals() {
        let probes = vec![ProbeConfig {
            id: "28-0000075a1b2c".into(),
            compartment: "Front".into(),
        }];
        assert_eq!(
            temperature_signal(&probes, "28-0000075a1b2c"),
            "Vehicle.Cargo.Front.Temperature"
        );
        assert_eq!(
            temperature_signal(&probes, "28-000000000001"),
            "Vehicle.Cargo.Probe.28-000000000001.Temperature"
        );
        assert_eq!(door_signal(0), "Vehicle.Cargo.Door.IsOpen");
        assert_eq!(door_signal(2), "Vehicle.Cargo.Door2.IsOpen");
    }

    #[test]
    fn probe_map_checks() {
        let p = |id: &str, c: &str| ProbeConfig {
            id: id.into(),
            compartment: c.into(),
        };
        let mut out = Vec::new();
        check_probes(
            &[
                p("28-0000075a1b2c", "Front"),
                p("28-0000075a1b2c", "Rear"),
                p("nope", "Rear Zone"),
            ],
            &mut out,
        );
        let keys: Vec<_> = out.iter().map(|k| k.item).collect();
        assert_eq!(
            keys,
            vec![Some((1, "id")), Some((2, "id")), Some((2, "compartment"))]
        );
    }

    #[test]
    fn millicelsius_faults() {
        assert_eq!(classify_millicelsius(4_500), Ok(4.5));
        assert_eq!(classify_millicelsius(-18_250), Ok(-18.25));
        assert_eq!(classify_millicelsius(85_000), Err(ProbeFault::PowerOnReset));
        assert_eq!(classify_millicelsius(85_062), Ok(85.062));
        assert_eq!(
            classify_millicelsius(-127_000),
            Err(ProbeFault::Disconnected)
        );
        assert_eq!(classify_millicelsius(126_000), Err(ProbeFault::OutOfRange));
        assert_eq!(classify_millicelsius(-56_000), Err(ProbeFault::OutOfRange));
    }
}
