//! Waymark wire formats: the contract between a vehicle's `waymark` gateway and the cloud
//! `waymark-bridge`.
//!
//! Everything a broker carries is defined here, in one place both sides compile:
//!
//! - [`Reading`]: one signal value at one instant, the unit of telemetry.
//! - [`telemetry`]: the compact, versioned, compressed binary batch of readings
//!   (documented byte by byte in `docs/protocol.md`, pinned by golden tests).
//! - [`event`]: CloudEvents 1.0 JSON documents for milestones, POD and alerts.
//! - [`topics`]: the MQTT topic tree.
//!
//! Changing any of these is a change of public interface: bump the relevant version
//! (`telemetry::FORMAT_VERSION`, `topics::TOPIC_VERSION`) and say so in `CHANGELOG.md`.

pub mod event;
pub mod reading;
pub mod telemetry;
pub mod time;
pub mod topics;

pub use event::CloudEvent;
pub use reading::{Reading, Timestamp, Value};
