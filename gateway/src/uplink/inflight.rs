//! In-flight bookkeeping: which outbox rows each MQTT packet id carries (sans-IO).
//!
//! rumqttc gives no per-publish PUBACK handle. What it does give, for the single task that
//! submits every publish, is an ordered event stream (`rumqttc/src/state.rs`):
//! - `Outgoing::Publish(pkid)` when a request taken from the request channel (or from the
//!   pending list of a resumed session) is written, in submission order;
//! - `Outgoing::AwaitAck(pkid)` instead, when the next packet id is still taken by an
//!   unacknowledged publish (a *collision*): the request is stashed and is written, with an
//!   `Outgoing::Publish(pkid)`, right after the `Incoming::PubAck(pkid)` of the old holder;
//!   rumqttc holds at most one stashed request (a second collision overwrites the first);
//! - `Outgoing::Publish(pkid)` again for a pkid already in flight when a resumed session
//!   retransmits its unacknowledged publishes with their original ids;
//! - `Incoming::PubAck(pkid)` when the broker took responsibility for a publish.
//!
//! [`InFlight`] replays that stream against the tags it was given at submission and answers
//! which rows a PUBACK acknowledges. One publish carries one event row, one telemetry row, or
//! several telemetry rows merged into one batch ([`super::merge`]); its PUBACK acknowledges
//! all of them, and losing it loses all of them.
//!
//! Between the fetch and the submission, rows wait here in three queues: events (published
//! first, never held back), telemetry rows waiting for the merge decision, and telemetry
//! publishes already prepared (merged) and waiting for a slot or the drain-rate cap.
//!
//! # Invariants
//! - A row id is *tracked* from the moment a fetch hands it out until the store confirmed
//!   its deletion ([`InFlight::acks_committed`]) or its publish was lost with a session. A
//!   tracked row is never handed out twice, so a row is never in flight twice, in one
//!   publish or in several.
//! - Every submitted tag is in exactly one of: `queued` (in the client, no pkid yet), the
//!   stash (collision), `by_pkid` (written, awaiting PUBACK). Their total never exceeds
//!   `capacity`, which equals rumqttc's `inflight`, so rumqttc never stashes two requests
//!   when the broker acknowledges in order.
//! - A row reaches the ack list only through the PUBACK of the pkid its publish was written
//!   with; that PUBACK puts every row of the publish on the list.
//! - When a session is lost (CONNACK with `session_present = 0`, or a client rebuilt), every
//!   tag in flight is forgotten (rumqttc dropped those requests), each of its rows becomes
//!   untracked and all cursors go back to 0, so the next fetches return every unacknowledged
//!   row again (telemetry rows possibly merged into different publishes). After *every*
//!   CONNACK the cursors go back to 0 and the queues are emptied as well; rows still in flight
//!   in a resumed session are then skipped (rumqttc retransmits them itself).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use waymark_wire::Timestamp;
use waymark_wire::topics::Stream;

use super::merge::{Candidate, RowCost};

/// The fetch cursor a row advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Alert lane.
    Alert,
    /// Milestone lane.
    Milestone,
    /// Live telemetry (created within the live window).
    Live,
    /// Backlog telemetry (older).
    Backlog,
}

/// Per-lane fetch cursors: the highest row id handed out from each lane (0 = from the start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursors {
    /// Alert lane.
    pub alert: i64,
    /// Milestone lane.
    pub milestone: i64,
    /// Live telemetry.
    pub live: i64,
    /// Backlog telemetry.
    pub backlog: i64,
}

impl Cursors {
    fn advance(&mut self, cursor: Cursor, row_id: i64) {
        let slot = match cursor {
            Cursor::Alert => &mut self.alert,
            Cursor::Milestone => &mut self.milestone,
            Cursor::Live => &mut self.live,
            Cursor::Backlog => &mut self.backlog,
        };
        *slot = (*slot).max(row_id);
    }
}

/// A row fetched from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRow {
    /// Store row id.
    pub row_id: i64,
    /// The cursor it advances.
    pub cursor: Cursor,
    /// Topic stream: [`Stream::Events`] or [`Stream::Telemetry`].
    pub stream: Stream,
    /// Message payload as stored.
    pub payload: Vec<u8>,
    /// When the store committed it (wall clock, UTC ms).
    pub created_ms: Timestamp,
    /// For telemetry that may be merged: what it adds to a merged batch. `None` for events,
    /// for telemetry when merging is off, and for telemetry that does not decode (published
    /// alone as stored).
    pub cost: Option<RowCost>,
}

impl FetchedRow {
    /// The row as the merge plan sees it.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            created_ms: self.created_ms,
            live: self.cursor != Cursor::Backlog,
            cost: self.cost,
        }
    }
}

/// One message ready to be submitted: an event, a telemetry row as stored, or several
/// telemetry rows merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The rows it carries, in store order; its PUBACK acknowledges all of them.
    pub row_ids: Vec<i64>,
    /// Topic stream.
    pub stream: Stream,
    /// Message payload.
    pub payload: Vec<u8>,
}

impl Publish {
    /// A row published alone, as stored.
    pub fn single(row: FetchedRow) -> Self {
        Self {
            row_ids: vec![row.row_id],
            stream: row.stream,
            payload: row.payload,
        }
    }

    /// The tag to submit it with.
    pub fn tag(&self) -> Tag {
        Tag::Rows {
            row_ids: self.row_ids.clone(),
            bytes: self.payload.len(),
        }
    }
}

/// What one submitted publish carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Outbox rows: one event or telemetry row, or several telemetry rows merged.
    Rows {
        /// Store row ids (at least one).
        row_ids: Vec<i64>,
        /// Payload bytes (for the counters).
        bytes: usize,
    },
    /// The retained status document (online or offline).
    Status,
}

impl Tag {
    /// The row ids it carries (none for the status).
    pub fn row_ids(&self) -> &[i64] {
        match self {
            Tag::Rows { row_ids, .. } => row_ids,
            Tag::Status => &[],
        }
    }
}

/// What an `Outgoing::Publish(pkid)` meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// The first write of a submitted tag. `republish` is true when one of its rows was in
    /// flight in a session that was lost, so this write repeats (part of) an earlier one.
    First {
        /// What was written.
        tag: Tag,
        /// Whether this repeats a publish lost with a session.
        republish: bool,
    },
    /// A resumed session retransmitted a publish with its original pkid.
    Retransmit {
        /// What was written.
        tag: Tag,
    },
    /// A pkid nothing was submitted for (a bookkeeping mismatch; logged, then ignored).
    Unknown,
}

/// What an `Outgoing::AwaitAck(pkid)` meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stashed {
    /// The next submitted tag waits for `pkid` to be acknowledged.
    Waiting,
    /// As `Waiting`, and rumqttc overwrote an earlier stashed request, which is lost: its rows
    /// became untracked and the cursors were reset so they are fetched and published again.
    Replaced {
        /// The tag rumqttc dropped.
        lost: Tag,
    },
    /// Nothing was submitted (a bookkeeping mismatch).
    Unknown,
}

/// What an `Incoming::PubAck(pkid)` acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acked {
    /// These rows (one publish); they are now on the ack list.
    Rows(Vec<i64>),
    /// A status document.
    Status,
    /// Nothing we know of (stale or unsolicited).
    Unknown,
}

#[derive(Debug, Clone)]
struct Sent {
    tag: Tag,
    since: Instant,
}

/// The in-flight table, the queues before it and the fetch cursors of one uplink (see the
/// module docs).
#[derive(Debug)]
pub struct InFlight {
    capacity: usize,
    queued: VecDeque<Tag>,
    stash: Option<(u16, Tag)>,
    by_pkid: BTreeMap<u16, Sent>,
    /// Fetched events, in lane order: submitted before any telemetry.
    events: VecDeque<Publish>,
    /// Telemetry publishes prepared by the merge step, waiting for a slot or the rate cap.
    prepared: VecDeque<Publish>,
    /// Fetched telemetry rows waiting for the merge decision, in fetch order.
    waiting: VecDeque<FetchedRow>,
    acked: Vec<i64>,
    tracked: BTreeSet<i64>,
    lost: BTreeSet<i64>,
    cursors: Cursors,
}

impl InFlight {
    /// An empty table for at most `capacity` publishes awaiting PUBACK (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            queued: VecDeque::new(),
            stash: None,
            by_pkid: BTreeMap::new(),
            events: VecDeque::new(),
            prepared: VecDeque::new(),
            waiting: VecDeque::new(),
            acked: Vec::new(),
            tracked: BTreeSet::new(),
            lost: BTreeSet::new(),
            cursors: Cursors::default(),
        }
    }

    /// Publishes submitted and not yet acknowledged (queued, stashed or written).
    pub fn in_flight(&self) -> usize {
        self.queued.len() + usize::from(self.stash.is_some()) + self.by_pkid.len()
    }

    /// How many more publishes may be submitted now.
    pub fn free_slots(&self) -> usize {
        self.capacity.saturating_sub(self.in_flight())
    }

    /// The cursors for the next fetch.
    pub fn cursors(&self) -> Cursors {
        self.cursors
    }

    /// Whether the row is handed out, waiting, in flight or acknowledged but not yet deleted.
    pub fn is_tracked(&self, row_id: i64) -> bool {
        self.tracked.contains(&row_id)
    }

    /// Takes a fetch result: every row advances its cursor; rows already tracked are skipped,
    /// events are queued for submission, telemetry rows wait for the merge decision. Returns
    /// how many were taken.
    pub fn accept_fetched(&mut self, rows: impl IntoIterator<Item = FetchedRow>) -> usize {
        let mut taken = 0;
        for row in rows {
            self.cursors.advance(row.cursor, row.row_id);
            if self.tracked.insert(row.row_id) {
                match row.stream {
                    Stream::Events => self.events.push_back(Publish::single(row)),
                    _ => self.waiting.push_back(row),
                }
                taken += 1;
            }
        }
        taken
    }

    /// The next publish to submit, if any: events first, then prepared telemetry.
    pub fn peek_ready(&self) -> Option<&Publish> {
        self.events.front().or_else(|| self.prepared.front())
    }

    /// Takes the next publish (as [`InFlight::peek_ready`]) to submit it. Follow with
    /// [`InFlight::submitted`] or [`InFlight::submit_failed`].
    pub fn take_ready(&mut self) -> Option<Publish> {
        self.events
            .pop_front()
            .or_else(|| self.prepared.pop_front())
    }

    /// Publishes ready to be submitted.
    pub fn ready(&self) -> usize {
        self.events.len() + self.prepared.len()
    }

    /// Drops the next ready publish without submitting it (it cannot be published); its rows
    /// stay in the store and come back after the next cursor reset.
    pub fn skip_ready(&mut self) -> Option<Publish> {
        let publish = self.take_ready()?;
        for id in &publish.row_ids {
            self.tracked.remove(id);
        }
        Some(publish)
    }

    /// Telemetry rows waiting for the merge decision, in fetch order.
    pub fn waiting(&self) -> impl ExactSizeIterator<Item = &FetchedRow> {
        self.waiting.iter()
    }

    /// The merge plan's view of the waiting rows.
    pub fn candidates(&self) -> Vec<Candidate> {
        self.waiting.iter().map(FetchedRow::candidate).collect()
    }

    /// Takes the first `n` waiting rows to publish them (merged or alone); they stay tracked.
    /// Hand the result to [`InFlight::prepared`].
    pub fn take_waiting(&mut self, n: usize) -> Vec<FetchedRow> {
        let n = n.min(self.waiting.len());
        self.waiting.drain(..n).collect()
    }

    /// Queues a telemetry publish built from rows of [`InFlight::take_waiting`].
    pub fn prepared(&mut self, publish: Publish) {
        self.prepared.push_back(publish);
    }

    /// A publish was handed to the client.
    pub fn submitted(&mut self, tag: Tag) {
        for &id in tag.row_ids() {
            self.tracked.insert(id);
        }
        self.queued.push_back(tag);
    }

    /// The client refused a publish taken with [`InFlight::take_ready`]: untrack its rows
    /// and rescan.
    pub fn submit_failed(&mut self, row_ids: &[i64]) {
        for id in row_ids {
            self.tracked.remove(id);
        }
        self.reset_cursors();
    }

    /// Handles `Outgoing::Publish(pkid)`.
    pub fn on_publish(&mut self, pkid: u16, now: Instant) -> Written {
        if self.stash.as_ref().is_some_and(|(p, _)| *p == pkid)
            && !self.by_pkid.contains_key(&pkid)
            && let Some((_, tag)) = self.stash.take()
        {
            return self.write_first(pkid, tag, now);
        }
        if let Some(sent) = self.by_pkid.get(&pkid) {
            return Written::Retransmit {
                tag: sent.tag.clone(),
            };
        }
        match self.queued.pop_front() {
            Some(tag) => self.write_first(pkid, tag, now),
            None => Written::Unknown,
        }
    }

    fn write_first(&mut self, pkid: u16, tag: Tag, now: Instant) -> Written {
        let mut republish = false;
        for id in tag.row_ids() {
            republish |= self.lost.remove(id);
        }
        self.by_pkid.insert(
            pkid,
            Sent {
                tag: tag.clone(),
                since: now,
            },
        );
        Written::First { tag, republish }
    }

    /// Handles `Outgoing::AwaitAck(pkid)`.
    pub fn on_await_ack(&mut self, pkid: u16) -> Stashed {
        let Some(tag) = self.queued.pop_front() else {
            return Stashed::Unknown;
        };
        match self.stash.replace((pkid, tag)) {
            None => Stashed::Waiting,
            Some((_, lost)) => {
                self.forget(&lost);
                self.reset_cursors();
                Stashed::Replaced { lost }
            }
        }
    }

    /// Handles `Incoming::PubAck(pkid)`.
    pub fn on_puback(&mut self, pkid: u16) -> Acked {
        match self.by_pkid.remove(&pkid) {
            Some(Sent {
                tag: Tag::Rows { row_ids, .. },
                ..
            }) => {
                self.acked.extend_from_slice(&row_ids);
                Acked::Rows(row_ids)
            }
            Some(Sent {
                tag: Tag::Status, ..
            }) => Acked::Status,
            None => Acked::Unknown,
        }
    }

    /// Rows acknowledged by the broker whose deletion the store has not confirmed yet.
    pub fn pending_acks(&self) -> &[i64] {
        &self.acked
    }

    /// The store deleted these acknowledged rows: stop tracking them.
    pub fn acks_committed(&mut self, row_ids: &[i64]) {
        let done: BTreeSet<i64> = row_ids.iter().copied().collect();
        self.acked.retain(|id| !done.contains(id));
        for id in &done {
            self.tracked.remove(id);
        }
    }

    /// A CONNACK arrived. Without a resumed session everything in flight is lost (see
    /// [`InFlight::session_lost`]); in every case the cursors go back to 0 and rows not yet
    /// submitted are released, so the next fetches walk every unacknowledged row again.
    pub fn on_connected(&mut self, session_present: bool) {
        if !session_present {
            self.session_lost();
        }
        self.release_unsubmitted();
        self.reset_cursors();
    }

    /// The client's session is gone (CONNACK with `session_present = 0`, or the client was
    /// rebuilt): rumqttc dropped every request it held. Rows in flight become untracked and
    /// are counted as republished when they are written again. Acknowledged rows stay tracked
    /// until the store confirms their deletion. Returns how many rows were in flight.
    pub fn session_lost(&mut self) -> usize {
        let mut tags: Vec<Tag> = self.queued.drain(..).collect();
        tags.extend(self.stash.take().map(|(_, tag)| tag));
        tags.extend(
            std::mem::take(&mut self.by_pkid)
                .into_values()
                .map(|s| s.tag),
        );
        let mut rows = 0;
        for tag in &tags {
            rows += tag.row_ids().len();
            self.forget(tag);
        }
        self.release_unsubmitted();
        self.reset_cursors();
        rows
    }

    fn forget(&mut self, tag: &Tag) {
        for &id in tag.row_ids() {
            self.tracked.remove(&id);
            self.lost.insert(id);
        }
    }

    /// Untracks every row that was fetched but not submitted (events, prepared publishes,
    /// waiting telemetry): the store still has them.
    fn release_unsubmitted(&mut self) {
        let ids: Vec<i64> = self
            .events
            .drain(..)
            .chain(self.prepared.drain(..))
            .flat_map(|p| p.row_ids)
            .chain(self.waiting.drain(..).map(|r| r.row_id))
            .collect();
        for id in ids {
            self.tracked.remove(&id);
        }
    }

    /// Sets every cursor back to 0.
    pub fn reset_cursors(&mut self) {
        self.cursors = Cursors::default();
    }

    /// A fetch returned nothing: every row after the cursors is handed out. Every loss reset
    /// the cursors, so a lost row that is not handed out again by now is no longer in the
    /// store (expired or dropped): forget it. Lost rows handed out again stay marked until
    /// they are written.
    pub fn end_of_outbox(&mut self) {
        let tracked = &self.tracked;
        self.lost.retain(|id| tracked.contains(id));
    }

    /// When the oldest written publish still awaiting its PUBACK was written.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.by_pkid.values().map(|s| s.since).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(row_id: i64, cursor: Cursor) -> FetchedRow {
        let stream = match cursor {
            Cursor::Alert | Cursor::Milestone => Stream::Events,
            Cursor::Live | Cursor::Backlog => Stream::Telemetry,
        };
        FetchedRow {
            row_id,
            cursor,
            stream,
            payload: vec![0; 10],
            created_ms: 1_000 + row_id,
            cost: None,
        }
    }

    fn tag(row_id: i64) -> Tag {
        Tag::Rows {
            row_ids: vec![row_id],
            bytes: 10,
        }
    }

    /// A merged publish of `ids` (payload of 7 bytes).
    fn merged(ids: &[i64]) -> Publish {
        Publish {
            row_ids: ids.to_vec(),
            stream: Stream::Telemetry,
            payload: vec![1; 7],
        }
    }

    fn rows_tag(ids: &[i64]) -> Tag {
        merged(ids).tag()
    }

    fn acked(ids: &[i64]) -> Acked {
        Acked::Rows(ids.to_vec())
    }

    /// Fetches `ids` (alert lane) and submits them all.
    fn submit(f: &mut InFlight, ids: &[i64]) {
        f.accept_fetched(ids.iter().map(|&id| row(id, Cursor::Alert)));
        while let Some(p) = f.take_ready() {
            f.submitted(p.tag());
        }
    }

    /// Fetches `ids` as live telemetry, merges them all into one publish and submits it.
    fn submit_merged(f: &mut InFlight, ids: &[i64]) {
        let taken = f.accept_fetched(ids.iter().map(|&id| row(id, Cursor::Live)));
        assert_eq!(taken, ids.len());
        let rows = f.take_waiting(ids.len());
        let row_ids: Vec<i64> = rows.iter().map(|r| r.row_id).collect();
        assert_eq!(row_ids, ids);
        f.prepared(merged(&row_ids));
        let p = f.take_ready().unwrap();
        f.submitted(p.tag());
    }

    fn first(row_id: i64) -> Written {
        Written::First {
            tag: tag(row_id),
            republish: false,
        }
    }

    #[test]
    fn in_order_publish_and_ack() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[10, 11, 12]);
        assert_eq!(f.in_flight(), 3);
        assert_eq!(f.free_slots(), 1);
        assert_eq!(f.on_publish(1, now), first(10));
        assert_eq!(f.on_publish(2, now), first(11));
        assert_eq!(f.on_publish(3, now), first(12));
        assert_eq!(f.on_puback(1), acked(&[10]));
        assert_eq!(f.on_puback(2), acked(&[11]));
        assert_eq!(f.pending_acks(), &[10, 11]);
        assert_eq!(f.in_flight(), 1);
        assert_eq!(f.free_slots(), 3);
        // Acknowledged but not yet deleted rows stay tracked: a fetch cannot hand them out.
        assert!(f.is_tracked(10));
        f.acks_committed(&[10, 11]);
        assert!(f.pending_acks().is_empty());
        assert!(!f.is_tracked(10));
        assert!(f.is_tracked(12));
    }

    #[test]
    fn capacity_is_at_least_one_and_counts_status() {
        let mut f = InFlight::new(0);
        assert_eq!(f.free_slots(), 1);
        f.submitted(Tag::Status);
        assert_eq!(f.free_slots(), 0);
        assert_eq!(
            f.on_publish(1, Instant::now()),
            Written::First {
                tag: Tag::Status,
                republish: false
            }
        );
        assert_eq!(f.on_puback(1), Acked::Status);
        assert_eq!(f.free_slots(), 1);
        assert!(f.pending_acks().is_empty());
    }

    #[test]
    fn unknown_pkids_are_reported_not_guessed() {
        let mut f = InFlight::new(2);
        assert_eq!(f.on_publish(1, Instant::now()), Written::Unknown);
        assert_eq!(f.on_puback(1), Acked::Unknown);
        assert_eq!(f.on_await_ack(1), Stashed::Unknown);
        submit(&mut f, &[1]);
        f.on_publish(1, Instant::now());
        assert_eq!(f.on_puback(1), acked(&[1]));
        // A duplicate PUBACK for the same pkid acknowledges nothing more.
        assert_eq!(f.on_puback(1), Acked::Unknown);
        assert_eq!(f.pending_acks(), &[1]);
    }

    #[test]
    fn resumed_session_retransmits_keep_the_mapping() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2, 3]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        // Connection drops with 1 and 2 written, 3 still in the channel; session resumed.
        f.on_connected(true);
        assert_eq!(f.cursors(), Cursors::default());
        assert_eq!(f.in_flight(), 3);
        // rumqttc retransmits 1 and 2 with their pkids, then writes 3 with a fresh pkid.
        assert_eq!(f.on_publish(1, now), Written::Retransmit { tag: tag(1) });
        assert_eq!(f.on_publish(2, now), Written::Retransmit { tag: tag(2) });
        assert_eq!(f.on_publish(3, now), first(3));
        // The refetch after the cursor reset skips every tracked row.
        assert_eq!(
            f.accept_fetched([1, 2, 3, 4].map(|id| row(id, Cursor::Alert))),
            1
        );
        assert_eq!(f.peek_ready().map(|p| p.row_ids.clone()), Some(vec![4]));
        assert_eq!(f.cursors().alert, 4);
        assert_eq!(f.on_puback(2), acked(&[2]));
        assert_eq!(f.on_puback(1), acked(&[1]));
        assert_eq!(f.on_puback(3), acked(&[3]));
        assert_eq!(f.pending_acks(), &[2, 1, 3]);
    }

    #[test]
    fn collision_stash_is_written_after_the_holder_is_acked() {
        let now = Instant::now();
        let mut f = InFlight::new(3);
        submit(&mut f, &[1, 2, 3]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_publish(3, now);
        // Broker acks 2 out of order; the next request gets pkid 1 again (still taken).
        assert_eq!(f.on_puback(2), acked(&[2]));
        submit(&mut f, &[4]);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        assert_eq!(f.in_flight(), 3);
        assert_eq!(f.free_slots(), 0);
        // The holder of pkid 1 is acked, then the stashed request is written with pkid 1.
        assert_eq!(f.on_puback(1), acked(&[1]));
        assert_eq!(f.on_publish(1, now), first(4));
        assert_eq!(f.on_puback(1), acked(&[4]));
        assert_eq!(f.on_puback(3), acked(&[3]));
        assert_eq!(f.pending_acks(), &[2, 1, 4, 3]);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn retransmit_of_the_holder_is_not_the_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(2);
        submit(&mut f, &[3]);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        // Session resumed: pkid 1 is retransmitted before its PUBACK arrives.
        f.on_connected(true);
        assert_eq!(f.on_publish(1, now), Written::Retransmit { tag: tag(1) });
        assert_eq!(f.on_puback(1), acked(&[1]));
        assert_eq!(f.on_publish(1, now), first(3));
    }

    #[test]
    fn a_second_collision_loses_the_first_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.accept_fetched([row(3, Cursor::Alert), row(4, Cursor::Alert)]);
        let p = f.take_ready().unwrap();
        f.submitted(p.tag());
        let p = f.take_ready().unwrap();
        f.submitted(p.tag());
        assert_eq!(f.cursors().alert, 4);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        assert_eq!(f.on_await_ack(2), Stashed::Replaced { lost: tag(3) });
        assert!(!f.is_tracked(3));
        assert_eq!(f.cursors(), Cursors::default());
        // The rescan hands row 3 out again (and nothing still in flight).
        assert_eq!(
            f.accept_fetched([1, 2, 3, 4].map(|id| row(id, Cursor::Alert))),
            1
        );
        let again = f.take_ready().unwrap();
        assert_eq!(again.row_ids, vec![3]);
        f.submitted(again.tag());
        f.on_puback(2);
        assert_eq!(f.on_publish(2, now), first(4));
        assert_eq!(
            f.on_publish(3, now),
            Written::First {
                tag: tag(3),
                republish: true
            }
        );
    }

    #[test]
    fn session_lost_republishes_everything_in_flight() {
        let now = Instant::now();
        let mut f = InFlight::new(8);
        f.accept_fetched([
            row(1, Cursor::Alert),
            row(5, Cursor::Milestone),
            row(7, Cursor::Live),
            row(3, Cursor::Backlog),
            row(9, Cursor::Live),
        ]);
        assert_eq!(
            f.cursors(),
            Cursors {
                alert: 1,
                milestone: 5,
                live: 9,
                backlog: 3
            }
        );
        // Events are ready at once; telemetry waits for the merge decision.
        assert_eq!(f.ready(), 2);
        assert_eq!(f.waiting().len(), 3);
        for _ in 0..2 {
            let p = f.take_ready().unwrap();
            f.submitted(p.tag());
        }
        for r in f.take_waiting(2) {
            f.prepared(Publish::single(r));
        }
        for _ in 0..2 {
            let p = f.take_ready().unwrap();
            f.submitted(p.tag());
        }
        f.submitted(Tag::Status);
        assert_eq!(f.waiting().len(), 1);
        f.on_publish(1, now); // row 1
        f.on_publish(2, now); // row 5
        f.on_publish(3, now); // row 7
        assert_eq!(f.on_puback(1), acked(&[1]));
        // Queued: row 3 and the status; written: 5 and 7; acked: 1; waiting: 9.
        f.on_connected(false);
        assert_eq!(f.in_flight(), 0);
        assert_eq!(f.waiting().len(), 0);
        assert_eq!(f.cursors(), Cursors::default());
        assert!(
            f.is_tracked(1),
            "acknowledged rows stay tracked until deleted"
        );
        for id in [3, 5, 7, 9] {
            assert!(!f.is_tracked(id));
        }
        // A late PUBACK of the dead session acknowledges nothing.
        assert_eq!(f.on_puback(2), Acked::Unknown);
        assert_eq!(
            f.accept_fetched([1, 5, 7, 9, 3].map(|id| row(id, Cursor::Alert))),
            4,
            "every unacknowledged row is handed out again"
        );
        let mut written = Vec::new();
        let mut pkid = 1;
        while let Some(p) = f.take_ready() {
            f.submitted(p.tag());
            written.push(f.on_publish(pkid, now));
            pkid += 1;
        }
        assert_eq!(
            written,
            vec![
                Written::First {
                    tag: tag(5),
                    republish: true
                },
                Written::First {
                    tag: tag(7),
                    republish: true
                },
                Written::First {
                    tag: tag(9),
                    republish: false
                },
                Written::First {
                    tag: tag(3),
                    republish: true
                },
            ]
        );
    }

    #[test]
    fn session_lost_counts_rows_and_drops_the_stash() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(2);
        submit(&mut f, &[3]);
        f.on_await_ack(1);
        f.submitted(Tag::Status);
        assert_eq!(f.session_lost(), 2);
        assert_eq!(f.in_flight(), 0);
        assert_eq!(f.free_slots(), 2);
        // After a lost session rumqttc starts from a clean state: a fresh pkid 1 is a first write.
        submit(&mut f, &[3]);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: tag(3),
                republish: true
            }
        );
        assert_eq!(f.pending_acks(), &[2]);
    }

    #[test]
    fn skipped_and_failed_rows_are_untracked() {
        let mut f = InFlight::new(4);
        f.accept_fetched([row(1, Cursor::Milestone), row(2, Cursor::Milestone)]);
        assert_eq!(f.skip_ready().map(|p| p.row_ids), Some(vec![1]));
        assert!(!f.is_tracked(1));
        assert_eq!(f.cursors().milestone, 2);
        let p = f.take_ready().unwrap();
        f.submit_failed(&p.row_ids);
        assert!(!f.is_tracked(2));
        assert_eq!(f.cursors(), Cursors::default());
        assert_eq!(f.in_flight(), 0);
        assert!(f.skip_ready().is_none());
    }

    #[test]
    fn failed_store_ack_keeps_rows_pending() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_puback(1);
        f.on_puback(2);
        // The store failed: nothing committed; the next attempt sends the same ids.
        assert_eq!(f.pending_acks(), &[1, 2]);
        f.acks_committed(&[1]);
        assert_eq!(f.pending_acks(), &[2]);
        assert!(f.is_tracked(2));
        // Even a lost session keeps acknowledged rows out of the refetch.
        f.on_connected(false);
        assert_eq!(f.accept_fetched([row(2, Cursor::Alert)]), 0);
    }

    #[test]
    fn end_of_outbox_keeps_lost_rows_awaiting_their_write() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_connected(false);
        // The walk after the reconnect hands both out again, then finds nothing more before
        // rumqttc reports the writes.
        submit(&mut f, &[1, 2]);
        f.end_of_outbox();
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: tag(1),
                republish: true
            }
        );
        assert_eq!(
            f.on_publish(2, now),
            Written::First {
                tag: tag(2),
                republish: true
            }
        );
    }

    #[test]
    fn end_of_outbox_forgets_lost_rows() {
        let now = Instant::now();
        let mut f = InFlight::new(2);
        submit(&mut f, &[1]);
        f.on_publish(1, now);
        f.on_connected(false);
        // Row 1 vanished from the store meanwhile (expired); the walk ends without it.
        f.end_of_outbox();
        submit(&mut f, &[1]);
        assert_eq!(f.on_publish(1, now), first(1));
    }

    #[test]
    fn oldest_unacked_tracks_written_publishes() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(5);
        let mut f = InFlight::new(4);
        assert_eq!(f.oldest_unacked(), None);
        submit(&mut f, &[1, 2]);
        assert_eq!(
            f.oldest_unacked(),
            None,
            "queued publishes are not written yet"
        );
        f.on_publish(1, t0);
        f.on_publish(2, t1);
        assert_eq!(f.oldest_unacked(), Some(t0));
        f.on_puback(1);
        assert_eq!(f.oldest_unacked(), Some(t1));
        f.on_puback(2);
        assert_eq!(f.oldest_unacked(), None);
    }

    #[test]
    fn connected_releases_unsubmitted_rows() {
        let mut f = InFlight::new(4);
        f.accept_fetched([
            row(4, Cursor::Milestone),
            row(5, Cursor::Live),
            row(6, Cursor::Live),
            row(7, Cursor::Live),
        ]);
        let rows = f.take_waiting(2);
        f.prepared(merged(&rows.iter().map(|r| r.row_id).collect::<Vec<_>>()));
        assert_eq!(f.ready(), 2);
        assert_eq!(f.waiting().len(), 1);
        f.on_connected(true);
        assert_eq!(f.ready(), 0);
        assert_eq!(f.waiting().len(), 0);
        for id in 4..=7 {
            assert!(!f.is_tracked(id));
        }
        assert_eq!(
            f.accept_fetched([4, 5, 6, 7].map(|id| row(id, Cursor::Live))),
            4
        );
    }

    // ---- publishes that carry several rows (merged telemetry) ----

    #[test]
    fn one_puback_acknowledges_every_row_of_a_merged_publish() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit_merged(&mut f, &[3, 4, 5]);
        assert_eq!(f.in_flight(), 1, "one publish, one slot");
        assert_eq!(f.free_slots(), 3);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: rows_tag(&[3, 4, 5]),
                republish: false
            }
        );
        assert_eq!(f.on_puback(1), acked(&[3, 4, 5]));
        assert_eq!(f.pending_acks(), &[3, 4, 5]);
        for id in 3..=5 {
            assert!(f.is_tracked(id), "tracked until the store deleted it");
        }
        f.acks_committed(&[3, 4, 5]);
        assert!(f.pending_acks().is_empty());
        assert!((3..=5).all(|id| !f.is_tracked(id)));
    }

    #[test]
    fn events_go_before_waiting_and_prepared_telemetry() {
        let mut f = InFlight::new(4);
        f.accept_fetched([row(10, Cursor::Live), row(11, Cursor::Live)]);
        assert_eq!(f.ready(), 0, "telemetry waits for the merge decision");
        let rows = f.take_waiting(2);
        f.prepared(merged(&rows.iter().map(|r| r.row_id).collect::<Vec<_>>()));
        f.accept_fetched([row(12, Cursor::Live)]);
        // An event fetched later still goes first.
        f.accept_fetched([row(13, Cursor::Milestone), row(14, Cursor::Alert)]);
        let order: Vec<Vec<i64>> = std::iter::from_fn(|| f.take_ready())
            .map(|p| p.row_ids)
            .collect();
        assert_eq!(order, vec![vec![13], vec![14], vec![10, 11]]);
        assert_eq!(
            f.waiting().map(|r| r.row_id).collect::<Vec<_>>(),
            vec![12],
            "row 12 still waits"
        );
        assert!(f.is_tracked(12), "a waiting row is never fetched twice");
        assert_eq!(f.accept_fetched([row(12, Cursor::Live)]), 0);
    }

    #[test]
    fn candidates_show_the_waiting_rows() {
        let mut f = InFlight::new(4);
        let mut r = row(3, Cursor::Backlog);
        r.cost = Some(RowCost {
            readings: 15,
            bound: 525,
            text_bytes: 600,
        });
        f.accept_fetched([row(2, Cursor::Live), r]);
        assert_eq!(
            f.candidates(),
            vec![
                Candidate {
                    created_ms: 1_002,
                    live: true,
                    cost: None
                },
                Candidate {
                    created_ms: 1_003,
                    live: false,
                    cost: Some(RowCost {
                        readings: 15,
                        bound: 525,
                        text_bytes: 600
                    })
                },
            ]
        );
        assert_eq!(f.take_waiting(5).len(), 2, "takes at most what waits");
    }

    #[test]
    fn lost_session_republishes_every_row_of_merged_publishes_regrouped() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit_merged(&mut f, &[1, 2, 3]);
        submit_merged(&mut f, &[4, 5]);
        submit_merged(&mut f, &[6]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        // Partial: the first publish is acknowledged, the second written, the third queued.
        assert_eq!(f.on_puback(1), acked(&[1, 2, 3]));
        assert_eq!(f.session_lost(), 3, "rows 4, 5 and 6 were in flight");
        for id in 1..=3 {
            assert!(
                f.is_tracked(id),
                "acknowledged rows are not handed out again"
            );
        }
        for id in 4..=6 {
            assert!(!f.is_tracked(id));
        }
        // The refetch hands out 4, 5, 6; they are merged differently this time.
        assert_eq!(f.accept_fetched((1..=6).map(|id| row(id, Cursor::Live))), 3);
        submit_merged_taken(&mut f, 1);
        submit_merged_taken(&mut f, 2);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: rows_tag(&[4]),
                republish: true
            }
        );
        assert_eq!(
            f.on_publish(2, now),
            Written::First {
                tag: rows_tag(&[5, 6]),
                republish: true
            }
        );
        assert_eq!(f.on_puback(2), acked(&[5, 6]));
        assert_eq!(f.on_puback(1), acked(&[4]));
        assert_eq!(f.pending_acks(), &[1, 2, 3, 5, 6, 4]);
    }

    /// Merges the next `n` waiting rows into one publish and submits it.
    fn submit_merged_taken(f: &mut InFlight, n: usize) {
        let ids: Vec<i64> = f.take_waiting(n).iter().map(|r| r.row_id).collect();
        f.prepared(merged(&ids));
        let p = f.take_ready().unwrap();
        f.submitted(p.tag());
    }

    #[test]
    fn a_republish_merged_with_fresh_rows_counts_as_republish() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit_merged(&mut f, &[1, 2]);
        f.on_publish(1, now);
        f.on_connected(false);
        // Rows 1 and 2 come back with a new row 3; all three go in one publish.
        f.accept_fetched((1..=3).map(|id| row(id, Cursor::Live)));
        submit_merged_taken(&mut f, 3);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: rows_tag(&[1, 2, 3]),
                republish: true
            }
        );
        // Written once: the marks are gone, a later retransmit is a retransmit.
        f.on_connected(true);
        assert_eq!(
            f.on_publish(1, now),
            Written::Retransmit {
                tag: rows_tag(&[1, 2, 3])
            }
        );
        assert_eq!(f.on_puback(1), acked(&[1, 2, 3]));
    }

    #[test]
    fn resumed_session_retransmits_a_merged_publish_with_its_rows() {
        let now = Instant::now();
        let mut f = InFlight::new(4);
        submit_merged(&mut f, &[7, 8, 9]);
        f.on_publish(3, now);
        f.on_connected(true);
        // The refetch skips rows carried by the publish rumqttc still holds.
        assert_eq!(
            f.accept_fetched([7, 8, 9, 10].map(|id| row(id, Cursor::Live))),
            1
        );
        assert_eq!(
            f.on_publish(3, now),
            Written::Retransmit {
                tag: rows_tag(&[7, 8, 9])
            }
        );
        assert_eq!(f.on_puback(3), acked(&[7, 8, 9]));
    }

    #[test]
    fn collisions_with_merged_publishes() {
        let now = Instant::now();
        let mut f = InFlight::new(3);
        submit_merged(&mut f, &[1, 2]);
        submit(&mut f, &[3]);
        submit_merged(&mut f, &[4, 5, 6]);
        f.on_publish(1, now);
        f.on_publish(2, now);
        f.on_publish(3, now);
        // pkid 2 (event 3) acknowledged out of order; the next publish collides on pkid 1.
        assert_eq!(f.on_puback(2), acked(&[3]));
        submit_merged(&mut f, &[7, 8]);
        assert_eq!(f.on_await_ack(1), Stashed::Waiting);
        assert_eq!(f.free_slots(), 0);
        // The holder is acknowledged; the stashed merged publish takes pkid 1.
        assert_eq!(f.on_puback(1), acked(&[1, 2]));
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: rows_tag(&[7, 8]),
                republish: false
            }
        );
        // A second collision while one is stashed (beyond the slots: only a broker that
        // acknowledges out of order gets rumqttc there) loses the stashed publish entirely.
        submit(&mut f, &[9]);
        assert_eq!(f.on_await_ack(3), Stashed::Waiting);
        submit_merged(&mut f, &[10, 11]);
        assert_eq!(
            f.on_await_ack(1),
            Stashed::Replaced { lost: tag(9) },
            "the first stash is lost"
        );
        assert!(!f.is_tracked(9));
        assert_eq!(f.cursors(), Cursors::default());
        submit(&mut f, &[12]);
        assert_eq!(
            f.on_await_ack(3),
            Stashed::Replaced {
                lost: rows_tag(&[10, 11])
            }
        );
        assert!(!f.is_tracked(10) && !f.is_tracked(11));
        // Refetched and merged anew, they count as republished.
        f.accept_fetched([10, 11].map(|id| row(id, Cursor::Live)));
        let ids: Vec<i64> = f.take_waiting(2).iter().map(|r| r.row_id).collect();
        f.prepared(merged(&ids));
        let p = f.take_ready().unwrap();
        f.submitted(p.tag());
        assert_eq!(f.on_puback(3), acked(&[4, 5, 6]));
        assert_eq!(f.on_publish(3, now), first(12));
        f.on_puback(1);
        assert_eq!(
            f.on_publish(1, now),
            Written::First {
                tag: rows_tag(&[10, 11]),
                republish: true
            }
        );
    }

    #[test]
    fn skipped_and_failed_merged_publishes_untrack_every_row() {
        let mut f = InFlight::new(4);
        f.accept_fetched((1..=4).map(|id| row(id, Cursor::Backlog)));
        for _ in 0..2 {
            let ids: Vec<i64> = f.take_waiting(2).iter().map(|r| r.row_id).collect();
            f.prepared(merged(&ids));
        }
        assert_eq!(f.skip_ready().map(|p| p.row_ids), Some(vec![1, 2]));
        assert!(!f.is_tracked(1) && !f.is_tracked(2));
        assert_eq!(f.cursors().backlog, 4);
        let p = f.take_ready().unwrap();
        f.submit_failed(&p.row_ids);
        assert!(!f.is_tracked(3) && !f.is_tracked(4));
        assert_eq!(f.cursors(), Cursors::default());
        assert_eq!(f.in_flight(), 0);
    }
}
