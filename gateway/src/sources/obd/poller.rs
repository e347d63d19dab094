//! The OBD-II request/response logic, sans-IO: which request to send next, when, to which ECU,
//! what an answer means, and when the vehicle has gone quiet. The socket task only carries
//! [`Poll::Send`] requests out and feeds answers in with [`Poller::on_response`].
//!
//! Invariants:
//! - At most one request is outstanding on the bus at any time (ISO 15765-4 testers wait for
//!   the answer or P2 before the next request), so a slow ECU is never flooded.
//! - Discovery first: a functional `01 00` request; every ECU that answers within the response
//!   timeout is polled physically from then on. No answer means the ignition is off: discovery
//!   is retried after `discovery_retry`, and nothing else is sent meanwhile.
//! - A PID is asked only of an ECU whose bitmaps (PIDs 0x00, 0x20, ... each asked only when the
//!   previous one's last bit says it exists) list it; the lowest ECU address serving a PID
//!   serves it. A negative answer (0x11, 0x12, 0x31, ...) removes it for that ECU; 0x78
//!   (response pending) extends the deadline to P2*; 0x21 (busy) retries after a short pause.
//! - `max_timeouts` consecutive unanswered requests mean the vehicle went to sleep: back to
//!   discovery. Any answer resets the count.
//! - The VIN (mode 09 info type 02) is asked once per discovery, of each ECU in turn until one
//!   answers; an ECU that refuses or times out is not asked again until the next discovery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::pid::{
    self, INFO_VIN, MODE_CURRENT_DATA, MODE_VEHICLE_INFO, NRC_BUSY_REPEAT, NRC_RESPONSE_PENDING,
    PID_ODOMETER, PidSpec, Rate, Response, Supported,
};

/// P2* of ISO 15765-4: how long an ECU may take after a "response pending" answer.
pub const P2_STAR: Duration = Duration::from_millis(5000);
/// Pause before asking again after a "busy, repeat request" answer.
pub const BUSY_RETRY: Duration = Duration::from_millis(200);

/// CAN identifiers of OBD-II on CAN (ISO 15765-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Addressing {
    /// 11-bit: functional 0x7DF, ECU `n` (0..=7) asked on 0x7E0+n and answering on 0x7E8+n.
    #[serde(rename = "11bit")]
    Normal11,
    /// 29-bit: functional 0x18DB33F1, ECU `a` asked on 0x18DAaaF1 and answering on 0x18DAF1aa.
    #[serde(rename = "29bit")]
    Normal29,
}

/// The tester's address in 29-bit addressing.
pub const TESTER_ADDRESS: u8 = 0xF1;

impl Addressing {
    /// Whether the identifiers are 29-bit.
    pub fn is_extended(self) -> bool {
        matches!(self, Addressing::Normal29)
    }

    /// The functional (broadcast) request identifier.
    pub fn functional_id(self) -> u32 {
        match self {
            Addressing::Normal11 => 0x7DF,
            Addressing::Normal29 => 0x18DB_3300 | u32::from(TESTER_ADDRESS),
        }
    }

    /// The physical request identifier of ECU `ecu`.
    pub fn request_id(self, ecu: u8) -> u32 {
        match self {
            Addressing::Normal11 => 0x7E0 + u32::from(ecu & 7),
            Addressing::Normal29 => 0x18DA_0000 | (u32::from(ecu) << 8) | u32::from(TESTER_ADDRESS),
        }
    }

    /// The response identifier of ECU `ecu`.
    pub fn response_id(self, ecu: u8) -> u32 {
        match self {
            Addressing::Normal11 => 0x7E8 + u32::from(ecu & 7),
            Addressing::Normal29 => 0x18DA_0000 | (u32::from(TESTER_ADDRESS) << 8) | u32::from(ecu),
        }
    }

    /// The ECU that sent a frame with `id`, if `id` is a response identifier.
    pub fn ecu_of(self, id: u32) -> Option<u8> {
        match self {
            Addressing::Normal11 => (0x7E8..=0x7EF).contains(&id).then(|| (id - 0x7E8) as u8),
            Addressing::Normal29 => (id & 0x1FFF_FF00
                == 0x18DA_0000 | (u32::from(TESTER_ADDRESS) << 8))
                .then_some((id & 0xFF) as u8),
        }
    }

    /// `(id, mask)` of a kernel filter that passes exactly the response identifiers.
    pub fn response_filter(self) -> (u32, u32) {
        match self {
            Addressing::Normal11 => (0x7E8, 0x7F8),
            Addressing::Normal29 => (0x18DA_F100, 0x1FFF_FF00),
        }
    }

    /// How an ECU is named in health and logs (`0x7E8`, `0x18DAF110`).
    pub fn ecu_name(self, ecu: u8) -> String {
        format!("0x{:X}", self.response_id(ecu))
    }
}

/// Timing of the poller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Period of the fast PIDs (speed, engine speed).
    pub fast: Duration,
    /// Period of the slow PIDs (all but speed and engine speed).
    pub slow: Duration,
    /// How long to wait for an answer (P2 plus margin); also the discovery window.
    pub response_timeout: Duration,
    /// Pause between discoveries while no ECU answers.
    pub discovery_retry: Duration,
    /// Consecutive unanswered requests that end polling and restart discovery.
    pub max_timeouts: u32,
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every ECU (functional address); a single frame.
    Functional,
    /// One ECU (physical address).
    Ecu(u8),
}

/// A request to put on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Where it goes.
    pub to: Target,
    /// The ISO-TP payload (service id first).
    pub payload: Vec<u8>,
}

/// What the socket task should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Send this request now, then call [`Poller::poll`] again.
    Send(Request),
    /// Nothing to send before this instant (an answer may come earlier).
    Until(Instant),
}

/// What an answer meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A signal value.
    Signal {
        /// VSS name.
        signal: &'static str,
        /// Value in `unit`.
        value: f64,
        /// Unit.
        unit: &'static str,
    },
    /// The vehicle identification number.
    Vin(String),
}

/// What the poller is doing, for health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the next discovery (no ECU answered the last one, or the vehicle went quiet).
    Idle,
    /// A functional `01 00` is out; answers are being collected.
    Discovering,
    /// Polling the ECUs found.
    Polling,
}

/// The poller's view for health reporting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// What it is doing.
    pub phase: Phase,
    /// The ECUs being polled.
    pub ecus: Vec<u8>,
    /// Whether some ECU serves the odometer PID 0xA6 (`None` until the bitmaps are read).
    pub odometer: Option<bool>,
    /// Requests that got no answer in time, since start.
    pub timeouts: u64,
    /// Negative answers, since start.
    pub negative: u64,
    /// Answers that matched nothing outstanding or did not parse, since start.
    pub ignored: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Discovery,
    Bitmap(u8),
    Pid(u8),
    Vin,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    ecu: Option<u8>,
    asked: Asked,
    deadline: Instant,
}

#[derive(Debug, Clone, Default)]
struct Ecu {
    supported: Supported,
    /// The next bitmap PID to ask, if the bitmaps are not all read.
    bitmap: Option<u8>,
    vin_tried: bool,
}

#[derive(Debug, Clone)]
enum State {
    Idle { next: Instant },
    Discovering,
    Polling,
}

/// The OBD-II request scheduler and response decoder.
#[derive(Debug, Clone)]
pub struct Poller {
    timing: Timing,
    state: State,
    ecus: BTreeMap<u8, Ecu>,
    outstanding: Option<Outstanding>,
    /// Next due time per polled PID (index into [`pid::PIDS`]).
    due: Vec<Instant>,
    vin_done: bool,
    consecutive_timeouts: u32,
    timeouts: u64,
    negative: u64,
    ignored: u64,
}

impl Poller {
    /// A poller that starts with a discovery at the first [`Poller::poll`].
    pub fn new(timing: Timing, now: Instant) -> Self {
        Self {
            timing,
            state: State::Idle { next: now },
            ecus: BTreeMap::new(),
            outstanding: None,
            due: vec![now; pid::PIDS.len()],
            vin_done: false,
            consecutive_timeouts: 0,
            timeouts: 0,
            negative: 0,
            ignored: 0,
        }
    }

    /// The health view.
    pub fn status(&self) -> Status {
        let phase = match self.state {
            State::Idle { .. } => Phase::Idle,
            State::Discovering => Phase::Discovering,
            State::Polling => Phase::Polling,
        };
        let bitmaps_read = self.ecus.values().all(|e| e.bitmap.is_none());
        let odometer = (matches!(self.state, State::Polling) && bitmaps_read)
            .then(|| self.serving(PID_ODOMETER).is_some());
        Status {
            phase,
            ecus: self.ecus.keys().copied().collect(),
            odometer,
            timeouts: self.timeouts,
            negative: self.negative,
            ignored: self.ignored,
        }
    }

    /// Decides what to do at `now`: a request to send, or the instant to be called again.
    pub fn poll(&mut self, now: Instant) -> Poll {
        if let Some(out) = self.outstanding {
            if now < out.deadline {
                return Poll::Until(out.deadline);
            }
            self.outstanding = None;
            self.timed_out(now, out);
        }
        match self.state {
            State::Idle { next } if now < next => Poll::Until(next),
            State::Idle { .. } => {
                self.ecus.clear();
                self.vin_done = false;
                self.state = State::Discovering;
                self.ask(now, None, Asked::Discovery)
            }
            // The discovery request stays outstanding for the whole window, and its timeout
            // leaves this state; should the window ever be open without it, start over.
            State::Discovering => {
                self.state = State::Idle { next: now };
                Poll::Until(now)
            }
            State::Polling => self.next_request(now),
        }
    }

    /// Feeds an answer `payload` (service id first) from ECU `ecu`, received at `now`.
    pub fn on_response(&mut self, now: Instant, ecu: u8, payload: &[u8]) -> Option<Decoded> {
        let Some(out) = self.outstanding else {
            self.ignored += 1;
            return None;
        };
        let Ok(resp) = pid::parse_response(payload) else {
            self.ignored += 1;
            return None;
        };
        if out.asked == Asked::Discovery {
            // Every ECU may answer the functional request; the window stays open.
            match resp {
                Response::CurrentData { pid: 0x00, data } if data.len() >= 4 => {
                    let e = self.ecus.entry(ecu).or_default();
                    e.supported
                        .add_bitmap(0x00, [data[0], data[1], data[2], data[3]]);
                    e.bitmap = e.supported.next_bitmap(0x00);
                }
                _ => self.ignored += 1,
            }
            return None;
        }
        if out.ecu != Some(ecu) {
            self.ignored += 1;
            return None;
        }
        match (out.asked, resp) {
            (_, Response::Negative { code, .. }) if code == NRC_RESPONSE_PENDING => {
                self.outstanding = Some(Outstanding {
                    deadline: now + P2_STAR,
                    ..out
                });
                None
            }
            (asked, Response::Negative { service, code }) if service == service_of(asked) => {
                self.outstanding = None;
                self.consecutive_timeouts = 0;
                self.negative += 1;
                self.refused(now, ecu, asked, code);
                None
            }
            (Asked::Bitmap(base), Response::CurrentData { pid, data })
                if pid == base && data.len() >= 4 =>
            {
                self.answered();
                let e = self.ecus.entry(ecu).or_default();
                e.supported
                    .add_bitmap(base, [data[0], data[1], data[2], data[3]]);
                e.bitmap = e.supported.next_bitmap(base);
                None
            }
            (Asked::Pid(p), Response::CurrentData { pid, data }) if pid == p => {
                let spec = pid::spec(p)?;
                let value = spec.decode(data);
                if value.is_none() {
                    self.ignored += 1;
                    return None;
                }
                self.answered();
                value.map(|value| Decoded::Signal {
                    signal: spec.signal,
                    value,
                    unit: spec.unit,
                })
            }
            (Asked::Vin, Response::VehicleInfo { info, data }) if info == INFO_VIN => {
                self.answered();
                let vin = pid::decode_vin(data);
                if vin.is_some() {
                    self.vin_done = true;
                } else {
                    self.ignored += 1;
                }
                vin.map(Decoded::Vin)
            }
            _ => {
                self.ignored += 1;
                None
            }
        }
    }

    fn answered(&mut self) {
        self.outstanding = None;
        self.consecutive_timeouts = 0;
    }

    fn ask(&mut self, now: Instant, ecu: Option<u8>, asked: Asked) -> Poll {
        self.outstanding = Some(Outstanding {
            ecu,
            asked,
            deadline: now + self.timing.response_timeout,
        });
        let payload = match asked {
            Asked::Discovery => vec![MODE_CURRENT_DATA, 0x00],
            Asked::Bitmap(p) | Asked::Pid(p) => vec![MODE_CURRENT_DATA, p],
            Asked::Vin => vec![MODE_VEHICLE_INFO, INFO_VIN],
        };
        let to = ecu.map_or(Target::Functional, Target::Ecu);
        Poll::Send(Request { to, payload })
    }

    fn timed_out(&mut self, now: Instant, out: Outstanding) {
        if out.asked == Asked::Discovery {
            self.state = if self.ecus.is_empty() {
                State::Idle {
                    next: now + self.timing.discovery_retry,
                }
            } else {
                self.due.fill(now);
                State::Polling
            };
            return;
        }
        self.timeouts += 1;
        self.consecutive_timeouts += 1;
        // A PID's next due time and an ECU's `vin_tried` were set when the request went out.
        if self.consecutive_timeouts >= self.timing.max_timeouts {
            self.consecutive_timeouts = 0;
            self.ecus.clear();
            self.state = State::Idle {
                next: now + self.timing.discovery_retry,
            };
        }
    }

    fn refused(&mut self, now: Instant, ecu: u8, asked: Asked, code: u8) {
        let busy = code == NRC_BUSY_REPEAT;
        let Some(e) = self.ecus.get_mut(&ecu) else {
            return;
        };
        match asked {
            Asked::Discovery => {}
            Asked::Bitmap(_) if busy => {}
            Asked::Bitmap(_) => e.bitmap = None,
            Asked::Vin if busy => e.vin_tried = false,
            Asked::Vin => e.vin_tried = true,
            Asked::Pid(p) if busy => {
                if let Some(i) = pid::PIDS.iter().position(|s| s.pid == p) {
                    self.due[i] = now + BUSY_RETRY;
                }
            }
            Asked::Pid(p) => e.supported.remove(p),
        }
    }

    fn period(&self, spec: &PidSpec) -> Duration {
        match spec.rate {
            Rate::Fast => self.timing.fast,
            Rate::Slow => self.timing.slow,
        }
    }

    /// The lowest ECU address that supports `pid`.
    fn serving(&self, pid: u8) -> Option<u8> {
        self.ecus
            .iter()
            .find(|(_, e)| e.supported.contains(pid))
            .map(|(a, _)| *a)
    }

    fn next_request(&mut self, now: Instant) -> Poll {
        // 1. Bitmaps not read yet.
        if let Some((ecu, base)) = self
            .ecus
            .iter()
            .find_map(|(a, e)| e.bitmap.map(|b| (*a, b)))
        {
            return self.ask(now, Some(ecu), Asked::Bitmap(base));
        }
        // 2. The VIN, once.
        if !self.vin_done
            && let Some(ecu) = self
                .ecus
                .iter()
                .find(|(_, e)| !e.vin_tried)
                .map(|(a, _)| *a)
        {
            if let Some(e) = self.ecus.get_mut(&ecu) {
                e.vin_tried = true;
            }
            return self.ask(now, Some(ecu), Asked::Vin);
        }
        // 3. The PIDs that are due, in table order (fast ones first).
        let mut earliest: Option<Instant> = None;
        for (i, spec) in pid::PIDS.iter().enumerate() {
            let Some(ecu) = self.serving(spec.pid) else {
                continue;
            };
            if self.due[i] <= now {
                self.due[i] = now + self.period(spec);
                return self.ask(now, Some(ecu), Asked::Pid(spec.pid));
            }
            earliest = Some(earliest.map_or(self.due[i], |e| e.min(self.due[i])));
        }
        // Nothing served at all: look again at the next discovery interval.
        Poll::Until(earliest.unwrap_or(now + self.timing.discovery_retry))
    }
}

fn service_of(asked: Asked) -> u8 {
    match asked {
        Asked::Vin => MODE_VEHICLE_INFO,
        Asked::Discovery | Asked::Bitmap(_) | Asked::Pid(_) => MODE_CURRENT_DATA,
    }
}

#[cfg(test)]
mod tests;
