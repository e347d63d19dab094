//! The device protocol decisions, driven with a sans-IO `now`.

use std::time::{Duration, Instant};

use firmware_proto::{
    Capabilities, DeviceKind, Error as FrameError, FirmwareVersion, Message, NackReason,
    PodOutcome, ProbeStatus,
};
use waymark_wire::Value;

use super::*;
use crate::sources::cargo::ProbeConfig;

const WALL: Timestamp = 1_760_000_000_000;
const DEVICE: u64 = 0x0123_4567_89ab_cdef;

fn settings() -> Settings {
    Settings {
        source: "pod".into(),
        heartbeat_timeout: Duration::from_secs(30),
        heartbeat_interval_s: 10,
        temperature_interval_s: 60,
        time_sync_interval: Duration::from_secs(3600),
        max_frames_per_s: 50,
        probes: vec![ProbeConfig {
            id: "28-0000075a1b2c".into(),
            compartment: "Front".into(),
        }],
    }
}

fn hello(protocol_version: u8) -> Message {
    Message::Hello {
        device_id: DEVICE,
        kind: DeviceKind::PodButton,
        firmware_version: FirmwareVersion {
            major: 1,
            minor: 2,
            patch: 3,
        },
        protocol_version,
        capabilities: Capabilities::POD,
    }
}

fn pod(device_seq: u32) -> Message {
    Message::Pod {
        device_seq,
        outcome: PodOutcome::Delivered,
        stop_ref: Some("STOP-7".try_into().unwrap()),
        order_ref: None,
        recipient: Some("J. Smith".try_into().unwrap()),
        evidence: Some([0xab; 32]),
    }
}

fn open(t0: Instant) -> Session {
    let (mut s, first) = Session::open(settings(), t0, WALL);
    assert_eq!(
        first,
        vec![Output::Send(Message::TimeSync {
            unix_ms: WALL as u64
        })]
    );
    let mut out = Vec::new();
    s.on_frame(t0, WALL, Ok(hello(1)), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(out[1], Output::Send(Message::Config { .. })));
    s
}

fn sends(out: &[Output]) -> Vec<Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn pod_is_acked_only_after_the_store_said_ok() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    s.on_frame(t0, WALL, Ok(pod(5)), &mut out);
    let [Output::Store { device_seq, event }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(*device_seq, 5);
    assert_eq!(event.type_, "waymark.pod.delivered");
    assert_eq!(event.lane, Lane::Alert);
    assert_eq!(event.subject.as_deref(), Some("STOP-7"));
    assert_eq!(event.id, event_id(DEVICE, 5));
    assert_eq!(event.data["device_id"], "0123456789abcdef");
    assert_eq!(event.data["device_kind"], "pod_button");
    assert_eq!(event.data["firmware"], "1.2.3");
    assert_eq!(event.data["device_seq"], 5);
    assert_eq!(event.data["recipient"], "J. Smith");
    assert_eq!(event.data["order_ref"], serde_json::Value::Null);
    assert_eq!(event.data["evidence_sha256"], "ab".repeat(32));
    assert_eq!(event.data["received_ms"], WALL);

    // A retry while the append is in flight is not submitted again.
    out.clear();
    s.on_frame(t0, WALL, Ok(pod(5)), &mut out);
    assert!(out.is_empty(), "{out:?}");

    // Store failed: Nack(NotStored); the retry is submitted again, and acked on success.
    s.on_stored(5, false, &mut out);
    assert_eq!(
        sends(&out),
        vec![Message::Nack {
            device_seq: 5,
            reason: NackReason::NotStored
        }]
    );
    out.clear();
    s.on_frame(t0, WALL, Ok(pod(5)), &mut out);
    assert!(matches!(out[0], Output::Store { device_seq: 5, .. }));
    out.clear();
    s.on_stored(5, true, &mut out);
    assert_eq!(sends(&out), vec![Message::Ack { device_seq: 5 }]);
}

#[test]
fn nothing_acked_before_hello() {
    let t0 = Instant::now();
    let (mut s, _) = Session::open(settings(), t0, WALL);
    let mut out = Vec::new();
    s.on_frame(t0, WALL, Ok(pod(1)), &mut out);
    assert_eq!(
        sends(&out),
        vec![Message::Nack {
            device_seq: 1,
            reason: NackReason::NotStored
        }]
    );
    assert_eq!(s.health(t0).0, HealthState::Degraded);
}

#[test]
fn version_mismatch_is_down_and_nacked() {
    let t0 = Instant::now();
    let (mut s, _) = Session::open(settings(), t0, WALL);
    let mut out = Vec::new();
    s.on_frame(
        t0,
        WALL,
        Err(FrameError::Version {
            offset: 0,
            version: 2,
        }),
        &mut out,
    );
    assert_eq!(
        sends(&out),
        vec![Message::Nack {
            device_seq: 0,
            reason: NackReason::VersionMismatch
        }]
    );
    let (state, detail) = s.health(t0);
    assert_eq!(state, HealthState::Down);
    let detail = detail.unwrap();
    assert!(
        detail.contains("version 2") && detail.contains("version 1"),
        "{detail}"
    );
    assert_eq!(s.take_tally().invalid, 1);

    // A Hello claiming only version 0 is refused the same way; a good Hello clears it.
    out.clear();
    s.on_frame(t0, WALL, Ok(hello(0)), &mut out);
    assert_eq!(sends(&out).len(), 1);
    assert_eq!(s.health(t0).0, HealthState::Down);
    s.on_frame(t0, WALL, Ok(hello(1)), &mut out);
    assert_eq!(s.health(t0).0, HealthState::Ok);
}

#[test]
fn heartbeat_timeout_degrades_and_a_frame_heals() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    assert_eq!(s.deadline(), t0 + Duration::from_secs(30));
    let t1 = t0 + Duration::from_secs(30);
    s.on_tick(t1, WALL, &mut out);
    let (state, detail) = s.health(t1);
    assert_eq!(state, HealthState::Degraded);
    assert!(detail.unwrap().contains("heartbeat timeout"));
    // After the timeout the next deadline is the time sync, not a busy loop.
    assert_eq!(s.deadline(), t0 + Duration::from_secs(3600));
    s.on_frame(
        t1,
        WALL,
        Ok(Message::Heartbeat {
            uptime_s: 40,
            pending: 0,
        }),
        &mut out,
    );
    assert_eq!(s.health(t1).0, HealthState::Ok);
    assert_eq!(s.deadline(), t1 + Duration::from_secs(30));
}

#[test]
fn time_sync_repeats() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    // Keep the device alive so only the time sync is due.
    let t1 = t0 + Duration::from_secs(3600);
    s.on_frame(
        t1,
        WALL,
        Ok(Message::Heartbeat {
            uptime_s: 1,
            pending: 0,
        }),
        &mut out,
    );
    s.on_tick(t1, WALL + 5, &mut out);
    assert_eq!(
        sends(&out),
        vec![Message::TimeSync {
            unix_ms: WALL as u64 + 5
        }]
    );
}

#[test]
fn temperatures_become_readings_faults_do_not() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    let temp = |seq, rom, centi, status| Message::Temperature {
        device_seq: seq,
        probe_id: rom,
        centi_celsius: centi,
        status,
    };
    s.on_frame(
        t0,
        WALL,
        Ok(temp(1, 0x8c00_0007_5a1b_2c28, -1825, ProbeStatus::Ok)),
        &mut out,
    );
    let Output::Reading(r) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(r.signal, "Vehicle.Cargo.Front.Temperature");
    assert_eq!(r.value, Value::Num(-18.25));
    assert_eq!(r.unit, "celsius");
    assert_eq!(r.source, "pod");
    assert_eq!(sends(&out), vec![Message::Ack { device_seq: 1 }]);

    // Unmapped probe.
    out.clear();
    s.on_frame(
        t0,
        WALL,
        Ok(temp(2, 0x0000_0000_0000_0128, 400, ProbeStatus::Ok)),
        &mut out,
    );
    let Output::Reading(r) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(r.signal, "Vehicle.Cargo.Probe.28-000000000001.Temperature");

    // Faults: acked, counted, in health, never readings.
    for (seq, centi, status) in [
        (3, 2000, ProbeStatus::CrcError),
        (4, 8500, ProbeStatus::PowerOnReset),
        (5, 0, ProbeStatus::Disconnected),
        (6, 20000, ProbeStatus::OutOfRange),
        (7, 8500, ProbeStatus::Ok),
        (8, -12700, ProbeStatus::Ok),
    ] {
        out.clear();
        s.on_frame(
            t0,
            WALL,
            Ok(temp(seq, 0x8c00_0007_5a1b_2c28, centi, status)),
            &mut out,
        );
        assert_eq!(sends(&out), vec![Message::Ack { device_seq: seq }]);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Reading(_))),
            "{seq}"
        );
    }
    assert_eq!(s.take_tally().probe_faults, 6);
    let (state, detail) = s.health(t0);
    assert_eq!(state, HealthState::Degraded);
    assert_eq!(
        detail.as_deref(),
        Some("probe fault: 28-0000075a1b2c disconnected")
    );

    // A good reading clears the fault.
    s.on_frame(
        t0,
        WALL,
        Ok(temp(9, 0x8c00_0007_5a1b_2c28, 300, ProbeStatus::Ok)),
        &mut out,
    );
    assert_eq!(s.health(t0).0, HealthState::Ok);
}

#[test]
fn reading_retries_are_acked_without_a_second_reading() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let door = Message::Door {
        device_seq: 11,
        door_id: 0,
        open: true,
    };
    let mut out = Vec::new();
    s.on_frame(t0, WALL, Ok(door.clone()), &mut out);
    assert!(
        matches!(&out[0], Output::Reading(r) if r.signal == "Vehicle.Cargo.Door.IsOpen" && r.value == Value::Bool(true))
    );
    out.clear();
    s.on_frame(t0, WALL, Ok(door), &mut out);
    assert_eq!(sends(&out), vec![Message::Ack { device_seq: 11 }]);
    assert_eq!(out.len(), 1);
    assert_eq!(s.take_tally().duplicates, 1);
}

#[test]
fn flood_is_rate_limited_and_counted() {
    let t0 = Instant::now();
    let mut s = open(t0); // the Hello took one token
    let mut out = Vec::new();
    for _ in 0..1000 {
        s.on_frame(
            t0,
            WALL,
            Err(FrameError::Crc {
                offset: 0,
                len: 9,
                received: 1,
                computed: 2,
            }),
            &mut out,
        );
    }
    let t = s.take_tally();
    assert_eq!(t.invalid, 49);
    assert_eq!(t.dropped, 951);
    assert!(out.is_empty());
    // A second later the bucket is full again: a POD goes through.
    s.on_frame(t0 + Duration::from_secs(1), WALL, Ok(pod(1)), &mut out);
    assert!(matches!(out[0], Output::Store { .. }));
}

#[test]
fn in_flight_appends_are_bounded() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    for seq in 0..MAX_IN_FLIGHT as u32 {
        s.on_frame(t0, WALL, Ok(pod(seq)), &mut out);
    }
    out.clear();
    s.on_frame(t0, WALL, Ok(pod(999)), &mut out);
    assert_eq!(
        sends(&out),
        vec![Message::Nack {
            device_seq: 999,
            reason: NackReason::RateLimited
        }]
    );
}

#[test]
fn event_ids_are_stable_distinct_uuidv8() {
    let a = event_id(DEVICE, 1);
    assert_eq!(a, event_id(DEVICE, 1));
    assert_eq!(a.get_version_num(), 8);
    assert_eq!(a.get_variant(), uuid::Variant::RFC4122);
    let mut seen = std::collections::HashSet::new();
    for dev in [0, 1, DEVICE, u64::MAX, 1 << 63] {
        for seq in [0, 1, 2, u32::MAX, 1 << 31] {
            assert!(seen.insert(event_id(dev, seq)), "{dev} {seq}");
        }
    }
    // The device id and sequence can be read back from the id (injective encoding).
    let v = event_id(u64::MAX, 0).as_u128();
    assert_eq!(v & 0xffff_ffff, 0);
}

#[test]
fn gateway_messages_from_the_device_are_malformed() {
    let t0 = Instant::now();
    let mut s = open(t0);
    let mut out = Vec::new();
    s.on_frame(t0, WALL, Ok(Message::Ack { device_seq: 3 }), &mut out);
    assert_eq!(
        sends(&out),
        vec![Message::Nack {
            device_seq: 0,
            reason: NackReason::Malformed
        }]
    );
}
