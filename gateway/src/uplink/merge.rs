//! Telemetry merging (sans-IO): when waiting telemetry rows are published, and how several
//! rows become one message.
//!
//! The pipeline commits a telemetry batch every `pipeline.batch_window_ms` (1 s by default),
//! and each committed batch is one outbox row. Sent alone, a 1 s batch pays every series
//! header, its string table and the batch header again each second; decoded, concatenated and
//! encoded again, ten of them cost a fraction of that per reading. So telemetry rows wait in
//! the store (where they are durable) until `mqtt.telemetry_publish_interval_ms` has passed
//! since the oldest of them was committed, and then go out as few messages as fit.
//!
//! # Invariants
//! - **A merged message never exceeds the packet limit.** A group is only merged while
//!   [`telemetry::BATCH_OVERHEAD_BOUND`] plus the sum of [`telemetry::reading_size_bound`]
//!   over its readings is at most [`MergePolicy::budget`] (the largest payload the connection
//!   takes, and at most [`telemetry::MAX_BODY_BYTES`]), and while its readings and decoded
//!   string bytes stay within the format's limits, so `encode` cannot fail or produce more;
//!   [`merge`] checks the encoded length again regardless.
//! - **Merging loses nothing.** A merged message decodes to exactly the readings of its rows
//!   (grouped by series, as any batch decodes). A row that does not decode is never merged
//!   and never dropped: it is published alone, byte for byte as stored.
//! - **Events are not delayed.** Only telemetry rows wait; the in-flight table keeps events
//!   in their own queue, ahead of telemetry.
//! - **A row waits at most the interval.** [`MergePolicy::plan`] publishes the front group as
//!   soon as any waiting row is due, and rows wait in commit order, so every row is published
//!   (connection and slots permitting) by the time it is `interval` old. Rows wait less when
//!   there is a backlog (any waiting row older than the live window: everything goes at full
//!   speed), when the waiting rows would no longer fit one message, on shutdown, or when the
//!   interval is 0 (no waiting and no merging: each row is published alone as stored).
//! - A row whose commit time is in the future (the wall clock stepped back since) is due at
//!   once: its age means nothing, and waiting for it could take as long as the clock step.

use waymark_wire::telemetry::{self, DecodeError};
use waymark_wire::{Reading, Timestamp, Value};

/// What a decodable telemetry row adds to a merged message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCost {
    /// Readings in the row.
    pub readings: usize,
    /// `Σ reading_size_bound(r)` over them.
    pub bound: usize,
    /// Σ over them of the UTF-8 bytes of signal, unit, source and text value (the format's
    /// decoded-text limit).
    pub text_bytes: usize,
}

impl RowCost {
    fn add(self, other: RowCost) -> RowCost {
        RowCost {
            readings: self.readings.saturating_add(other.readings),
            bound: self.bound.saturating_add(other.bound),
            text_bytes: self.text_bytes.saturating_add(other.text_bytes),
        }
    }
}

/// The cost of `readings` in a merged message.
pub fn readings_cost(readings: &[Reading]) -> RowCost {
    readings.iter().fold(RowCost::default(), |acc, r| {
        let text = match &r.value {
            Value::Text(t) => t.len(),
            Value::Num(_) | Value::Bool(_) => 0,
        };
        acc.add(RowCost {
            readings: 1,
            bound: telemetry::reading_size_bound(r),
            text_bytes: r.signal.len() + r.unit.len() + r.source.len() + text,
        })
    })
}

/// Decodes a stored telemetry payload to learn its [`RowCost`].
///
/// # Errors
/// The [`DecodeError`] when the payload is not a valid batch (it is then published as is).
pub fn row_cost(payload: &[u8]) -> Result<RowCost, DecodeError> {
    telemetry::decode(payload).map(|readings| readings_cost(&readings))
}

/// One waiting telemetry row, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// When the store committed it (wall clock, UTC ms).
    pub created_ms: Timestamp,
    /// Live (committed within the live window when fetched) or backlog.
    pub live: bool,
    /// Its cost when merged; `None` when it cannot be merged (it did not decode) and must be
    /// published alone as stored.
    pub cost: Option<RowCost>,
}

/// What to do with the waiting telemetry rows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing is waiting.
    Idle,
    /// Publish the first `rows` waiting rows as one message: merged when `merge`, otherwise
    /// (`rows == 1`) the row's stored payload as is.
    Publish {
        /// How many rows from the front.
        rows: usize,
        /// Whether they are decoded and encoded again as one batch.
        merge: bool,
    },
    /// Nothing is due before `at_ms` (wall clock, UTC ms), unless more rows arrive.
    WaitUntil {
        /// When the oldest waiting row becomes due.
        at_ms: Timestamp,
    },
}

/// When telemetry rows are published and how many go in one message (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergePolicy {
    interval_ms: i64,
    budget: usize,
}

impl MergePolicy {
    /// Rows wait up to `interval_ms` (0: not at all, and are never merged); a merged payload
    /// stays within `max_payload` bytes (and the format's body limit).
    pub fn new(interval_ms: u64, max_payload: usize) -> Self {
        Self {
            interval_ms: i64::try_from(interval_ms).unwrap_or(i64::MAX),
            budget: max_payload.min(telemetry::MAX_BODY_BYTES),
        }
    }

    /// Whether rows are merged at all (the interval is not 0).
    pub fn merging(&self) -> bool {
        self.interval_ms > 0
    }

    /// Largest merged payload, bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Whether readings of this total cost fit one merged message.
    pub fn fits(&self, cost: RowCost) -> bool {
        telemetry::BATCH_OVERHEAD_BOUND.saturating_add(cost.bound) <= self.budget
            && cost.readings <= telemetry::MAX_READINGS
            && cost.text_bytes <= telemetry::MAX_DECODED_TEXT_BYTES
    }

    /// Decides about `waiting` (in commit order) at `now_ms`; `flush` (shutdown) publishes
    /// whatever waits.
    ///
    /// The front group is the longest run of decodable rows of the same kind (live or backlog)
    /// that fits one message; a row that does not decode is a group of its own. The group is
    /// published when the interval is 0, on `flush`, when any waiting row is backlog or due,
    /// or when the decodable waiting rows together no longer fit one message.
    pub fn plan(&self, waiting: &[Candidate], now_ms: Timestamp, flush: bool) -> Plan {
        let Some(first) = waiting.first() else {
            return Plan::Idle;
        };
        let group = self.front_group(waiting);
        let publish = Plan::Publish {
            rows: group,
            merge: group > 1,
        };
        if flush || !self.merging() {
            return publish;
        }
        let mut total = RowCost::default();
        let mut oldest = first.created_ms;
        for c in waiting {
            if !c.live || self.due(c.created_ms, now_ms) {
                return publish;
            }
            if let Some(cost) = c.cost {
                total = total.add(cost);
            }
            oldest = oldest.min(c.created_ms);
        }
        if !self.fits(total) {
            return publish;
        }
        Plan::WaitUntil {
            at_ms: oldest.saturating_add(self.interval_ms),
        }
    }

    fn due(&self, created_ms: Timestamp, now_ms: Timestamp) -> bool {
        created_ms > now_ms || now_ms.saturating_sub(created_ms) >= self.interval_ms
    }

    /// How many rows from the front make the next message.
    fn front_group(&self, waiting: &[Candidate]) -> usize {
        let Some(first) = waiting.first() else {
            return 0;
        };
        let Some(mut total) = first.cost.filter(|_| self.merging()) else {
            return 1;
        };
        let mut rows = 1;
        for c in &waiting[1..] {
            let Some(cost) = c.cost else { break };
            if c.live != first.live || !self.fits(total.add(cost)) {
                break;
            }
            total = total.add(cost);
            rows += 1;
        }
        rows
    }
}

/// Why rows could not be merged (the caller publishes them one by one as stored instead).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A row does not decode (it decoded when it was fetched, so the store returned other
    /// bytes the second time; never expected).
    #[error("row {index} of the group does not decode: {source}")]
    Decode {
        /// Position of the row in the group.
        index: usize,
        /// The codec's error.
        #[source]
        source: DecodeError,
    },
    /// The readings together exceed a format limit (the plan's cost check rules this out).
    #[error("merged batch cannot be encoded: {0}")]
    Encode(#[from] telemetry::EncodeError),
    /// The merged payload is larger than the budget (the size bound rules this out).
    #[error("merged batch is {len} bytes, above the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The budget.
        max: usize,
    },
}

/// Decodes the payloads, concatenates their readings in order and encodes them as one batch
/// of at most `max_bytes`.
///
/// # Errors
/// [`MergeError`] when a payload does not decode or the result would not fit.
pub fn merge<'a>(
    payloads: impl IntoIterator<Item = &'a [u8]>,
    max_bytes: usize,
) -> Result<Vec<u8>, MergeError> {
    let mut readings = Vec::new();
    for (index, payload) in payloads.into_iter().enumerate() {
        let mut part =
            telemetry::decode(payload).map_err(|source| MergeError::Decode { index, source })?;
        readings.append(&mut part);
    }
    let merged = telemetry::encode(&readings)?;
    if merged.len() > max_bytes {
        return Err(MergeError::TooLarge {
            len: merged.len(),
            max: max_bytes,
        });
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const T0: Timestamp = 1_795_420_370_000;

    fn cost(readings: usize, bound: usize) -> RowCost {
        RowCost {
            readings,
            bound,
            text_bytes: readings * 40,
        }
    }

    /// A live row committed at `at`, bound `bound`.
    fn live(at: Timestamp, bound: usize) -> Candidate {
        Candidate {
            created_ms: at,
            live: true,
            cost: Some(cost(bound / 35, bound)),
        }
    }

    fn backlog(at: Timestamp, bound: usize) -> Candidate {
        Candidate {
            live: false,
            ..live(at, bound)
        }
    }

    fn corrupt(at: Timestamp) -> Candidate {
        Candidate {
            cost: None,
            ..live(at, 0)
        }
    }

    /// 10 s interval, 64 KiB packets.
    fn policy() -> MergePolicy {
        MergePolicy::new(10_000, 64 * 1024)
    }

    fn publish(rows: usize) -> Plan {
        Plan::Publish {
            rows,
            merge: rows > 1,
        }
    }

    /// One committed 1 s batch of a GPS fix + 10 signals: 15 readings × 35 bytes of bound.
    const SECOND: usize = 15 * 35;

    #[test]
    fn nothing_waiting_is_idle() {
        assert_eq!(policy().plan(&[], T0, false), Plan::Idle);
        assert_eq!(policy().plan(&[], T0, true), Plan::Idle);
    }

    #[test]
    fn live_rows_wait_for_the_oldest_to_be_interval_old() {
        let p = policy();
        let rows: Vec<Candidate> = (0..5).map(|i| live(T0 + i * S, SECOND)).collect();
        let wait = Plan::WaitUntil { at_ms: T0 + 10 * S };
        assert_eq!(p.plan(&rows[..1], T0, false), wait);
        assert_eq!(p.plan(&rows, T0 + 4 * S, false), wait);
        assert_eq!(p.plan(&rows, T0 + 10 * S - 1, false), wait);
        // Due: everything waiting goes as one message.
        assert_eq!(p.plan(&rows, T0 + 10 * S, false), publish(5));
        assert_eq!(p.plan(&rows, T0 + 60 * S, false), publish(5));
    }

    #[test]
    fn after_the_due_group_the_rest_waits_for_its_own_time() {
        // One row a second; rows 0..10 went out when row 0 was due (T0+10s); rows 10..15
        // arrived since and wait for row 10's interval.
        let p = policy();
        let rest: Vec<Candidate> = (10..15).map(|i| live(T0 + i * S, SECOND)).collect();
        assert_eq!(
            p.plan(&rest, T0 + 14 * S, false),
            Plan::WaitUntil { at_ms: T0 + 20 * S }
        );
    }

    #[test]
    fn the_oldest_row_decides_even_out_of_order() {
        let p = policy();
        let rows = [live(T0 + 3 * S, SECOND), live(T0, SECOND)];
        assert_eq!(
            p.plan(&rows, T0 + 5 * S, false),
            Plan::WaitUntil { at_ms: T0 + 10 * S }
        );
        assert_eq!(p.plan(&rows, T0 + 10 * S, false), publish(2));
    }

    #[test]
    fn interval_zero_publishes_each_row_alone_at_once() {
        let p = MergePolicy::new(0, 64 * 1024);
        assert!(!p.merging());
        let rows: Vec<Candidate> = (0..5).map(|i| live(T0 + i, SECOND)).collect();
        let alone = Plan::Publish {
            rows: 1,
            merge: false,
        };
        assert_eq!(p.plan(&rows, T0, false), alone);
        assert_eq!(p.plan(&rows[4..], T0, false), alone);
    }

    #[test]
    fn flush_publishes_whatever_waits() {
        let p = policy();
        let rows: Vec<Candidate> = (0..3).map(|i| live(T0 + i * S, SECOND)).collect();
        assert_eq!(p.plan(&rows, T0 + 3 * S, true), publish(3));
        assert_eq!(p.plan(&rows[2..], T0 + 3 * S, true), publish(1));
    }

    #[test]
    fn a_backlog_row_sends_everything_at_full_speed() {
        let p = policy();
        // Lane order: live rows first, then the backlog (older).
        let mut rows: Vec<Candidate> = (0..3).map(|i| live(T0 + i * S, SECOND)).collect();
        rows.extend((0..4).map(|i| backlog(T0 - 3600 * S + i * S, SECOND)));
        // Live and backlog rows are not mixed in one message.
        assert_eq!(p.plan(&rows, T0 + 3 * S, false), publish(3));
        assert_eq!(p.plan(&rows[3..], T0 + 3 * S, false), publish(4));
        assert_eq!(p.plan(&rows[6..], T0 + 3 * S, false), publish(1));
    }

    #[test]
    fn rows_that_fill_a_packet_go_at_once() {
        // 4 KiB packets: 28 + 7 × 525 = 3703 fits, an 8th row (4228) does not.
        let p = MergePolicy::new(10_000, 4096);
        let rows: Vec<Candidate> = (0..9).map(|i| live(T0 + i * S, SECOND)).collect();
        assert_eq!(
            p.plan(&rows[..7], T0 + 7 * S, false),
            Plan::WaitUntil { at_ms: T0 + 10 * S }
        );
        assert_eq!(p.plan(&rows[..8], T0 + 8 * S, false), publish(7));
        assert_eq!(p.plan(&rows, T0 + 8 * S, false), publish(7));
        // The remainder fits one packet and is not due: it waits for its own interval.
        assert_eq!(
            p.plan(&rows[7..], T0 + 8 * S, false),
            Plan::WaitUntil { at_ms: T0 + 17 * S }
        );
    }

    #[test]
    fn group_exactly_at_the_budget_is_merged() {
        let p = MergePolicy::new(10_000, 28 + 2 * 500);
        let rows = [live(T0, 500), live(T0 + S, 500), live(T0 + 2 * S, 1)];
        assert_eq!(p.plan(&rows[..2], T0 + 10 * S, false), publish(2));
        assert_eq!(p.plan(&rows, T0 + 2 * S, false), publish(2));
    }

    #[test]
    fn a_row_larger_than_the_budget_goes_alone_as_stored() {
        let p = MergePolicy::new(10_000, 4096);
        let rows = [live(T0, 10_000), live(T0 + S, SECOND)];
        assert_eq!(
            p.plan(&rows, T0 + S, false),
            Plan::Publish {
                rows: 1,
                merge: false
            }
        );
        assert_eq!(
            p.plan(&rows[1..], T0 + S, false),
            Plan::WaitUntil { at_ms: T0 + 11 * S }
        );
    }

    #[test]
    fn reading_count_and_text_limits_split_groups() {
        let p = MergePolicy::new(10_000, usize::MAX);
        assert_eq!(p.budget(), telemetry::MAX_BODY_BYTES);
        let many = |at| Candidate {
            created_ms: at,
            live: true,
            cost: Some(RowCost {
                readings: telemetry::MAX_READINGS / 2 + 1,
                bound: 1000,
                text_bytes: 0,
            }),
        };
        assert_eq!(p.plan(&[many(T0), many(T0)], T0, false), publish(1));
        let texty = |at| Candidate {
            created_ms: at,
            live: true,
            cost: Some(RowCost {
                readings: 10,
                bound: 1000,
                text_bytes: telemetry::MAX_DECODED_TEXT_BYTES / 2 + 1,
            }),
        };
        assert_eq!(p.plan(&[texty(T0), texty(T0)], T0, false), publish(1));
        assert_eq!(
            p.plan(&[texty(T0)], T0, false),
            Plan::WaitUntil { at_ms: T0 + 10 * S }
        );
    }

    #[test]
    fn corrupt_rows_are_published_alone_and_split_groups() {
        let p = policy();
        let rows = [
            live(T0, SECOND),
            live(T0 + S, SECOND),
            corrupt(T0 + 2 * S),
            live(T0 + 3 * S, SECOND),
        ];
        // Not due: everyone waits, the corrupt row too.
        assert_eq!(
            p.plan(&rows, T0 + 5 * S, false),
            Plan::WaitUntil { at_ms: T0 + 10 * S }
        );
        assert_eq!(p.plan(&rows, T0 + 10 * S, false), publish(2));
        // The corrupt row is due 10 s after its own commit, alone and as stored.
        assert_eq!(
            p.plan(&rows[2..], T0 + 10 * S, false),
            Plan::WaitUntil { at_ms: T0 + 12 * S }
        );
        let alone = Plan::Publish {
            rows: 1,
            merge: false,
        };
        assert_eq!(p.plan(&rows[2..], T0 + 12 * S, false), alone);
        assert_eq!(p.plan(&rows[2..], T0 + 12 * S, true), alone);
    }

    #[test]
    fn a_clock_step_back_makes_rows_due() {
        let p = policy();
        // Committed "in the future": the clock went back an hour since.
        let rows = [live(T0 + 3600 * S, SECOND), live(T0 + 3601 * S, SECOND)];
        assert_eq!(p.plan(&rows, T0, false), publish(2));
        // A row committed this very millisecond is not due.
        assert_eq!(
            p.plan(&[live(T0, SECOND)], T0, false),
            Plan::WaitUntil { at_ms: T0 + 10 * S }
        );
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let p = MergePolicy::new(u64::MAX, 64 * 1024);
        assert_eq!(
            p.plan(&[live(Timestamp::MAX - 1, 1)], Timestamp::MAX, false),
            Plan::WaitUntil {
                at_ms: Timestamp::MAX
            }
        );
        let p = policy();
        assert_eq!(
            p.plan(&[live(Timestamp::MIN, 1)], Timestamp::MAX, false),
            publish(1)
        );
    }

    fn reading(signal: &str, time: i64, value: Value) -> Reading {
        Reading {
            signal: signal.to_string(),
            value,
            unit: "km/h".to_string(),
            time,
            source: "gps".to_string(),
        }
    }

    fn second(t: i64) -> Vec<Reading> {
        vec![
            reading("Vehicle.Speed", t, Value::Num(50.0 + (t / 1000 % 7) as f64)),
            reading("Vehicle.IsMoving", t + 1, Value::Bool(true)),
            reading("Custom.Note", t + 2, Value::Text(format!("n{t}"))),
        ]
    }

    #[test]
    fn merge_concatenates_readings_within_the_bound() {
        let batches: Vec<Vec<Reading>> = (0..10).map(|i| second(T0 + i * S)).collect();
        let payloads: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| telemetry::encode(b).unwrap())
            .collect();
        let costs: Vec<RowCost> = payloads.iter().map(|p| row_cost(p).unwrap()).collect();
        let total = costs.iter().fold(RowCost::default(), |a, &c| a.add(c));
        let merged = merge(payloads.iter().map(Vec::as_slice), 64 * 1024).unwrap();
        assert!(merged.len() <= telemetry::BATCH_OVERHEAD_BOUND + total.bound);
        assert!(
            merged.len() < payloads.iter().map(Vec::len).sum::<usize>(),
            "merging saves bytes"
        );
        let all: Vec<Reading> = batches.concat();
        assert_eq!(total, readings_cost(&all));
        // Decoding groups by series: compare per series, in order.
        let mut expected = all.clone();
        expected.sort_by_key(|r| r.signal.clone());
        let mut got = telemetry::decode(&merged).unwrap();
        got.sort_by_key(|r| r.signal.clone());
        assert_eq!(got, expected);
    }

    #[test]
    fn merge_refuses_undecodable_rows_and_oversized_results() {
        let good = telemetry::encode(&second(T0)).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(row_cost(&bad).is_err());
        assert!(matches!(
            merge([good.as_slice(), bad.as_slice()], 64 * 1024),
            Err(MergeError::Decode { index: 1, .. })
        ));
        assert!(matches!(
            merge([good.as_slice(), good.as_slice()], 10),
            Err(MergeError::TooLarge { max: 10, .. })
        ));
    }
}
