//! The simulated device: the serial end (a pty master or an opened tty), retries, answers.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use firmware_proto::{Decoder, MAX_CONTENT, MAX_FRAME, Message, NackReason, encode_versioned};
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use crate::script::{Command, reason_name};

/// Longest time `garbage` and `oversized` wait for the gateway to take their bytes.
pub const FLOOD_DEADLINE: Duration = Duration::from_secs(30);

/// Where the simulator reports what happened, one line at a time.
pub type Log = Box<dyn FnMut(&str) + Send>;

/// Why the simulator stopped.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Creating or configuring the pseudo-terminal failed.
    #[error("pseudo-terminal: {0}")]
    Pty(#[from] nix::errno::Errno),
    /// Opening the port, the link, or polling it failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A message could not be encoded (cannot happen with valid script values).
    #[error("encoding a frame: {0}")]
    Encode(firmware_proto::Error),
    /// `unplug` on a port that is not a pseudo-terminal with a link.
    #[error("unplug needs a pseudo-terminal with --link, not --device")]
    NoLink,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SimError {
    let what = what.into();
    move |source| SimError::Io { what, source }
}

/// The serial end the simulator writes to: a pty master, or a tty it opened.
struct Port {
    file: File,
}

impl Port {
    fn pty(link: Option<&Path>) -> Result<(Port, PathBuf), SimError> {
        let pty = nix::pty::openpty(None, None)?;
        // Raw mode, so the line discipline neither echoes nor translates bytes before the
        // gateway opens the port (it sets its own mode when it does).
        let mut t = tcgetattr(&pty.slave)?;
        cfmakeraw(&mut t);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &t)?;
        let path = nix::unistd::ttyname(&pty.slave)?;
        // The slave is closed: while nobody has it open, reads of the master fail with EIO
        // (no peer), which `service` treats as "gateway not listening".
        drop(pty.slave);
        if let Some(link) = link {
            let tmp = link.with_extension("devsim-tmp");
            let _ignored = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&path, &tmp)
                .map_err(io(format!("symlink {}", tmp.display())))?;
            std::fs::rename(&tmp, link).map_err(io(format!("rename to {}", link.display())))?;
        }
        Ok((Port::nonblocking(File::from(pty.master))?, path))
    }

    fn open(path: &Path) -> Result<Port, SimError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(format!("opening {}", path.display())))?;
        Port::nonblocking(file)
    }

    fn nonblocking(file: File) -> Result<Port, SimError> {
        let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
        fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        Ok(Port { file })
    }

    /// Writes what the port takes now and returns how much that was; the rest is lost, as
    /// on a UART nobody listens to.
    fn send(&mut self, bytes: &[u8]) -> usize {
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            }
        }
        bytes.len() - rest.len()
    }

    /// Writes all of `bytes`, waiting for the reader whenever the port is full, until
    /// `deadline`; returns how much was written. A flood that the gateway must swallow.
    fn send_all(&mut self, bytes: &[u8], deadline: Instant) -> usize {
        let mut done = 0;
        while done < bytes.len() && Instant::now() < deadline {
            done += self.send(bytes.get(done..).unwrap_or_default());
            if done < bytes.len() {
                let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLOUT)];
                if poll(&mut fds, PollTimeout::from(50u16)).is_err() {
                    break;
                }
            }
        }
        done
    }
}

/// A message awaiting its ack.
struct Pending {
    seq: u32,
    frame: Vec<u8>,
    next: Instant,
}

/// A simulated device on one port.
pub struct Sim {
    port: Port,
    path: PathBuf,
    log: Log,
    link: Option<PathBuf>,
    decoder: Decoder<MAX_CONTENT>,
    retry: Duration,
    version: u8,
    pending: Vec<Pending>,
    hello: Option<Vec<u8>>,
    awaiting_config: bool,
    hello_next: Instant,
    ignore_acks: u32,
    nacks: Vec<NackReason>,
    noise: u64,
}

impl Sim {
    /// A device on a new pseudo-terminal; `link` (if any) is made a symlink to it.
    ///
    /// # Errors
    /// When the pty or the link cannot be made.
    pub fn pty(link: Option<&Path>, retry: Duration, mut log: Log) -> Result<Sim, SimError> {
        let (port, path) = Port::pty(link)?;
        log(&format!("pty {}", path.display()));
        Ok(Sim::new(
            port,
            path,
            link.map(Path::to_path_buf),
            retry,
            log,
        ))
    }

    /// A device on an existing serial port or tty.
    ///
    /// # Errors
    /// When the port cannot be opened.
    pub fn device(path: &Path, retry: Duration, mut log: Log) -> Result<Sim, SimError> {
        let port = Port::open(path)?;
        log(&format!("device {}", path.display()));
        Ok(Sim::new(port, path.to_path_buf(), None, retry, log))
    }

    fn new(port: Port, path: PathBuf, link: Option<PathBuf>, retry: Duration, log: Log) -> Sim {
        Sim {
            port,
            path,
            log,
            link,
            decoder: Decoder::new(),
            retry: retry.max(Duration::from_millis(1)),
            version: firmware_proto::PROTOCOL_VERSION,
            pending: Vec::new(),
            hello: None,
            awaiting_config: false,
            hello_next: Instant::now(),
            ignore_acks: 0,
            nacks: Vec::new(),
            noise: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The device path the gateway opens (the pty's current `/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Messages sent and not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn say(&mut self, line: &str) {
        (self.log)(line);
    }

    fn frame(&self, msg: &Message) -> Result<Vec<u8>, SimError> {
        let mut buf = [0u8; MAX_FRAME];
        let f = encode_versioned(msg, self.version, &mut buf).map_err(SimError::Encode)?;
        Ok(f.to_vec())
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*: reproducible noise without a dependency.
        self.noise ^= self.noise >> 12;
        self.noise ^= self.noise << 25;
        self.noise ^= self.noise >> 27;
        self.noise.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Runs one command; `Ok(false)` when a `wait` or `expect-nack` timed out.
    ///
    /// # Errors
    /// When the port fails, or `unplug` is used without a link.
    pub fn command(&mut self, cmd: Command) -> Result<bool, SimError> {
        match cmd {
            Command::Send(msg) => {
                let frame = self.frame(&msg)?;
                self.port.send(&frame);
                self.say(&format!("sent {}", describe(&msg)));
                if let Message::Hello { .. } = msg {
                    self.hello = Some(frame);
                    self.awaiting_config = true;
                    self.hello_next = Instant::now() + self.retry;
                } else if let Some(seq) = msg.device_seq() {
                    self.pending.retain(|p| p.seq != seq);
                    self.pending.push(Pending {
                        seq,
                        frame,
                        next: Instant::now() + self.retry,
                    });
                }
            }
            Command::Version(v) => self.version = v,
            Command::Garbage(n) => {
                let bytes: Vec<u8> = (0..n).map(|_| (self.rand() >> 56) as u8).collect();
                let took = self.port.send_all(&bytes, Instant::now() + FLOOD_DEADLINE);
                self.say(&format!("sent garbage {n} ({took} taken by the port)"));
            }
            Command::BadCrc => {
                let mut f = self.frame(&Message::Pod {
                    device_seq: u32::MAX,
                    outcome: firmware_proto::PodOutcome::Delivered,
                    stop_ref: None,
                    order_ref: None,
                    recipient: None,
                    evidence: None,
                })?;
                // Flip a bit of the last CRC byte (before the delimiter), keeping it non-zero.
                if let Some(b) = f.len().checked_sub(2).and_then(|i| f.get_mut(i)) {
                    *b = if *b == 0x01 { 0x02 } else { *b ^ 0x01 };
                }
                self.port.send(&f);
                self.say("sent badcrc");
            }
            Command::Oversized(n) => {
                let mut bytes = vec![0xAA; n];
                bytes.push(0);
                let took = self.port.send_all(&bytes, Instant::now() + FLOOD_DEADLINE);
                self.say(&format!("sent oversized {n} ({took} taken by the port)"));
            }
            Command::Sleep(d) => self.service(Instant::now() + d)?,
            Command::Wait(d) => {
                let deadline = Instant::now() + d;
                while !self.pending.is_empty() {
                    if Instant::now() >= deadline {
                        self.say(&format!(
                            "timeout waiting for {} ack(s)",
                            self.pending.len()
                        ));
                        return Ok(false);
                    }
                    self.service((Instant::now() + Duration::from_millis(20)).min(deadline))?;
                }
                self.say("all acked");
            }
            Command::IgnoreAcks(n) => self.ignore_acks = n,
            Command::ExpectNack(reason, d) => {
                let deadline = Instant::now() + d;
                loop {
                    if let Some(i) = self.nacks.iter().position(|r| *r == reason) {
                        self.nacks.remove(i);
                        self.say(&format!("got nack {}", reason_name(reason)));
                        break;
                    }
                    if Instant::now() >= deadline {
                        self.say(&format!("timeout waiting for nack {}", reason_name(reason)));
                        return Ok(false);
                    }
                    self.service((Instant::now() + Duration::from_millis(20)).min(deadline))?;
                }
            }
            Command::Unplug(d) => {
                let Some(link) = self.link.clone() else {
                    return Err(SimError::NoLink);
                };
                self.say("unplugged");
                // Closing the master hangs up the gateway's end (it reads end of file).
                let null = File::open("/dev/null").map_err(io("opening /dev/null"))?;
                drop(std::mem::replace(&mut self.port, Port::nonblocking(null)?));
                std::thread::sleep(d);
                let (port, path) = Port::pty(Some(&link))?;
                self.port = port;
                self.path = path;
                self.decoder.reset();
                let line = format!("replugged pty {}", self.path.display());
                self.say(&line);
            }
            Command::Exit => return Ok(true),
        }
        Ok(true)
    }

    /// Answers the gateway and resends unacknowledged messages until `until`.
    ///
    /// # Errors
    /// When polling the port fails.
    pub fn service(&mut self, until: Instant) -> Result<(), SimError> {
        let mut buf = [0u8; 1024];
        loop {
            let now = Instant::now();
            if self.awaiting_config
                && self.hello_next <= now
                && let Some(h) = self.hello.clone()
            {
                self.hello_next = now + self.retry;
                self.port.send(&h);
                self.say("retry hello");
            }
            for i in 0..self.pending.len() {
                if let Some(p) = self.pending.get_mut(i)
                    && p.next <= now
                {
                    p.next = now + self.retry;
                    let (seq, frame) = (p.seq, p.frame.clone());
                    self.port.send(&frame);
                    self.say(&format!("retry seq={seq}"));
                }
            }
            if now >= until {
                return Ok(());
            }
            let mut next_retry = self.pending.iter().map(|p| p.next).min().unwrap_or(until);
            if self.awaiting_config {
                next_retry = next_retry.min(self.hello_next);
            }
            let wait = next_retry.min(until).saturating_duration_since(now);
            let ms = u16::try_from(wait.as_millis().clamp(1, 1000)).unwrap_or(1000);
            let ready = {
                let mut fds = [PollFd::new(self.port.file.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(ms))?;
                fds[0].revents().unwrap_or(PollFlags::empty())
            };
            if ready.contains(PollFlags::POLLHUP) && !ready.contains(PollFlags::POLLIN) {
                // Nobody has the port open: wait for the gateway without spinning.
                std::thread::sleep(Duration::from_millis(u64::from(ms).min(50)));
                continue;
            }
            if !ready.contains(PollFlags::POLLIN) {
                continue;
            }
            let n = match self.port.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
                // EIO: the gateway closed its end.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    0
                }
            };
            let msgs: Vec<_> = self
                .decoder
                .feed(buf.get(..n).unwrap_or_default())
                .collect();
            for m in msgs {
                match m {
                    Ok(msg) => self.answer(msg),
                    Err(e) => self.say(&format!("bad frame from gateway: {e}")),
                }
            }
        }
    }

    fn answer(&mut self, msg: Message) {
        match msg {
            Message::Ack { device_seq } => {
                if self.ignore_acks > 0 {
                    self.ignore_acks -= 1;
                    self.say(&format!("ack {device_seq} ignored"));
                } else {
                    self.pending.retain(|p| p.seq != device_seq);
                    self.say(&format!("ack {device_seq}"));
                }
            }
            Message::Nack { device_seq, reason } => {
                self.say(&format!("nack {device_seq} {}", reason_name(reason)));
                match reason {
                    NackReason::NotStored | NackReason::RateLimited => {}
                    _ => self
                        .pending
                        .retain(|p| p.seq != device_seq || device_seq == 0),
                }
                self.nacks.push(reason);
            }
            Message::TimeSync { unix_ms } => {
                self.say(&format!("timesync {unix_ms}"));
                if !self.awaiting_config
                    && let Some(h) = self.hello.clone()
                {
                    // The gateway (re)opened the port: introduce ourselves again.
                    self.port.send(&h);
                    self.awaiting_config = true;
                    self.hello_next = Instant::now() + self.retry;
                    self.say("sent hello (again)");
                }
            }
            Message::Config {
                heartbeat_interval_s,
                temperature_interval_s,
            } => {
                self.awaiting_config = false;
                self.say(&format!(
                    "config heartbeat_interval_s={heartbeat_interval_s} \
                     temperature_interval_s={temperature_interval_s}"
                ));
            }
            other => self.say(&format!("unexpected {}", describe(&other))),
        }
    }
}

fn describe(msg: &Message) -> String {
    match msg {
        Message::Hello { device_id, .. } => format!("hello id={device_id:016x}"),
        Message::Pod { device_seq, .. } => format!("pod seq={device_seq}"),
        Message::Temperature { device_seq, .. } => format!("temp seq={device_seq}"),
        Message::Door { device_seq, .. } => format!("door seq={device_seq}"),
        Message::Heartbeat { .. } => "heartbeat".into(),
        other => format!("{other:?}"),
    }
}
