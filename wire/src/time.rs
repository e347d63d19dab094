//! RFC 3339 timestamps as the events carry them (`2026-11-23T07:52:50.123Z`).

use crate::Timestamp;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Earliest instant Waymark accepts as a real wall-clock time (2020-01-01T00:00:00Z).
///
/// A unit that booted without a clock reads 1970; anything before this is treated as
/// "time not known yet" and never published (DESIGN §4).
pub const EARLIEST_VALID_MS: Timestamp = 1_577_836_800_000;

/// Formats UTC milliseconds as RFC 3339 with exactly three fractional digits and `Z`.
pub fn format_rfc3339_ms(ms: Timestamp) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Out of the representable range (±9999 years): clamp to the epoch rather than panic.
        Err(_) => "1970-01-01T00:00:00.000Z".to_string(),
    }
}

/// Parses an RFC 3339 timestamp to UTC milliseconds.
///
/// # Errors
/// A sentence saying why the text is not RFC 3339.
pub fn parse_rfc3339_ms(s: &str) -> Result<Timestamp, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not RFC 3339 ({e}): {s:?}"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Timestamp::try_from(ms).map_err(|_| format!("out of range: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let ms = 1_795_420_370_123;
        let s = format_rfc3339_ms(ms);
        assert_eq!(s, "2026-11-23T07:52:50.123Z");
        assert_eq!(parse_rfc3339_ms(&s).unwrap(), ms);
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T08:52:50.123+01:00").unwrap(),
            ms
        );
        assert!(parse_rfc3339_ms("2026-13-01T00:00:00Z").is_err());
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
