//! Telemetry batcher: groups readings into batches for the store. Sans-IO: every call
//! takes `now`.
//!
//! # Invariants
//! - **Every batch handed out encodes.** `waymark_wire::telemetry::encode` refuses a batch
//!   beyond one of the codec's limits; the batcher never builds one:
//!   - a reading whose signal, unit, source or text value is longer than
//!     [`MAX_STRING_LEN`] bytes is rejected on arrival and counted ([`Batcher::oversized`]);
//!   - a batch holds at most `max_readings` readings, capped at [`MAX_READINGS`];
//!   - the string bytes of a batch (signal + unit + source + text of each reading) stay
//!     within [`MAX_DECODED_TEXT_BYTES`];
//!   - the size bound of a batch (below) stays within [`MAX_BODY_BYTES`], which keeps the
//!     body (the bound minus at least the header) under the codec's body limit.
//! - **The encoded size of every batch handed out is at most `max_bytes`:**
//!   `BATCH_OVERHEAD_BOUND + Σ reading_size_bound(r) <= max_bytes` is kept for the batch
//!   being built, and `waymark_wire::telemetry` guarantees that the encoding is no larger
//!   than that bound. A reading that cannot fit even alone is rejected and counted
//!   ([`Batcher::oversized`]), never handed out.
//! - A batch is handed out when the window of its **first** reading has ended
//!   (`first arrival + window`, see [`Batcher::poll`]), when it holds `max_readings`
//!   readings, or when the next reading would break one of the bounds above.
//! - Readings keep their arrival order, and none is lost except the rejected ones.
//! - A reading that arrives after the window of the pending batch ended starts the next
//!   batch (the pending one is handed out by that same `push`).

use std::time::{Duration, Instant};

use waymark_wire::telemetry::{
    BATCH_OVERHEAD_BOUND, MAX_BODY_BYTES, MAX_DECODED_TEXT_BYTES, MAX_READINGS, MAX_STRING_LEN,
    reading_size_bound,
};
use waymark_wire::{Reading, Value};

/// Builds batches by window, count and size.
#[derive(Debug)]
pub struct Batcher {
    /// How long the first reading of a batch may wait.
    window: Duration,
    /// Readings per batch, 1 to [`MAX_READINGS`].
    max_readings: usize,
    /// Size bound per batch: `batch_max_bytes`, at most [`MAX_BODY_BYTES`].
    max_bytes: usize,
    /// String bytes per batch ([`MAX_DECODED_TEXT_BYTES`]; a field so tests can lower it).
    max_text_bytes: usize,
    /// The batch being built.
    buf: Vec<Reading>,
    /// Size bound of `buf` once encoded (`BATCH_OVERHEAD_BOUND + Σ reading_size_bound`).
    bound: usize,
    /// String bytes of `buf`, as the codec counts them against [`MAX_DECODED_TEXT_BYTES`].
    text_bytes: usize,
    /// When `buf` is due; `Some` exactly when `buf` is not empty.
    deadline: Option<Instant>,
    /// Readings rejected because they fit in no batch.
    oversized: u64,
}

/// String bytes the codec counts for `r` against [`MAX_DECODED_TEXT_BYTES`], or `None` when
/// one of its strings is longer than [`MAX_STRING_LEN`] (the codec refuses it in any batch).
fn text_bytes(r: &Reading) -> Option<usize> {
    let text = match &r.value {
        Value::Text(t) => t.as_str(),
        Value::Num(_) | Value::Bool(_) => "",
    };
    let strings = [r.signal.as_str(), r.unit.as_str(), r.source.as_str(), text];
    if strings.iter().any(|s| s.len() > MAX_STRING_LEN) {
        return None;
    }
    Some(strings.iter().map(|s| s.len()).sum())
}

impl Batcher {
    /// A batcher flushing after `window`, at `max_readings` readings (taken within 1 to
    /// [`MAX_READINGS`]), or before the encoding would exceed `max_bytes` (taken as at most
    /// [`MAX_BODY_BYTES`], the codec's limit).
    pub fn new(window: Duration, max_readings: usize, max_bytes: usize) -> Self {
        Batcher {
            window,
            max_readings: max_readings.clamp(1, MAX_READINGS),
            max_bytes: max_bytes.min(MAX_BODY_BYTES),
            max_text_bytes: MAX_DECODED_TEXT_BYTES,
            buf: Vec::new(),
            bound: 0,
            text_bytes: 0,
            deadline: None,
            oversized: 0,
        }
    }

    /// Adds a reading that arrived at `now`. Returns the batch that is complete, if any: the
    /// pending one when its window had ended or `r` does not fit in it any more, or the one
    /// that `r` filled up. A reading that fits in no batch (larger than `max_bytes` alone, or
    /// a string beyond the codec's [`MAX_STRING_LEN`]) is counted in [`Batcher::oversized`]
    /// and dropped.
    pub fn push(&mut self, now: Instant, r: Reading) -> Option<Vec<Reading>> {
        let size = reading_size_bound(&r);
        let text = match text_bytes(&r) {
            Some(text) if BATCH_OVERHEAD_BOUND.saturating_add(size) <= self.max_bytes => text,
            _ => {
                self.oversized += 1;
                return self.poll(now);
            }
        };
        let due = self.deadline.is_some_and(|d| now >= d);
        let full = self.bound.saturating_add(size) > self.max_bytes
            || self.text_bytes + text > self.max_text_bytes;
        let flushed = if due || full { self.take() } else { None };
        if self.buf.is_empty() {
            self.deadline = Some(now.checked_add(self.window).unwrap_or(now));
            self.bound = BATCH_OVERHEAD_BOUND;
        }
        self.buf.push(r);
        self.bound += size;
        self.text_bytes += text;
        // After a flush `buf` holds one reading, and a flush means a batch had been pending,
        // so `max_readings` ≥ 2: at most one batch comes out of one push.
        flushed.or_else(|| {
            if self.buf.len() >= self.max_readings {
                self.take()
            } else {
                None
            }
        })
    }

    /// The pending batch if its window has ended at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Vec<Reading>> {
        if self.deadline.is_some_and(|d| now >= d) {
            self.take()
        } else {
            None
        }
    }

    /// When the pending batch is due; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The pending batch regardless of its window (shutdown).
    pub fn take(&mut self) -> Option<Vec<Reading>> {
        if self.buf.is_empty() {
            return None;
        }
        let capacity = self.buf.len();
        let batch = std::mem::replace(&mut self.buf, Vec::with_capacity(capacity));
        self.bound = 0;
        self.text_bytes = 0;
        self.deadline = None;
        Some(batch)
    }

    /// Readings pending.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no reading is pending.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Readings rejected so far because they fit in no batch: one alone encodes larger than
    /// `max_bytes`, or one of its strings is longer than [`MAX_STRING_LEN`].
    pub fn oversized(&self) -> u64 {
        self.oversized
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use waymark_wire::Value;
    use waymark_wire::telemetry::encode;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn r(i: i64) -> Reading {
        Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(i as f64),
            unit: "km/h".into(),
            time: 1_700_000_000_000 + i,
            source: "can0".into(),
        }
    }
    fn times(batch: &[Reading]) -> Vec<i64> {
        batch.iter().map(|r| r.time - 1_700_000_000_000).collect()
    }

    #[test]
    fn window_starts_at_the_first_reading() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1000 * MS, 100, 1 << 20);
        assert_eq!(b.deadline(), None);
        assert_eq!(b.poll(t0 + 5000 * MS), None);
        assert!(b.push(t0, r(0)).is_none());
        assert_eq!(b.deadline(), Some(t0 + 1000 * MS));
        assert!(b.push(t0 + 600 * MS, r(1)).is_none());
        // A later reading does not move the deadline.
        assert_eq!(b.deadline(), Some(t0 + 1000 * MS));
        assert_eq!(b.poll(t0 + 999 * MS), None);
        assert_eq!(times(&b.poll(t0 + 1000 * MS).unwrap()), [0, 1]);
        assert_eq!(b.deadline(), None);
        assert!(b.is_empty());
        // The next batch gets its own window.
        assert!(b.push(t0 + 1500 * MS, r(2)).is_none());
        assert_eq!(b.deadline(), Some(t0 + 2500 * MS));
    }

    #[test]
    fn push_after_the_window_flushes_the_pending_batch_first() {
        let t0 = Instant::now();
        let mut b = Batcher::new(100 * MS, 100, 1 << 20);
        b.push(t0, r(0));
        b.push(t0 + 50 * MS, r(1));
        let out = b.push(t0 + 100 * MS, r(2)).unwrap();
        assert_eq!(times(&out), [0, 1]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.deadline(), Some(t0 + 200 * MS));
    }

    #[test]
    fn count_flush() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1000 * MS, 3, 1 << 20);
        assert!(b.push(t0, r(0)).is_none());
        assert!(b.push(t0, r(1)).is_none());
        assert_eq!(times(&b.push(t0, r(2)).unwrap()), [0, 1, 2]);
        assert!(b.is_empty());
        assert_eq!(b.deadline(), None);
        assert!(b.push(t0, r(3)).is_none());
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn one_reading_per_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1000 * MS, 1, 1 << 20);
        for i in 0..3 {
            assert_eq!(times(&b.push(t0, r(i)).unwrap()), [i]);
            assert_eq!(b.deadline(), None);
        }
        // 0 is taken as 1.
        let mut b = Batcher::new(1000 * MS, 0, 1 << 20);
        assert_eq!(times(&b.push(t0, r(7)).unwrap()), [7]);
    }

    #[test]
    fn size_flush_keeps_every_batch_under_max_bytes() {
        let t0 = Instant::now();
        let per = reading_size_bound(&r(0));
        // Room for exactly three readings.
        let max = BATCH_OVERHEAD_BOUND + 3 * per;
        let mut b = Batcher::new(1000 * MS, 100, max);
        assert!(b.push(t0, r(0)).is_none());
        assert!(b.push(t0, r(1)).is_none());
        assert!(b.push(t0, r(2)).is_none());
        let out = b.push(t0 + MS, r(3)).unwrap();
        assert_eq!(times(&out), [0, 1, 2]);
        assert!(encode(&out).unwrap().len() <= max);
        // The reading that did not fit starts the next batch, with its own window.
        assert_eq!(b.len(), 1);
        assert_eq!(b.deadline(), Some(t0 + 1001 * MS));
    }

    /// `r` with a text value of `len` ASCII bytes.
    fn with_text(mut r: Reading, len: usize) -> Reading {
        r.value = Value::Text("y".repeat(len));
        r
    }

    #[test]
    fn oversized_reading_is_rejected_and_counted() {
        let t0 = Instant::now();
        let max = 1024;
        let mut b = Batcher::new(1000 * MS, 100, max);
        assert!(b.push(t0, r(0)).is_none());
        let big = with_text(r(1), max);
        assert!(BATCH_OVERHEAD_BOUND + reading_size_bound(&big) > max);
        assert!(b.push(t0, big.clone()).is_none());
        assert_eq!(b.oversized(), 1);
        assert_eq!(b.len(), 1);
        // An oversized reading after the window still lets the due batch out.
        assert_eq!(times(&b.push(t0 + 1000 * MS, big).unwrap()), [0]);
        assert_eq!(b.oversized(), 2);
        assert!(b.is_empty());
        // A reading whose bound is exactly `max` is accepted, and its batch encodes within it.
        let exact = (0..max)
            .map(|len| with_text(r(2), len))
            .find(|e| BATCH_OVERHEAD_BOUND + reading_size_bound(e) == max)
            .expect("some text length gives a bound of exactly max");
        assert!(b.push(t0, exact).is_none());
        assert_eq!(b.oversized(), 2);
        let out = b.take().unwrap();
        assert!(encode(&out).unwrap().len() <= max);
    }

    #[test]
    fn strings_beyond_the_codec_limit_are_rejected_whatever_max_bytes() {
        let t0 = Instant::now();
        let mut b = Batcher::new(1000 * MS, 100, 1 << 20);
        let long = "s".repeat(MAX_STRING_LEN + 1);
        let mut signal = r(1);
        signal.signal = long.clone();
        let mut unit = r(2);
        unit.unit = long.clone();
        let mut source = r(3);
        source.source = long;
        let text = with_text(r(4), MAX_STRING_LEN + 1);
        for (i, bad) in [signal, unit, source, text].into_iter().enumerate() {
            // Each would fit in `max_bytes`; the codec refuses it in any batch.
            assert!(BATCH_OVERHEAD_BOUND + reading_size_bound(&bad) <= 1 << 20);
            assert!(encode(std::slice::from_ref(&bad)).is_err());
            assert!(b.push(t0, bad).is_none());
            assert_eq!(b.oversized(), i as u64 + 1);
        }
        assert!(b.is_empty());
        // Strings of exactly the limit are accepted and encode.
        let mut edge = with_text(r(5), MAX_STRING_LEN);
        edge.signal = "s".repeat(MAX_STRING_LEN);
        edge.unit = "u".repeat(MAX_STRING_LEN);
        edge.source = "c".repeat(MAX_STRING_LEN);
        assert!(b.push(t0, r(0)).is_none());
        assert!(b.push(t0, edge).is_none());
        assert_eq!(b.oversized(), 4);
        let out = b.take().unwrap();
        assert_eq!(times(&out), [0, 5]);
        assert!(encode(&out).unwrap().len() <= 1 << 20);
    }

    #[test]
    fn readings_per_batch_are_capped_at_the_codec_limit() {
        let t0 = Instant::now();
        let mut b = Batcher::new(60_000 * MS, 1_000_000, usize::MAX);
        let mut out = None;
        for i in 0..=MAX_READINGS as i64 {
            if let Some(batch) = b.push(t0, r(i)) {
                assert!(out.is_none(), "one batch expected");
                out = Some(batch);
            }
        }
        let out = out.expect("a full batch");
        assert_eq!(out.len(), MAX_READINGS);
        assert_eq!(b.len(), 1);
        assert!(encode(&out).is_ok());
    }

    #[test]
    fn batch_bytes_are_capped_at_the_codec_body_limit() {
        let t0 = Instant::now();
        // `batch_max_bytes` may be configured up to 255 MiB; the codec refuses bodies over
        // 4 MiB. Distinct 1000-byte texts make the body grow with every reading.
        let mut b = Batcher::new(60_000 * MS, MAX_READINGS, 255 << 20);
        let mut out = None;
        for i in 0..10_000i64 {
            let reading = Reading {
                value: Value::Text(format!("{i:01000}")),
                ..r(i)
            };
            if let Some(batch) = b.push(t0, reading) {
                out = Some(batch);
                break;
            }
        }
        let out = out.expect("flushed by size before 10 000 readings");
        let bound = BATCH_OVERHEAD_BOUND + out.iter().map(reading_size_bound).sum::<usize>();
        assert!(bound <= MAX_BODY_BYTES);
        assert!(
            out.len() > 4000,
            "the cap is the codec's, not lower: {}",
            out.len()
        );
        let payload = waymark_wire::telemetry::encode_uncompressed(&out).unwrap();
        assert!(payload.len() <= bound);
    }

    #[test]
    fn string_bytes_per_batch_are_capped() {
        let t0 = Instant::now();
        let mut b = Batcher::new(60_000 * MS, 100, 1 << 20);
        // "Vehicle.Speed" + "km/h" + "can0" = 21 bytes a reading, all built in (free in the
        // size bound); lower the limit to room for three readings.
        let per = text_bytes(&r(0)).unwrap();
        assert_eq!(per, 21);
        b.max_text_bytes = 3 * per + per / 2;
        assert!(b.push(t0, r(0)).is_none());
        assert!(b.push(t0, r(1)).is_none());
        assert!(b.push(t0, r(2)).is_none());
        assert_eq!(times(&b.push(t0, r(3)).unwrap()), [0, 1, 2]);
        assert_eq!(b.len(), 1);
        assert!(b.push(t0, r(4)).is_none());
        assert!(b.push(t0, r(5)).is_none());
        assert_eq!(times(&b.push(t0, r(6)).unwrap()), [3, 4, 5]);
    }

    #[test]
    fn take_flushes_regardless_of_the_window() {
        let t0 = Instant::now();
        let mut b = Batcher::new(60_000 * MS, 100, 1 << 20);
        assert_eq!(b.take(), None);
        b.push(t0, r(0));
        b.push(t0, r(1));
        assert_eq!(times(&b.take().unwrap()), [0, 1]);
        assert_eq!(b.take(), None);
        assert_eq!(b.deadline(), None);
    }

    fn reading_strategy() -> impl Strategy<Value = Reading> {
        // Cheap generators (regex strings are slow in debug builds); multi-byte characters
        // too, since the bound counts bytes.
        let text = (0usize..300, prop::sample::select(vec!['a', 'é', '€', '𝄞']))
            .prop_map(|(n, c)| c.to_string().repeat(n));
        (
            // The long name breaks the codec's string limit, whatever `max_bytes`.
            prop::sample::select(vec![
                "Vehicle.Speed".to_string(),
                "Vehicle.Cargo.Temperature1".to_string(),
                "x".to_string(),
                "n".repeat(MAX_STRING_LEN + 1),
            ]),
            prop_oneof![
                (-1e12f64..1e12).prop_map(Value::Num),
                any::<bool>().prop_map(Value::Bool),
                text.prop_map(Value::Text),
            ],
            prop::sample::select(vec!["", "km/h", "celsius"]),
            any::<i64>(),
            prop::sample::select(vec!["can0", "apps"]),
        )
            .prop_map(|(signal, value, unit, time, source)| Reading {
                signal,
                value,
                unit: unit.into(),
                time,
                source: source.into(),
            })
    }

    proptest! {
        /// Every batch encodes and fits, comes out in order, and nothing but the readings
        /// that fit in no batch (by size or by the codec's string limit) is lost.
        #[test]
        fn batches_fit_and_nothing_is_lost(
            readings in prop::collection::vec((reading_strategy(), 0u32..300), 1..150),
            max_readings in 1usize..40,
            max_bytes in 256usize..8192,
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = Batcher::new(100 * MS, max_readings, max_bytes);
            let mut out = Vec::new();
            let mut expected = Vec::new();
            let total = readings.len();
            for (reading, dt) in readings {
                now += dt * MS;
                let text = match &reading.value {
                    Value::Text(t) => t.len(),
                    _ => 0,
                };
                let strings_ok = reading.signal.len().max(text) <= MAX_STRING_LEN;
                if strings_ok && BATCH_OVERHEAD_BOUND + reading_size_bound(&reading) <= max_bytes {
                    expected.push(reading.clone());
                }
                if let Some(batch) = b.poll(now) {
                    out.push(batch);
                }
                if let Some(batch) = b.push(now, reading) {
                    out.push(batch);
                }
                if let Some(d) = b.deadline() {
                    prop_assert!(d > now, "a pending batch is never overdue after push");
                }
            }
            out.extend(b.take());
            for batch in &out {
                prop_assert!(!batch.is_empty());
                prop_assert!(batch.len() <= max_readings);
                prop_assert!(encode(batch).unwrap().len() <= max_bytes);
            }
            let all: Vec<Reading> = out.into_iter().flatten().collect();
            prop_assert_eq!(b.oversized() as usize, total - expected.len());
            prop_assert_eq!(all, expected);
        }
    }
}
