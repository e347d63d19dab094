//! NMEA 0183 sentence parser: one framed sentence (`$` … `*hh`, without CR/LF) in, one typed
//! [`Sentence`] out.
//!
//! - Talker-agnostic: `GP`, `GN`, `GL`, `GA`, `GB`, `BD`, `QZ` and `GQ` all parse into the same
//!   structs; the talker is kept in [`Parsed::talker`].
//! - Empty fields are `None`, never `0.0`: an RMC with status `V` and empty coordinates does not
//!   become a fix at 0°, 0° ("null island").
//! - The checksum is checked; a sentence without one is accepted only when
//!   [`ParseOptions::allow_missing_checksum`] says so.
//! - Errors name the field index (0 = the address field, `GPRMC`) and the byte offset in the
//!   sentence (0 = the `$`).
//! - No allocation: everything is parsed from the `&[u8]` the framer hands over.

use std::fmt;

/// Knots to km/h (exact by definition: 1 kn = 1852 m/h).
pub const KMH_PER_KNOT: f64 = 1.852;

/// Most decimal digits of the minutes of a coordinate that are used; further digits are
/// ignored (they are below 2e-7 m). Keeps the integer numerator of the exact conversion below
/// 2^53, so the degrees are one correctly rounded division.
pub const MAX_MINUTE_DECIMALS: usize = 10;

/// Options of [`parse`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Accept sentences without a `*hh` checksum. Off by default: a serial line without a
    /// checksum cannot tell noise from data, but some old receivers never send one.
    pub allow_missing_checksum: bool,
}

/// Which constellation (or combination) a sentence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Talker {
    /// `GP`: GPS.
    Gps,
    /// `GN`: combined GNSS solution.
    Gnss,
    /// `GL`: GLONASS.
    Glonass,
    /// `GA`: Galileo.
    Galileo,
    /// `GB` or `BD`: BeiDou.
    Beidou,
    /// `QZ` or `GQ`: QZSS.
    Qzss,
}

impl Talker {
    fn from_bytes(b: [u8; 2]) -> Option<Self> {
        Some(match &b {
            b"GP" => Talker::Gps,
            b"GN" => Talker::Gnss,
            b"GL" => Talker::Glonass,
            b"GA" => Talker::Galileo,
            b"GB" | b"BD" => Talker::Beidou,
            b"QZ" | b"GQ" => Talker::Qzss,
            _ => return None,
        })
    }
}

/// UTC time of day, in milliseconds since midnight (fractions beyond 1 ms are dropped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub u32);

impl TimeOfDay {
    /// Milliseconds in a day.
    pub const DAY_MS: u32 = 86_400_000;

    /// Milliseconds since midnight UTC.
    pub fn ms(self) -> u32 {
        self.0
    }
}

/// A calendar date (UTC) as the receiver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Full year. RMC's two-digit year `yy` maps to 2000 + yy below 80, else 1900 + yy.
    pub year: u16,
    /// 1..=12.
    pub month: u8,
    /// 1..=31.
    pub day: u8,
}

impl Date {
    /// Days since 1970-01-01 (proleptic Gregorian), `None` for an impossible date (Feb 30).
    pub fn days_since_epoch(self) -> Option<i64> {
        let (y, m, d) = (
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
        );
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => return None,
        };
        if d < 1 || d > month_len {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Some(era * 146_097 + doe - 719_468)
    }

    /// UTC milliseconds of `time` on this date, `None` for an impossible date.
    pub fn utc_ms(self, time: TimeOfDay) -> Option<i64> {
        Some(self.days_since_epoch()? * i64::from(TimeOfDay::DAY_MS) + i64::from(time.ms()))
    }
}

/// FAA mode indicator (RMC, GLL, VTG field; one character per constellation in GNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `A`: autonomous.
    Autonomous,
    /// `D`: differential.
    Differential,
    /// `E`: estimated (dead reckoning); not a measured position.
    Estimated,
    /// `F`: RTK float.
    RtkFloat,
    /// `R`: RTK fixed.
    RtkFixed,
    /// `M`: manual input; not a measured position.
    Manual,
    /// `S`: simulator; not a measured position.
    Simulator,
    /// `P`: precise.
    Precise,
    /// `N`: data not valid.
    NotValid,
}

impl Mode {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'A' => Mode::Autonomous,
            b'D' => Mode::Differential,
            b'E' => Mode::Estimated,
            b'F' => Mode::RtkFloat,
            b'R' => Mode::RtkFixed,
            b'M' => Mode::Manual,
            b'S' => Mode::Simulator,
            b'P' => Mode::Precise,
            b'N' => Mode::NotValid,
            _ => return None,
        })
    }

    /// Whether this mode stands for a measured position (A, D, F, R, P).
    pub fn is_measured(self) -> bool {
        matches!(
            self,
            Mode::Autonomous | Mode::Differential | Mode::RtkFloat | Mode::RtkFixed | Mode::Precise
        )
    }
}

/// GGA fix quality (field 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quality {
    /// 0: no fix.
    Invalid,
    /// 1: GPS / GNSS fix.
    Gps,
    /// 2: differential.
    Dgps,
    /// 3: PPS.
    Pps,
    /// 4: RTK fixed.
    RtkFixed,
    /// 5: RTK float.
    RtkFloat,
    /// 6: estimated (dead reckoning).
    Estimated,
    /// 7: manual input.
    Manual,
    /// 8: simulator.
    Simulator,
}

impl Quality {
    fn from_digit(d: u32) -> Option<Self> {
        Some(match d {
            0 => Quality::Invalid,
            1 => Quality::Gps,
            2 => Quality::Dgps,
            3 => Quality::Pps,
            4 => Quality::RtkFixed,
            5 => Quality::RtkFloat,
            6 => Quality::Estimated,
            7 => Quality::Manual,
            8 => Quality::Simulator,
            _ => return None,
        })
    }

    /// Whether this quality stands for a measured position (1 to 5).
    pub fn is_measured(self) -> bool {
        matches!(
            self,
            Quality::Gps | Quality::Dgps | Quality::Pps | Quality::RtkFixed | Quality::RtkFloat
        )
    }
}

/// GSA fix type (field 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FixType {
    /// 1: no fix.
    None,
    /// 2: 2D fix (no altitude).
    TwoD,
    /// 3: 3D fix.
    ThreeD,
}

/// RMC: recommended minimum data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rmc {
    /// Field 1.
    pub time: Option<TimeOfDay>,
    /// Field 2: `A` valid, `V` warning. `None` when empty.
    pub valid: Option<bool>,
    /// Fields 3–4, degrees north positive.
    pub lat: Option<f64>,
    /// Fields 5–6, degrees east positive.
    pub lon: Option<f64>,
    /// Field 7, converted from knots to km/h.
    pub speed_kmh: Option<f64>,
    /// Field 8: course over ground, degrees true.
    pub course_deg: Option<f64>,
    /// Field 9.
    pub date: Option<Date>,
    /// Field 12 (NMEA 2.3+).
    pub mode: Option<Mode>,
}

/// GGA: fix data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gga {
    /// Field 1.
    pub time: Option<TimeOfDay>,
    /// Fields 2–3.
    pub lat: Option<f64>,
    /// Fields 4–5.
    pub lon: Option<f64>,
    /// Field 6.
    pub quality: Option<Quality>,
    /// Field 7: satellites used.
    pub satellites: Option<u8>,
    /// Field 8.
    pub hdop: Option<f64>,
    /// Field 9: altitude above mean sea level, metres.
    pub altitude_m: Option<f64>,
    /// Field 11: geoid separation, metres.
    pub geoid_separation_m: Option<f64>,
}

/// GNS: multi-constellation fix data.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gns {
    /// Field 1.
    pub time: Option<TimeOfDay>,
    /// Fields 2–3.
    pub lat: Option<f64>,
    /// Fields 4–5.
    pub lon: Option<f64>,
    /// Field 6, the best of the per-constellation mode characters (`None` if all are `N`
    /// or the field is empty).
    pub mode: Option<Mode>,
    /// Field 7.
    pub satellites: Option<u8>,
    /// Field 8.
    pub hdop: Option<f64>,
    /// Field 9, metres.
    pub altitude_m: Option<f64>,
    /// Field 10, metres.
    pub geoid_separation_m: Option<f64>,
}

/// VTG: course and speed over ground.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Vtg {
    /// Field 1: degrees true.
    pub course_deg: Option<f64>,
    /// Field 7 (km/h), or field 5 (knots) converted when field 7 is empty.
    pub speed_kmh: Option<f64>,
    /// Field 9 (NMEA 2.3+).
    pub mode: Option<Mode>,
}

/// GSA: DOP and active satellites.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gsa {
    /// Field 2.
    pub fix_type: Option<FixType>,
    /// Fields 3–14: how many satellite ids are filled in.
    pub used: u8,
    /// Field 15.
    pub pdop: Option<f64>,
    /// Field 16.
    pub hdop: Option<f64>,
    /// Field 17.
    pub vdop: Option<f64>,
}

/// GLL: geographic position.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Gll {
    /// Fields 1–2.
    pub lat: Option<f64>,
    /// Fields 3–4.
    pub lon: Option<f64>,
    /// Field 5.
    pub time: Option<TimeOfDay>,
    /// Field 6: `A` valid, `V` not.
    pub valid: Option<bool>,
    /// Field 7 (NMEA 2.3+).
    pub mode: Option<Mode>,
}

/// ZDA: time and date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Zda {
    /// Field 1.
    pub time: Option<TimeOfDay>,
    /// Fields 2–4, `None` unless all three are present and in range.
    pub date: Option<Date>,
}

/// One satellite of a GSV sentence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SatInView {
    /// Satellite id (PRN).
    pub id: u16,
    /// Elevation, degrees.
    pub elevation_deg: Option<u8>,
    /// Azimuth, degrees true.
    pub azimuth_deg: Option<u16>,
    /// Signal to noise ratio, dB-Hz; `None` when not tracked.
    pub snr_dbhz: Option<u8>,
}

/// GSV: satellites in view (one of several sentences).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Gsv {
    /// Field 1: sentences in this group.
    pub total: u8,
    /// Field 2: this sentence's number, from 1.
    pub number: u8,
    /// Field 3: satellites in view.
    pub in_view: Option<u8>,
    /// Up to four satellites; `count` of them are filled in.
    pub sats: [SatInView; 4],
    /// How many of `sats` are filled in.
    pub count: u8,
}

/// A parsed sentence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sentence {
    /// RMC.
    Rmc(Rmc),
    /// GGA.
    Gga(Gga),
    /// GNS.
    Gns(Gns),
    /// VTG.
    Vtg(Vtg),
    /// GSA.
    Gsa(Gsa),
    /// GLL.
    Gll(Gll),
    /// ZDA.
    Zda(Zda),
    /// GSV.
    Gsv(Gsv),
}

/// A sentence and the talker that sent it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parsed {
    /// Which constellation sent it.
    pub talker: Talker,
    /// The content.
    pub sentence: Sentence,
}

/// What is wrong with one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldError {
    /// The sentence ends before this field.
    Missing,
    /// The field is empty but must not be.
    Empty,
    /// Not a valid value for this field (bad digits, out of range, bad hemisphere).
    Invalid,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldError::Missing => "missing",
            FieldError::Empty => "empty",
            FieldError::Invalid => "invalid",
        })
    }
}

/// Why a sentence was not parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NmeaError {
    /// The sentence does not start with `$` or has no 5-character address field.
    #[error("not an NMEA sentence (no `$` and address field)")]
    Framing,
    /// No `*hh` and [`ParseOptions::allow_missing_checksum`] is off.
    #[error("no checksum")]
    MissingChecksum,
    /// The `*` is not followed by exactly two hex digits.
    #[error("malformed checksum at byte {offset}")]
    MalformedChecksum {
        /// Byte offset of the `*`.
        offset: usize,
    },
    /// The checksum does not match: the sentence was corrupted on the way.
    #[error("checksum mismatch: computed {computed:02X}, sentence says {stated:02X}")]
    ChecksumMismatch {
        /// XOR of the bytes between `$` and `*`.
        computed: u8,
        /// The `hh` of the sentence.
        stated: u8,
    },
    /// A sentence we do not use: another talker (`$P…` proprietary, `$II…`) or another
    /// sentence type (`GST`, `TXT`, …). Its checksum was fine; callers count it as ignored,
    /// not as bad.
    #[error("unsupported sentence {}", String::from_utf8_lossy(address))]
    Unsupported {
        /// The address field (`PMTK0`, `GPGST`, …).
        address: [u8; 5],
    },
    /// A field is missing or does not parse.
    #[error("field {index} at byte {offset}: {error}")]
    Field {
        /// Field index, 0 = the address field.
        index: usize,
        /// Byte offset of the field's first byte in the sentence.
        offset: usize,
        /// What is wrong.
        error: FieldError,
    },
}

impl NmeaError {
    /// Whether this error means the sentence was corrupted (checksum missing, malformed or
    /// wrong), as opposed to well-formed but unused or invalid in content.
    pub fn is_checksum(&self) -> bool {
        matches!(
            self,
            NmeaError::MissingChecksum
                | NmeaError::MalformedChecksum { .. }
                | NmeaError::ChecksumMismatch { .. }
        )
    }
}

/// XOR checksum of `data` (the bytes between `$` and `*`).
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0, |a, b| a ^ b)
}

/// Parses one sentence (from `$` up to and including the checksum; trailing CR/LF allowed).
///
/// # Errors
/// [`NmeaError`] says why; [`NmeaError::Unsupported`] is not corruption.
pub fn parse(line: &[u8], opts: ParseOptions) -> Result<Parsed, NmeaError> {
    let mut line = line;
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    if line.first() != Some(&b'$') {
        return Err(NmeaError::Framing);
    }
    let body = match line.iter().rposition(|&b| b == b'*') {
        Some(star) => {
            let hh = &line[star + 1..];
            let stated = match hh {
                [h, l] => match (hex(*h), hex(*l)) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => return Err(NmeaError::MalformedChecksum { offset: star }),
                },
                _ => return Err(NmeaError::MalformedChecksum { offset: star }),
            };
            let body = &line[1..star];
            let computed = checksum(body);
            if computed != stated {
                return Err(NmeaError::ChecksumMismatch { computed, stated });
            }
            body
        }
        None if opts.allow_missing_checksum => &line[1..],
        None => return Err(NmeaError::MissingChecksum),
    };
    let address: [u8; 5] = match body.get(..5).and_then(|a| a.try_into().ok()) {
        Some(a) if body.get(5).is_none_or(|&b| b == b',') => a,
        // Proprietary addresses (`$PMTK001`, `$PGRME`) have any length.
        Some(a) if a[0] == b'P' => return Err(NmeaError::Unsupported { address: a }),
        _ => return Err(NmeaError::Framing),
    };
    let Some(talker) = Talker::from_bytes([address[0], address[1]]) else {
        return Err(NmeaError::Unsupported { address });
    };
    let mut f = Fields::new(body);
    let sentence = match &address[2..] {
        b"RMC" => Sentence::Rmc(rmc(&mut f)?),
        b"GGA" => Sentence::Gga(gga(&mut f)?),
        b"GNS" => Sentence::Gns(gns(&mut f)?),
        b"VTG" => Sentence::Vtg(vtg(&mut f)?),
        b"GSA" => Sentence::Gsa(gsa(&mut f)?),
        b"GLL" => Sentence::Gll(gll(&mut f)?),
        b"ZDA" => Sentence::Zda(zda(&mut f)?),
        b"GSV" => Sentence::Gsv(gsv(&mut f)?),
        _ => return Err(NmeaError::Unsupported { address }),
    };
    Ok(Parsed { talker, sentence })
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// One field: its index, its offset in the sentence (the `$` is 0) and its bytes.
#[derive(Clone, Copy)]
struct Field<'a> {
    index: usize,
    offset: usize,
    bytes: &'a [u8],
}

impl Field<'_> {
    fn err(self, error: FieldError) -> NmeaError {
        NmeaError::Field {
            index: self.index,
            offset: self.offset,
            error,
        }
    }
}

/// Cursor over the comma-separated fields after the address field.
struct Fields<'a> {
    body: &'a [u8],
    /// Start of the next field in `body`, `None` after the last one.
    pos: Option<usize>,
    index: usize,
}

impl<'a> Fields<'a> {
    fn new(body: &'a [u8]) -> Self {
        // Skip the address field; `body` starts right after the `$`.
        let pos = (body.len() > 5).then_some(6);
        Fields {
            body,
            pos,
            index: 0,
        }
    }

    /// The next field, or `None` when the sentence has no more.
    fn opt(&mut self) -> Option<Field<'a>> {
        let start = self.pos?;
        self.index += 1;
        let rest = self.body.get(start..).unwrap_or_default();
        let (bytes, next) = match rest.iter().position(|&b| b == b',') {
            Some(i) => (&rest[..i], Some(start + i + 1)),
            None => (rest, None),
        };
        self.pos = next;
        Some(Field {
            index: self.index,
            offset: start + 1,
            bytes,
        })
    }

    /// The next field, which must exist (it may be empty).
    fn req(&mut self) -> Result<Field<'a>, NmeaError> {
        self.opt().ok_or(NmeaError::Field {
            index: self.index + 1,
            offset: self.body.len() + 1,
            error: FieldError::Missing,
        })
    }
}

fn uint(f: Field<'_>) -> Result<Option<u32>, NmeaError> {
    if f.bytes.is_empty() {
        return Ok(None);
    }
    digits(f.bytes).map(Some).ok_or(f.err(FieldError::Invalid))
}

/// Value of 1 to 9 decimal digits.
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 {
        return None;
    }
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn small<T: TryFrom<u32>>(f: Field<'_>) -> Result<Option<T>, NmeaError> {
    match uint(f)? {
        None => Ok(None),
        Some(v) => T::try_from(v)
            .map(Some)
            .map_err(|_| f.err(FieldError::Invalid)),
    }
}

/// A decimal number: optional sign, digits, optional fraction. No exponents, `inf` or `nan`.
fn num(f: Field<'_>) -> Result<Option<f64>, NmeaError> {
    let b = f.bytes;
    if b.is_empty() {
        return Ok(None);
    }
    let unsigned = match b {
        [b'-' | b'+', rest @ ..] => rest,
        _ => b,
    };
    let mut seen_digit = false;
    let mut seen_dot = false;
    for &c in unsigned {
        match c {
            b'0'..=b'9' => seen_digit = true,
            b'.' if !seen_dot => seen_dot = true,
            _ => return Err(f.err(FieldError::Invalid)),
        }
    }
    if !seen_digit {
        return Err(f.err(FieldError::Invalid));
    }
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map(Some)
        .ok_or(f.err(FieldError::Invalid))
}

fn non_negative(f: Field<'_>) -> Result<Option<f64>, NmeaError> {
    match num(f)? {
        Some(v) if v < 0.0 => Err(f.err(FieldError::Invalid)),
        v => Ok(v),
    }
}

/// `hhmmss` with an optional fraction.
fn time(f: Field<'_>) -> Result<Option<TimeOfDay>, NmeaError> {
    let b = f.bytes;
    if b.is_empty() {
        return Ok(None);
    }
    let bad = f.err(FieldError::Invalid);
    let (hms, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    if hms.len() != 6 {
        return Err(bad);
    }
    let (h, m, s) = (
        digits(&hms[0..2]).ok_or(bad)?,
        digits(&hms[2..4]).ok_or(bad)?,
        digits(&hms[4..6]).ok_or(bad)?,
    );
    // Second 60 is a leap second.
    if h > 23 || m > 59 || s > 60 {
        return Err(bad);
    }
    let mut ms = 0;
    let mut scale = 100;
    for &c in frac {
        if !c.is_ascii_digit() {
            return Err(bad);
        }
        ms += u32::from(c - b'0') * scale;
        scale /= 10;
    }
    // A leap second's fraction is folded into 23:59:59.999 rather than running into tomorrow.
    let total = ((h * 60 + m) * 60 + s) * 1000 + ms;
    Ok(Some(TimeOfDay(total.min(TimeOfDay::DAY_MS - 1))))
}

/// `ddmmyy` (RMC).
fn date_ddmmyy(f: Field<'_>) -> Result<Option<Date>, NmeaError> {
    let b = f.bytes;
    if b.is_empty() {
        return Ok(None);
    }
    let bad = f.err(FieldError::Invalid);
    if b.len() != 6 {
        return Err(bad);
    }
    let day = digits(&b[0..2]).ok_or(bad)?;
    let month = digits(&b[2..4]).ok_or(bad)?;
    let yy = digits(&b[4..6]).ok_or(bad)?;
    let year = if yy < 80 { 2000 + yy } else { 1900 + yy };
    make_date(year, month, day).map(Some).ok_or(bad)
}

fn make_date(year: u32, month: u32, day: u32) -> Option<Date> {
    let d = Date {
        year: u16::try_from(year).ok()?,
        month: u8::try_from(month).ok()?,
        day: u8::try_from(day).ok()?,
    };
    d.days_since_epoch().map(|_| d)
}

/// `ddmm.mmmm` / `dddmm.mmmm` and its hemisphere field, to signed degrees.
///
/// The value is `(deg·60·10ⁿ + minutes·10ⁿ) / (60·10ⁿ)` computed from exact integers and one
/// division, so it is the correctly rounded f64 of the decimal text (n ≤
/// [`MAX_MINUTE_DECIMALS`]).
fn coord(
    f: Field<'_>,
    hemi: Field<'_>,
    max_deg: u64,
    pos: u8,
    neg: u8,
) -> Result<Option<f64>, NmeaError> {
    let b = f.bytes;
    if b.is_empty() && hemi.bytes.is_empty() {
        return Ok(None);
    }
    if b.is_empty() {
        return Err(f.err(FieldError::Empty));
    }
    let sign = match hemi.bytes {
        [c] if *c == pos => 1.0,
        [c] if *c == neg => -1.0,
        [] => return Err(hemi.err(FieldError::Empty)),
        _ => return Err(hemi.err(FieldError::Invalid)),
    };
    let bad = f.err(FieldError::Invalid);
    let (int, frac) = match b.iter().position(|&c| c == b'.') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[..0]),
    };
    // At least one degree digit and two minute digits; at most three degree digits.
    if int.len() < 3 || int.len() > 5 {
        return Err(bad);
    }
    let deg = u64::from(digits(&int[..int.len() - 2]).ok_or(bad)?);
    let min = u64::from(digits(&int[int.len() - 2..]).ok_or(bad)?);
    let mut frac_val = 0u64;
    let mut scale = 1u64;
    for (i, &c) in frac.iter().enumerate() {
        if !c.is_ascii_digit() {
            return Err(bad);
        }
        if i < MAX_MINUTE_DECIMALS {
            frac_val = frac_val * 10 + u64::from(c - b'0');
            scale *= 10;
        }
    }
    if min >= 60 || deg > max_deg || (deg == max_deg && (min > 0 || frac_val > 0)) {
        return Err(bad);
    }
    let numerator = (deg * 60 + min) * scale + frac_val;
    #[allow(clippy::cast_precision_loss)] // Both stay below 2^53: exact.
    let degrees = numerator as f64 / (60 * scale) as f64;
    Ok(Some(sign * degrees))
}

fn status(f: Field<'_>) -> Result<Option<bool>, NmeaError> {
    match f.bytes {
        [] => Ok(None),
        b"A" => Ok(Some(true)),
        b"V" => Ok(Some(false)),
        _ => Err(f.err(FieldError::Invalid)),
    }
}

fn mode(f: Option<Field<'_>>) -> Result<Option<Mode>, NmeaError> {
    match f {
        None => Ok(None),
        Some(f) => match f.bytes {
            [] => Ok(None),
            [c] => Mode::from_byte(*c)
                .map(Some)
                .ok_or(f.err(FieldError::Invalid)),
            _ => Err(f.err(FieldError::Invalid)),
        },
    }
}

fn rmc(f: &mut Fields<'_>) -> Result<Rmc, NmeaError> {
    let time = time(f.req()?)?;
    let valid = status(f.req()?)?;
    let (la, ns) = (f.req()?, f.req()?);
    let lat = coord(la, ns, 90, b'N', b'S')?;
    let (lo, ew) = (f.req()?, f.req()?);
    let lon = coord(lo, ew, 180, b'E', b'W')?;
    let speed_kmh = non_negative(f.req()?)?.map(|kn| kn * KMH_PER_KNOT);
    let course_deg = non_negative(f.req()?)?;
    let date = date_ddmmyy(f.req()?)?;
    // Magnetic variation and its direction (fields 10, 11) are not used.
    let _ = (f.opt(), f.opt());
    let mode = mode(f.opt())?;
    Ok(Rmc {
        time,
        valid,
        lat,
        lon,
        speed_kmh,
        course_deg,
        date,
        mode,
    })
}

fn gga(f: &mut Fields<'_>) -> Result<Gga, NmeaError> {
    let time = time(f.req()?)?;
    let (la, ns) = (f.req()?, f.req()?);
    let lat = coord(la, ns, 90, b'N', b'S')?;
    let (lo, ew) = (f.req()?, f.req()?);
    let lon = coord(lo, ew, 180, b'E', b'W')?;
    let q = f.req()?;
    let quality = match uint(q)? {
        None => None,
        Some(d) => Some(Quality::from_digit(d).ok_or(q.err(FieldError::Invalid))?),
    };
    let satellites = small(f.req()?)?;
    let hdop = non_negative(f.req()?)?;
    let altitude_m = num(f.req()?)?;
    let _unit = f.req()?;
    let geoid_separation_m = match f.opt() {
        Some(g) => num(g)?,
        None => None,
    };
    Ok(Gga {
        time,
        lat,
        lon,
        quality,
        satellites,
        hdop,
        altitude_m,
        geoid_separation_m,
    })
}

fn gns(f: &mut Fields<'_>) -> Result<Gns, NmeaError> {
    let time = time(f.req()?)?;
    let (la, ns) = (f.req()?, f.req()?);
    let lat = coord(la, ns, 90, b'N', b'S')?;
    let (lo, ew) = (f.req()?, f.req()?);
    let lon = coord(lo, ew, 180, b'E', b'W')?;
    let m = f.req()?;
    let mut mode = None;
    for &c in m.bytes {
        let one = Mode::from_byte(c).ok_or(m.err(FieldError::Invalid))?;
        // The solution is as good as its best constellation; `N` only if all are `N`.
        mode = match (mode, one) {
            (None, x) => Some(x),
            (Some(Mode::NotValid), x) => Some(x),
            (Some(prev), _) => Some(prev),
        };
    }
    let satellites = small(f.req()?)?;
    let hdop = non_negative(f.req()?)?;
    let altitude_m = num(f.req()?)?;
    let geoid_separation_m = match f.opt() {
        Some(g) => num(g)?,
        None => None,
    };
    Ok(Gns {
        time,
        lat,
        lon,
        mode,
        satellites,
        hdop,
        altitude_m,
        geoid_separation_m,
    })
}

fn vtg(f: &mut Fields<'_>) -> Result<Vtg, NmeaError> {
    let course_deg = non_negative(f.req()?)?;
    let _t = f.req()?;
    let _magnetic = f.req()?;
    let _m = f.req()?;
    let knots = non_negative(f.req()?)?;
    let _n = f.req()?;
    let kmh = match f.opt() {
        Some(k) => non_negative(k)?,
        None => None,
    };
    let _k = f.opt();
    let mode = mode(f.opt())?;
    Ok(Vtg {
        course_deg,
        speed_kmh: kmh.or(knots.map(|kn| kn * KMH_PER_KNOT)),
        mode,
    })
}

fn gsa(f: &mut Fields<'_>) -> Result<Gsa, NmeaError> {
    let _selection = f.req()?;
    let t = f.req()?;
    let fix_type = match t.bytes {
        [] => None,
        b"1" => Some(FixType::None),
        b"2" => Some(FixType::TwoD),
        b"3" => Some(FixType::ThreeD),
        _ => return Err(t.err(FieldError::Invalid)),
    };
    let mut used = 0u8;
    for _ in 0..12 {
        let s = f.req()?;
        if small::<u16>(s)?.is_some() {
            used += 1;
        }
    }
    Ok(Gsa {
        fix_type,
        used,
        pdop: non_negative(f.req()?)?,
        hdop: non_negative(f.req()?)?,
        vdop: non_negative(f.req()?)?,
    })
}

fn gll(f: &mut Fields<'_>) -> Result<Gll, NmeaError> {
    let (la, ns) = (f.req()?, f.req()?);
    let lat = coord(la, ns, 90, b'N', b'S')?;
    let (lo, ew) = (f.req()?, f.req()?);
    let lon = coord(lo, ew, 180, b'E', b'W')?;
    // NMEA 1.5 GLL ends after the coordinates.
    let time = match f.opt() {
        Some(t) => time(t)?,
        None => None,
    };
    let valid = match f.opt() {
        Some(s) => status(s)?,
        None => None,
    };
    let mode = mode(f.opt())?;
    Ok(Gll {
        lat,
        lon,
        time,
        valid,
        mode,
    })
}

fn zda(f: &mut Fields<'_>) -> Result<Zda, NmeaError> {
    let time = time(f.req()?)?;
    let (d, m, y) = (f.req()?, f.req()?, f.req()?);
    let date = match (uint(d)?, uint(m)?, uint(y)?) {
        (Some(day), Some(month), Some(year)) => {
            Some(make_date(year, month, day).ok_or(d.err(FieldError::Invalid))?)
        }
        _ => None,
    };
    Ok(Zda { time, date })
}

fn gsv(f: &mut Fields<'_>) -> Result<Gsv, NmeaError> {
    let t = f.req()?;
    let total = small(t)?.ok_or(t.err(FieldError::Empty))?;
    let n = f.req()?;
    let number = small(n)?.ok_or(n.err(FieldError::Empty))?;
    let in_view = small(f.req()?)?;
    let mut out = Gsv {
        total,
        number,
        in_view,
        ..Gsv::default()
    };
    // Up to four (id, elevation, azimuth, SNR) groups, then an optional NMEA 4.11 signal id.
    for _ in 0..4 {
        let Some(id) = f.opt() else { break };
        let (el, az, snr) = (f.opt(), f.opt(), f.opt());
        let (Some(el), Some(az), Some(snr)) = (el, az, snr) else {
            // A lone trailing field is the signal id.
            if el.is_none() {
                break;
            }
            return Err(id.err(FieldError::Invalid));
        };
        let Some(id) = small::<u16>(id)? else {
            continue;
        };
        out.sats[usize::from(out.count)] = SatInView {
            id,
            elevation_deg: small(el)?,
            azimuth_deg: small(az)?,
            snr_dbhz: small(snr)?,
        };
        out.count += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
