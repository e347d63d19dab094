//! The messages exchanged between an attached device and the gateway.
//!
//! Every type here is part of the wire format (see the crate README, "Wire format"): the order
//! of enum variants and of struct fields *is* the encoding, because postcard is not
//! self-describing. Append variants and fields only; anything else needs a new
//! [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).

use serde::{Deserialize, Serialize};

/// Capacity, in UTF-8 bytes, of [`Message::Pod`] `stop_ref` and `order_ref`.
pub const REF_CAPACITY: usize = 32;
/// Capacity, in UTF-8 bytes, of [`Message::Pod`] `recipient`.
pub const RECIPIENT_CAPACITY: usize = 48;

/// A stop or order reference from the trip manifest, at most [`REF_CAPACITY`] UTF-8 bytes.
pub type Ref = heapless::String<REF_CAPACITY>;
/// A recipient's name as typed or signed for, at most [`RECIPIENT_CAPACITY`] UTF-8 bytes.
pub type Recipient = heapless::String<RECIPIENT_CAPACITY>;

/// One message, in either direction.
///
/// Device → gateway: [`Hello`](Message::Hello), [`Pod`](Message::Pod),
/// [`Temperature`](Message::Temperature), [`Door`](Message::Door),
/// [`Heartbeat`](Message::Heartbeat). Gateway → device: [`Ack`](Message::Ack),
/// [`Nack`](Message::Nack), [`TimeSync`](Message::TimeSync), [`Config`](Message::Config).
///
/// Messages that carry a `device_seq` are retried by the device until the gateway answers
/// with an [`Ack`](Message::Ack) (sent only once the message is durably stored) or a
/// [`Nack`](Message::Nack) for the same `device_seq`.
///
/// The variant order is the wire tag (0 = `Hello` … 8 = `Config`); never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Message {
    /// Device → gateway, first message after power-up or link loss. The gateway answers with
    /// [`TimeSync`](Message::TimeSync) and [`Config`](Message::Config).
    Hello {
        /// Unique, stable device identity (e.g. from the MCU's unique ID or a 1-Wire ROM).
        device_id: u64,
        /// What the device is, so the gateway knows which readings and events to expect.
        kind: DeviceKind,
        /// Firmware running on the device, for the fleet inventory.
        firmware_version: FirmwareVersion,
        /// Highest protocol version the device speaks; the frame itself carries the version
        /// it was encoded with.
        protocol_version: u8,
        /// Optional features the device implements.
        capabilities: Capabilities,
    },
    /// Device → gateway: a proof-of-delivery event captured at a stop. Acknowledged.
    Pod {
        /// Per-device sequence number; the gateway acknowledges it and deduplicates retries.
        device_seq: u32,
        /// What happened at the stop.
        outcome: PodOutcome,
        /// Stop reference from the trip manifest, if the device knows it (scanned or selected).
        stop_ref: Option<Ref>,
        /// Order or shipment reference, if scanned.
        order_ref: Option<Ref>,
        /// Who received the goods, if captured.
        recipient: Option<Recipient>,
        /// SHA-256 of the signature or photo evidence kept on the device, if any.
        evidence: Option<[u8; 32]>,
    },
    /// Device → gateway: one probe reading. Acknowledged.
    Temperature {
        /// Per-device sequence number; the gateway acknowledges it.
        device_seq: u32,
        /// 64-bit probe ROM code (1-Wire style: family, serial, CRC), unique per probe.
        probe_id: u64,
        /// Temperature in hundredths of a degree Celsius; meaningful only when `status` is
        /// [`ProbeStatus::Ok`].
        centi_celsius: i32,
        /// Whether the reading is valid, and why not.
        status: ProbeStatus,
    },
    /// Device → gateway: a door sensor changed state. Acknowledged.
    Door {
        /// Per-device sequence number; the gateway acknowledges it.
        device_seq: u32,
        /// Which door on this sensor (0 for a single-door sensor).
        door_id: u8,
        /// `true` when the door is now open.
        open: bool,
    },
    /// Device → gateway: liveness, sent every `heartbeat_interval_s`. Not acknowledged.
    Heartbeat {
        /// Seconds since the device booted; a decrease reveals a reboot.
        uptime_s: u32,
        /// Messages the device holds that are not yet acknowledged (a growing number means the
        /// gateway is not storing them).
        pending: u16,
    },
    /// Gateway → device: the message with `device_seq` is durably stored; stop retrying it.
    Ack {
        /// The acknowledged message's sequence number.
        device_seq: u32,
    },
    /// Gateway → device: the message with `device_seq` was not accepted.
    Nack {
        /// The refused message's sequence number (0 when the frame could not be decoded).
        device_seq: u32,
        /// Why, and so whether retrying can help.
        reason: NackReason,
    },
    /// Gateway → device: the gateway's GNSS-disciplined wall clock.
    TimeSync {
        /// Milliseconds since the Unix epoch, UTC; 0 while the gateway's own time is not
        /// known yet (after a cold boot without GNSS): keep the device's time.
        unix_ms: u64,
    },
    /// Gateway → device: reporting intervals.
    Config {
        /// Seconds between [`Heartbeat`](Message::Heartbeat)s; 0 disables them.
        heartbeat_interval_s: u16,
        /// Seconds between [`Temperature`](Message::Temperature) readings per probe; 0
        /// disables periodic readings.
        temperature_interval_s: u16,
    },
}

impl Message {
    /// The sequence number of a device message that expects an [`Ack`](Message::Ack) or
    /// [`Nack`](Message::Nack); `None` for every other message.
    #[must_use]
    pub fn device_seq(&self) -> Option<u32> {
        match self {
            Message::Pod { device_seq, .. }
            | Message::Temperature { device_seq, .. }
            | Message::Door { device_seq, .. } => Some(*device_seq),
            Message::Hello { .. }
            | Message::Heartbeat { .. }
            | Message::Ack { .. }
            | Message::Nack { .. }
            | Message::TimeSync { .. }
            | Message::Config { .. } => None,
        }
    }

    /// `true` for messages a device sends to the gateway, `false` for the gateway's.
    #[must_use]
    pub fn is_from_device(&self) -> bool {
        matches!(
            self,
            Message::Hello { .. }
                | Message::Pod { .. }
                | Message::Temperature { .. }
                | Message::Door { .. }
                | Message::Heartbeat { .. }
        )
    }
}

/// What kind of device sent a [`Message::Hello`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeviceKind {
    /// A proof-of-delivery button box (delivered / refused / ...).
    PodButton,
    /// A barcode or RFID scanner.
    Scanner,
    /// A signature pad; its evidence is a signature hash.
    SignaturePad,
    /// A temperature logger with one or more probes.
    TemperatureProbe,
    /// A cargo door sensor.
    DoorSensor,
    /// A kind this protocol version has no name for; the code is vendor-assigned.
    Other(u8),
}

/// Firmware version of a device, semantic-versioning style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FirmwareVersion {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions.
    pub minor: u8,
    /// Fixes.
    pub patch: u16,
}

/// The outcome recorded by a [`Message::Pod`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PodOutcome {
    /// Everything delivered.
    Delivered,
    /// The recipient refused the goods.
    Refused,
    /// Part of the goods delivered.
    Partial,
    /// Delivered, with damage noted.
    Damaged,
    /// Nobody there; delivery attempted.
    Attempted,
}

/// Validity of a [`Message::Temperature`] reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProbeStatus {
    /// The reading is valid.
    Ok,
    /// The probe's scratchpad CRC did not match; the reading is garbage.
    CrcError,
    /// The probe returned its power-on value (85 °C on a DS18B20) without converting.
    PowerOnReset,
    /// The probe did not answer.
    Disconnected,
    /// The value is outside the probe's rated range.
    OutOfRange,
}

/// Why the gateway answered [`Message::Nack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NackReason {
    /// The frame or message was invalid; resending the same bytes will not help.
    Malformed,
    /// The frame's protocol version is not one the gateway speaks.
    VersionMismatch,
    /// The gateway could not store the message (e.g. disk trouble); retry later.
    NotStored,
    /// The device sends faster than allowed; retry later.
    RateLimited,
    /// A reason this protocol version has no name for.
    Other(u8),
}

/// Optional features of a device, as bit flags in a `u32` (unknown bits are kept, so a newer
/// device's flags survive an older gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct Capabilities(pub u32);

impl Capabilities {
    /// No optional features.
    pub const NONE: Self = Self(0);
    /// Sends [`Message::Pod`].
    pub const POD: Self = Self(1 << 0);
    /// Scans order references into [`Message::Pod`] `order_ref`.
    pub const SCANNER: Self = Self(1 << 1);
    /// Captures signatures (`evidence` in [`Message::Pod`]).
    pub const SIGNATURE: Self = Self(1 << 2);
    /// Sends [`Message::Temperature`].
    pub const TEMPERATURE: Self = Self(1 << 3);
    /// Sends [`Message::Door`].
    pub const DOOR: Self = Self(1 << 4);
    /// Applies [`Message::TimeSync`].
    pub const TIME_SYNC: Self = Self(1 << 5);
    /// Applies [`Message::Config`].
    pub const CONFIG: Self = Self(1 << 6);
    /// Keeps unacknowledged messages across its own power loss.
    pub const PERSISTENT_QUEUE: Self = Self(1 << 7);

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// `true` if every flag in `other` is set in `self`.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl core::ops::BitOr for Capabilities {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl core::ops::BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}
