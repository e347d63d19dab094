//! Golden bytes: the exact frame of every message variant (the wire format pinned), each
//! decoded back from 1-byte chunks. A change here is a wire-format change: see README.md,
//! "Evolution rules".

// Helpers outside `#[test]` fns unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use firmware_proto::{
    Capabilities, Decoder, DeviceKind, FirmwareVersion, MAX_CONTENT, MAX_FRAME, Message,
    NackReason, PodOutcome, ProbeStatus,
};

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn s<const N: usize>(text: &str) -> heapless::String<N> {
    heapless::String::try_from(text).unwrap()
}

/// Every variant, with its frame as hex (whitespace between bytes is free).
fn cases() -> Vec<(&'static str, Message, &'static str)> {
    let sig = {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = i as u8;
        }
        h
    };
    vec![
        (
            "hello",
            Message::Hello {
                device_id: 0x0123_4567_89AB_CDEF,
                kind: DeviceKind::PodButton,
                firmware_version: FirmwareVersion {
                    major: 1,
                    minor: 2,
                    patch: 300,
                },
                protocol_version: 1,
                capabilities: Capabilities::POD | Capabilities::TIME_SYNC | Capabilities::CONFIG,
            },
            "02 01 0a ef 9b af cd f8 ac d1 91 01 0b 01 02 ac 02 01 61 87 84 9d 4a 00",
        ),
        (
            "hello_other_kind",
            Message::Hello {
                device_id: 1,
                kind: DeviceKind::Other(200),
                firmware_version: FirmwareVersion {
                    major: 0,
                    minor: 0,
                    patch: 0,
                },
                protocol_version: 1,
                capabilities: Capabilities(0x8000_0000),
            },
            "02 01 04 01 05 c8 01 01 0b 01 80 80 80 80 08 17 e4 b6 fa 00",
        ),
        (
            "pod_full",
            Message::Pod {
                device_seq: 70_000,
                outcome: PodOutcome::Delivered,
                stop_ref: Some(s("STOP-0042")),
                order_ref: Some(s("ORD-2026-11-000123")),
                recipient: Some(s("Jürgen Müller")),
                evidence: Some(sig),
            },
            "06 01 01 f0 a2 04 32 01 09 53 54 4f 50 2d 30 30 34 32 01 12 4f 52 44 2d
             32 30 32 36 2d 31 31 2d 30 30 30 31 32 33 01 0f 4a c3 bc 72 67 65 6e 20
             4d c3 bc 6c 6c 65 72 01 24 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f
             10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f 43 99 b0 48 00",
        ),
        (
            "pod_minimal",
            Message::Pod {
                device_seq: 0,
                outcome: PodOutcome::Attempted,
                stop_ref: None,
                order_ref: None,
                recipient: None,
                evidence: None,
            },
            "03 01 01 02 04 01 01 01 05 d5 5d 52 4d 00",
        ),
        (
            "temperature",
            Message::Temperature {
                device_seq: 5,
                probe_id: 0x5B00_0012_3456_7828,
                centi_celsius: -1850,
                status: ProbeStatus::Ok,
            },
            "0f 01 02 05 a8 f0 d9 a2 a3 82 80 80 5b f3 1c 05 3f 78 1c 36 00",
        ),
        (
            "temperature_disconnected",
            Message::Temperature {
                device_seq: 6,
                probe_id: 0x5B00_0012_3456_7828,
                centi_celsius: 0,
                status: ProbeStatus::Disconnected,
            },
            "0d 01 02 06 a8 f0 d9 a2 a3 82 80 80 5b 06 03 a9 a0 47 d8 00",
        ),
        (
            "door",
            Message::Door {
                device_seq: 7,
                door_id: 1,
                open: true,
            },
            "0a 01 03 07 01 01 bd ef 78 8a 00",
        ),
        (
            "heartbeat",
            Message::Heartbeat {
                uptime_s: 86_400,
                pending: 3,
            },
            "0b 01 04 80 a3 05 03 67 26 ca c4 00",
        ),
        (
            "ack",
            Message::Ack { device_seq: 70_000 },
            "0a 01 05 f0 a2 04 dc 4d 37 62 00",
        ),
        (
            "nack",
            Message::Nack {
                device_seq: 70_000,
                reason: NackReason::NotStored,
            },
            "0b 01 06 f0 a2 04 02 64 8a 87 65 00",
        ),
        (
            "nack_other",
            Message::Nack {
                device_seq: 1,
                reason: NackReason::Other(42),
            },
            "0a 01 06 01 04 2a af 5e b2 19 00",
        ),
        (
            "time_sync",
            Message::TimeSync {
                unix_ms: 1_795_000_000_000,
            },
            "0d 01 07 80 bc d9 f2 9e 34 e5 f6 ff 75 00",
        ),
        (
            "config",
            Message::Config {
                heartbeat_interval_s: 30,
                temperature_interval_s: 300,
            },
            "0a 01 08 1e ac 02 4f 04 88 a4 00",
        ),
    ]
}

#[test]
fn every_variant_has_its_golden_frame() {
    let mut buf = [0u8; MAX_FRAME];
    let mut failures = Vec::new();
    for (name, msg, golden) in cases() {
        let frame = firmware_proto::encode(&msg, &mut buf).unwrap();
        let golden = golden.split_whitespace().collect::<Vec<_>>().join(" ");
        if hex(frame) != golden {
            failures.push(format!("{name}: {}", hex(frame)));
        }
    }
    assert!(
        failures.is_empty(),
        "frames differ:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_golden_frame_decodes_from_one_byte_chunks() {
    let mut decoder = Decoder::<MAX_CONTENT>::new();
    let mut buf = [0u8; MAX_FRAME];
    for (name, msg, _) in cases() {
        let frame = firmware_proto::encode(&msg, &mut buf).unwrap();
        let mut got = Vec::new();
        for &byte in frame {
            got.extend(decoder.feed(&[byte]));
        }
        assert_eq!(got, vec![Ok(msg)], "{name}");
    }
}

#[test]
fn push_decodes_a_golden_stream() {
    let mut decoder = Decoder::<MAX_CONTENT>::new();
    let mut buf = [0u8; MAX_FRAME];
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (_, msg, _) in cases() {
        stream.extend_from_slice(firmware_proto::encode(&msg, &mut buf).unwrap());
        expected.push(Ok(msg));
    }
    let got: Vec<_> = stream.iter().filter_map(|&b| decoder.push(b)).collect();
    assert_eq!(got, expected);
    assert_eq!(decoder.offset(), stream.len() as u64);
}

/// The largest message this version can express must fit `MAX_CONTENT` / `MAX_FRAME`.
#[test]
fn the_largest_message_fits_max_frame() {
    let largest = Message::Pod {
        device_seq: u32::MAX,
        outcome: PodOutcome::Partial,
        stop_ref: Some(s(&"€".repeat(10))),
        order_ref: Some(s(&"x".repeat(32))),
        recipient: Some(s(&"ü".repeat(24))),
        evidence: Some([0xFF; 32]),
    };
    let mut buf = [0u8; MAX_FRAME];
    let frame = firmware_proto::encode(&largest, &mut buf).unwrap();
    assert!(frame.len() <= MAX_FRAME);
    let mut decoder = Decoder::<MAX_CONTENT>::new();
    let got: Vec<_> = decoder.feed(frame).collect();
    assert_eq!(got, vec![Ok(largest)]);
}

#[test]
fn small_enum_values_are_their_wire_tags() {
    // The README's tables list these tags; postcard writes a variant's index as a varint.
    let mut buf = [0u8; 8];
    for (i, outcome) in [
        PodOutcome::Delivered,
        PodOutcome::Refused,
        PodOutcome::Partial,
        PodOutcome::Damaged,
        PodOutcome::Attempted,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(postcard::to_slice(outcome, &mut buf).unwrap(), [i as u8]);
    }
    for (i, status) in [
        ProbeStatus::Ok,
        ProbeStatus::CrcError,
        ProbeStatus::PowerOnReset,
        ProbeStatus::Disconnected,
        ProbeStatus::OutOfRange,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(postcard::to_slice(status, &mut buf).unwrap(), [i as u8]);
    }
    for (i, kind) in [
        DeviceKind::PodButton,
        DeviceKind::Scanner,
        DeviceKind::SignaturePad,
        DeviceKind::TemperatureProbe,
        DeviceKind::DoorSensor,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(postcard::to_slice(kind, &mut buf).unwrap(), [i as u8]);
    }
    assert_eq!(
        postcard::to_slice(&DeviceKind::Other(7), &mut buf).unwrap(),
        [5, 7]
    );
    for (i, reason) in [
        NackReason::Malformed,
        NackReason::VersionMismatch,
        NackReason::NotStored,
        NackReason::RateLimited,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(postcard::to_slice(reason, &mut buf).unwrap(), [i as u8]);
    }
    assert_eq!(
        postcard::to_slice(&NackReason::Other(9), &mut buf).unwrap(),
        [4, 9]
    );
}

#[test]
fn readme_figures_hold() {
    // README: "today's largest message ... is 165" bytes on the wire.
    let largest = Message::Pod {
        device_seq: u32::MAX,
        outcome: PodOutcome::Attempted,
        stop_ref: Some(s(&"x".repeat(32))),
        order_ref: Some(s(&"x".repeat(32))),
        recipient: Some(s(&"x".repeat(48))),
        evidence: Some([0xFF; 32]),
    };
    let mut buf = [0u8; MAX_FRAME];
    assert_eq!(
        firmware_proto::encode(&largest, &mut buf).unwrap().len(),
        165
    );
    assert_eq!(firmware_proto::PROTOCOL_VERSION, 1);
    assert_eq!(MAX_CONTENT, 250);
    assert_eq!(MAX_FRAME, 256);
}
