//! The built-in string table of format version 1.
//!
//! String refs `0..BUILTIN.len()` name these strings without spending table bytes, so a 1 s
//! batch of common signals does not carry `Vehicle.CurrentLocation.Latitude` every second.
//! The list is **frozen** for `FORMAT_VERSION = 1`: changing, reordering or appending an entry
//! changes the meaning of refs, so it needs a version bump. `docs/telemetry-format.md` lists it
//! with the indices.

/// Built-in strings; index = string ref.
pub(super) static BUILTIN: [&str; 64] = [
    // 0..=9: sources and the empty unit.
    "",
    "gps",
    "gpsd",
    "can0",
    "can1",
    "jsonl",
    "temperature",
    "onewire",
    "device",
    "demo",
    // 10..=27: units.
    "deg",
    "degrees",
    "m",
    "km",
    "km/h",
    "m/s",
    "m/s2",
    "celsius",
    "rpm",
    "%",
    "percent",
    "V",
    "A",
    "kPa",
    "l",
    "l/h",
    "h",
    "s",
    // 28..=38: position (COVESA VSS `Vehicle.CurrentLocation.*`) and motion.
    "Vehicle.CurrentLocation.Latitude",
    "Vehicle.CurrentLocation.Longitude",
    "Vehicle.CurrentLocation.Altitude",
    "Vehicle.CurrentLocation.Heading",
    "Vehicle.CurrentLocation.HorizontalAccuracy",
    "Vehicle.CurrentLocation.VerticalAccuracy",
    "Vehicle.CurrentLocation.GNSSReceiver.FixType",
    "Vehicle.Speed",
    "Vehicle.TraveledDistance",
    "Vehicle.IsMoving",
    "Vehicle.Acceleration.Longitudinal",
    // 39..=53: powertrain, chassis, body (VSS).
    "Vehicle.Powertrain.CombustionEngine.Speed",
    "Vehicle.Powertrain.CombustionEngine.ECT",
    "Vehicle.Powertrain.CombustionEngine.EOT",
    "Vehicle.Powertrain.CombustionEngine.EngineHours",
    "Vehicle.Powertrain.CombustionEngine.IsRunning",
    "Vehicle.Powertrain.CombustionEngine.Torque",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    "Vehicle.Powertrain.FuelSystem.InstantConsumption",
    "Vehicle.Powertrain.Transmission.CurrentGear",
    "Vehicle.OBD.EngineLoad",
    "Vehicle.Chassis.Accelerator.PedalPosition",
    "Vehicle.Chassis.Brake.PedalPosition",
    "Vehicle.Exterior.AirTemperature",
    "Vehicle.LowVoltageBattery.CurrentVoltage",
    "Vehicle.Body.Trunk.Rear.IsOpen",
    // 54..=63: Waymark's own cargo branch.
    "Vehicle.Cargo.Temperature",
    "Vehicle.Cargo.Zone1.Temperature",
    "Vehicle.Cargo.Zone2.Temperature",
    "Vehicle.Cargo.Zone3.Temperature",
    "Vehicle.Cargo.Door.IsOpen",
    "Vehicle.Cargo.Humidity",
    "Vehicle.Cargo.Reefer.IsRunning",
    "Vehicle.Cargo.Reefer.Setpoint",
    "Vehicle.Cargo.Reefer.ReturnAirTemperature",
    "Vehicle.Cargo.Reefer.SupplyAirTemperature",
];

/// Number of built-in strings: the first ref that indexes the batch's own table.
pub(super) const COUNT: u64 = BUILTIN.len() as u64;

/// The ref of `s` if it is built in.
pub(super) fn lookup(s: &str) -> Option<u32> {
    // 64 length comparisons at worst; memcmp only on equal lengths.
    BUILTIN.iter().position(|b| *b == s).map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_unique_and_short() {
        for (i, a) in BUILTIN.iter().enumerate() {
            assert!(a.len() <= super::super::MAX_STRING_LEN);
            for b in &BUILTIN[i + 1..] {
                assert_ne!(a, b, "duplicate built-in string");
            }
            assert_eq!(lookup(a), Some(i as u32));
        }
        assert_eq!(lookup("Vehicle.Unknown"), None);
        // Refs of built-ins and of the first 64 table entries fit in one varint byte.
        const { assert!(COUNT <= 64) };
    }
}
