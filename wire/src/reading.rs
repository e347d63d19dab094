//! The unit of telemetry: one signal, one value, its unit and the time the source took it.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, UTC.
///
/// A plain integer rather than a time library type: it is what travels on the wire, it is
/// `Copy`, and sans-IO code can do arithmetic on it without conversions.
pub type Timestamp = i64;

/// The value of a reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number: speeds, temperatures, coordinates, counters.
    Num(f64),
    /// A state: ignition, door open, button pressed.
    Bool(bool),
    /// Free text: a gear name, a firmware string. Kept short by the sources.
    Text(String),
}

impl Value {
    /// The numeric view used by deadband filtering: booleans are 0 or 1, text has none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(v) => Some(*v),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Text(_) => None,
        }
    }
}

/// One signal value at one instant.
///
/// Signal names follow COVESA VSS where one exists (`Vehicle.Speed`,
/// `Vehicle.CurrentLocation.Latitude`), with our own `Vehicle.Cargo.*` branch for cargo
/// temperatures and proof of delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Signal name, e.g. `Vehicle.Speed`.
    pub signal: String,
    /// The value.
    pub value: Value,
    /// Unit of the value (`km/h`, `celsius`, `deg`, `m`, ...); empty when unitless.
    pub unit: String,
    /// When the source took the reading (UTC ms), not when the gateway received it.
    pub time: Timestamp,
    /// Which configured source produced it (`jsonl`, `gps`, `can0`, ...).
    pub source: String,
}
