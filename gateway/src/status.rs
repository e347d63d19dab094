//! `waymark status`: what is waiting in the store, read from the file (works while the daemon
//! runs: SQLite WAL lets a reader in beside the writer).
//!
//! The JSON form (`--json`) is a documented interface (docs/operations.md):
//!
//! ```json
//! { "store": "/var/lib/waymark/buffer.db", "now": "2026-11-23T08:00:00.000Z",
//!   "backlog": { "total_rows": 3,
//!     "alert":     { "rows": 0, "bytes": 0, "readings": 0, "oldest": null, "oldest_age_s": null },
//!     "milestone": { "rows": 1, "bytes": 412, "readings": 0, "oldest": "…", "oldest_age_s": 12.5 },
//!     "telemetry": { "rows": 2, "bytes": 9120, "readings": 1800, "oldest": "…", "oldest_age_s": 3.1 } },
//!   "counters": { "telemetry_dropped_rows": 0, "telemetry_dropped_readings": 0, "events_expired": 0 },
//!   "last_puback": "…", "last_puback_age_s": 0.4, "next_sequence": 118, "db_file_bytes": 1638400,
//!   "clock": { "source": "gnss", "offset_ms": 12, "last_sync": "…", "updated": "…" } }
//! ```

use std::path::Path;

use serde_json::{Value, json};
use waymark_wire::time::{EARLIEST_VALID_MS, format_rfc3339_ms};

use crate::store::{self, LaneStats, StoreStats};

/// The status document for a store file at `now_ms`.
pub fn document(path: &Path, stats: &StoreStats, now_ms: i64) -> Value {
    let lane = |l: &LaneStats| {
        json!({
            "rows": l.rows,
            "bytes": l.bytes,
            "readings": l.readings,
            "oldest": l.oldest_created_ms.map(format_rfc3339_ms),
            "oldest_age_s": l.oldest_created_ms.map(|t| age_s(now_ms, t)),
        })
    };
    json!({
        "store": path.display().to_string(),
        "now": format_rfc3339_ms(now_ms),
        "backlog": {
            "total_rows": stats.backlog_rows(),
            "alert": lane(&stats.alert),
            "milestone": lane(&stats.milestone),
            "telemetry": lane(&stats.telemetry),
        },
        "counters": stats.counters,
        "last_puback": stats.last_puback_ms.map(format_rfc3339_ms),
        "last_puback_age_s": stats.last_puback_ms.map(|t| age_s(now_ms, t)),
        "next_sequence": stats.next_sequence,
        "db_file_bytes": stats.db_file_bytes,
        "clock": stats.clock.map(|c| json!({
            "source": c.source,
            "offset_ms": c.offset_ms,
            "last_sync": c.last_sync_ms.map(format_rfc3339_ms),
            "updated": (c.updated_ms >= EARLIEST_VALID_MS).then(|| format_rfc3339_ms(c.updated_ms)),
        })),
    })
}

fn age_s(now_ms: i64, then_ms: i64) -> f64 {
    (now_ms - then_ms) as f64 / 1000.0
}

fn human_age(age_s: Option<f64>) -> String {
    match age_s {
        None => "-".to_string(),
        Some(s) if s < 120.0 => format!("{s:.1} s"),
        Some(s) if s < 7200.0 => format!("{:.1} min", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        Some(s) => format!("{:.1} d", s / 86_400.0),
    }
}

/// The human table.
pub fn table(path: &Path, stats: &StoreStats, now_ms: i64) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    write_table(&mut out, path, stats, now_ms).ok();
    out
}

fn write_table(out: &mut String, path: &Path, stats: &StoreStats, now_ms: i64) -> std::fmt::Result {
    use std::fmt::Write;
    writeln!(
        out,
        "store      {}  ({} bytes on disk)",
        path.display(),
        stats.db_file_bytes
    )?;
    writeln!(
        out,
        "\nlane        rows       bytes    readings  oldest unsent"
    )?;
    for (name, l) in [
        ("alert", &stats.alert),
        ("milestone", &stats.milestone),
        ("telemetry", &stats.telemetry),
    ] {
        writeln!(
            out,
            "{name:<10} {:>5} {:>11} {:>11}  {}",
            l.rows,
            l.bytes,
            l.readings,
            human_age(l.oldest_created_ms.map(|t| age_s(now_ms, t)))
        )?;
    }
    let c = &stats.counters;
    writeln!(
        out,
        "\ndropped    {} telemetry rows ({} readings) for space; {} events expired",
        c.telemetry_dropped_rows, c.telemetry_dropped_readings, c.events_expired
    )?;
    writeln!(
        out,
        "last PUBACK {}",
        match stats.last_puback_ms {
            Some(t) => format!(
                "{} ({} ago)",
                format_rfc3339_ms(t),
                human_age(Some(age_s(now_ms, t)))
            ),
            None => "never".to_string(),
        }
    )?;
    writeln!(out, "next event sequence {}", stats.next_sequence)?;
    match &stats.clock {
        None => writeln!(out, "clock      unknown (not written by the gateway yet)")?,
        Some(c) => {
            let offset = c
                .offset_ms
                .map_or_else(|| "-".to_string(), |o| format!("{o:+} ms"));
            let sync = c.last_sync_ms.map_or_else(
                || "never".to_string(),
                |t| {
                    format!(
                        "{} ({} ago)",
                        format_rfc3339_ms(t),
                        human_age(Some(age_s(now_ms, t)))
                    )
                },
            );
            writeln!(
                out,
                "clock      {}  offset to system clock {offset}  last GNSS sync {sync}",
                c.source.as_str()
            )?;
        }
    }
    Ok(())
}

/// Prints the status of the store at `path`.
///
/// # Errors
/// The store file cannot be opened or read.
pub fn print(path: &Path, as_json: bool) -> Result<(), store::StoreError> {
    let stats = store::read_stats(path)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if as_json {
        println!("{}", document(path, &stats, now));
    } else {
        print!("{}", table(path, &stats, now));
    }
    Ok(())
}
