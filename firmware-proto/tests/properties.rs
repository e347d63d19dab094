//! Property tests: every message round-trips through `encode` and the streaming decoder in any
//! chunking; corrupted streams (bit flips, truncation, inserted garbage, random bytes) yield
//! errors or valid frames, never a panic, and the decoder recovers for the next good frame.

// Helpers outside `#[test]` fns unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use firmware_proto::{
    Capabilities, Decoder, DeviceKind, Error, FirmwareVersion, MAX_CONTENT, MAX_FRAME, Message,
    NackReason, PodOutcome, ProbeStatus,
};
use proptest::prelude::*;

fn bounded_string<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    // Mixed 1- to 4-byte characters, cut to the capacity in bytes.
    proptest::collection::vec(
        prop_oneof![
            proptest::char::range('a', 'z'),
            Just('ü'),
            Just('€'),
            Just('🚚'),
        ],
        0..=N,
    )
    .prop_map(|chars| {
        let mut out = heapless::String::new();
        for c in chars {
            if out.push(c).is_err() {
                break;
            }
        }
        out
    })
}

fn device_kind() -> impl Strategy<Value = DeviceKind> {
    prop_oneof![
        Just(DeviceKind::PodButton),
        Just(DeviceKind::Scanner),
        Just(DeviceKind::SignaturePad),
        Just(DeviceKind::TemperatureProbe),
        Just(DeviceKind::DoorSensor),
        any::<u8>().prop_map(DeviceKind::Other),
    ]
}

fn pod_outcome() -> impl Strategy<Value = PodOutcome> {
    prop_oneof![
        Just(PodOutcome::Delivered),
        Just(PodOutcome::Refused),
        Just(PodOutcome::Partial),
        Just(PodOutcome::Damaged),
        Just(PodOutcome::Attempted),
    ]
}

fn probe_status() -> impl Strategy<Value = ProbeStatus> {
    prop_oneof![
        Just(ProbeStatus::Ok),
        Just(ProbeStatus::CrcError),
        Just(ProbeStatus::PowerOnReset),
        Just(ProbeStatus::Disconnected),
        Just(ProbeStatus::OutOfRange),
    ]
}

fn nack_reason() -> impl Strategy<Value = NackReason> {
    prop_oneof![
        Just(NackReason::Malformed),
        Just(NackReason::VersionMismatch),
        Just(NackReason::NotStored),
        Just(NackReason::RateLimited),
        any::<u8>().prop_map(NackReason::Other),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u64>(),
            device_kind(),
            any::<(u8, u8, u16)>(),
            any::<u8>(),
            any::<u32>()
        )
            .prop_map(|(device_id, kind, (major, minor, patch), pv, caps)| {
                Message::Hello {
                    device_id,
                    kind,
                    firmware_version: FirmwareVersion {
                        major,
                        minor,
                        patch,
                    },
                    protocol_version: pv,
                    capabilities: Capabilities(caps),
                }
            }),
        (
            any::<u32>(),
            pod_outcome(),
            proptest::option::of(bounded_string::<32>()),
            proptest::option::of(bounded_string::<32>()),
            proptest::option::of(bounded_string::<48>()),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_map(
                |(device_seq, outcome, stop_ref, order_ref, recipient, evidence)| Message::Pod {
                    device_seq,
                    outcome,
                    stop_ref,
                    order_ref,
                    recipient,
                    evidence,
                }
            ),
        (any::<u32>(), any::<u64>(), any::<i32>(), probe_status()).prop_map(
            |(device_seq, probe_id, centi_celsius, status)| Message::Temperature {
                device_seq,
                probe_id,
                centi_celsius,
                status,
            }
        ),
        (any::<u32>(), any::<u8>(), any::<bool>()).prop_map(|(device_seq, door_id, open)| {
            Message::Door {
                device_seq,
                door_id,
                open,
            }
        }),
        (any::<u32>(), any::<u16>())
            .prop_map(|(uptime_s, pending)| Message::Heartbeat { uptime_s, pending }),
        any::<u32>().prop_map(|device_seq| Message::Ack { device_seq }),
        (any::<u32>(), nack_reason())
            .prop_map(|(device_seq, reason)| Message::Nack { device_seq, reason }),
        any::<u64>().prop_map(|unix_ms| Message::TimeSync { unix_ms }),
        (any::<u16>(), any::<u16>()).prop_map(|(h, t)| Message::Config {
            heartbeat_interval_s: h,
            temperature_interval_s: t,
        }),
    ]
}

fn frame(msg: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    firmware_proto::encode(msg, &mut buf).unwrap().to_vec()
}

/// Feeds `stream` cut at the (sorted, deduplicated) `cuts`.
fn feed_chunked<const N: usize>(
    decoder: &mut Decoder<N>,
    stream: &[u8],
    cuts: &[usize],
) -> Vec<Result<Message, Error>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts.into_iter().chain([stream.len()]) {
        out.extend(decoder.feed(&stream[at..cut]));
        at = cut;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip_in_any_chunking(
        msgs in proptest::collection::vec(message(), 1..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut stream = Vec::new();
        for msg in &msgs {
            let f = frame(msg);
            prop_assert!(f.len() <= MAX_FRAME);
            prop_assert_eq!(f.iter().filter(|&&b| b == 0).count(), 1);
            stream.extend_from_slice(&f);
        }
        let mut decoder = Decoder::<MAX_CONTENT>::new();
        let got = feed_chunked(&mut decoder, &stream, &cuts);
        let expected: Vec<_> = msgs.into_iter().map(Ok).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(decoder.offset(), stream.len() as u64);
    }

    #[test]
    fn bit_flips_are_detected_or_harmless_and_the_next_frame_decodes(
        msg in message(),
        next in message(),
        flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..4),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let mut bad = frame(&msg);
        for &(at, bit) in &flips {
            let at = at % bad.len();
            bad[at] ^= 1 << bit;
        }
        let mut stream = bad;
        // A flip may have destroyed the delimiter; a lone 0x00 (ignored when empty) closes
        // whatever is left, as a device does after a reset.
        stream.push(0);
        stream.extend_from_slice(&frame(&next));
        let mut decoder = Decoder::<MAX_CONTENT>::new();
        let got = feed_chunked(&mut decoder, &stream, &cuts);
        // Up to 3 flips in a frame this size: CRC-32C catches all of them, unless a flip
        // turned a data byte into 0x00 or a 0x00 into data, which splits or merges frames.
        prop_assert_eq!(got.last(), Some(&Ok(next)));
        for result in &got[..got.len() - 1] {
            prop_assert!(result.is_err() || result == &Ok(msg.clone()), "{:?}", result);
        }
    }

    #[test]
    fn truncated_frames_are_errors_and_the_next_frame_decodes(
        msg in message(),
        next in message(),
        keep in any::<usize>(),
    ) {
        let f = frame(&msg);
        let keep = keep % (f.len() - 1); // drop at least the delimiter... then close it
        let mut stream = f[..keep].to_vec();
        stream.push(0);
        stream.extend_from_slice(&frame(&next));
        let mut decoder = Decoder::<MAX_CONTENT>::new();
        let got: Vec<_> = stream.iter().filter_map(|&b| decoder.push(b)).collect();
        prop_assert_eq!(got.last(), Some(&Ok(next)));
        prop_assert!(got[..got.len() - 1].iter().all(Result::is_err), "{:?}", got);
    }

    #[test]
    fn inserted_garbage_costs_at_most_the_frames_it_touches(
        before in message(),
        after in message(),
        garbage in proptest::collection::vec(any::<u8>(), 0..600),
        at in any::<usize>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let first = frame(&before);
        let at = at % first.len();
        let mut stream = first[..at].to_vec();
        stream.extend_from_slice(&garbage);
        stream.extend_from_slice(&first[at..]);
        let good = frame(&after);
        stream.extend_from_slice(&good);
        let mut decoder = Decoder::<MAX_CONTENT>::new();
        let got = feed_chunked(&mut decoder, &stream, &cuts);
        prop_assert_eq!(got.last(), Some(&Ok(after)));
    }

    #[test]
    fn random_bytes_never_panic_and_memory_stays_bounded(
        noise in proptest::collection::vec(any::<u8>(), 0..4096),
        next in message(),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut decoder = Decoder::<64>::new();
        let mut stream = noise;
        stream.push(0);
        let good = frame(&next);
        stream.extend_from_slice(&good);
        let got = feed_chunked(&mut decoder, &stream, &cuts);
        for result in &got {
            if let Err(Error::Oversized { limit, .. }) = result {
                prop_assert_eq!(*limit, 64);
            }
        }
        // A 64-byte buffer is too small for some messages: then the good frame is an
        // `Oversized` error, reported and skipped like any other.
        let last = got.last().cloned();
        if good.len() - 2 <= 64 {
            prop_assert_eq!(last, Some(Ok(next)));
        } else {
            prop_assert!(matches!(last, Some(Err(Error::Oversized { .. }))), "{:?}", last);
        }
    }
}
