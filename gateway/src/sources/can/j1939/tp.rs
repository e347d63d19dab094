//! J1939-21 transport protocol reassembly for a passive listener (sans-IO): BAM broadcasts
//! and RTS/CTS connection-mode transfers, as overheard on the bus.
//!
//! Invariants:
//! - **Bounded memory.** At most [`MAX_SESSIONS`] transfers are open; a new one beyond that
//!   evicts the one idle longest (counted). A transfer announces at most [`MAX_MESSAGE`] bytes
//!   (255 packets of 7); announcements beyond that, or with a packet count that does not fit
//!   the size, are refused (counted). A session's buffer is its announced size, no more.
//! - **Timeouts** (J1939-21 T1/T2 for a listener): a transfer with no packet for
//!   [`BAM_TIMEOUT_MS`] (BAM) or [`CMDT_TIMEOUT_MS`] (RTS/CTS, where the receiver may hold the
//!   sender with CTS) is dropped (counted). Time is the caller's `now_ms`; expiry runs on
//!   every frame and on [`Reassembler::expire`].
//! - A message is returned only when every packet arrived; packets may repeat (a CTS asking
//!   again) and are stored by sequence number. An abort from either side, or a new
//!   announcement on the same connection, drops the transfer in progress.
//! - Sessions are keyed by (bus, sender, receiver), so the same ECU talking on two buses, or
//!   BAM and RTS/CTS from one sender at once, never mix.

use super::id::{GLOBAL, J1939Id};

/// TP.CM (connection management) PGN.
pub const PGN_TP_CM: u32 = 0xEC00;
/// TP.DT (data transfer) PGN.
pub const PGN_TP_DT: u32 = 0xEB00;
/// Most transfers open at once.
pub const MAX_SESSIONS: usize = 32;
/// Largest message the transport protocol carries (255 × 7).
pub const MAX_MESSAGE: usize = 1785;
/// BAM: longest gap between packets (J1939-21 T1 = 750 ms).
pub const BAM_TIMEOUT_MS: u64 = 750;
/// RTS/CTS: longest silence on a connection (J1939-21 T2/T3 = 1250 ms).
pub const CMDT_TIMEOUT_MS: u64 = 1250;

const CM_RTS: u8 = 16;
const CM_CTS: u8 = 17;
const CM_EOMA: u8 = 19;
const CM_BAM: u8 = 32;
const CM_ABORT: u8 = 255;

/// A reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Bus index (as the caller numbers its interfaces).
    pub bus: u8,
    /// The PGN the transfer carried.
    pub pgn: u32,
    /// Sender.
    pub sa: u8,
    /// Receiver ([`GLOBAL`] for BAM).
    pub da: u8,
    /// The payload, exactly the announced size.
    pub data: Vec<u8>,
}

/// Counters of what went wrong (monotonic).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TpStats {
    /// Messages completed.
    pub completed: u64,
    /// Transfers dropped for a timeout.
    pub timed_out: u64,
    /// Transfers aborted (an abort, or a new announcement replacing one in progress).
    pub aborted: u64,
    /// Transfers evicted because [`MAX_SESSIONS`] were open.
    pub evicted: u64,
    /// Announcements refused (too large, inconsistent) and packets that fit no transfer.
    pub rejected: u64,
}

#[derive(Debug)]
struct Session {
    bus: u8,
    sa: u8,
    da: u8,
    pgn: u32,
    packets: u8,
    got: [u64; 4],
    count: u8,
    data: Vec<u8>,
    last_ms: u64,
    bam: bool,
}

impl Session {
    fn timeout(&self) -> u64 {
        if self.bam {
            BAM_TIMEOUT_MS
        } else {
            CMDT_TIMEOUT_MS
        }
    }
}

/// The reassembler: feed it every TP.CM and TP.DT frame.
#[derive(Debug, Default)]
pub struct Reassembler {
    sessions: Vec<Session>,
    stats: TpStats,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// What went wrong so far.
    pub fn stats(&self) -> TpStats {
        self.stats
    }

    /// Transfers in progress.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Drops transfers idle beyond their timeout at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) {
        let before = self.sessions.len();
        self.sessions
            .retain(|s| now_ms.saturating_sub(s.last_ms) <= s.timeout());
        self.stats.timed_out += (before - self.sessions.len()) as u64;
    }

    /// Feeds one frame of PGN [`PGN_TP_CM`] or [`PGN_TP_DT`] (others are ignored); returns
    /// the message it completed, if any.
    pub fn on_frame(&mut self, now_ms: u64, bus: u8, id: J1939Id, data: &[u8]) -> Option<Message> {
        self.expire(now_ms);
        match id.pgn {
            PGN_TP_CM => {
                self.on_cm(now_ms, bus, id, data);
                None
            }
            PGN_TP_DT => self.on_dt(now_ms, bus, id, data),
            _ => None,
        }
    }

    fn find(&self, bus: u8, sa: u8, da: u8) -> Option<usize> {
        self.sessions
            .iter()
            .position(|s| s.bus == bus && s.sa == sa && s.da == da)
    }

    fn on_cm(&mut self, now_ms: u64, bus: u8, id: J1939Id, data: &[u8]) {
        let Some(&control) = data.first() else {
            self.stats.rejected += 1;
            return;
        };
        match control {
            CM_BAM | CM_RTS => {
                let bam = control == CM_BAM;
                // BAM goes to the global address; an RTS to a specific one.
                if bam != (id.da == GLOBAL) || data.len() < 8 {
                    self.stats.rejected += 1;
                    return;
                }
                let size = usize::from(u16::from_le_bytes([data[1], data[2]]));
                let packets = data[3];
                let pgn = u32::from(data[5]) | u32::from(data[6]) << 8 | u32::from(data[7]) << 16;
                if let Some(i) = self.find(bus, id.sa, id.da) {
                    self.sessions.swap_remove(i);
                    self.stats.aborted += 1;
                }
                if !(9..=MAX_MESSAGE).contains(&size)
                    || usize::from(packets) != size.div_ceil(7)
                    || pgn > 0x3_FFFF
                {
                    self.stats.rejected += 1;
                    return;
                }
                if self.sessions.len() >= MAX_SESSIONS
                    && let Some(oldest) = self
                        .sessions
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.last_ms)
                        .map(|(i, _)| i)
                {
                    self.sessions.swap_remove(oldest);
                    self.stats.evicted += 1;
                }
                self.sessions.push(Session {
                    bus,
                    sa: id.sa,
                    da: id.da,
                    pgn,
                    packets,
                    got: [0; 4],
                    count: 0,
                    data: vec![0xFF; size],
                    last_ms: now_ms,
                    bam,
                });
            }
            CM_CTS => {
                // From the receiver: the connection is (sender = da, receiver = sa).
                if let Some(i) = self.find(bus, id.da, id.sa) {
                    self.sessions[i].last_ms = now_ms;
                }
            }
            CM_ABORT => {
                for (sa, da) in [(id.sa, id.da), (id.da, id.sa)] {
                    if let Some(i) = self.find(bus, sa, da) {
                        self.sessions.swap_remove(i);
                        self.stats.aborted += 1;
                    }
                }
            }
            CM_EOMA => {}
            _ => self.stats.rejected += 1,
        }
    }

    fn on_dt(&mut self, now_ms: u64, bus: u8, id: J1939Id, data: &[u8]) -> Option<Message> {
        let Some(i) = self.find(bus, id.sa, id.da) else {
            // Packets of a transfer we did not see start (or one we refused).
            self.stats.rejected += 1;
            return None;
        };
        let s = &mut self.sessions[i];
        let seq = data.first().copied().unwrap_or(0);
        if seq == 0 || seq > s.packets || data.len() < 2 {
            self.stats.rejected += 1;
            return None;
        }
        s.last_ms = now_ms;
        let n = usize::from(seq - 1);
        let (word, bit) = (n / 64, n % 64);
        if s.got[word] & (1 << bit) == 0 {
            s.got[word] |= 1 << bit;
            s.count += 1;
        }
        let start = n * 7;
        let end = (start + 7).min(s.data.len());
        let payload = &data[1..];
        let take = (end - start).min(payload.len());
        s.data[start..start + take].copy_from_slice(&payload[..take]);
        if s.count < s.packets {
            return None;
        }
        let s = self.sessions.swap_remove(i);
        self.stats.completed += 1;
        Some(Message {
            bus: s.bus,
            pgn: s.pgn,
            sa: s.sa,
            da: s.da,
            data: s.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cm(sa: u8, da: u8) -> J1939Id {
        J1939Id::from_raw(0x1CEC_0000 | u32::from(da) << 8 | u32::from(sa))
    }
    fn dt(sa: u8, da: u8) -> J1939Id {
        J1939Id::from_raw(0x1CEB_0000 | u32::from(da) << 8 | u32::from(sa))
    }
    fn announce(control: u8, size: u16, pgn: u32) -> [u8; 8] {
        let s = size.to_le_bytes();
        let p = size.div_ceil(7) as u8;
        [
            control,
            s[0],
            s[1],
            p,
            0xFF,
            pgn as u8,
            (pgn >> 8) as u8,
            (pgn >> 16) as u8,
        ]
    }
    fn packets(payload: &[u8]) -> Vec<[u8; 8]> {
        payload
            .chunks(7)
            .enumerate()
            .map(|(i, c)| {
                let mut p = [0xFF; 8];
                p[0] = i as u8 + 1;
                p[1..1 + c.len()].copy_from_slice(c);
                p
            })
            .collect()
    }

    #[test]
    fn bam_vin() {
        let vin = b"1FUJGLDR9CLBP8834*";
        let mut r = Reassembler::new();
        assert!(
            r.on_frame(0, 0, cm(0, GLOBAL), &announce(CM_BAM, 18, 65260))
                .is_none()
        );
        let ps = packets(vin);
        for (i, p) in ps.iter().enumerate() {
            let m = r.on_frame(50 * (i as u64 + 1), 0, dt(0, GLOBAL), p);
            if i + 1 < ps.len() {
                assert!(m.is_none());
            } else {
                let m = m.expect("complete");
                assert_eq!((m.pgn, m.sa, m.da), (65260, 0, GLOBAL));
                assert_eq!(m.data, vin);
            }
        }
        assert_eq!(r.open_sessions(), 0);
        assert_eq!(r.stats().completed, 1);
    }

    #[test]
    fn bam_timeout_drops() {
        let mut r = Reassembler::new();
        r.on_frame(0, 0, cm(3, GLOBAL), &announce(CM_BAM, 20, 65226));
        let ps = packets(&[1; 20]);
        assert!(r.on_frame(100, 0, dt(3, GLOBAL), &ps[0]).is_none());
        // 751 ms after the last packet: gone; the rest completes nothing.
        assert!(r.on_frame(851, 0, dt(3, GLOBAL), &ps[1]).is_none());
        assert!(r.on_frame(852, 0, dt(3, GLOBAL), &ps[2]).is_none());
        assert_eq!(r.stats().timed_out, 1);
        // Exactly at the timeout it is still alive.
        r.on_frame(1000, 0, cm(3, GLOBAL), &announce(CM_BAM, 20, 65226));
        r.on_frame(1750, 0, dt(3, GLOBAL), &ps[0]);
        assert_eq!(r.open_sessions(), 1);
    }

    #[test]
    fn rts_cts_with_repeats_and_abort() {
        let mut r = Reassembler::new();
        let payload: Vec<u8> = (0..30).collect();
        r.on_frame(0, 1, cm(0x10, 0x20), &announce(CM_RTS, 30, 0xFECA));
        let ps = packets(&payload);
        // Receiver CTS keeps the connection alive beyond the BAM timeout.
        r.on_frame(
            1000,
            1,
            cm(0x20, 0x10),
            &[CM_CTS, 2, 1, 0xFF, 0xFF, 0xCA, 0xFE, 0],
        );
        assert!(r.on_frame(1100, 1, dt(0x10, 0x20), &ps[0]).is_none());
        assert!(r.on_frame(1200, 1, dt(0x10, 0x20), &ps[0]).is_none());
        // The same packets on bus 0 belong to nothing.
        assert!(r.on_frame(1200, 0, dt(0x10, 0x20), &ps[1]).is_none());
        for p in &ps[1..ps.len() - 1] {
            assert!(r.on_frame(1300, 1, dt(0x10, 0x20), p).is_none());
        }
        let m = r
            .on_frame(1400, 1, dt(0x10, 0x20), &ps[ps.len() - 1])
            .expect("done");
        assert_eq!((m.bus, m.pgn, m.sa, m.da), (1, 0xFECA, 0x10, 0x20));
        assert_eq!(m.data, payload);

        r.on_frame(2000, 1, cm(0x10, 0x20), &announce(CM_RTS, 30, 0xFECA));
        // Abort from the receiver.
        r.on_frame(
            2001,
            1,
            cm(0x20, 0x10),
            &[CM_ABORT, 1, 0xFF, 0xFF, 0xFF, 0xCA, 0xFE, 0],
        );
        assert_eq!(r.open_sessions(), 0);
        assert_eq!(r.stats().aborted, 1);
    }

    #[test]
    fn refuses_bad_announcements() {
        let mut r = Reassembler::new();
        // Too big, too small, packet count wrong, BAM to a specific address, RTS to global.
        r.on_frame(0, 0, cm(1, GLOBAL), &announce(CM_BAM, 1786, 1));
        r.on_frame(0, 0, cm(1, GLOBAL), &announce(CM_BAM, 8, 1));
        r.on_frame(0, 0, cm(1, GLOBAL), &[CM_BAM, 20, 0, 9, 0xFF, 0, 0, 0]);
        r.on_frame(0, 0, cm(1, 5), &announce(CM_BAM, 20, 1));
        r.on_frame(0, 0, cm(1, GLOBAL), &announce(CM_RTS, 20, 1));
        r.on_frame(0, 0, cm(1, GLOBAL), &[CM_BAM]);
        assert_eq!(r.open_sessions(), 0);
        assert_eq!(r.stats().rejected, 6);
    }

    #[test]
    fn eviction_bounds_sessions() {
        let mut r = Reassembler::new();
        for sa in 0..=MAX_SESSIONS as u8 {
            r.on_frame(u64::from(sa), 0, cm(sa, GLOBAL), &announce(CM_BAM, 100, 1));
        }
        assert_eq!(r.open_sessions(), MAX_SESSIONS);
        assert_eq!(r.stats().evicted, 1);
        // The oldest (sa 0) went.
        assert!(r.find(0, 0, GLOBAL).is_none());
    }

    proptest! {
        /// Any frame sequence: no panic, never more than MAX_SESSIONS, every completed
        /// message exactly its announced size.
        #[test]
        fn arbitrary_frames(frames in proptest::collection::vec(
            (0u64..3000, 0u8..2, any::<bool>(), 0u8..4, 0u8..4, proptest::collection::vec(any::<u8>(), 0..9)),
            0..300,
        )) {
            let mut r = Reassembler::new();
            let mut now = 0;
            for (dt_ms, bus, is_cm, sa, da, data) in frames {
                now += dt_ms / 10;
                let da = if da == 3 { GLOBAL } else { da };
                let id = if is_cm { cm(sa, da) } else { dt(sa, da) };
                if let Some(m) = r.on_frame(now, bus, id, &data) {
                    prop_assert!(m.data.len() >= 9 && m.data.len() <= MAX_MESSAGE);
                }
                prop_assert!(r.open_sessions() <= MAX_SESSIONS);
            }
        }
    }
}
