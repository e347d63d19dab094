//! The script language of `waymark-devsim` (documented in docs/devices.md), parsed without
//! I/O: one command per line (or separated by `;`), `#` starts a comment, arguments are
//! `key=value` (values with spaces in double quotes).

use std::collections::HashMap;
use std::time::Duration;

use firmware_proto::{
    Capabilities, DeviceKind, FirmwareVersion, Message, NackReason, PodOutcome, ProbeStatus,
};

/// A script line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("script line {line}: {message}")]
pub struct ScriptError {
    /// 1-based line (or `;`-separated command) number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One script command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send a message now; acknowledged messages are retried until acked or nacked for good.
    Send(Message),
    /// Envelope version byte of the frames that follow (default 1).
    Version(u8),
    /// `n` pseudo-random bytes (zeros included), as line noise; waits (up to
    /// `sim::FLOOD_DEADLINE`) for the gateway to take them all.
    Garbage(usize),
    /// A valid `Pod` frame with its CRC corrupted (not retried).
    BadCrc,
    /// A frame of `n` non-zero bytes, then the delimiter: larger than any decoder buffer.
    /// Waits for the gateway to take them, as `Garbage`.
    Oversized(usize),
    /// Keep the link serviced (answers, retries) for this long.
    Sleep(Duration),
    /// Until every acknowledged message is acked (or nacked for good), at most this long.
    Wait(Duration),
    /// Ignore the next `n` acks (as if they were lost on the wire): the device retries.
    IgnoreAcks(u32),
    /// Until a `Nack` with this reason arrives, at most this long.
    ExpectNack(NackReason, Duration),
    /// Close the pseudo-terminal (the gateway reads end of file), wait, create a new one and
    /// point the `--link` at it: a USB unplug and replug.
    Unplug(Duration),
    /// Stop here.
    Exit,
}

/// Default timeout of `wait` and `expect-nack`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Parses a whole script.
///
/// # Errors
/// The first line that is not a valid command, with its number.
pub fn parse(text: &str) -> Result<Vec<Command>, ScriptError> {
    let mut out = Vec::new();
    for (i, raw) in text.split(['\n', ';']).enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_line(line).map_err(|message| ScriptError {
            line: i + 1,
            message,
        })?);
    }
    Ok(out)
}

fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

struct Args(HashMap<String, String>, Vec<String>);

impl Args {
    fn new(ws: &[String]) -> Result<Self, String> {
        let mut kv = HashMap::new();
        let mut pos = Vec::new();
        for w in ws {
            match w.split_once('=') {
                Some((k, v)) => {
                    kv.insert(k.to_string(), v.to_string());
                }
                None => pos.push(w.clone()),
            }
        }
        Ok(Self(kv, pos))
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }
    fn need(&self, k: &str) -> Result<&str, String> {
        self.get(k).ok_or_else(|| format!("missing `{k}=`"))
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> Result<Option<T>, String> {
        self.get(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("`{k}={v}` is not a valid number"))
            })
            .transpose()
    }
    fn pos_num<T: std::str::FromStr>(&self, i: usize) -> Result<Option<T>, String> {
        self.1
            .get(i)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("`{v}` is not a valid number"))
            })
            .transpose()
    }
    fn string<const N: usize>(&self, k: &str) -> Result<Option<heapless::String<N>>, String> {
        self.get(k)
            .map(|v| {
                heapless::String::try_from(v).map_err(|_| format!("`{k}` is longer than {N} bytes"))
            })
            .transpose()
    }
}

fn parse_hex_u64(v: &str) -> Result<u64, String> {
    u64::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| format!("`{v}` is not hex"))
}

fn ms(v: Option<u64>, default: Duration) -> Duration {
    v.map_or(default, Duration::from_millis)
}

fn parse_line(line: &str) -> Result<Command, String> {
    let ws = words(line)?;
    let (cmd, rest) = ws.split_first().ok_or("empty command")?;
    let a = Args::new(rest)?;
    Ok(match cmd.as_str() {
        "hello" => Command::Send(Message::Hello {
            device_id: a
                .get("id")
                .map_or(Ok(0x00de_5100_0000_0001), parse_hex_u64)?,
            kind: match a.get("kind").unwrap_or("pod_button") {
                "pod_button" => DeviceKind::PodButton,
                "scanner" => DeviceKind::Scanner,
                "signature_pad" => DeviceKind::SignaturePad,
                "temperature_probe" => DeviceKind::TemperatureProbe,
                "door_sensor" => DeviceKind::DoorSensor,
                other => return Err(format!("unknown kind `{other}`")),
            },
            firmware_version: {
                let fw = a.get("fw").unwrap_or("1.0.0");
                let mut it = fw.split('.');
                let bad = || format!("`fw={fw}` is not MAJOR.MINOR.PATCH");
                FirmwareVersion {
                    major: it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
                    minor: it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
                    patch: it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?,
                }
            },
            protocol_version: a.num("proto")?.unwrap_or(firmware_proto::PROTOCOL_VERSION),
            capabilities: Capabilities::POD
                | Capabilities::TEMPERATURE
                | Capabilities::DOOR
                | Capabilities::TIME_SYNC
                | Capabilities::CONFIG
                | Capabilities::PERSISTENT_QUEUE,
        }),
        "pod" => Command::Send(Message::Pod {
            device_seq: a.num("seq")?.ok_or("missing `seq=`")?,
            outcome: match a.get("outcome").unwrap_or("delivered") {
                "delivered" => PodOutcome::Delivered,
                "refused" => PodOutcome::Refused,
                "partial" => PodOutcome::Partial,
                "damaged" => PodOutcome::Damaged,
                "attempted" => PodOutcome::Attempted,
                other => return Err(format!("unknown outcome `{other}`")),
            },
            stop_ref: a.string("stop")?,
            order_ref: a.string("order")?,
            recipient: a.string("recipient")?,
            evidence: a
                .get("evidence")
                .map(|h| {
                    let mut out = [0u8; 32];
                    if h.len() != 64 {
                        return Err("`evidence` must be 64 hex digits".to_string());
                    }
                    for (i, b) in out.iter_mut().enumerate() {
                        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2).unwrap_or("x"), 16)
                            .map_err(|_| "`evidence` must be 64 hex digits".to_string())?;
                    }
                    Ok(out)
                })
                .transpose()?,
        }),
        "temp" => {
            let probe = a.need("probe")?;
            let probe_id = match probe.split_once('-') {
                // Linux name `28-0000075a1b2c` → ROM code (family low byte, serial above).
                Some((fam, serial)) => (parse_hex_u64(serial)? << 8) | (parse_hex_u64(fam)? & 0xff),
                None => parse_hex_u64(probe)?,
            };
            let c: f64 = a.need("c")?.parse().map_err(|_| "`c=` is not a number")?;
            Command::Send(Message::Temperature {
                device_seq: a.num("seq")?.ok_or("missing `seq=`")?,
                probe_id,
                #[allow(clippy::cast_possible_truncation)]
                centi_celsius: (c * 100.0).round() as i32,
                status: match a.get("status").unwrap_or("ok") {
                    "ok" => ProbeStatus::Ok,
                    "crc_error" => ProbeStatus::CrcError,
                    "power_on_reset" => ProbeStatus::PowerOnReset,
                    "disconnected" => ProbeStatus::Disconnected,
                    "out_of_range" => ProbeStatus::OutOfRange,
                    other => return Err(format!("unknown status `{other}`")),
                },
            })
        }
        "door" => Command::Send(Message::Door {
            device_seq: a.num("seq")?.ok_or("missing `seq=`")?,
            door_id: a.num("id")?.unwrap_or(0),
            open: match a.need("open")? {
                "true" => true,
                "false" => false,
                other => return Err(format!("`open={other}` is not true or false")),
            },
        }),
        "heartbeat" => Command::Send(Message::Heartbeat {
            uptime_s: a.num("uptime")?.unwrap_or(0),
            pending: 0,
        }),
        "version" => Command::Version(a.pos_num(0)?.ok_or("missing the version")?),
        "garbage" => Command::Garbage(a.pos_num(0)?.ok_or("missing the byte count")?),
        "badcrc" => Command::BadCrc,
        "oversized" => Command::Oversized(a.pos_num(0)?.unwrap_or(4096)),
        "sleep" => Command::Sleep(ms(a.pos_num(0)?, Duration::ZERO)),
        "wait" => Command::Wait(ms(a.pos_num(0)?, DEFAULT_WAIT)),
        "ignore-acks" => Command::IgnoreAcks(a.pos_num(0)?.unwrap_or(1)),
        "expect-nack" => Command::ExpectNack(
            parse_reason(a.1.first().map_or("", String::as_str))?,
            ms(a.pos_num(1)?, DEFAULT_WAIT),
        ),
        "unplug" => Command::Unplug(ms(a.pos_num(0)?, Duration::from_millis(500))),
        "exit" => Command::Exit,
        other => return Err(format!("unknown command `{other}`")),
    })
}

/// The script's name of a [`NackReason`].
pub fn parse_reason(s: &str) -> Result<NackReason, String> {
    Ok(match s {
        "malformed" => NackReason::Malformed,
        "version_mismatch" => NackReason::VersionMismatch,
        "not_stored" => NackReason::NotStored,
        "rate_limited" => NackReason::RateLimited,
        other => return Err(format!("unknown nack reason `{other}`")),
    })
}

/// The name of a [`NackReason`] in devsim's output.
pub fn reason_name(r: NackReason) -> String {
    match r {
        NackReason::Malformed => "malformed".into(),
        NackReason::VersionMismatch => "version_mismatch".into(),
        NackReason::NotStored => "not_stored".into(),
        NackReason::RateLimited => "rate_limited".into(),
        NackReason::Other(n) => format!("other_{n}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_script() {
        let s = parse(
            "hello id=00000000000004d2 kind=pod_button fw=1.2.3\n\
             # a comment\n\
             pod seq=1 outcome=refused stop=S-1 recipient=\"Jane Doe\"; wait 5000\n\
             temp seq=2 probe=28-0000075a1b2c c=-18.25 status=ok\n\
             door seq=3 open=true\nversion 2\ngarbage 100\nbadcrc\noversized\n\
             ignore-acks 2\nexpect-nack version_mismatch 1000\nunplug 200\nsleep 10\nexit\n",
        )
        .unwrap();
        assert_eq!(s.len(), 14);
        let Command::Send(Message::Pod {
            recipient, outcome, ..
        }) = &s[1]
        else {
            panic!("{s:?}")
        };
        assert_eq!(recipient.as_deref(), Some("Jane Doe"));
        assert_eq!(*outcome, PodOutcome::Refused);
        assert_eq!(s[2], Command::Wait(Duration::from_secs(5)));
        let Command::Send(Message::Temperature {
            probe_id,
            centi_celsius,
            ..
        }) = &s[3]
        else {
            panic!()
        };
        assert_eq!(*probe_id, 0x0000_0007_5a1b_2c28);
        assert_eq!(*centi_celsius, -1825);
        assert_eq!(
            s[10],
            Command::ExpectNack(NackReason::VersionMismatch, Duration::from_secs(1))
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("hello\npod outcome=delivered\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("seq"), "{e}");
        assert_eq!(parse("frobnicate").unwrap_err().line, 1);
        assert!(parse("pod seq=1 recipient=\"open").is_err());
    }
}
