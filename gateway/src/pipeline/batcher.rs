//! Telemetry batcher: groups readings into batches for the store. Sans-IO: every call
//! takes `now`.
//!
//! # Invariants
//! - A batch is handed out when the window of its **first** reading has ended
//!   (`first arrival + window`, see [`Batcher::poll`]), when it holds `max_readings`
//!   readings, or when the next reading would no longer fit in `max_bytes`.
//! - The encoded size of every batch handed out is at most `max_bytes`:
//!   `BATCH_OVERHEAD_BOUND + Σ reading_size_bound(r) <= max_bytes` is kept for the batch
//!   being built, and `waymark_wire::telemetry` guarantees that the encoding is no larger
//!   than that bound. A reading that cannot fit even alone is rejected and counted
//!   ([`Batcher::oversized`]), never handed out.
//! - Readings keep their arrival order, and none is lost except the oversized ones.
//! - A reading that arrives after the window of the pending batch ended starts the next
//!   batch (the pending one is handed out by that same `push`).

use std::time::{Duration, Instant};

use waymark_wire::Reading;
use waymark_wire::telemetry::{BATCH_OVERHEAD_BOUND, reading_size_bound};

/// Builds batches by window, count and size.
#[derive(Debug)]
pub struct Batcher {
    /// How long the first reading of a batch may wait.
    window: Duration,
    /// Readings per batch, at least 1.
    max_readings: usize,
    /// Encoded bytes per batch.
    max_bytes: usize,
    /// The batch being built.
    buf: Vec<Reading>,
    /// Size bound of `buf` once encoded (`BATCH_OVERHEAD_BOUND + Σ reading_size_bound`).
    bound: usize,
    /// When `buf` is due; `Some` exactly when `buf` is not empty.
    deadline: Option<Instant>,
    /// Readings rejected because they cannot fit in `max_bytes` alone.
    oversized: u64,
}

impl Batcher {
    /// A batcher flushing after `window`, at `max_readings` readings (0 is taken as 1), or
    /// before the encoding would exceed `max_bytes`.
    pub fn new(window: Duration, max_readings: usize, max_bytes: usize) -> Self {
        Batcher {
            window,
            max_readings: max_readings.max(1),
            max_bytes,
            buf: Vec::new(),
            bound: 0,
            deadline: None,
            oversized: 0,
        }
    }

    /// Adds a reading that arrived at `now`. Returns the batch that is complete, if any: the
    /// pending one when its window had ended or `r` does not fit in it any more, or the one
    /// that `r` filled up. A reading too large for any batch is counted in
    /// [`Batcher::oversized`] and dropped.
    pub fn push(&mut self, now: Instant, r: Reading) -> Option<Vec<Reading>> {
        let size = reading_size_bound(&r);
        if BATCH_OVERHEAD_BOUND.saturating_add(size) > self.max_bytes {
            self.oversized += 1;
            return self.poll(now);
        }
        let due = self.deadline.is_some_and(|d| now >= d);
        let full = self.bound.saturating_add(size) > self.max_bytes;
        let flushed = if due || full { self.take() } else { None };
        if self.buf.is_empty() {
            self.deadline = Some(now.checked_add(self.window).unwrap_or(now));
            self.bound = BATCH_OVERHEAD_BOUND;
        }
        self.buf.push(r);
        self.bound += size;
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

    /// Readings rejected so far because one alone encodes larger than `max_bytes`.
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

    #[test]
    fn oversized_reading_is_rejected_and_counted() {
        let t0 = Instant::now();
        let max = 1024;
        let mut b = Batcher::new(1000 * MS, 100, max);
        assert!(b.push(t0, r(0)).is_none());
        let mut big = r(1);
        big.value = Value::Text("x".repeat(max));
        assert!(b.push(t0, big.clone()).is_none());
        assert_eq!(b.oversized(), 1);
        assert_eq!(b.len(), 1);
        // An oversized reading after the window still lets the due batch out.
        assert_eq!(times(&b.push(t0 + 1000 * MS, big).unwrap()), [0]);
        assert_eq!(b.oversized(), 2);
        assert!(b.is_empty());
        // A reading that fits exactly alone is accepted.
        let mut exact = r(2);
        exact.value = Value::Text(String::new());
        let fixed = reading_size_bound(&exact);
        exact.value = Value::Text("y".repeat(max - BATCH_OVERHEAD_BOUND - fixed));
        assert_eq!(BATCH_OVERHEAD_BOUND + reading_size_bound(&exact), max);
        assert!(b.push(t0, exact).is_none());
        let out = b.take().unwrap();
        assert!(encode(&out).unwrap().len() <= max);
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
            prop::sample::select(vec!["Vehicle.Speed", "Vehicle.Cargo.Temperature1", "x"]),
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
                signal: signal.into(),
                value,
                unit: unit.into(),
                time,
                source: source.into(),
            })
    }

    proptest! {
        /// Every batch fits, comes out in order, and nothing but oversized readings is lost.
        #[test]
        fn batches_fit_and_nothing_is_lost(
            readings in prop::collection::vec((reading_strategy(), 0u32..300), 1..150),
            max_readings in 1usize..40,
            max_bytes in 256usize..4096,
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut b = Batcher::new(100 * MS, max_readings, max_bytes);
            let mut out = Vec::new();
            let mut expected = Vec::new();
            let total = readings.len();
            for (reading, dt) in readings {
                now += dt * MS;
                if BATCH_OVERHEAD_BOUND + reading_size_bound(&reading) <= max_bytes {
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
