//! Manifest parsing, validation paths and bounds.

use super::*;
use serde_json::json;

pub(crate) fn sample() -> serde_json::Value {
    json!({
        "version": 1,
        "trip_id": "TRIP-1",
        "stops": [
            {
                "stop_id": "S1", "name": "Depot",
                "geofence": {"type": "circle", "center": {"lat": 48.1, "lon": 11.5}, "radius_m": 150},
                "dwell_s": 60
            },
            {
                "stop_id": "S2", "name": "Customer",
                "geofence": {"type": "polygon", "vertices": [
                    {"lat": 48.2, "lon": 11.6}, {"lat": 48.2, "lon": 11.602},
                    {"lat": 48.202, "lon": 11.602}, {"lat": 48.202, "lon": 11.6}
                ], "entry_band_m": 5, "exit_band_m": 40},
                "arrival_window": {"start": "2026-11-23T08:00:00Z", "end": "2026-11-23T09:00:00Z"},
                "orders": ["ORD-1"], "shipments": ["SHP-1", "SHP-2"], "expected_pod": "signature"
            }
        ],
        "compartments": [
            {"name": "Front", "limits": {"setpoint_c": 4, "tolerance_c": 2}},
            {"name": "Rear", "limits": {"max_c": -18}, "doors": [2]}
        ]
    })
}

fn bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn paths(v: &serde_json::Value) -> Vec<String> {
    parse(&bytes(v))
        .unwrap_err()
        .errors
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn sample_compiles() {
    let plan = parse(&bytes(&sample())).unwrap();
    assert_eq!(plan.trip_id, "TRIP-1");
    assert_eq!(plan.stops.len(), 2);
    assert_eq!(plan.stops[0].dwell_ms, 60_000);
    assert_eq!(plan.stops[0].exit_band_m, 30.0, "default exit band");
    assert_eq!(
        plan.stops[1].window,
        Some((1_795_420_800_000, 1_795_424_400_000))
    );
    assert_eq!(plan.stops[1].expected_pod, ExpectedPod::Signature);
    assert!(matches!(plan.stops[1].fence, Fence::Polygon { .. }));
    let front = &plan.compartments[0];
    assert_eq!((front.min_c, front.max_c), (2.0, 6.0));
    assert_eq!(front.alarm_delay_ms, 300_000);
    let rear = &plan.compartments[1];
    assert_eq!(rear.min_c, f64::NEG_INFINITY);
    assert!(rear.is_out(-17.5) && !rear.is_out(-25.0));
    assert!(rear.has_door(2) && !rear.has_door(0) && front.has_door(7));
    assert_eq!(rear.excess(-15.0), 3.0);
    assert_eq!(rear.limits_json(), json!({"min_c": null, "max_c": -18.0}));
}

#[test]
fn the_documented_example_compiles() {
    let doc = include_str!("../../../../docs/manifest.md");
    let start = doc
        .find("```json\n")
        .expect("docs/manifest.md has a json block")
        + 8;
    let end = start + doc[start..].find("```").unwrap();
    let plan = parse(&doc.as_bytes()[start..end]).unwrap();
    assert!(!plan.stops.is_empty());
}

#[test]
fn type_errors_name_the_path() {
    let mut v = sample();
    v["stops"][1]["geofence"]["entry_band_m"] = json!("five");
    let e = paths(&v);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("stops[1].geofence.entry_band_m: invalid type"),
        "{e:?}"
    );

    let mut v = sample();
    v["stops"][0]["geofence"]["colour"] = json!("red");
    assert!(
        paths(&v)[0].starts_with("stops[0].geofence.colour: unknown field"),
        "{:?}",
        paths(&v)
    );

    let mut v = sample();
    v["compartments"][1]["limits"]["max_c"] = json!(null);
    v["compartments"][1]["limits"]["setpoint"] = json!(1);
    assert!(paths(&v)[0].starts_with("compartments[1].limits.setpoint: unknown field"));

    let e = parse(b"{\"version\": 1,").unwrap_err();
    assert_eq!(e.errors[0].path, ".");
    assert!(e.errors[0].message.contains("line 1"), "{e}");
    let e = parse(b"[]").unwrap_err();
    assert_eq!(e.errors[0].path, ".");
}

#[test]
fn value_errors_list_every_path() {
    let mut v = sample();
    v["version"] = json!(2);
    v["trip_id"] = json!("");
    v["stops"][0]["geofence"]["radius_m"] = json!(0);
    v["stops"][0]["geofence"]["center"]["lat"] = json!(91);
    v["stops"][1]["stop_id"] = json!("S1");
    v["stops"][1]["arrival_window"]["end"] = json!("2026-11-23T07:00:00Z");
    v["stops"][1]["orders"] = json!(["ok", "x".repeat(65)]);
    v["stops"][1]["geofence"]["exit_band_m"] = json!(-1);
    v["compartments"][0]["limits"]["tolerance_c"] = json!(0);
    v["compartments"][1]["name"] = json!("Rear Zone");
    v["compartments"][1]["ongoing_interval_s"] = json!(10);
    assert_eq!(
        paths(&v),
        [
            "version: unsupported version 2; expected 1",
            "trip_id: must not be empty",
            "stops[0].geofence.center.lat: must be -90 to 90",
            "stops[0].geofence.radius_m: must be > 0",
            "stops[1].stop_id: `S1` is already used by stops[0]",
            "stops[1].orders[1]: 65 bytes; at most 64",
            "stops[1].geofence.exit_band_m: must be >= 0",
            "stops[1].arrival_window.end: must not be before start",
            "compartments[0].limits.tolerance_c: must be > 0",
            "compartments[1].name: must be 1 to 32 characters of A-Z a-z 0-9 _",
            "compartments[1].ongoing_interval_s: must be 60 to 86400",
        ]
    );
}

#[test]
fn fence_shape_rules() {
    let fence = |g: serde_json::Value| {
        let mut v = sample();
        v["stops"][0]["geofence"] = g;
        paths(&v)
    };
    assert_eq!(
        fence(json!({"type": "circle"})),
        [
            "stops[0].geofence.center: required for a circle",
            "stops[0].geofence.radius_m: required for a circle"
        ]
    );
    assert_eq!(
        fence(
            json!({"type": "circle", "center": {"lat": 1, "lon": 2}, "radius_m": 10, "entry_band_m": 10})
        ),
        ["stops[0].geofence.entry_band_m: must be smaller than radius_m"]
    );
    assert_eq!(
        fence(json!({"type": "polygon", "vertices": [{"lat": 1, "lon": 2}, {"lat": 1, "lon": 3}]})),
        ["stops[0].geofence.vertices: 2 vertices; a polygon has 3 to 64"]
    );
    let many: Vec<_> = (0..65)
        .map(|i| json!({"lat": 1, "lon": f64::from(i) * 1e-4}))
        .collect();
    assert_eq!(
        fence(json!({"type": "polygon", "vertices": many})),
        ["stops[0].geofence.vertices: 65 vertices; a polygon has 3 to 64"]
    );
    assert_eq!(
        fence(json!({"type": "polygon", "vertices": [
            {"lat": 0, "lon": 0}, {"lat": 0.001, "lon": 0.001}, {"lat": 0, "lon": 0.001}, {"lat": 0.001, "lon": 0}
        ]})),
        ["stops[0].geofence.vertices: edges 0 and 2 cross; the polygon must be simple"]
    );
    assert_eq!(
        fence(json!({"type": "polygon", "vertices": [
            {"lat": 0, "lon": 0}, {"lat": 0, "lon": 0.001}, {"lat": 0, "lon": 0.002}
        ]})),
        ["stops[0].geofence.vertices: the polygon has no area"]
    );
    assert_eq!(
        fence(json!({"type": "polygon", "radius_m": 5, "vertices": [
            {"lat": 0, "lon": 0}, {"lat": 0, "lon": 1}, {"lat": 200, "lon": 0}
        ]})),
        [
            "stops[0].geofence.radius_m: not allowed for a polygon",
            "stops[0].geofence.vertices[2].lat: must be -90 to 90"
        ]
    );
    assert_eq!(
        fence(json!({"type": "hexagon"}))[0].split(':').next(),
        Some("stops[0].geofence.type")
    );
}

#[test]
fn limits_rules() {
    let limits = |l: serde_json::Value| {
        let mut v = sample();
        v["compartments"][0]["limits"] = l;
        paths(&v)
    };
    assert_eq!(
        limits(json!({})),
        ["compartments[0].limits: give setpoint_c and tolerance_c, or min_c and/or max_c"]
    );
    assert_eq!(
        limits(json!({"setpoint_c": 4})),
        ["compartments[0].limits.tolerance_c: required with setpoint_c"]
    );
    assert_eq!(
        limits(json!({"setpoint_c": 4, "tolerance_c": 1, "max_c": 8})),
        ["compartments[0].limits: setpoint_c/tolerance_c and min_c/max_c are exclusive"]
    );
    assert_eq!(
        limits(json!({"min_c": 8, "max_c": 2})),
        ["compartments[0].limits.max_c: must be greater than min_c"]
    );
    assert_eq!(
        limits(json!({"min_c": -300})),
        ["compartments[0].limits.min_c: must be -100 to 100"]
    );
}

#[test]
fn bounds_are_enforced() {
    let mut v = sample();
    let stop = v["stops"][0].clone();
    v["stops"] = json!(
        (0..=MAX_STOPS)
            .map(|i| {
                let mut s = stop.clone();
                s["stop_id"] = json!(format!("S{i}"));
                s
            })
            .collect::<Vec<_>>()
    );
    assert_eq!(paths(&v), ["stops: 101 stops; at most 100"]);

    let mut v = sample();
    v["stops"] = json!([]);
    assert_eq!(paths(&v), ["stops: at least one stop is required"]);

    let mut v = sample();
    v["stops"][0]["name"] = json!("n".repeat(MAX_NAME_LEN + 1));
    v["stops"][0]["shipments"] = json!(vec!["S"; MAX_REFS + 1]);
    assert_eq!(
        paths(&v),
        [
            "stops[0].name: 129 bytes; at most 128",
            "stops[0].shipments: 33 entries; at most 32"
        ]
    );

    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert_eq!(parse(&big).unwrap_err().errors[0].path, ".");

    // Error lists are bounded; the count says how many there were.
    let mut v = sample();
    v["stops"] = json!(
        (0..50)
            .map(|_| json!({"stop_id": "", "name": "", "geofence": {"type": "circle"}}))
            .collect::<Vec<_>>()
    );
    let r = parse(&bytes(&v)).unwrap_err();
    assert_eq!(r.errors.len(), MAX_ERRORS);
    assert_eq!(r.count, 249);
    assert!(r.to_string().ends_with("; and 217 more"), "{r}");
}

#[test]
fn rejection_response_names_the_trip() {
    let mut v = sample();
    v["stops"][0]["dwell_s"] = json!(100_000);
    let b = bytes(&v);
    let r = parse(&b).unwrap_err();
    let resp = ManifestResponse::rejected(&b, &r, 1_795_420_800_000);
    let j = serde_json::to_value(&resp).unwrap();
    assert_eq!(
        j,
        json!({
            "status": "rejected", "trip_id": "TRIP-1", "time": "2026-11-23T08:00:00.000Z",
            "errors": [{"path": "stops[0].dwell_s", "message": "must be 0 to 86400"}],
            "error_count": 1
        })
    );
    let resp = ManifestResponse::rejected(b"nonsense", &r, 1_795_420_800_000);
    assert_eq!(resp.trip_id, None);
}

#[test]
fn expected_pod_matching() {
    assert!(ExpectedPod::Signature.met_by("signature_pad"));
    assert!(!ExpectedPod::Signature.met_by("pod_button"));
    assert!(ExpectedPod::Any.met_by("scanner"));
    assert!(ExpectedPod::Scan.met_by("scanner"));
    assert!(ExpectedPod::Button.met_by("pod_button"));
}
