//! The device protocol, sans-IO: what to answer, store and report for each decoded frame,
//! and when the device has gone quiet. The task in `mod.rs` only moves bytes and futures.
//!
//! Invariants:
//! - **Ack after commit.** A `Pod` becomes [`Output::Store`]; its `Ack` is produced only by
//!   [`Session::on_stored`] with `Ok`. A store error produces `Nack(NotStored)`, so the device
//!   retries later.
//! - **One event per (device id, device_seq), durably.** The event id is derived from the
//!   pair ([`event_id`]), so the store's `dedup` table (which survives restarts and power
//!   cuts) answers a retry with the original acceptance and stores nothing. A retry that
//!   arrives while the first append is still in flight is not submitted twice.
//! - **Nothing before Hello.** Without the device id there is no dedup key: acknowledged
//!   messages before the `Hello` are answered `Nack(NotStored)` (retry later), and the gateway
//!   sends `TimeSync` when it opens the port, which a device answers with `Hello`.
//! - **Bounded.** Frames beyond `max_frames_per_s` are dropped and counted (the device
//!   retries what matters); at most [`MAX_IN_FLIGHT`] appends are pending (more get
//!   `Nack(RateLimited)`); the reading dedup window and the fault table have fixed sizes.
//! - Probe faults are never readings (see `sources::cargo`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use firmware_proto::{DeviceKind, Error as FrameError, Message, NackReason, PodOutcome};
use firmware_proto::{FirmwareVersion, PROTOCOL_VERSION, ProbeStatus};
use serde_json::json;
use uuid::Uuid;
use waymark_wire::time::EARLIEST_VALID_MS;
use waymark_wire::{Reading, Timestamp, Value};

use crate::health::HealthState;
use crate::rate::TokenBucket;
use crate::sources::cargo::{
    CELSIUS, ProbeConfig, ProbeFault, classify_millicelsius, door_signal, probe_id_from_rom,
    temperature_signal,
};
use crate::store::{Lane, NewEvent};

/// Event appends that may be pending per device.
pub const MAX_IN_FLIGHT: usize = 16;
/// Sequence numbers of recently accepted readings remembered to drop retries.
const READING_DEDUP_WINDOW: usize = 64;
/// Probes whose fault state is tracked per device.
const MAX_TRACKED_PROBES: usize = 64;

/// Settings of one session (from the `[[sources]]` entry).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Source name, stamped on readings and events.
    pub source: String,
    /// No frame for this long: health degraded.
    pub heartbeat_timeout: Duration,
    /// Sent to the device in `Config`.
    pub heartbeat_interval_s: u16,
    /// Sent to the device in `Config`.
    pub temperature_interval_s: u16,
    /// How often `TimeSync` is repeated.
    pub time_sync_interval: Duration,
    /// Frame rate limit.
    pub max_frames_per_s: u32,
    /// Probe → compartment map.
    pub probes: Vec<ProbeConfig>,
}

/// What the session wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Write this frame to the device.
    Send(Message),
    /// Hand this reading to the pipeline.
    Reading(Reading),
    /// Commit this event, then call [`Session::on_stored`] with `device_seq`.
    Store {
        /// The message's sequence number.
        device_seq: u32,
        /// The event.
        event: NewEvent,
    },
}

/// What the session counted since the last [`Session::take_tally`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Frames that failed to decode (COBS, CRC, length, version, body, oversized).
    pub invalid: u64,
    /// Frames dropped by the rate limit.
    pub dropped: u64,
    /// Probe readings that were faults.
    pub probe_faults: u64,
    /// Retries of stored readings dropped.
    pub duplicates: u64,
}

/// Identity from the device's `Hello`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `Hello.device_id`.
    pub id: u64,
    /// `Hello.kind`.
    pub kind: DeviceKind,
    /// `Hello.firmware_version`.
    pub firmware: FirmwareVersion,
}

/// The protocol state of one open serial link.
#[derive(Debug)]
pub struct Session {
    s: Settings,
    device: Option<DeviceInfo>,
    last_heard: Instant,
    timed_out: bool,
    next_time_sync: Instant,
    frames: TokenBucket,
    in_flight: Vec<u32>,
    recent_readings: VecDeque<u32>,
    faults: HashMap<String, ProbeFault>,
    version_error: Option<String>,
    last_error: Option<String>,
    tally: Tally,
}

impl Session {
    /// A session for a port opened at `now`; returns it with the frames to send first
    /// (`TimeSync`, which asks a running device for its `Hello`).
    pub fn open(s: Settings, now: Instant, wall_ms: Timestamp) -> (Self, Vec<Output>) {
        let frames = TokenBucket::new(f64::from(s.max_frames_per_s.max(1)), now);
        let session = Self {
            next_time_sync: now + s.time_sync_interval,
            s,
            device: None,
            last_heard: now,
            timed_out: false,
            frames,
            in_flight: Vec::new(),
            recent_readings: VecDeque::new(),
            faults: HashMap::new(),
            version_error: None,
            last_error: None,
            tally: Tally::default(),
        };
        (session, vec![time_sync(wall_ms)])
    }

    /// The device, once it said `Hello`.
    pub fn device(&self) -> Option<DeviceInfo> {
        self.device
    }

    /// Counts since the last call, then zero.
    pub fn take_tally(&mut self) -> Tally {
        std::mem::take(&mut self.tally)
    }

    /// When [`Session::on_tick`] has something to do next.
    pub fn deadline(&self) -> Instant {
        if self.timed_out {
            self.next_time_sync
        } else {
            self.next_time_sync
                .min(self.last_heard + self.s.heartbeat_timeout)
        }
    }

    /// Periodic work: notes a heartbeat timeout (see [`Session::health`]), repeats
    /// `TimeSync`.
    pub fn on_tick(&mut self, now: Instant, wall_ms: Timestamp, out: &mut Vec<Output>) {
        if now >= self.last_heard + self.s.heartbeat_timeout {
            self.timed_out = true;
        }
        if now >= self.next_time_sync {
            self.next_time_sync = now + self.s.time_sync_interval;
            out.push(time_sync(wall_ms));
        }
    }

    /// Health now: down on a protocol version mismatch, degraded while the device is silent
    /// beyond the heartbeat timeout, before its `Hello`, or while a probe reports a fault.
    pub fn health(&self, now: Instant) -> (HealthState, Option<String>) {
        if let Some(e) = &self.version_error {
            return (HealthState::Down, Some(e.clone()));
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.s.heartbeat_timeout {
            return (
                HealthState::Degraded,
                Some(format!(
                    "heartbeat timeout: no valid frame for {} s",
                    silent.as_secs()
                )),
            );
        }
        if self.device.is_none() {
            return (
                HealthState::Degraded,
                Some("waiting for the device's Hello".into()),
            );
        }
        if !self.faults.is_empty() {
            let mut list: Vec<_> = self
                .faults
                .iter()
                .map(|(id, f)| format!("{id} {}", f.as_str()))
                .collect();
            list.sort();
            return (
                HealthState::Degraded,
                Some(format!("probe fault: {}", list.join(", "))),
            );
        }
        (HealthState::Ok, None)
    }

    /// The last decoding problem, for logs.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// One decoder result at `now`.
    pub fn on_frame(
        &mut self,
        now: Instant,
        wall_ms: Timestamp,
        frame: Result<Message, FrameError>,
        out: &mut Vec<Output>,
    ) {
        if self.frames.try_take(now, 1.0).is_err() {
            self.tally.dropped += 1;
            return;
        }
        let msg = match frame {
            Ok(msg) => msg,
            Err(FrameError::Version { version, .. }) => {
                self.tally.invalid += 1;
                self.version_error = Some(format!(
                    "protocol version mismatch: the device sends version {version}, \
                     this gateway speaks version {PROTOCOL_VERSION}; update the device's firmware"
                ));
                out.push(nack(0, NackReason::VersionMismatch));
                return;
            }
            Err(e) => {
                self.tally.invalid += 1;
                self.last_error = Some(e.to_string());
                return;
            }
        };
        self.last_heard = now;
        self.timed_out = false;
        match msg {
            Message::Hello {
                device_id,
                kind,
                firmware_version,
                protocol_version,
                ..
            } => {
                if protocol_version < PROTOCOL_VERSION {
                    self.version_error = Some(format!(
                        "protocol version mismatch: device {device_id:016x} speaks up to version \
                         {protocol_version}, this gateway needs version {PROTOCOL_VERSION}; \
                         update the device's firmware"
                    ));
                    out.push(nack(0, NackReason::VersionMismatch));
                    return;
                }
                self.version_error = None;
                self.device = Some(DeviceInfo {
                    id: device_id,
                    kind,
                    firmware: firmware_version,
                });
                out.push(time_sync(wall_ms));
                out.push(
                    Message::Config {
                        heartbeat_interval_s: self.s.heartbeat_interval_s,
                        temperature_interval_s: self.s.temperature_interval_s,
                    }
                    .into_send(),
                );
            }
            Message::Heartbeat { .. } => {}
            Message::Pod {
                device_seq,
                outcome,
                stop_ref,
                order_ref,
                recipient,
                evidence,
            } => {
                let Some(device) = self.device else {
                    out.push(nack(device_seq, NackReason::NotStored));
                    return;
                };
                if self.in_flight.contains(&device_seq) {
                    return;
                }
                if self.in_flight.len() >= MAX_IN_FLIGHT {
                    out.push(nack(device_seq, NackReason::RateLimited));
                    return;
                }
                self.in_flight.push(device_seq);
                let data = json!({
                    "device_id": format!("{:016x}", device.id),
                    "device_kind": kind_name(device.kind),
                    "firmware": format!(
                        "{}.{}.{}",
                        device.firmware.major, device.firmware.minor, device.firmware.patch
                    ),
                    "device_seq": device_seq,
                    "outcome": outcome_name(outcome),
                    "stop_ref": stop_ref.as_ref().map(|s| s.as_str()),
                    "order_ref": order_ref.as_ref().map(|s| s.as_str()),
                    "recipient": recipient.as_ref().map(|s| s.as_str()),
                    "evidence_sha256": evidence.map(|e| hex(&e)),
                    "received_ms": wall_ms,
                    "source": self.s.source,
                });
                out.push(Output::Store {
                    device_seq,
                    event: NewEvent {
                        id: event_id(device.id, device_seq),
                        type_: format!("waymark.pod.{}", outcome_name(outcome)),
                        time_ms: wall_ms,
                        lane: Lane::Alert,
                        subject: stop_ref.map(|s| s.as_str().to_string()),
                        data,
                    },
                });
            }
            Message::Temperature {
                device_seq,
                probe_id,
                centi_celsius,
                status,
            } => {
                if !self.accept_reading(device_seq, out) {
                    return;
                }
                let id = probe_id_from_rom(probe_id);
                match probe_fault(status, centi_celsius) {
                    None => {
                        self.faults.remove(&id);
                        out.push(Output::Reading(Reading {
                            signal: temperature_signal(&self.s.probes, &id),
                            value: Value::Num(f64::from(centi_celsius) / 100.0),
                            unit: CELSIUS.into(),
                            time: wall_ms,
                            source: self.s.source.clone(),
                        }));
                    }
                    Some(fault) => {
                        self.tally.probe_faults += 1;
                        if self.faults.len() < MAX_TRACKED_PROBES || self.faults.contains_key(&id) {
                            self.faults.insert(id, fault);
                        }
                    }
                }
                out.push(Message::Ack { device_seq }.into_send());
            }
            Message::Door {
                device_seq,
                door_id,
                open,
            } => {
                if !self.accept_reading(device_seq, out) {
                    return;
                }
                out.push(Output::Reading(Reading {
                    signal: door_signal(door_id),
                    value: Value::Bool(open),
                    unit: String::new(),
                    time: wall_ms,
                    source: self.s.source.clone(),
                }));
                out.push(Message::Ack { device_seq }.into_send());
            }
            Message::Ack { .. }
            | Message::Nack { .. }
            | Message::TimeSync { .. }
            | Message::Config { .. } => {
                self.tally.invalid += 1;
                self.last_error = Some("the device sent a gateway-to-device message".into());
                out.push(nack(msg.device_seq().unwrap_or(0), NackReason::Malformed));
            }
        }
    }

    /// The append of the event for `device_seq` resolved: `Ok` (committed, or a duplicate of a
    /// committed one) acks, an error nacks with `NotStored`.
    pub fn on_stored(&mut self, device_seq: u32, stored: bool, out: &mut Vec<Output>) {
        self.in_flight.retain(|s| *s != device_seq);
        out.push(if stored {
            Message::Ack { device_seq }.into_send()
        } else {
            nack(device_seq, NackReason::NotStored)
        });
    }

    /// Readings (temperature, door) need the device id too; a retry of one already handed to
    /// the pipeline is acknowledged again without a second reading.
    fn accept_reading(&mut self, device_seq: u32, out: &mut Vec<Output>) -> bool {
        if self.device.is_none() {
            out.push(nack(device_seq, NackReason::NotStored));
            return false;
        }
        if self.recent_readings.contains(&device_seq) {
            self.tally.duplicates += 1;
            out.push(Message::Ack { device_seq }.into_send());
            return false;
        }
        if self.recent_readings.len() == READING_DEDUP_WINDOW {
            self.recent_readings.pop_front();
        }
        self.recent_readings.push_back(device_seq);
        true
    }
}

trait IntoSend {
    fn into_send(self) -> Output;
}

impl IntoSend for Message {
    fn into_send(self) -> Output {
        Output::Send(self)
    }
}

/// `unix_ms = 0` while the gateway's own time is not known yet (`wall_ms` is then a monotonic
/// stamp, see [`crate::clock`]): the device keeps its time and still answers with `Hello`.
fn time_sync(wall_ms: Timestamp) -> Output {
    let unix_ms = if wall_ms >= EARLIEST_VALID_MS {
        u64::try_from(wall_ms).unwrap_or(0)
    } else {
        0
    };
    Output::Send(Message::TimeSync { unix_ms })
}

fn nack(device_seq: u32, reason: NackReason) -> Output {
    Output::Send(Message::Nack { device_seq, reason })
}

fn probe_fault(status: ProbeStatus, centi: i32) -> Option<ProbeFault> {
    match status {
        // The same checks as for 1-Wire: 85.00 °C and -127 °C are DS18B20 artefacts even when
        // the device's firmware did not catch them.
        ProbeStatus::Ok => classify_millicelsius(i64::from(centi) * 10).err(),
        ProbeStatus::CrcError => Some(ProbeFault::CrcError),
        ProbeStatus::PowerOnReset => Some(ProbeFault::PowerOnReset),
        ProbeStatus::Disconnected => Some(ProbeFault::Disconnected),
        ProbeStatus::OutOfRange => Some(ProbeFault::OutOfRange),
    }
}

/// The event id of device message (`device_id`, `device_seq`): a UUIDv8 whose 122 free bits
/// hold a fixed 26-bit tag, the 64-bit device id and the 32-bit sequence number.
///
/// Why derived and not a fresh UUIDv7: the store deduplicates by event id in its `dedup`
/// table, committed in the same transaction as the event, so a derived id makes the
/// (device, sequence) dedup as durable as the event itself with no schema change. After a
/// power cut between the commit and the `Ack`, the device's retry maps to the same id and the
/// store answers `duplicate`; the gateway acks and exactly one event exists. The encoding is
/// injective (no hash, no collisions); it needs device ids to be unique and a device's
/// `device_seq` not to repeat within `store.dedup_retention_s` (docs/devices.md).
pub fn event_id(device_id: u64, device_seq: u32) -> Uuid {
    /// 26-bit tag ("WD" and "E" in ASCII, 0x57 0x44 0x45, over a 2-bit 0b10): marks ids made
    /// here.
    const TAG: u128 = 0x0257_4445;
    const _: () = assert!(TAG < 1 << 26);
    let payload: u128 = (TAG << 96) | (u128::from(device_id) << 32) | u128::from(device_seq);
    // Spread the 122 payload bits around the version (bits 76..80) and variant (bits 62..64).
    let high48 = (payload >> 74) & ((1 << 48) - 1);
    let mid12 = (payload >> 62) & 0xfff;
    let low62 = payload & ((1 << 62) - 1);
    Uuid::from_u128((high48 << 80) | (0x8 << 76) | (mid12 << 64) | (0b10 << 62) | low62)
}

fn outcome_name(o: PodOutcome) -> &'static str {
    match o {
        PodOutcome::Delivered => "delivered",
        PodOutcome::Refused => "refused",
        PodOutcome::Partial => "partial",
        PodOutcome::Damaged => "damaged",
        PodOutcome::Attempted => "attempted",
    }
}

fn kind_name(k: DeviceKind) -> String {
    match k {
        DeviceKind::PodButton => "pod_button".into(),
        DeviceKind::Scanner => "scanner".into(),
        DeviceKind::SignaturePad => "signature_pad".into(),
        DeviceKind::TemperatureProbe => "temperature_probe".into(),
        DeviceKind::DoorSensor => "door_sensor".into(),
        DeviceKind::Other(n) => format!("other_{n}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").ok();
        s
    })
}

#[cfg(test)]
mod tests;
