//! The trip manifest: what dispatch sends a vehicle (docs/manifest.md), its validation, and
//! the compiled [`Plan`] the detectors run on.
//!
//! Invariants:
//! - **Nothing unvalidated reaches a detector.** [`parse`] turns bytes into a [`Plan`] or into a
//!   [`Rejection`] listing every problem with the JSON path of the field
//!   (`stops[2].geofence.radius_m: must be > 0`); a type error names its path too.
//! - **Bounded.** At most [`MAX_MANIFEST_BYTES`], [`MAX_STOPS`] stops,
//!   [`MAX_POLYGON_VERTICES`] vertices, [`MAX_COMPARTMENTS`] compartments, [`MAX_REFS`]
//!   references per stop and list, strings of at most [`MAX_ID_LEN`] / [`MAX_NAME_LEN`] bytes;
//!   a rejection lists at most [`MAX_ERRORS`] problems.
//! - A plan is self-contained (times in UTC ms, fences projected), serializable, and what the
//!   detector state holds: a restored state never re-parses a manifest.

use std::fmt;

use serde::{Deserialize, Serialize};
use waymark_wire::Timestamp;
use waymark_wire::time::{format_rfc3339_ms, parse_rfc3339_ms};

use super::geo::{self, Fence};

/// The only manifest format version this gateway reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest document accepted, bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// Most stops in one trip.
pub const MAX_STOPS: usize = 100;
/// Most vertices of a polygon geofence.
pub const MAX_POLYGON_VERTICES: usize = 64;
/// Most compartments.
pub const MAX_COMPARTMENTS: usize = 8;
/// Most order references, shipment references and doors per list.
pub const MAX_REFS: usize = 32;
/// Longest id or reference (trip, stop, order, shipment), bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest display name, bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most problems listed in a rejection (the count says how many there were).
pub const MAX_ERRORS: usize = 32;
/// Largest geofence radius, hysteresis band or polygon extent, metres.
pub const MAX_FENCE_M: f64 = 50_000.0;
/// Longest configurable delay (dwell, alarm, clear, allowance), seconds: one day.
pub const MAX_DELAY_S: u32 = 86_400;
/// Compartment names as in `Vehicle.Cargo.<name>.Temperature` (sources::cargo).
pub const COMPARTMENT_LEN: usize = crate::sources::cargo::COMPARTMENT_LEN;

/// A trip manifest as dispatch publishes it (JSON, docs/manifest.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; must be [`MANIFEST_VERSION`].
    pub version: u32,
    /// Trip id, the correlation id every milestone carries.
    pub trip_id: String,
    /// Stops in their planned order.
    pub stops: Vec<Stop>,
    /// Temperature-controlled compartments; empty for ambient freight.
    #[serde(default)]
    pub compartments: Vec<Compartment>,
}

/// One stop of a trip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Stop id, unique within the trip; the event `subject`.
    pub stop_id: String,
    /// Display name (customer, site).
    pub name: String,
    /// Where the stop is.
    pub geofence: Geofence,
    /// When the vehicle is expected to arrive; none means no lateness checks.
    #[serde(default)]
    pub arrival_window: Option<ArrivalWindow>,
    /// Seconds the vehicle must stand still inside the fence to count as arrived. Default 60.
    #[serde(default = "default_dwell_s")]
    pub dwell_s: u32,
    /// Order references delivered or collected here.
    #[serde(default)]
    pub orders: Vec<String>,
    /// Shipment references handled here.
    #[serde(default)]
    pub shipments: Vec<String>,
    /// Proof of delivery expected at this stop. Default `any`.
    #[serde(default)]
    pub expected_pod: ExpectedPod,
}

fn default_dwell_s() -> u32 {
    60
}

/// A circle or a polygon, with its hysteresis band.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geofence {
    /// `circle` or `polygon`.
    #[serde(rename = "type")]
    pub kind: FenceKind,
    /// Circle centre.
    #[serde(default)]
    pub center: Option<LatLon>,
    /// Circle radius, metres.
    #[serde(default)]
    pub radius_m: Option<f64>,
    /// Polygon vertices in order (3 to [`MAX_POLYGON_VERTICES`], not closed: the last
    /// connects to the first).
    #[serde(default)]
    pub vertices: Option<Vec<LatLon>>,
    /// The vehicle enters when it is this far inside the boundary. Default 0.
    #[serde(default)]
    pub entry_band_m: f64,
    /// The vehicle exits when it is this far outside the boundary. Default 30.
    #[serde(default = "default_exit_band_m")]
    pub exit_band_m: f64,
}

fn default_exit_band_m() -> f64 {
    30.0
}

/// Geofence shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FenceKind {
    /// `center` and `radius_m`.
    Circle,
    /// `vertices`.
    Polygon,
}

/// A WGS84 position, degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// When arrival is expected, RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArrivalWindow {
    /// Earliest expected arrival (arriving before it is `early`, not an error).
    pub start: String,
    /// Latest arrival on time; later is `late`.
    pub end: String,
}

/// What proof of delivery the stop expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedPod {
    /// No POD (a pass-through or depot stop).
    None,
    /// Any POD device.
    #[default]
    Any,
    /// A POD button press.
    Button,
    /// A scan (scanner device).
    Scan,
    /// A signature (signature pad).
    Signature,
}

impl ExpectedPod {
    /// Whether a POD from a device of `device_kind` (docs/devices.md names) satisfies it.
    pub fn met_by(self, device_kind: &str) -> bool {
        match self {
            ExpectedPod::None | ExpectedPod::Any => true,
            ExpectedPod::Button => device_kind == "pod_button",
            ExpectedPod::Scan => device_kind == "scanner",
            ExpectedPod::Signature => device_kind == "signature_pad",
        }
    }

    /// The name used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedPod::None => "none",
            ExpectedPod::Any => "any",
            ExpectedPod::Button => "button",
            ExpectedPod::Scan => "scan",
            ExpectedPod::Signature => "signature",
        }
    }
}

/// A temperature-controlled compartment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compartment {
    /// Compartment name as in `Vehicle.Cargo.<name>.Temperature` (1 to 32 characters of
    /// `A-Z a-z 0-9 _`).
    pub name: String,
    /// The allowed range.
    pub limits: Limits,
    /// Out of limits for this long (not suppressed) before an excursion starts. Default 300.
    #[serde(default = "default_alarm_delay_s")]
    pub alarm_delay_s: u32,
    /// Back within limits for this long before an excursion ends. Default 120.
    #[serde(default = "default_clear_delay_s")]
    pub clear_delay_s: u32,
    /// An open door suppresses alarms for at most this long. Default 900.
    #[serde(default = "default_door_allowance_s")]
    pub door_allowance_s: u32,
    /// A defrost cycle suppresses alarms for at most this long. Default 2700.
    #[serde(default = "default_defrost_max_s")]
    pub defrost_max_s: u32,
    /// `excursion_ongoing` every this many seconds during an excursion. Default 900.
    #[serde(default = "default_ongoing_interval_s")]
    pub ongoing_interval_s: u32,
    /// No temperature for this long is a `no_data` probe fault. Default 600.
    #[serde(default = "default_probe_timeout_s")]
    pub probe_timeout_s: u32,
    /// Door ids (`Vehicle.Cargo.Door.IsOpen` is 0, `Door<n>` is n) that open onto this
    /// compartment; empty means every door.
    #[serde(default)]
    pub doors: Vec<u8>,
}

fn default_alarm_delay_s() -> u32 {
    300
}
fn default_clear_delay_s() -> u32 {
    120
}
fn default_door_allowance_s() -> u32 {
    900
}
fn default_defrost_max_s() -> u32 {
    2700
}
fn default_ongoing_interval_s() -> u32 {
    900
}
fn default_probe_timeout_s() -> u32 {
    600
}

/// Temperature limits: `setpoint_c` ± `tolerance_c`, or `min_c` and/or `max_c`.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Setpoint, °C (with `tolerance_c`).
    #[serde(default)]
    pub setpoint_c: Option<f64>,
    /// Allowed deviation from the setpoint, °C.
    #[serde(default)]
    pub tolerance_c: Option<f64>,
    /// Lowest allowed temperature, °C.
    #[serde(default)]
    pub min_c: Option<f64>,
    /// Highest allowed temperature, °C.
    #[serde(default)]
    pub max_c: Option<f64>,
}

/// One problem with a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// JSON path of the field (`stops[2].geofence.radius_m`); `.` for the document itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a manifest was refused: every problem found (at most [`MAX_ERRORS`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    /// The problems, in document order.
    pub errors: Vec<FieldError>,
    /// How many problems there were (more than `errors` holds when truncated).
    pub count: usize,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        write!(f, "manifest rejected: {}", list.join("; "))?;
        if self.count > self.errors.len() {
            write!(f, "; and {} more", self.count - self.errors.len())?;
        }
        Ok(())
    }
}

impl Rejection {
    fn one(path: &str, message: impl Into<String>) -> Self {
        Rejection {
            errors: vec![FieldError {
                path: path.to_string(),
                message: message.into(),
            }],
            count: 1,
        }
    }
}

/// The compiled form of a valid manifest: what the detectors use and persist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Trip id.
    pub trip_id: String,
    /// Stops in planned order.
    pub stops: Vec<PlanStop>,
    /// Compartments.
    pub compartments: Vec<PlanCompartment>,
}

/// A compiled stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStop {
    /// Stop id.
    pub stop_id: String,
    /// Display name.
    pub name: String,
    /// The fence.
    pub fence: Fence,
    /// Enter at this depth inside, metres.
    pub entry_band_m: f64,
    /// Exit at this distance outside, metres.
    pub exit_band_m: f64,
    /// Arrival window, UTC ms.
    pub window: Option<(Timestamp, Timestamp)>,
    /// Dwell, ms.
    pub dwell_ms: i64,
    /// Order references.
    pub orders: Vec<String>,
    /// Shipment references.
    pub shipments: Vec<String>,
    /// Expected POD.
    pub expected_pod: ExpectedPod,
}

/// A compiled compartment (all durations in ms, limits resolved to a range).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanCompartment {
    /// Name.
    pub name: String,
    /// Lowest allowed, °C (`-inf` when unbounded).
    pub min_c: f64,
    /// Highest allowed, °C (`inf` when unbounded).
    pub max_c: f64,
    /// Alarm delay, ms.
    pub alarm_delay_ms: i64,
    /// Clear delay, ms.
    pub clear_delay_ms: i64,
    /// Door allowance, ms.
    pub door_allowance_ms: i64,
    /// Defrost maximum, ms.
    pub defrost_max_ms: i64,
    /// Ongoing report interval, ms.
    pub ongoing_interval_ms: i64,
    /// Probe timeout, ms.
    pub probe_timeout_ms: i64,
    /// Doors; empty = all.
    pub doors: Vec<u8>,
}

impl PlanCompartment {
    /// Whether `c` is outside the limits.
    pub fn is_out(&self, c: f64) -> bool {
        c < self.min_c || c > self.max_c
    }

    /// Degrees beyond the nearest limit (0 within limits).
    pub fn excess(&self, c: f64) -> f64 {
        (c - self.max_c).max(0.0) + (self.min_c - c).max(0.0)
    }

    /// Whether door `id` opens onto this compartment.
    pub fn has_door(&self, id: u8) -> bool {
        self.doors.is_empty() || self.doors.contains(&id)
    }

    /// Limits as they appear in events: `null` for an unbounded side.
    pub fn limits_json(&self) -> serde_json::Value {
        let side = |v: f64| {
            if v.is_finite() {
                serde_json::json!(v)
            } else {
                serde_json::Value::Null
            }
        };
        serde_json::json!({"min_c": side(self.min_c), "max_c": side(self.max_c)})
    }
}

impl Plan {
    /// The index of stop `id`.
    pub fn stop_index(&self, id: &str) -> Option<usize> {
        self.stops.iter().position(|s| s.stop_id == id)
    }
}

impl PlanStop {
    /// The window as RFC 3339 strings for events.
    pub fn window_json(&self) -> serde_json::Value {
        match self.window {
            Some((s, e)) => serde_json::json!({
                "start": format_rfc3339_ms(s),
                "end": format_rfc3339_ms(e),
            }),
            None => serde_json::Value::Null,
        }
    }
}

/// Parses and validates a manifest document.
///
/// # Errors
/// A [`Rejection`] with the path of every problem: size, JSON syntax (line and column), a
/// field of the wrong type or unknown, and every value out of its range.
pub fn parse(bytes: &[u8]) -> Result<Plan, Rejection> {
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(Rejection::one(
            ".",
            format!("{} bytes; the limit is {MAX_MANIFEST_BYTES}", bytes.len()),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path.is_empty() || path == "." || path == "?" {
            ".".to_string()
        } else {
            path
        };
        Rejection::one(&path, inner.to_string())
    })?;
    manifest.compile()
}

struct Problems(Vec<FieldError>, usize);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.1 += 1;
        if self.0.len() < MAX_ERRORS {
            self.0.push(FieldError {
                path: path.into(),
                message: message.into(),
            });
        }
    }

    fn id(&mut self, path: &str, v: &str, max: usize) {
        if v.is_empty() {
            self.add(path, "must not be empty");
        } else if v.len() > max {
            self.add(path, format!("{} bytes; at most {max}", v.len()));
        } else if v.chars().any(char::is_control) {
            self.add(path, "must not contain control characters");
        }
    }

    fn refs(&mut self, path: &str, list: &[String]) {
        if list.len() > MAX_REFS {
            self.add(path, format!("{} entries; at most {MAX_REFS}", list.len()));
        }
        for (i, r) in list.iter().enumerate().take(MAX_REFS) {
            self.id(&format!("{path}[{i}]"), r, MAX_ID_LEN);
        }
    }

    fn metres(&mut self, path: &str, v: f64, positive: bool) {
        if !v.is_finite() || v < 0.0 || (positive && v <= 0.0) {
            self.add(
                path,
                if positive {
                    "must be > 0"
                } else {
                    "must be >= 0"
                },
            );
        } else if v > MAX_FENCE_M {
            self.add(path, format!("must be at most {MAX_FENCE_M}"));
        }
    }

    fn delay(&mut self, path: &str, v: u32, min: u32) {
        if v < min || v > MAX_DELAY_S {
            self.add(path, format!("must be {min} to {MAX_DELAY_S}"));
        }
    }

    fn latlon(&mut self, path: &str, p: LatLon) {
        if !(p.lat.is_finite() && (-90.0..=90.0).contains(&p.lat)) {
            self.add(format!("{path}.lat"), "must be -90 to 90");
        }
        if !(p.lon.is_finite() && (-180.0..=180.0).contains(&p.lon)) {
            self.add(format!("{path}.lon"), "must be -180 to 180");
        }
    }
}

fn secs(s: u32) -> i64 {
    i64::from(s) * 1000
}

impl Manifest {
    /// Validates and compiles.
    ///
    /// # Errors
    /// Every problem, each with its JSON path.
    pub fn compile(&self) -> Result<Plan, Rejection> {
        let mut p = Problems(Vec::new(), 0);
        if self.version != MANIFEST_VERSION {
            p.add(
                "version",
                format!(
                    "unsupported version {}; expected {MANIFEST_VERSION}",
                    self.version
                ),
            );
        }
        p.id("trip_id", &self.trip_id, MAX_ID_LEN);
        if self.stops.is_empty() {
            p.add("stops", "at least one stop is required");
        }
        if self.stops.len() > MAX_STOPS {
            p.add(
                "stops",
                format!("{} stops; at most {MAX_STOPS}", self.stops.len()),
            );
        }
        let mut stops = Vec::new();
        for (i, s) in self.stops.iter().enumerate().take(MAX_STOPS) {
            let at = format!("stops[{i}]");
            p.id(&format!("{at}.stop_id"), &s.stop_id, MAX_ID_LEN);
            if let Some(j) = self.stops[..i].iter().position(|o| o.stop_id == s.stop_id) {
                p.add(
                    format!("{at}.stop_id"),
                    format!("`{}` is already used by stops[{j}]", s.stop_id),
                );
            }
            p.id(&format!("{at}.name"), &s.name, MAX_NAME_LEN);
            p.delay(&format!("{at}.dwell_s"), s.dwell_s, 0);
            p.refs(&format!("{at}.orders"), &s.orders);
            p.refs(&format!("{at}.shipments"), &s.shipments);
            let fence = compile_fence(&mut p, &format!("{at}.geofence"), &s.geofence);
            let window = s.arrival_window.as_ref().and_then(|w| {
                let start = parse_rfc3339_ms(&w.start)
                    .map_err(|e| p.add(format!("{at}.arrival_window.start"), e))
                    .ok();
                let end = parse_rfc3339_ms(&w.end)
                    .map_err(|e| p.add(format!("{at}.arrival_window.end"), e))
                    .ok();
                let (start, end) = (start?, end?);
                if end < start {
                    p.add(
                        format!("{at}.arrival_window.end"),
                        "must not be before start",
                    );
                }
                if start < waymark_wire::time::EARLIEST_VALID_MS {
                    p.add(format!("{at}.arrival_window.start"), "before 2020-01-01");
                }
                Some((start, end))
            });
            if let Some(fence) = fence {
                stops.push(PlanStop {
                    stop_id: s.stop_id.clone(),
                    name: s.name.clone(),
                    fence,
                    entry_band_m: s.geofence.entry_band_m,
                    exit_band_m: s.geofence.exit_band_m,
                    window,
                    dwell_ms: secs(s.dwell_s),
                    orders: s.orders.clone(),
                    shipments: s.shipments.clone(),
                    expected_pod: s.expected_pod,
                });
            }
        }
        if self.compartments.len() > MAX_COMPARTMENTS {
            p.add(
                "compartments",
                format!(
                    "{} compartments; at most {MAX_COMPARTMENTS}",
                    self.compartments.len()
                ),
            );
        }
        let mut compartments = Vec::new();
        for (i, c) in self.compartments.iter().enumerate().take(MAX_COMPARTMENTS) {
            let at = format!("compartments[{i}]");
            if c.name.is_empty()
                || c.name.len() > COMPARTMENT_LEN
                || !c
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                p.add(
                    format!("{at}.name"),
                    format!("must be 1 to {COMPARTMENT_LEN} characters of A-Z a-z 0-9 _"),
                );
            } else if let Some(j) = self.compartments[..i].iter().position(|o| o.name == c.name) {
                p.add(
                    format!("{at}.name"),
                    format!("`{}` is already used by compartments[{j}]", c.name),
                );
            }
            p.delay(&format!("{at}.alarm_delay_s"), c.alarm_delay_s, 0);
            p.delay(&format!("{at}.clear_delay_s"), c.clear_delay_s, 0);
            p.delay(&format!("{at}.door_allowance_s"), c.door_allowance_s, 0);
            p.delay(&format!("{at}.defrost_max_s"), c.defrost_max_s, 0);
            p.delay(
                &format!("{at}.ongoing_interval_s"),
                c.ongoing_interval_s,
                60,
            );
            p.delay(&format!("{at}.probe_timeout_s"), c.probe_timeout_s, 10);
            if c.doors.len() > MAX_REFS {
                p.add(
                    format!("{at}.doors"),
                    format!("{} entries; at most {MAX_REFS}", c.doors.len()),
                );
            }
            if let Some((min_c, max_c)) = compile_limits(&mut p, &format!("{at}.limits"), c.limits)
            {
                compartments.push(PlanCompartment {
                    name: c.name.clone(),
                    min_c,
                    max_c,
                    alarm_delay_ms: secs(c.alarm_delay_s),
                    clear_delay_ms: secs(c.clear_delay_s),
                    door_allowance_ms: secs(c.door_allowance_s),
                    defrost_max_ms: secs(c.defrost_max_s),
                    ongoing_interval_ms: secs(c.ongoing_interval_s),
                    probe_timeout_ms: secs(c.probe_timeout_s),
                    doors: c.doors.clone(),
                });
            }
        }
        if p.1 > 0 {
            return Err(Rejection {
                errors: p.0,
                count: p.1,
            });
        }
        Ok(Plan {
            trip_id: self.trip_id.clone(),
            stops,
            compartments,
        })
    }
}

fn compile_fence(p: &mut Problems, at: &str, g: &Geofence) -> Option<Fence> {
    let before = p.1;
    p.metres(&format!("{at}.entry_band_m"), g.entry_band_m, false);
    p.metres(&format!("{at}.exit_band_m"), g.exit_band_m, false);
    let fence = match g.kind {
        FenceKind::Circle => {
            if g.vertices.is_some() {
                p.add(format!("{at}.vertices"), "not allowed for a circle");
            }
            let center = g.center.or_else(|| {
                p.add(format!("{at}.center"), "required for a circle");
                None
            });
            let radius = g.radius_m.or_else(|| {
                p.add(format!("{at}.radius_m"), "required for a circle");
                None
            });
            if let Some(c) = center {
                p.latlon(&format!("{at}.center"), c);
            }
            if let Some(r) = radius {
                p.metres(&format!("{at}.radius_m"), r, true);
                if r.is_finite() && r > 0.0 && g.entry_band_m.is_finite() && g.entry_band_m >= r {
                    p.add(
                        format!("{at}.entry_band_m"),
                        "must be smaller than radius_m",
                    );
                }
            }
            Fence::Circle {
                lat: center?.lat,
                lon: center?.lon,
                radius_m: radius?,
            }
        }
        FenceKind::Polygon => {
            if g.center.is_some() {
                p.add(format!("{at}.center"), "not allowed for a polygon");
            }
            if g.radius_m.is_some() {
                p.add(format!("{at}.radius_m"), "not allowed for a polygon");
            }
            let Some(v) = &g.vertices else {
                p.add(format!("{at}.vertices"), "required for a polygon");
                return None;
            };
            if v.len() < 3 || v.len() > MAX_POLYGON_VERTICES {
                p.add(
                    format!("{at}.vertices"),
                    format!(
                        "{} vertices; a polygon has 3 to {MAX_POLYGON_VERTICES}",
                        v.len()
                    ),
                );
                return None;
            }
            let errors = p.1;
            for (i, ll) in v.iter().enumerate() {
                p.latlon(&format!("{at}.vertices[{i}]"), *ll);
            }
            if p.1 > errors {
                return None;
            }
            let fence = Fence::polygon(&v.iter().map(|l| (l.lat, l.lon)).collect::<Vec<_>>());
            if let Fence::Polygon { xy, .. } = &fence {
                if let Some((i, j)) = geo::self_intersects(xy) {
                    p.add(
                        format!("{at}.vertices"),
                        format!("edges {i} and {j} cross; the polygon must be simple"),
                    );
                } else if geo::area_m2(xy) < 1.0 {
                    p.add(format!("{at}.vertices"), "the polygon has no area");
                }
                let extent = xy.iter().map(|(x, y)| x.hypot(*y)).fold(0.0_f64, f64::max);
                if extent > MAX_FENCE_M {
                    p.add(
                        format!("{at}.vertices"),
                        format!("spans more than {MAX_FENCE_M} m"),
                    );
                }
            }
            fence
        }
    };
    (p.1 == before).then_some(fence)
}

fn compile_limits(p: &mut Problems, at: &str, l: Limits) -> Option<(f64, f64)> {
    let before = p.1;
    let finite = |p: &mut Problems, name: &str, v: Option<f64>| {
        if let Some(v) = v
            && (!v.is_finite() || !(-100.0..=100.0).contains(&v))
        {
            p.add(format!("{at}.{name}"), "must be -100 to 100");
        }
    };
    finite(p, "setpoint_c", l.setpoint_c);
    finite(p, "tolerance_c", l.tolerance_c);
    finite(p, "min_c", l.min_c);
    finite(p, "max_c", l.max_c);
    if p.1 > before {
        return None;
    }
    let range = match (l.setpoint_c, l.tolerance_c, l.min_c, l.max_c) {
        (Some(s), Some(t), None, None) => {
            if t <= 0.0 {
                p.add(format!("{at}.tolerance_c"), "must be > 0");
                return None;
            }
            (s - t, s + t)
        }
        (None, None, min, max) if min.is_some() || max.is_some() => {
            let (lo, hi) = (
                min.unwrap_or(f64::NEG_INFINITY),
                max.unwrap_or(f64::INFINITY),
            );
            if lo >= hi {
                p.add(format!("{at}.max_c"), "must be greater than min_c");
                return None;
            }
            (lo, hi)
        }
        (Some(_), None, None, None) => {
            p.add(format!("{at}.tolerance_c"), "required with setpoint_c");
            return None;
        }
        (None, Some(_), None, None) => {
            p.add(format!("{at}.setpoint_c"), "required with tolerance_c");
            return None;
        }
        (None, None, None, None) => {
            p.add(
                at.to_string(),
                "give setpoint_c and tolerance_c, or min_c and/or max_c",
            );
            return None;
        }
        _ => {
            p.add(
                at.to_string(),
                "setpoint_c/tolerance_c and min_c/max_c are exclusive",
            );
            return None;
        }
    };
    Some(range)
}

/// What the gateway answers on the manifest response topic (docs/manifest.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestResponse {
    /// `applied`, `rejected` or `cleared`.
    pub status: ResponseStatus,
    /// The trip id of the manifest answered (when it could be read).
    pub trip_id: Option<String>,
    /// When the gateway decided, RFC 3339 UTC.
    pub time: String,
    /// The problems of a rejected manifest (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// How many problems there were (`errors` lists at most 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_count: Option<usize>,
    /// The trip this manifest replaced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_trip_id: Option<String>,
}

/// The outcome of a manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    /// Valid, persisted and applied.
    Applied,
    /// Invalid; the previous manifest (if any) stays in force.
    Rejected,
    /// An empty retained message removed the manifest.
    Cleared,
}

impl ManifestResponse {
    /// The answer to a rejected document; `trip_id` is taken from it when it has one.
    pub fn rejected(bytes: &[u8], rejection: &Rejection, now: Timestamp) -> Self {
        let trip_id = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("trip_id")?.as_str().map(str::to_string))
            .filter(|t| t.len() <= MAX_ID_LEN);
        ManifestResponse {
            status: ResponseStatus::Rejected,
            trip_id,
            time: format_rfc3339_ms(now),
            errors: rejection.errors.clone(),
            error_count: Some(rejection.count),
            replaced_trip_id: None,
        }
    }
}

#[cfg(test)]
mod tests;
