//! Sans-IO pieces of degraded mode: the bounded in-memory hold for telemetry that cannot be
//! written, and the retry backoff.
//!
//! Invariant: the hold never holds more than its byte budget of payload; making room drops
//! the oldest batches first and reports what was dropped so it can be counted.

use std::collections::VecDeque;
use std::time::Duration;

use super::TelemetryBatch;

/// Default byte budget of the hold (payload bytes).
pub(crate) const HOLD_MAX_BYTES: usize = 8 * 1024 * 1024;

/// What [`Hold::push`] had to drop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// Batches dropped.
    pub batches: u64,
    /// Readings in them.
    pub readings: u64,
    /// Earliest reading time among them (UTC ms), if any.
    pub first_ms: Option<i64>,
    /// Latest reading time among them (UTC ms), if any.
    pub last_ms: Option<i64>,
}

impl Dropped {
    fn add(&mut self, b: &TelemetryBatch) {
        self.batches += 1;
        self.readings += u64::from(b.readings);
        self.first_ms = Some(self.first_ms.map_or(b.first_ms, |t| t.min(b.first_ms)));
        self.last_ms = Some(self.last_ms.map_or(b.last_ms, |t| t.max(b.last_ms)));
    }
}

/// Telemetry batches waiting for the store to accept writes again, oldest first.
#[derive(Debug)]
pub(crate) struct Hold {
    batches: VecDeque<TelemetryBatch>,
    bytes: usize,
    readings: u64,
    max_bytes: usize,
}

impl Hold {
    /// An empty hold with a budget of `max_bytes` payload bytes.
    pub fn new(max_bytes: usize) -> Self {
        Hold {
            batches: VecDeque::new(),
            bytes: 0,
            readings: 0,
            max_bytes,
        }
    }

    /// Adds a batch, dropping the oldest batches (or this one, if it alone exceeds the
    /// budget) to stay within the budget.
    pub fn push(&mut self, batch: TelemetryBatch) -> Dropped {
        let mut dropped = Dropped::default();
        if batch.payload.len() > self.max_bytes {
            dropped.add(&batch);
            return dropped;
        }
        while self.bytes + batch.payload.len() > self.max_bytes {
            match self.batches.pop_front() {
                Some(old) => {
                    self.forget(&old);
                    dropped.add(&old);
                }
                None => break,
            }
        }
        self.bytes += batch.payload.len();
        self.readings += u64::from(batch.readings);
        self.batches.push_back(batch);
        dropped
    }

    /// Held batches, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &TelemetryBatch> {
        self.batches.iter()
    }

    /// Empties the hold (its batches were committed), returning everything it held.
    pub fn take(&mut self) -> Dropped {
        let mut all = Dropped::default();
        for b in self.batches.drain(..) {
            all.add(&b);
        }
        self.bytes = 0;
        self.readings = 0;
        all
    }

    /// Batches held.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Readings held.
    pub fn readings(&self) -> u64 {
        self.readings
    }

    fn forget(&mut self, b: &TelemetryBatch) {
        self.bytes -= b.payload.len();
        self.readings -= u64::from(b.readings);
    }
}

/// Exponential backoff between retries of a store that cannot write: `min`, doubling up to
/// `max`. No jitter: the only contender is our own writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// The delay before the next retry; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to `min` (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize, readings: u32, t: i64) -> TelemetryBatch {
        TelemetryBatch {
            payload: vec![0; bytes],
            readings,
            first_ms: t,
            last_ms: t + 1,
        }
    }

    #[test]
    fn hold_drops_oldest_when_full() {
        let mut h = Hold::new(100);
        assert_eq!(h.push(batch(40, 4, 1)), Dropped::default());
        assert_eq!(h.push(batch(40, 5, 2)), Dropped::default());
        let d = h.push(batch(40, 6, 3));
        assert_eq!(
            d,
            Dropped {
                batches: 1,
                readings: 4,
                first_ms: Some(1),
                last_ms: Some(2)
            }
        );
        assert_eq!((h.len(), h.bytes(), h.readings()), (2, 80, 11));
        let times: Vec<i64> = h.iter().map(|b| b.first_ms).collect();
        assert_eq!(times, [2, 3]);
        // One batch larger than the budget is itself dropped; the hold is untouched.
        let d = h.push(batch(101, 7, 9));
        assert_eq!(d.batches, 1);
        assert_eq!(d.readings, 7);
        assert_eq!(h.len(), 2);
        // A batch that needs everything gone.
        let d = h.push(batch(100, 1, 10));
        assert_eq!((d.batches, d.readings), (2, 11));
        assert_eq!((h.len(), h.bytes(), h.readings()), (1, 100, 1));
        let all = h.take();
        assert_eq!((all.batches, all.readings), (1, 1));
        assert!(h.is_empty());
        assert_eq!((h.bytes(), h.readings()), (0, 0));
    }

    #[test]
    fn backoff_doubles_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [250, 500, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(250));
    }
}
