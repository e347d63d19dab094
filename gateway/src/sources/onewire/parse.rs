//! Sans-IO parsing of the Linux w1 sysfs files of DS18B20-family probes, and the per-probe
//! bookkeeping of faults and presence.
//!
//! `w1_slave` (w1_therm, every kernel):
//! ```text
//! 72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
//! 72 01 4b 46 7f ff 0e 10 57 t=23125
//! ```
//! Line 1 ends in `YES` when the scratchpad CRC matched, `NO` otherwise; line 2 ends in
//! `t=<millidegrees>`. `temperature` (kernels ≥ 5.x): one line, millidegrees.
//!
//! Invariant: a value is a temperature only if the CRC said `YES` (for `w1_slave`) and
//! [`classify_millicelsius`] accepts it; everything else is a [`ProbeFault`] or, for text
//! that is not what the driver writes, a [`ParseError`] naming the line.

use std::collections::BTreeMap;

use crate::sources::cargo::{ProbeFault, classify_millicelsius};

/// A probe file that is not in the driver's format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line of the file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn err(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Parses a `w1_slave` file: `Ok(Ok(°C))`, `Ok(Err(fault))`, or `Err` for text that is not
/// in the driver's format.
///
/// # Errors
/// A [`ParseError`] naming the line that is missing or malformed.
pub fn parse_w1_slave(text: &str) -> Result<Result<f64, ProbeFault>, ParseError> {
    let mut lines = text.lines();
    let crc_line = lines.next().ok_or_else(|| err(1, "empty file"))?;
    let crc_ok = match crc_line.trim_end().rsplit_once(' ') {
        Some((head, "YES")) if head.contains("crc=") => true,
        Some((head, "NO")) if head.contains("crc=") => false,
        _ => {
            return Err(err(
                1,
                format!("expected `... crc=XX YES|NO`, got `{crc_line}`"),
            ));
        }
    };
    if !crc_ok {
        return Ok(Err(ProbeFault::CrcError));
    }
    let t_line = lines
        .next()
        .ok_or_else(|| err(2, "missing the `t=` line"))?;
    let milli = t_line
        .trim_end()
        .rsplit_once("t=")
        .and_then(|(_, t)| t.parse::<i64>().ok())
        .ok_or_else(|| {
            err(
                2,
                format!("expected `... t=<millidegrees>`, got `{t_line}`"),
            )
        })?;
    Ok(classify_millicelsius(milli))
}

/// Parses a `temperature` file (millidegrees on one line).
///
/// # Errors
/// A [`ParseError`] for line 1 when it is not an integer.
pub fn parse_temperature(text: &str) -> Result<Result<f64, ProbeFault>, ParseError> {
    let line = text.lines().next().unwrap_or_default().trim();
    let milli = line
        .parse::<i64>()
        .map_err(|_| err(1, format!("expected millidegrees, got `{line}`")))?;
    Ok(classify_millicelsius(milli))
}

/// Whether a w1 device directory name is a temperature probe this source reads: DS18S20
/// (`10-`), DS1822 (`22-`), DS18B20 (`28-`), MAX31850 (`3b-`), DS28EA00 (`42-`).
pub fn is_probe_dir(name: &str) -> bool {
    matches!(name.get(..3), Some("10-" | "22-" | "28-" | "3b-" | "42-"))
        && crate::sources::cargo::parse_probe_id(name).is_some()
}

/// What changed for one probe after a poll, for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The probe was seen for the first time, or again after it had gone.
    Appeared(String),
    /// The probe is no longer on the bus.
    Disappeared(String),
    /// The probe's fault changed (`None` = healthy again).
    Fault(String, Option<ProbeFault>),
}

/// Presence and fault state of every probe seen or configured.
#[derive(Debug, Default)]
pub struct Probes {
    present: BTreeMap<String, bool>,
    faults: BTreeMap<String, ProbeFault>,
}

impl Probes {
    /// Records one poll: `seen` are the probe directories found; `configured` those that must
    /// be there (a configured probe that is absent is [`ProbeFault::Missing`]).
    pub fn poll(&mut self, seen: &[String], configured: &[String], out: &mut Vec<Change>) {
        for id in seen {
            if self.present.insert(id.clone(), true) != Some(true) {
                out.push(Change::Appeared(id.clone()));
            }
        }
        let gone: Vec<String> = self
            .present
            .iter()
            .filter(|(id, here)| **here && !seen.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.present.insert(id.clone(), false);
            out.push(Change::Disappeared(id.clone()));
            if !configured.contains(&id) && self.faults.remove(&id).is_some() {
                out.push(Change::Fault(id, None));
            }
        }
        for id in configured {
            if !seen.contains(id) {
                self.set(id, Some(ProbeFault::Missing), out);
            }
        }
    }

    /// Records the result of reading probe `id`.
    pub fn record(&mut self, id: &str, fault: Option<ProbeFault>, out: &mut Vec<Change>) {
        self.set(id, fault, out);
    }

    fn set(&mut self, id: &str, fault: Option<ProbeFault>, out: &mut Vec<Change>) {
        let before = self.faults.get(id).copied();
        if before == fault {
            return;
        }
        match fault {
            Some(f) => self.faults.insert(id.to_string(), f),
            None => self.faults.remove(id),
        };
        out.push(Change::Fault(id.to_string(), fault));
    }

    /// Current faults, `"<id> <fault>"` sorted by id; empty when all probes are fine.
    pub fn fault_list(&self) -> Vec<String> {
        self.faults
            .iter()
            .map(|(id, f)| format!("{id} {}", f.as_str()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";

    #[test]
    fn w1_slave_good_and_negative() {
        assert_eq!(parse_w1_slave(GOOD), Ok(Ok(23.125)));
        let neg = "5e ff 4b 46 7f ff 0c 10 1c : crc=1c YES\n5e ff 4b 46 7f ff 0c 10 1c t=-10125\n";
        assert_eq!(parse_w1_slave(neg), Ok(Ok(-10.125)));
    }

    #[test]
    fn w1_slave_faults() {
        let crc = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n";
        assert_eq!(parse_w1_slave(crc), Ok(Err(ProbeFault::CrcError)));
        let por = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n";
        assert_eq!(parse_w1_slave(por), Ok(Err(ProbeFault::PowerOnReset)));
        let gone =
            "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=-127000\n";
        assert_eq!(parse_w1_slave(gone), Ok(Err(ProbeFault::Disconnected)));
        let hot = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=130000\n";
        assert_eq!(parse_w1_slave(hot), Ok(Err(ProbeFault::OutOfRange)));
    }

    #[test]
    fn w1_slave_malformed_names_the_line() {
        assert_eq!(parse_w1_slave("").unwrap_err().line, 1);
        assert_eq!(parse_w1_slave("garbage\n").unwrap_err().line, 1);
        let no_t = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n";
        assert_eq!(parse_w1_slave(no_t).unwrap_err().line, 2);
        let bad_t = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 t=abc\n";
        let e = parse_w1_slave(bad_t).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.to_string().starts_with("line 2: "), "{e}");
    }

    #[test]
    fn temperature_file() {
        assert_eq!(parse_temperature("4500\n"), Ok(Ok(4.5)));
        assert_eq!(
            parse_temperature("85000\n"),
            Ok(Err(ProbeFault::PowerOnReset))
        );
        assert_eq!(
            parse_temperature("-127000\n"),
            Ok(Err(ProbeFault::Disconnected))
        );
        assert_eq!(parse_temperature("").unwrap_err().line, 1);
        assert_eq!(parse_temperature("x\n").unwrap_err().line, 1);
    }

    #[test]
    fn probe_dirs() {
        assert!(is_probe_dir("28-0000075a1b2c"));
        assert!(is_probe_dir("10-000802b4a1f2"));
        assert!(!is_probe_dir("w1_bus_master1"));
        assert!(!is_probe_dir("28-xyz"));
        assert!(!is_probe_dir("01-0000075a1b2c"));
    }

    #[test]
    fn presence_and_faults() {
        let a = "28-00000000000a".to_string();
        let b = "28-00000000000b".to_string();
        let mut p = Probes::default();
        let mut out = Vec::new();
        p.poll(std::slice::from_ref(&a), &[a.clone(), b.clone()], &mut out);
        assert_eq!(
            out,
            vec![
                Change::Appeared(a.clone()),
                Change::Fault(b.clone(), Some(ProbeFault::Missing))
            ]
        );
        assert_eq!(p.fault_list(), vec![format!("{b} missing")]);
        out.clear();
        p.poll(&[a.clone(), b.clone()], &[a.clone(), b.clone()], &mut out);
        p.record(&b, None, &mut out);
        assert_eq!(
            out,
            vec![Change::Appeared(b.clone()), Change::Fault(b.clone(), None)]
        );
        assert!(p.fault_list().is_empty());
        out.clear();
        p.poll(std::slice::from_ref(&b), std::slice::from_ref(&b), &mut out);
        assert_eq!(out, vec![Change::Disappeared(a.clone())]);
        out.clear();
        p.record(&b, Some(ProbeFault::CrcError), &mut out);
        p.record(&b, Some(ProbeFault::CrcError), &mut out);
        assert_eq!(
            out,
            vec![Change::Fault(b.clone(), Some(ProbeFault::CrcError))]
        );
    }
}
