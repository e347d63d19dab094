//! Scheduling, timeouts and decoding of the OBD-II poller, driven by a scripted ECU set.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing {
        fast: 1000 * MS,
        slow: 10_000 * MS,
        response_timeout: 100 * MS,
        discovery_retry: 5000 * MS,
        max_timeouts: 3,
    }
}

fn send(p: Poll) -> Request {
    match p {
        Poll::Send(r) => r,
        Poll::Until(t) => panic!("expected a request, got Until({t:?})"),
    }
}

fn until(p: Poll) -> Instant {
    match p {
        Poll::Until(t) => t,
        Poll::Send(r) => panic!("expected a wait, got {r:?}"),
    }
}

/// A bitmap with exactly `pids` (all within `base+1..=base+0x20`) set.
fn bitmap(base: u8, pids: &[u8]) -> [u8; 4] {
    let mut w = 0u32;
    for p in pids {
        w |= 1 << (31 - u32::from(p - base - 1));
    }
    w.to_be_bytes()
}

fn positive(pid: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0x41, pid];
    v.extend_from_slice(data);
    v
}

/// Runs discovery at `t0` with the given ECUs' 01 00 bitmaps; returns the time polling began.
fn discover(p: &mut Poller, t0: Instant, ecus: &[(u8, [u8; 4])]) -> Instant {
    let r = send(p.poll(t0));
    assert_eq!(r.to, Target::Functional);
    assert_eq!(r.payload, vec![0x01, 0x00]);
    assert_eq!(p.status().phase, Phase::Discovering);
    for (i, (ecu, bits)) in ecus.iter().enumerate() {
        let at = t0 + (10 + i as u32) * MS;
        assert_eq!(p.on_response(at, *ecu, &positive(0x00, bits)), None);
    }
    // The window stays open until the response timeout.
    assert_eq!(until(p.poll(t0 + 50 * MS)), t0 + 100 * MS);
    t0 + 100 * MS
}

/// An engine ECU with speed, rpm, coolant (0x00 bitmap), fuel level (0x20), odometer (0xA0).
fn full_engine() -> Vec<[u8; 4]> {
    vec![
        bitmap(0x00, &[0x05, 0x0C, 0x0D, 0x20]),
        bitmap(0x20, &[0x2F, 0x40]),
        bitmap(0x40, &[0x60]),
        bitmap(0x60, &[0x80]),
        bitmap(0x80, &[0xA0]),
        bitmap(0xA0, &[0xA6]),
    ]
}

/// Answers the bitmap chain of `ecu` after discovery.
fn read_bitmaps(p: &mut Poller, mut t: Instant, ecu: u8, maps: &[[u8; 4]]) -> Instant {
    for (i, bits) in maps.iter().enumerate().skip(1) {
        let base = (i as u8) * 0x20;
        let r = send(p.poll(t));
        assert_eq!(r.to, Target::Ecu(ecu));
        assert_eq!(r.payload, vec![0x01, base], "bitmap {base:02X}");
        t += 5 * MS;
        assert_eq!(p.on_response(t, ecu, &positive(base, bits)), None);
    }
    t
}

fn vin_payload() -> Vec<u8> {
    let mut v = vec![0x49, 0x02, 0x01];
    v.extend_from_slice(b"WF0XXXTTGXKA12345");
    v
}

#[test]
fn discovery_bitmaps_vin_then_polling_by_rate() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let maps = full_engine();
    let t = discover(&mut p, t0, &[(0, maps[0])]);
    let t = read_bitmaps(&mut p, t, 0, &maps);
    let st = p.status();
    assert_eq!(st.phase, Phase::Polling);
    assert_eq!(st.ecus, vec![0]);
    assert_eq!(st.odometer, Some(true));

    let r = send(p.poll(t));
    assert_eq!((r.to, r.payload), (Target::Ecu(0), vec![0x09, 0x02]));
    assert_eq!(
        p.on_response(t + MS, 0, &vin_payload()),
        Some(Decoded::Vin("WF0XXXTTGXKA12345".into()))
    );

    // All five PIDs once, fast ones first, each answered.
    let answers: [(u8, &[u8], &str, f64); 5] = [
        (0x0D, &[0x32], "Vehicle.Speed", 50.0),
        (
            0x0C,
            &[0x0C, 0x80],
            "Vehicle.Powertrain.CombustionEngine.Speed",
            800.0,
        ),
        (
            0x05,
            &[0x7B],
            "Vehicle.Powertrain.CombustionEngine.ECT",
            83.0,
        ),
        (
            0x2F,
            &[0xFF],
            "Vehicle.Powertrain.FuelSystem.RelativeLevel",
            100.0,
        ),
        (
            0xA6,
            &[0, 0, 0x30, 0x39],
            "Vehicle.TraveledDistance",
            1234.5,
        ),
    ];
    let mut t = t + 2 * MS;
    for (pid, data, signal, value) in answers {
        let r = send(p.poll(t));
        assert_eq!((r.to, r.payload), (Target::Ecu(0), vec![0x01, pid]));
        t += 3 * MS;
        match p.on_response(t, 0, &positive(pid, data)) {
            Some(Decoded::Signal {
                signal: s,
                value: v,
                ..
            }) => {
                assert_eq!((s, v), (signal, value));
            }
            other => panic!("{pid:02X}: {other:?}"),
        }
    }
    // Then nothing until the fast PIDs are due again (1 s after they were asked).
    let wake = until(p.poll(t));
    assert!(wake > t && wake <= t + 1000 * MS, "{wake:?}");
    let r = send(p.poll(wake));
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    p.on_response(wake + MS, 0, &positive(0x0D, &[1]));
    // rpm was asked 3 ms after speed, so it is due 3 ms after it.
    assert_eq!(until(p.poll(wake + MS)), wake + 3 * MS);
    let r = send(p.poll(wake + 3 * MS));
    assert_eq!(r.payload, vec![0x01, 0x0C]);
    p.on_response(wake + 4 * MS, 0, &positive(0x0C, &[0, 4]));
    // The slow ones are not due for 10 s: count requests over 9 s of answered polling.
    let mut now = wake + 4 * MS;
    let end = t0 + 9000 * MS;
    let mut slow = 0;
    while now < end {
        match p.poll(now) {
            Poll::Send(r) => {
                if ![0x0D, 0x0C].contains(&r.payload[1]) {
                    slow += 1;
                }
                let pid = r.payload[1];
                let data = [0u8; 4];
                p.on_response(now + MS, 0, &positive(pid, &data));
                now += MS;
            }
            Poll::Until(t) => now = t,
        }
    }
    assert_eq!(slow, 0, "slow PIDs asked early");
    assert_eq!(p.status().timeouts, 0);
}

#[test]
fn no_answer_waits_and_retries_discovery() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    send(p.poll(t0));
    assert_eq!(until(p.poll(t0 + 99 * MS)), t0 + 100 * MS);
    // Window closes with nobody: idle until the retry.
    assert_eq!(until(p.poll(t0 + 100 * MS)), t0 + 5100 * MS);
    assert_eq!(p.status().phase, Phase::Idle);
    assert_eq!(p.status().odometer, None);
    assert_eq!(until(p.poll(t0 + 3000 * MS)), t0 + 5100 * MS);
    let r = send(p.poll(t0 + 5100 * MS));
    assert_eq!(r.to, Target::Functional);
    // A late answer to nothing outstanding is ignored.
    let mut q = Poller::new(timing(), t0);
    assert_eq!(q.on_response(t0, 0, &positive(0x00, &[0; 4])), None);
    assert_eq!(q.status().ignored, 1);
}

#[test]
fn two_ecus_lowest_address_serves_and_other_fills_gaps() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    // ECU 1 (transmission, 0x7E9) answers first and has speed; ECU 0 (engine) has rpm and speed.
    let t = discover(
        &mut p,
        t0,
        &[(1, bitmap(0x00, &[0x0D])), (0, bitmap(0x00, &[0x0C, 0x0D]))],
    );
    assert_eq!(p.status().ecus, vec![0, 1]);
    assert_eq!(p.status().odometer, None, "window still open");
    // VIN: ECU 0 refuses (service not supported), ECU 1 times out, then it is not asked again.
    let r = send(p.poll(t));
    assert_eq!(
        (r.to, r.payload.clone()),
        (Target::Ecu(0), vec![0x09, 0x02])
    );
    assert_eq!(p.on_response(t + MS, 0, &[0x7F, 0x09, 0x11]), None);
    assert_eq!(p.status().odometer, Some(false));
    let r = send(p.poll(t + MS));
    assert_eq!(
        (r.to, r.payload.clone()),
        (Target::Ecu(1), vec![0x09, 0x02])
    );
    let t = t + 101 * MS;
    let r = send(p.poll(t));
    assert_eq!((r.to, r.payload), (Target::Ecu(0), vec![0x01, 0x0D]));
    p.on_response(t + MS, 0, &positive(0x0D, &[10]));
    let r = send(p.poll(t + MS));
    assert_eq!((r.to, r.payload), (Target::Ecu(0), vec![0x01, 0x0C]));
    // ECU 0 refuses rpm now (request out of range): rpm goes nowhere else (ECU 1 lacks it).
    p.on_response(t + 2 * MS, 0, &[0x7F, 0x01, 0x31]);
    assert_eq!(p.status().negative, 2);
    let later = t + 1500 * MS;
    let r = send(p.poll(later));
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    p.on_response(later, 0, &positive(0x0D, &[10]));
    let wake = until(p.poll(later));
    assert!(wake > later, "rpm must not be asked again");
}

#[test]
fn refused_speed_moves_to_the_next_ecu() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(
        &mut p,
        t0,
        &[(0, bitmap(0x00, &[0x0D])), (1, bitmap(0x00, &[0x0D]))],
    );
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x09, 0x02]);
    p.on_response(t, 0, &vin_payload());
    let r = send(p.poll(t));
    assert_eq!((r.to, r.payload), (Target::Ecu(0), vec![0x01, 0x0D]));
    p.on_response(t, 0, &[0x7F, 0x01, 0x12]);
    let t = t + 1000 * MS;
    let r = send(p.poll(t));
    assert_eq!((r.to, r.payload), (Target::Ecu(1), vec![0x01, 0x0D]));
}

#[test]
fn response_pending_extends_to_p2_star_and_busy_retries() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0D]))]);
    send(p.poll(t)); // VIN
    assert_eq!(p.on_response(t + 50 * MS, 0, &[0x7F, 0x09, 0x78]), None);
    // Still outstanding well past the normal timeout.
    assert_eq!(until(p.poll(t + 1000 * MS)), t + 50 * MS + P2_STAR);
    assert_eq!(
        p.on_response(t + 2000 * MS, 0, &vin_payload()),
        Some(Decoded::Vin("WF0XXXTTGXKA12345".into()))
    );
    let t = t + 2000 * MS;
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    p.on_response(t, 0, &[0x7F, 0x01, 0x21]);
    // Busy: asked again after the short pause, not after the full period.
    assert_eq!(until(p.poll(t)), t + BUSY_RETRY);
    let r = send(p.poll(t + BUSY_RETRY));
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    assert_eq!(p.status().timeouts, 0);
}

#[test]
fn busy_vin_is_asked_again() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0D]))]);
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x09, 0x02]);
    p.on_response(t, 0, &[0x7F, 0x09, 0x21]);
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x09, 0x02]);
}

#[test]
fn consecutive_timeouts_restart_discovery() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0C, 0x0D]))]);
    send(p.poll(t)); // VIN, times out (1)
    let t = t + 100 * MS;
    let r = send(p.poll(t)); // speed, times out (2)
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    let t = t + 100 * MS;
    let r = send(p.poll(t)); // rpm: an answer resets the count
    assert_eq!(r.payload, vec![0x01, 0x0C]);
    assert!(p.on_response(t + MS, 0, &positive(0x0C, &[0, 4])).is_some());
    let mut t = t + MS;
    let mut sent = 0;
    let next = loop {
        match p.poll(t) {
            Poll::Send(_) => sent += 1,
            Poll::Until(w) if p.status().phase == Phase::Idle => break w,
            Poll::Until(w) => t = w,
        }
    };
    assert_eq!(sent, 3, "three unanswered requests end polling");
    assert_eq!(p.status().ecus, Vec::<u8>::new());
    assert_eq!(p.status().timeouts, 5);
    assert_eq!(next, t + 5000 * MS, "idle from the last timeout");
    let r = send(p.poll(next));
    assert_eq!(r.to, Target::Functional);
}

#[test]
fn wrong_ecu_wrong_pid_and_garbage_are_ignored() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0D]))]);
    p.on_response(t, 0, &[0x7F, 0x09, 0x11]); // VIN not outstanding yet: ignored
    send(p.poll(t)); // VIN
    p.on_response(t, 0, &[0x7F, 0x09, 0x11]);
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x01, 0x0D]);
    let before = p.status().ignored;
    assert_eq!(
        p.on_response(t, 3, &positive(0x0D, &[5])),
        None,
        "other ECU"
    );
    assert_eq!(
        p.on_response(t, 0, &positive(0x0C, &[5, 5])),
        None,
        "other PID"
    );
    assert_eq!(p.on_response(t, 0, &positive(0x0D, &[])), None, "too short");
    assert_eq!(p.on_response(t, 0, &[0x62]), None, "unknown service");
    assert_eq!(
        p.on_response(t, 0, &[0x7F, 0x09, 0x12]),
        None,
        "NRC for another service"
    );
    assert_eq!(
        p.on_response(t, 0, &[0x49, 0x02, 1, 2]),
        None,
        "VIN not asked"
    );
    assert_eq!(p.status().ignored, before + 6);
    // Still outstanding: the right answer is taken.
    assert!(matches!(
        p.on_response(t, 0, &positive(0x0D, &[5])),
        Some(Decoded::Signal { value, .. }) if value == 5.0
    ));
}

#[test]
fn discovery_ignores_other_answers_and_short_bitmaps() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    send(p.poll(t0));
    p.on_response(t0, 0, &positive(0x00, &[0xFF, 0xFF]));
    p.on_response(t0, 1, &positive(0x0D, &[1, 2, 3, 4]));
    assert_eq!(p.status().ignored, 2);
    // Nobody valid answered: idle.
    until(p.poll(t0 + 100 * MS));
    assert_eq!(p.status().phase, Phase::Idle);
}

#[test]
fn malformed_vin_is_not_a_reading_and_vin_is_asked_again_next_discovery() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0D]))]);
    send(p.poll(t));
    assert_eq!(p.on_response(t, 0, &[0x49, 0x02, 0x01, b'X']), None);
    let r = send(p.poll(t));
    assert_eq!(
        r.payload,
        vec![0x01, 0x0D],
        "each ECU is asked once per discovery"
    );
}

#[test]
fn bitmap_refusal_stops_the_chain_and_odometer_is_unknown_until_read() {
    let t0 = Instant::now();
    let mut p = Poller::new(timing(), t0);
    let t = discover(&mut p, t0, &[(0, bitmap(0x00, &[0x0D, 0x20]))]);
    assert_eq!(p.status().odometer, None, "bitmap 0x20 not read yet");
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x01, 0x20]);
    p.on_response(t, 0, &[0x7F, 0x01, 0x12]);
    assert_eq!(p.status().odometer, Some(false));
    let r = send(p.poll(t));
    assert_eq!(r.payload, vec![0x09, 0x02]);
}

#[test]
fn addressing_ids() {
    let a = Addressing::Normal11;
    assert_eq!(a.functional_id(), 0x7DF);
    assert_eq!(a.request_id(0), 0x7E0);
    assert_eq!(a.request_id(7), 0x7E7);
    assert_eq!(a.response_id(1), 0x7E9);
    assert_eq!(a.ecu_of(0x7E8), Some(0));
    assert_eq!(a.ecu_of(0x7EF), Some(7));
    assert_eq!(a.ecu_of(0x7E7), None);
    assert_eq!(a.ecu_of(0x7F0), None);
    assert_eq!(a.response_filter(), (0x7E8, 0x7F8));
    assert_eq!(a.ecu_name(0), "0x7E8");
    assert!(!a.is_extended());
    let b = Addressing::Normal29;
    assert_eq!(b.functional_id(), 0x18DB_33F1);
    assert_eq!(b.request_id(0x10), 0x18DA_10F1);
    assert_eq!(b.response_id(0x10), 0x18DA_F110);
    assert_eq!(b.ecu_of(0x18DA_F118), Some(0x18));
    assert_eq!(b.ecu_of(0x18DA_10F1), None);
    assert_eq!(b.ecu_of(0x18DB_33F1), None);
    let (id, mask) = b.response_filter();
    assert_eq!(0x18DA_F1AB & mask, id);
    assert_ne!(0x18DA_F2AB & mask, id);
    assert_eq!(b.ecu_name(0x10), "0x18DAF110");
    assert!(b.is_extended());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// One step of a random conversation: time passes, then maybe an answer arrives.
    #[derive(Debug, Clone)]
    struct Step {
        advance_ms: u32,
        ecu: u8,
        payload: Vec<u8>,
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let known = prop_oneof![
            Just(0x00u8),
            Just(0x20),
            Just(0x40),
            Just(0x60),
            Just(0x80),
            Just(0xA0),
            Just(0x0D),
            Just(0x0C),
            Just(0x05),
            Just(0x2F),
            Just(0xA6),
        ];
        prop_oneof![
            // Answers to what the poller asks, with random data (bitmaps included).
            3 => (known, proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(pid, d)| [vec![0x41, pid], d].concat()),
            1 => proptest::array::uniform4(any::<u8>())
                .prop_map(|b| [vec![0x41, 0x00], b.to_vec()].concat()),
            // Anything else: positive mode 01 / 09, negative, with random data.
            1 => (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(pid, d)| [vec![0x41, pid], d].concat()),
            1 => proptest::collection::vec(any::<u8>(), 0..24)
                .prop_map(|d| [vec![0x49, 0x02], d].concat()),
            1 => (prop_oneof![Just(0x01u8), Just(0x09)], any::<u8>())
                .prop_map(|(s, c)| vec![0x7F, s, c]),
            1 => proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        (0u32..300, 0u8..4, payload()).prop_map(|(advance_ms, ecu, payload)| Step {
            advance_ms,
            ecu,
            payload,
        })
    }

    static POLLING_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    #[test]
    fn conversations_reach_polling() {
        // The generator must exercise the polling phase, not only discovery.
        any_conversation_keeps_the_invariants();
        let n = POLLING_RUNS.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n >= 20,
            "only {n} of 256 random conversations reached physical requests"
        );
    }

    proptest! {
        /// Whatever the ECUs say and whenever: no panic, waits never point into the past,
        /// physical requests go only to ECUs that answered the discovery, and every request
        /// is a known one.
        #[test]
        fn any_conversation_keeps_the_invariants(steps in proptest::collection::vec(step(), 1..80)) {
            let t0 = Instant::now();
            let mut p = Poller::new(timing(), t0);
            let mut now = t0;
            let mut answered_discovery: Vec<u8> = Vec::new();
            let mut in_discovery = false;
            let mut physical = 0u32;
            for s in steps {
                now += s.advance_ms * MS;
                for _ in 0..4 {
                    match p.poll(now) {
                        Poll::Send(r) => {
                            prop_assert!(r.payload.len() == 2);
                            match r.to {
                                Target::Functional => {
                                    prop_assert_eq!(&r.payload, &vec![0x01, 0x00]);
                                    in_discovery = true;
                                    answered_discovery.clear();
                                }
                                Target::Ecu(e) => {
                                    in_discovery = false;
                                    physical += 1;
                                    prop_assert!(answered_discovery.contains(&e), "{} not discovered", e);
                                    prop_assert!(r.payload == [0x09, 0x02] || r.payload[0] == 0x01);
                                }
                            }
                        }
                        Poll::Until(t) => {
                            prop_assert!(t >= now);
                            break;
                        }
                    }
                }
                let bitmap_answer = s.payload.len() >= 6 && s.payload[..2] == [0x41, 0x00];
                if in_discovery && bitmap_answer && p.status().phase == Phase::Discovering {
                    answered_discovery.push(s.ecu);
                }
                let _decoded = p.on_response(now, s.ecu, &s.payload);
                let st = p.status();
                prop_assert!(st.ecus.iter().all(|e| answered_discovery.contains(e)));
            }
            POLLING_RUNS.fetch_add(u64::from(physical > 0), std::sync::atomic::Ordering::Relaxed);
        }
    }
}
