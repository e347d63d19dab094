//! The bridge's durable state: SQLite in WAL mode with `synchronous=FULL`.
//!
//! # Invariants
//! - A message is acknowledged to the broker only after [`Store::record_batch`] returned
//!   `Ok`: its effect (event row + outbox rows, or reject row, or duplicate count) is
//!   committed and fsynced. A batch is one transaction: all its messages or none.
//! - `events.id` is the primary key: an event id is recorded once, ever (within
//!   retention); a second copy only increments `duplicates`, so it is routed once.
//! - Each target has its own rows in `outbox`; a target's failures change only its rows,
//!   so one target's outage never delays another's deliveries.
//! - An outbox row leaves the outbox only by [`Store::apply`]: deleted on a 2xx
//!   (counted `delivered.<target>`), or moved to `dlq` in the same transaction. A DLQ row
//!   goes back to the outbox only by [`Store::replay`] (attempts reset).
//! - The vehicles' sequence state ([`VehicleSeq`]) is written in the same transaction as
//!   the event that changed it, so a crash never repeats or forgets a gap.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;
use waymark_wire::{CloudEvent, Timestamp};

use crate::gaps::{Gap, Observed, VehicleSeq};
use crate::intake::{self, Accepted, Limits};
use crate::retry::Decision;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be opened or its schema created.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed (disk full, I/O error, corrupt file).
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The telemetry JSON lines file cannot be written.
    #[error("cannot write {path}: {source}")]
    Jsonl {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events(
  id TEXT PRIMARY KEY, vehicle TEXT NOT NULL, seq INTEGER, type TEXT NOT NULL,
  received_ms INTEGER NOT NULL, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(
  id INTEGER PRIMARY KEY, target TEXT NOT NULL, event_id TEXT NOT NULL,
  enqueued_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_ms INTEGER NOT NULL, last_error TEXT, UNIQUE(target, event_id));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(target, next_ms, id);
CREATE TABLE IF NOT EXISTS dlq(
  target TEXT NOT NULL, event_id TEXT NOT NULL, enqueued_ms INTEGER NOT NULL,
  failed_ms INTEGER NOT NULL, attempts INTEGER NOT NULL, reason TEXT NOT NULL,
  PRIMARY KEY(target, event_id));
CREATE TABLE IF NOT EXISTS rejects(
  id INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL, topic TEXT NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL, payload_len INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS vehicles(vehicle TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Type of the alert raised for a gap open past `gaps.alert_after_s`.
pub const GAP_ALERT_TYPE: &str = "waymark.bridge.sequence_gap";
/// Type of the events that carry a decoded telemetry batch to `telemetry.target`.
pub const TELEMETRY_TYPE: &str = "waymark.telemetry.batch";

/// What intake needs besides the messages.
#[derive(Debug, Clone)]
pub struct Routing {
    /// `mqtt.topic_prefix`.
    pub prefix: String,
    /// Size limits.
    pub limits: Limits,
    /// (target name, its type patterns).
    pub targets: Vec<(String, Vec<String>)>,
    /// `telemetry.target`.
    pub telemetry_target: Option<String>,
    /// `telemetry.jsonl_path`.
    pub telemetry_jsonl: Option<PathBuf>,
    /// Bridge id used as the source of its own alerts (`mqtt.client_id`).
    pub bridge_id: String,
}

impl Routing {
    fn targets_for(&self, type_: &str) -> impl Iterator<Item = &str> {
        self.targets.iter().filter_map(move |(name, types)| {
            types
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => type_.starts_with(prefix),
                    None => p == type_,
                })
                .then_some(name.as_str())
        })
    }
}

/// One message as received.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// MQTT topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
}

/// What a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// New events recorded.
    pub accepted: u64,
    /// Events already recorded (same id).
    pub duplicates: u64,
    /// Messages rejected.
    pub rejected: u64,
    /// Telemetry batches taken in.
    pub telemetry: u64,
    /// Targets that got new outbox rows.
    pub targets: Vec<String>,
}

/// An outbox row due for delivery.
#[derive(Debug, Clone)]
pub struct Due {
    /// Event id (the Idempotency-Key).
    pub event_id: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// The body to POST.
    pub body: Vec<u8>,
}

/// Which DLQ rows a `dlq` command acts on; all set filters must match.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only these event ids (empty: any).
    pub ids: Vec<String>,
    /// Only this target.
    pub target: Option<String>,
    /// Failed at or after (UTC ms).
    pub since_ms: Option<Timestamp>,
    /// Failed before (UTC ms).
    pub until_ms: Option<Timestamp>,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Target.
    pub target: String,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: String,
    /// Vehicle.
    pub vehicle: String,
    /// When it was enqueued (UTC ms).
    pub enqueued_ms: Timestamp,
    /// When it was dead-lettered (UTC ms).
    pub failed_ms: Timestamp,
    /// Attempts made.
    pub attempts: u32,
    /// Why.
    pub reason: String,
}

/// Per-target backlog for `status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TargetStatus {
    /// Rows waiting.
    pub backlog: u64,
    /// Age of the oldest waiting row, ms (`None` when empty).
    pub oldest_age_ms: Option<i64>,
    /// Rows waiting whose last attempt failed.
    pub retrying: u64,
    /// Dead letters.
    pub dlq: u64,
}

/// The `status` document.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Per target.
    pub targets: BTreeMap<String, TargetStatus>,
    /// Vehicles with open sequence gaps: vehicle → (gap count, missing sequences).
    pub open_gaps: BTreeMap<String, OpenGaps>,
    /// Persistent counters.
    pub counters: BTreeMap<String, i64>,
    /// Events recorded.
    pub events: u64,
    /// Rejected messages kept.
    pub rejects: u64,
}

/// A vehicle's open gaps, for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct OpenGaps {
    /// Ranges.
    pub gaps: Vec<Gap>,
    /// Missing sequences in them.
    pub missing: u64,
}

/// A kept reject: (received ms, topic, kind, detail, payload length).
pub type RejectRow = (i64, String, String, String, i64);

/// The store.
pub struct Store {
    conn: Connection,
    vehicles: HashMap<String, VehicleSeq>,
    reject_keep_bytes: usize,
}

fn bump(counters: &mut BTreeMap<String, i64>, name: impl Into<String>, by: i64) {
    *counters.entry(name.into()).or_default() += by;
}

impl Store {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// [`StoreError::Open`].
    pub fn open(path: &Path, reject_keep_bytes: usize) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        let mut vehicles = HashMap::new();
        {
            let mut st = conn
                .prepare("SELECT vehicle, state FROM vehicles")
                .map_err(open_err)?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(open_err)?;
            for row in rows {
                let (v, state) = row.map_err(open_err)?;
                // A state that does not parse (never written by this code) restarts the
                // vehicle's baseline rather than refusing to start.
                vehicles.insert(v, serde_json::from_str(&state).unwrap_or_default());
            }
        }
        Ok(Store {
            conn,
            vehicles,
            reject_keep_bytes,
        })
    }

    /// Records a batch of messages in one transaction (see the module invariants); when
    /// `routing.telemetry_jsonl` is set, telemetry readings are appended to it and fsynced
    /// before the commit.
    ///
    /// # Errors
    /// [`StoreError`]; nothing of the batch is recorded then.
    pub fn record_batch(
        &mut self,
        msgs: &[Incoming],
        routing: &Routing,
        now: Timestamp,
    ) -> Result<BatchOutcome, StoreError> {
        let mut out = BatchOutcome::default();
        let mut counters = BTreeMap::new();
        let mut dirty: HashMap<String, VehicleSeq> = HashMap::new();
        let mut jsonl = String::new();
        let tx = self.conn.transaction()?;
        {
            let mut ins_event = tx.prepare_cached(
                "INSERT OR IGNORE INTO events(id, vehicle, seq, type, received_ms, body) VALUES (?1,?2,?3,?4,?5,?6)",
            )?;
            let mut ins_outbox = tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox(target, event_id, enqueued_ms, next_ms) VALUES (?1,?2,?3,?3)",
            )?;
            let mut ins_reject = tx.prepare_cached(
                "INSERT INTO rejects(received_ms, topic, kind, detail, payload_len, payload) VALUES (?1,?2,?3,?4,?5,?6)",
            )?;
            for m in msgs {
                match intake::check(&routing.prefix, &routing.limits, &m.topic, &m.payload) {
                    Err(r) => {
                        let keep = &m.payload[..m.payload.len().min(self.reject_keep_bytes)];
                        ins_reject.execute(params![
                            now,
                            m.topic,
                            r.kind.as_str(),
                            r.detail,
                            m.payload.len() as i64,
                            keep
                        ])?;
                        bump(&mut counters, format!("rejected.{}", r.kind.as_str()), 1);
                        tracing::warn!(topic = %m.topic, kind = r.kind.as_str(), detail = %r.detail, "message rejected");
                        out.rejected += 1;
                    }
                    Ok(Accepted::Event { vehicle, event }) => {
                        let id = event.id.to_string();
                        let seq = event.sequence_number().unwrap_or(0);
                        let added = ins_event.execute(params![
                            id,
                            vehicle,
                            seq as i64,
                            event.type_,
                            now,
                            m.payload
                        ])?;
                        if added == 0 {
                            out.duplicates += 1;
                            bump(&mut counters, "duplicates", 1);
                            continue;
                        }
                        out.accepted += 1;
                        bump(&mut counters, "events", 1);
                        let state = match dirty.get_mut(&vehicle) {
                            Some(s) => s,
                            None => {
                                let s = self.vehicles.get(&vehicle).cloned().unwrap_or_default();
                                dirty.entry(vehicle.clone()).or_insert(s)
                            }
                        };
                        match state.observe(seq, now) {
                            Observed::InOrder => {}
                            Observed::Opened { gap, forgotten } => {
                                bump(&mut counters, "gaps_opened", 1);
                                tracing::info!(%vehicle, first = gap.first, last = gap.last, "sequence gap opened");
                                if forgotten.is_some() {
                                    bump(&mut counters, "gaps_forgotten", 1);
                                }
                            }
                            Observed::Filled { gap, closed } => {
                                bump(&mut counters, "late_arrivals", 1);
                                if closed {
                                    bump(&mut counters, "gaps_closed", 1);
                                    tracing::info!(%vehicle, seq, alerted = gap.alerted, "sequence gap closed");
                                }
                            }
                            Observed::Reused => bump(&mut counters, "sequence_reused", 1),
                        }
                        for target in routing.targets_for(&event.type_) {
                            ins_outbox.execute(params![target, id, now])?;
                            if !out.targets.iter().any(|t| t == target) {
                                out.targets.push(target.to_string());
                            }
                        }
                    }
                    Ok(Accepted::Telemetry { vehicle, readings }) => {
                        out.telemetry += 1;
                        bump(&mut counters, "telemetry_batches", 1);
                        bump(&mut counters, "telemetry_readings", readings.len() as i64);
                        if routing.telemetry_jsonl.is_some() {
                            for r in &readings {
                                let line = serde_json::json!({
                                    "vehicle": vehicle, "signal": r.signal, "value": r.value,
                                    "unit": r.unit, "time": r.time, "source": r.source,
                                });
                                jsonl.push_str(&line.to_string());
                                jsonl.push('\n');
                            }
                        }
                        if let Some(target) = &routing.telemetry_target {
                            let event = serde_json::json!({
                                "specversion": "1.0",
                                "id": Uuid::now_v7().to_string(),
                                "source": CloudEvent::source_for(&vehicle),
                                "type": TELEMETRY_TYPE,
                                "time": waymark_wire::time::format_rfc3339_ms(now),
                                "datacontenttype": "application/json",
                                "data": {"vehicle": vehicle, "readings": readings},
                            });
                            let id = event["id"].as_str().unwrap_or_default().to_string();
                            let body = event.to_string().into_bytes();
                            ins_event.execute(params![
                                id,
                                vehicle,
                                Option::<i64>::None,
                                TELEMETRY_TYPE,
                                now,
                                body
                            ])?;
                            ins_outbox.execute(params![target, id, now])?;
                            if !out.targets.iter().any(|t| t == target) {
                                out.targets.push(target.clone());
                            }
                        }
                    }
                }
            }
            let mut save = tx.prepare_cached(
                "INSERT OR REPLACE INTO vehicles(vehicle, state) VALUES (?1, ?2)",
            )?;
            for (v, s) in &dirty {
                save.execute(params![v, serde_json::to_string(s).unwrap_or_default()])?;
            }
            add_counters(&tx, &counters)?;
        }
        if let Some(path) = &routing.telemetry_jsonl
            && !jsonl.is_empty()
        {
            append_synced(path, jsonl.as_bytes()).map_err(|source| StoreError::Jsonl {
                path: path.clone(),
                source,
            })?;
        }
        tx.commit()?;
        self.vehicles.extend(dirty);
        Ok(out)
    }

    /// Raises an alert event for every gap open past `alert_after_ms` and not alerted yet,
    /// routed like any event of type [`GAP_ALERT_TYPE`]. Returns the targets that got rows.
    ///
    /// # Errors
    /// [`StoreError`]; nothing is marked alerted then.
    pub fn raise_gap_alerts(
        &mut self,
        routing: &Routing,
        now: Timestamp,
        alert_after_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut changed: Vec<(String, VehicleSeq, Vec<Gap>)> = Vec::new();
        for (v, s) in &self.vehicles {
            let mut s = s.clone();
            let due = s.due_alerts(now, alert_after_ms);
            if !due.is_empty() {
                changed.push((v.clone(), s, due));
            }
        }
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let mut targets = Vec::new();
        let mut counters = BTreeMap::new();
        let tx = self.conn.transaction()?;
        for (vehicle, state, due) in &changed {
            for gap in due {
                let id = Uuid::now_v7().to_string();
                let event = serde_json::json!({
                    "specversion": "1.0",
                    "id": id,
                    "source": format!("urn:waymark:bridge:{}", routing.bridge_id),
                    "type": GAP_ALERT_TYPE,
                    "time": waymark_wire::time::format_rfc3339_ms(now),
                    "datacontenttype": "application/json",
                    "subject": vehicle,
                    "data": {
                        "vehicle": vehicle,
                        "first_sequence": gap.first,
                        "last_sequence": gap.last,
                        "missing": gap.last - gap.first + 1,
                        "opened": waymark_wire::time::format_rfc3339_ms(gap.opened_ms),
                    },
                });
                tx.execute(
                    "INSERT INTO events(id, vehicle, seq, type, received_ms, body) VALUES (?1,?2,NULL,?3,?4,?5)",
                    params![id, vehicle, GAP_ALERT_TYPE, now, event.to_string().into_bytes()],
                )?;
                for t in routing.targets_for(GAP_ALERT_TYPE) {
                    tx.execute(
                        "INSERT OR IGNORE INTO outbox(target, event_id, enqueued_ms, next_ms) VALUES (?1,?2,?3,?3)",
                        params![t, id, now],
                    )?;
                    if !targets.iter().any(|x| x == t) {
                        targets.push(t.to_string());
                    }
                }
                bump(&mut counters, "gap_alerts", 1);
                tracing::warn!(%vehicle, first = gap.first, last = gap.last, "sequence gap alert raised");
            }
            tx.execute(
                "INSERT OR REPLACE INTO vehicles(vehicle, state) VALUES (?1, ?2)",
                params![vehicle, serde_json::to_string(state).unwrap_or_default()],
            )?;
        }
        add_counters(&tx, &counters)?;
        tx.commit()?;
        for (v, s, _) in changed {
            self.vehicles.insert(v, s);
        }
        Ok(targets)
    }

    /// Up to `limit` rows of `target` due at `now`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn due(&self, target: &str, now: Timestamp, limit: usize) -> Result<Vec<Due>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT o.event_id, o.attempts, e.body FROM outbox o JOIN events e ON e.id = o.event_id
             WHERE o.target = ?1 AND o.next_ms <= ?2 ORDER BY o.next_ms, o.id LIMIT ?3",
        )?;
        let rows = st.query_map(params![target, now, limit as i64], |r| {
            Ok(Due {
                event_id: r.get(0)?,
                attempts: r.get(1)?,
                body: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next row of `target` is due, if any.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn next_due(&self, target: &str) -> Result<Option<Timestamp>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT min(next_ms) FROM outbox WHERE target = ?1")?
            .query_row([target], |r| r.get(0))?)
    }

    /// Applies delivery decisions for `target`: `(event id, attempt number, decision)`.
    ///
    /// # Errors
    /// [`StoreError::Sql`]; nothing is applied then (the rows are attempted again).
    pub fn apply(
        &mut self,
        target: &str,
        results: &[(String, u32, Decision)],
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let mut counters = BTreeMap::new();
        let tx = self.conn.transaction()?;
        {
            let mut del =
                tx.prepare_cached("DELETE FROM outbox WHERE target = ?1 AND event_id = ?2")?;
            let mut retry = tx.prepare_cached(
                "UPDATE outbox SET attempts = ?3, next_ms = ?4, last_error = ?5 WHERE target = ?1 AND event_id = ?2",
            )?;
            let mut dead = tx.prepare_cached(
                "INSERT OR REPLACE INTO dlq(target, event_id, enqueued_ms, failed_ms, attempts, reason)
                 SELECT target, event_id, enqueued_ms, ?3, ?4, ?5 FROM outbox WHERE target = ?1 AND event_id = ?2",
            )?;
            for (id, attempt, d) in results {
                match d {
                    Decision::Delivered => {
                        del.execute(params![target, id])?;
                        bump(&mut counters, format!("delivered.{target}"), 1);
                    }
                    Decision::Retry { at, reason } => {
                        retry.execute(params![target, id, attempt, at, reason])?;
                        bump(&mut counters, format!("retries.{target}"), 1);
                    }
                    Decision::DeadLetter { reason } => {
                        dead.execute(params![target, id, now, attempt, reason])?;
                        del.execute(params![target, id])?;
                        bump(&mut counters, format!("dead_lettered.{target}"), 1);
                        tracing::warn!(target, event_id = %id, %reason, "event dead-lettered");
                    }
                }
            }
            add_counters(&tx, &counters)?;
        }
        tx.commit()?;
        Ok(())
    }

    fn dlq_where(f: &DlqFilter) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut clauses = vec!["1".to_string()];
        let mut args: Vec<Value> = Vec::new();
        if !f.ids.is_empty() {
            let marks: Vec<String> = f
                .ids
                .iter()
                .map(|id| {
                    args.push(Value::Text(id.clone()));
                    format!("?{}", args.len())
                })
                .collect();
            clauses.push(format!("d.event_id IN ({})", marks.join(",")));
        }
        if let Some(t) = &f.target {
            args.push(Value::Text(t.clone()));
            clauses.push(format!("d.target = ?{}", args.len()));
        }
        if let Some(s) = f.since_ms {
            args.push(Value::Integer(s));
            clauses.push(format!("d.failed_ms >= ?{}", args.len()));
        }
        if let Some(u) = f.until_ms {
            args.push(Value::Integer(u));
            clauses.push(format!("d.failed_ms < ?{}", args.len()));
        }
        (clauses.join(" AND "), args)
    }

    /// Dead letters matching `f`, oldest failure first.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn dlq_list(&self, f: &DlqFilter) -> Result<Vec<DeadLetter>, StoreError> {
        let (w, args) = Self::dlq_where(f);
        let sql = format!(
            "SELECT d.target, d.event_id, e.type, e.vehicle, d.enqueued_ms, d.failed_ms, d.attempts, d.reason
             FROM dlq d JOIN events e ON e.id = d.event_id WHERE {w} ORDER BY d.failed_ms, d.event_id"
        );
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
            Ok(DeadLetter {
                target: r.get(0)?,
                event_id: r.get(1)?,
                event_type: r.get(2)?,
                vehicle: r.get(3)?,
                enqueued_ms: r.get(4)?,
                failed_ms: r.get(5)?,
                attempts: r.get(6)?,
                reason: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The stored body of an event.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn event_body(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
            .optional()?)
    }

    /// Moves the dead letters matching `f` back to their outboxes (attempts reset, due
    /// now). Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Sql`]; nothing is moved then.
    pub fn replay(&mut self, f: &DlqFilter, now: Timestamp) -> Result<usize, StoreError> {
        let (w, args) = Self::dlq_where(f);
        let tx = self.conn.transaction()?;
        let n_args = args.len();
        let mut all = args.clone();
        all.push(rusqlite::types::Value::Integer(now));
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO outbox(target, event_id, enqueued_ms, next_ms)
                 SELECT d.target, d.event_id, d.enqueued_ms, ?{} FROM dlq d WHERE {w}",
                n_args + 1
            ),
            rusqlite::params_from_iter(all),
        )?;
        let n = tx.execute(
            &format!("DELETE FROM dlq AS d WHERE {w}"),
            rusqlite::params_from_iter(args),
        )?;
        let mut counters = BTreeMap::new();
        bump(&mut counters, "replayed", n as i64);
        add_counters(&tx, &counters)?;
        tx.commit()?;
        Ok(n)
    }

    /// The `status` document at `now`.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn status(&self, target_names: &[String], now: Timestamp) -> Result<Status, StoreError> {
        let mut targets = BTreeMap::new();
        for name in target_names {
            let (backlog, oldest, retrying): (i64, Option<i64>, i64) = self.conn.query_row(
                "SELECT count(*), min(enqueued_ms), coalesce(sum(attempts > 0), 0) FROM outbox WHERE target = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let dlq: i64 =
                self.conn
                    .query_row("SELECT count(*) FROM dlq WHERE target = ?1", [name], |r| {
                        r.get(0)
                    })?;
            targets.insert(
                name.clone(),
                TargetStatus {
                    backlog: backlog as u64,
                    oldest_age_ms: oldest.map(|o| now.saturating_sub(o).max(0)),
                    retrying: retrying as u64,
                    dlq: dlq as u64,
                },
            );
        }
        let mut open_gaps = BTreeMap::new();
        for (v, s) in &self.vehicles {
            if !s.gaps.is_empty() {
                open_gaps.insert(
                    v.clone(),
                    OpenGaps {
                        gaps: s.gaps.clone(),
                        missing: s.missing(),
                    },
                );
            }
        }
        let mut counters = BTreeMap::new();
        let mut st = self.conn.prepare("SELECT name, value FROM counters")?;
        for row in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (k, v) = row?;
            counters.insert(k, v);
        }
        let events: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
        let rejects: i64 = self
            .conn
            .query_row("SELECT count(*) FROM rejects", [], |r| r.get(0))?;
        Ok(Status {
            targets,
            open_gaps,
            counters,
            events: events as u64,
            rejects: rejects as u64,
        })
    }

    /// Rejected messages, newest first.
    ///
    /// # Errors
    /// [`StoreError::Sql`].
    pub fn rejects(&self, limit: usize) -> Result<Vec<RejectRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT received_ms, topic, kind, detail, payload_len FROM rejects ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn add_counters(
    tx: &rusqlite::Transaction<'_>,
    counters: &BTreeMap<String, i64>,
) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = value + ?2",
    )?;
    for (k, v) in counters {
        st.execute(params![k, v])?;
    }
    Ok(())
}

fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}
