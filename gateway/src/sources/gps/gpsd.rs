//! gpsd's JSON protocol → [`Fix`]. Sans-IO: the `gps` source in mode `gpsd` connects, sends
//! [`WATCH`] and feeds what it reads to [`GpsdCore::push`].
//!
//! gpsd answers `?WATCH` with one JSON object per line: `VERSION`, `DEVICES`, `WATCH`, then
//! per epoch a `TPV` (time, position, velocity) and a `SKY` (dilution of precision and the
//! satellites). A `TPV` becomes a fix; the newest `SKY` supplies its HDOP and satellites in
//! use (gpsd sends it after the TPV of the same epoch, so a fix carries the previous epoch's
//! sky view: satellites in use change slowly). Other classes are counted and ignored.
//!
//! Invariants:
//! - A line is at most [`MAX_LINE`] bytes; a longer one is skipped up to its newline and
//!   counted, so a broken daemon cannot make the source buffer without bound.
//! - gpsd's `mode` 0/1 (no fix) is a fix that hygiene rejects as `no_fix`, never a position;
//!   a TPV without `lat`/`lon` is the same.
//! - Accepted fixes pass the same [`Hygiene`] as NMEA fixes, with the same counters.

use serde::Deserialize;

use super::epoch::Fix;
use super::hygiene::{Hygiene, HygieneConfig, HygieneStats};
use super::nmea::{FixType, Mode, TimeOfDay};

/// What the client sends after connecting.
pub const WATCH: &[u8] = b"?WATCH={\"enable\":true,\"json\":true}\n";
/// Longest line accepted from gpsd. A `SKY` with 64 satellites is about 6 KB.
pub const MAX_LINE: usize = 32 * 1024;

/// The gpsd classes used; `class` selects.
#[derive(Debug, Deserialize)]
#[serde(tag = "class")]
enum Message {
    #[serde(rename = "TPV")]
    Tpv(Tpv),
    #[serde(rename = "SKY")]
    Sky(Sky),
    #[serde(other)]
    Other,
}

/// `TPV`: time, position, velocity. Units as gpsd sends them.
#[derive(Debug, Default, Deserialize)]
struct Tpv {
    /// 0 unknown, 1 no fix, 2 2D, 3 3D.
    #[serde(default)]
    mode: u8,
    /// ISO 8601 UTC.
    time: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    /// Altitude above mean sea level (gpsd ≥ 3.20), metres.
    #[serde(rename = "altMSL")]
    alt_msl: Option<f64>,
    /// Altitude (older gpsd: MSL), metres.
    alt: Option<f64>,
    /// Course over ground, degrees true.
    track: Option<f64>,
    /// Speed over ground, m/s.
    speed: Option<f64>,
}

/// `SKY`: dilution of precision and satellites.
#[derive(Debug, Default, Deserialize)]
struct Sky {
    hdop: Option<f64>,
    pdop: Option<f64>,
    vdop: Option<f64>,
    /// Satellites used (gpsd ≥ 3.20).
    #[serde(rename = "uSat")]
    u_sat: Option<u8>,
    #[serde(default)]
    satellites: Vec<Satellite>,
}

#[derive(Debug, Default, Deserialize)]
struct Satellite {
    #[serde(default)]
    used: bool,
}

/// Counters of a [`GpsdCore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpsdStats {
    /// Lines read.
    pub lines: u64,
    /// `TPV` reports.
    pub tpv: u64,
    /// `SKY` reports.
    pub sky: u64,
    /// Lines that are not JSON objects of the expected shape.
    pub invalid: u64,
    /// Lines longer than [`MAX_LINE`] (skipped).
    pub overlong: u64,
    /// Hygiene of the fixes.
    pub hygiene: HygieneStats,
}

/// Line splitting, JSON decoding and hygiene of a gpsd stream. Sans-IO.
#[derive(Debug)]
pub struct GpsdCore {
    line: Vec<u8>,
    skipping: bool,
    sky: Option<Sky>,
    hygiene: Hygiene,
    stats: GpsdStats,
}

impl GpsdCore {
    /// A core applying `hygiene`.
    pub fn new(hygiene: HygieneConfig) -> Self {
        Self {
            line: Vec::new(),
            skipping: false,
            sky: None,
            hygiene: Hygiene::new(hygiene),
            stats: GpsdStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> GpsdStats {
        GpsdStats {
            hygiene: self.hygiene.stats(),
            ..self.stats
        }
    }

    /// Forgets a partial line and the last sky view (after a reconnect).
    pub fn reset(&mut self) {
        self.line.clear();
        self.skipping = false;
        self.sky = None;
    }

    /// Feeds bytes from the socket; calls `on_fix` with each accepted fix.
    pub fn push(&mut self, mut bytes: &[u8], mut on_fix: impl FnMut(Fix)) {
        while !bytes.is_empty() {
            let (part, rest, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.skipping {
                if self.line.len() + part.len() > MAX_LINE {
                    self.stats.overlong += 1;
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(part);
                }
            }
            if complete && !std::mem::take(&mut self.skipping) {
                let line = std::mem::take(&mut self.line);
                if let Some(fix) = self.line_done(&line) {
                    on_fix(fix);
                }
                self.line = line;
                self.line.clear();
            }
        }
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Fix> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        self.stats.lines += 1;
        match serde_json::from_slice::<Message>(line) {
            Ok(Message::Tpv(tpv)) => {
                self.stats.tpv += 1;
                let fix = tpv_fix(&tpv, self.sky.as_ref());
                self.hygiene.check(fix).ok()
            }
            Ok(Message::Sky(sky)) => {
                self.stats.sky += 1;
                self.sky = Some(sky);
                None
            }
            Ok(Message::Other) => None,
            Err(_) => {
                self.stats.invalid += 1;
                None
            }
        }
    }
}

/// The fix a `TPV` (and the last `SKY`) describes.
fn tpv_fix(tpv: &Tpv, sky: Option<&Sky>) -> Fix {
    let utc_ms = tpv
        .time
        .as_deref()
        .and_then(|t| waymark_wire::time::parse_rfc3339_ms(t).ok());
    let time = utc_ms.map_or(TimeOfDay(0), |ms| {
        let day = i64::from(TimeOfDay::DAY_MS);
        TimeOfDay(u32::try_from(ms.rem_euclid(day)).unwrap_or(0))
    });
    let measured = tpv.mode >= 2;
    let used = sky.and_then(|s| {
        s.u_sat.or_else(|| {
            (!s.satellites.is_empty())
                .then(|| u8::try_from(s.satellites.iter().filter(|x| x.used).count()).ok())
                .flatten()
        })
    });
    Fix {
        time,
        utc_ms,
        lat: tpv.lat.filter(|v| v.is_finite()),
        lon: tpv.lon.filter(|v| v.is_finite()),
        altitude_m: tpv.alt_msl.or(tpv.alt),
        speed_kmh: tpv.speed.map(|v| v * 3.6),
        course_deg: tpv.track,
        valid: Some(measured),
        quality: None,
        mode: Some(if measured {
            Mode::Autonomous
        } else {
            Mode::NotValid
        }),
        fix_type: Some(match tpv.mode {
            3 => FixType::ThreeD,
            2 => FixType::TwoD,
            _ => FixType::None,
        }),
        satellites: used,
        hdop: sky.and_then(|s| s.hdop),
        pdop: sky.and_then(|s| s.pdop),
        vdop: sky.and_then(|s| s.vdop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TPV: &str = r#"{"class":"TPV","device":"/dev/pts/3","mode":3,"time":"2019-04-07T00:03:45.030Z","ept":0.005,"lat":48.149988333,"lon":11.584663333,"altHAE":506.2,"altMSL":460.0,"track":0.0,"speed":0.051,"climb":0.0}"#;
    const SKY: &str = r#"{"class":"SKY","device":"/dev/pts/3","hdop":1.1,"pdop":2.0,"vdop":1.6,"nSat":9,"uSat":7,"satellites":[{"PRN":1,"used":true},{"PRN":2,"used":false}]}"#;

    fn feed(core: &mut GpsdCore, text: &str) -> Vec<Fix> {
        let mut out = Vec::new();
        core.push(text.as_bytes(), |f| out.push(f));
        out
    }

    #[test]
    fn tpv_becomes_a_fix_with_the_last_sky() {
        let mut core = GpsdCore::new(HygieneConfig::default());
        // No SKY yet: satellites unknown, the satellite rule cannot reject.
        let f = feed(&mut core, &format!("{SKY}\n{TPV}\n"));
        assert_eq!(f.len(), 1);
        let f = f[0];
        assert_eq!(f.lat, Some(48.149_988_333));
        assert_eq!(f.lon, Some(11.584_663_333));
        assert_eq!(f.altitude_m, Some(460.0));
        assert!((f.speed_kmh.unwrap() - 0.1836).abs() < 1e-9);
        assert_eq!(f.satellites, Some(7));
        assert_eq!(f.hdop, Some(1.1));
        assert_eq!(f.fix_type, Some(FixType::ThreeD));
        assert_eq!(
            f.utc_ms,
            Some(waymark_wire::time::parse_rfc3339_ms("2019-04-07T00:03:45.030Z").unwrap())
        );
        let s = core.stats();
        assert_eq!((s.lines, s.tpv, s.sky, s.invalid), (2, 1, 1, 0));
    }

    #[test]
    fn no_fix_modes_and_garbage_are_counted_not_positions() {
        let mut core = GpsdCore::new(HygieneConfig::default());
        let text = concat!(
            r#"{"class":"VERSION","release":"3.22"}"#,
            "\n",
            r#"{"class":"TPV","mode":1,"time":"2019-04-07T00:03:45.000Z","lat":0.0,"lon":0.0}"#,
            "\n",
            r#"{"class":"TPV","mode":3}"#,
            "\n",
            "not json\n",
            r#"{"class":"TPV","mode":"three"}"#,
            "\r\n\n"
        );
        assert!(feed(&mut core, text).is_empty());
        let s = core.stats();
        assert_eq!((s.lines, s.tpv, s.invalid), (5, 2, 2));
        assert_eq!(s.hygiene.no_fix, 2);
    }

    #[test]
    fn any_chunking_gives_the_same_fixes() {
        let text = format!("{SKY}\n{TPV}\n{SKY}\n{}\n", TPV.replace("45.030", "46.030"));
        let mut whole = GpsdCore::new(HygieneConfig::default());
        let expected = feed(&mut whole, &text);
        assert_eq!(expected.len(), 2);
        for size in 1..40 {
            let mut core = GpsdCore::new(HygieneConfig::default());
            let mut got = Vec::new();
            for chunk in text.as_bytes().chunks(size) {
                core.push(chunk, |f| got.push(f));
            }
            assert_eq!(got, expected, "chunks of {size}");
            assert_eq!(core.stats(), whole.stats());
        }
    }

    #[test]
    fn overlong_lines_are_skipped_to_their_newline() {
        let mut core = GpsdCore::new(HygieneConfig::default());
        let long = format!("{{\"class\":\"X\",\"pad\":\"{}\"}}", "a".repeat(MAX_LINE));
        for chunk in long.as_bytes().chunks(1000) {
            core.push(chunk, |_| {});
        }
        let f = feed(&mut core, &format!("\n{SKY}\n{TPV}\n"));
        assert_eq!(f.len(), 1);
        assert_eq!(core.stats().overlong, 1);
        assert!(core.line.capacity() <= 2 * MAX_LINE);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..200), 0..10)) {
            let mut core = GpsdCore::new(HygieneConfig::default());
            for c in &chunks {
                core.push(c, |f| assert!(f.lat.is_some() && f.lon.is_some()));
            }
        }
    }
}
