//! What the kernel's CAN stack does on vcan, checked through the same crates the gateway
//! uses: interface creation, raw classic and FD frames, acceptance filters, error frames,
//! an ISO-TP exchange (flow control, padding) and J1939 transport (RTS/CTS and BAM).

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use socketcan::frame::CanErrorFrame;
use socketcan::{
    CanAddr, CanAnyFrame, CanFdFrame, CanFdSocket, CanFilter, CanFrame, CanSocket, EmbeddedFrame,
    Frame, Socket, SocketOptions,
};
use waymark_gateway::sources::obd::link::{AsyncIsoTp, can_id, j1939_socket};

use super::{Case, IFACE, check, rt};

const EFF: u32 = 0x8000_0000;
const ERR: u32 = 0x2000_0000;

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "vcan_interfaces_created",
            run: vcan_interfaces_created,
        },
        Case {
            name: "raw_frames_and_kernel_filters",
            run: raw_frames_and_kernel_filters,
        },
        Case {
            name: "can_fd_frames",
            run: can_fd_frames,
        },
        Case {
            name: "error_frames_reach_only_error_masked_sockets",
            run: error_frames,
        },
        Case {
            name: "isotp_multi_frame_exchange",
            run: isotp_exchange,
        },
        Case {
            name: "j1939_transport_100_bytes",
            run: j1939_transport,
        },
    ]
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    check(out.status.success(), || {
        format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

fn id(raw: u32) -> socketcan::Id {
    can_id(raw & 0x1FFF_FFFF, raw & EFF != 0 || raw > 0x7FF).expect("valid test id")
}

fn frame(raw: u32, data: &[u8]) -> CanFrame {
    CanFrame::new(id(raw), data).expect("valid test frame")
}

fn open(timeout_ms: u64) -> Result<CanSocket, String> {
    let s = CanSocket::open(IFACE).map_err(|e| format!("open {IFACE}: {e}"))?;
    s.set_read_timeout(Duration::from_millis(timeout_ms))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Reads until a timeout; the frames read.
fn drain(s: &CanSocket) -> Vec<CanFrame> {
    let mut v = Vec::new();
    while let Ok(f) = s.read_frame() {
        v.push(f);
    }
    v
}

/// vcan0 through busybox `ip` (the netlink `RTM_NEWLINK` path), then up; vcan1 too.
fn vcan_interfaces_created() -> Result<(), String> {
    for name in [IFACE, "vcan1"] {
        ip(&["link", "add", "dev", name, "type", "vcan"])?;
        ip(&["link", "set", name, "up"])?;
        let ty = std::fs::read_to_string(format!("/sys/class/net/{name}/type"))
            .map_err(|e| e.to_string())?;
        check(ty.trim() == "280", || {
            format!("{name} type {ty} is not ARPHRD_CAN")
        })?;
        let flags = std::fs::read_to_string(format!("/sys/class/net/{name}/flags"))
            .map_err(|e| e.to_string())?;
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16)
            .map_err(|e| e.to_string())?;
        check(flags & 1 == 1, || {
            format!("{name} is not up: flags {flags:#x}")
        })?;
    }
    let mtu = std::fs::read_to_string(format!("/sys/class/net/{IFACE}/mtu"))
        .map_err(|e| e.to_string())?;
    check(mtu.trim() == "72", || {
        format!("vcan MTU {mtu} is not CANFD_MTU")
    })?;
    Ok(())
}

fn raw_frames_and_kernel_filters() -> Result<(), String> {
    // Generous read timeouts: the emulated CPU may be slow on a loaded machine, and a drain
    // only returns after one of them.
    let all = open(1000)?;
    let filtered = open(1000)?;
    filtered
        .set_filters(&[
            CanFilter::new(0x123, 0x7FF | EFF),
            CanFilter::new(0x18FE_F100 | EFF, 0x1FFF_FF00 | EFF),
        ])
        .map_err(|e| e.to_string())?;
    let tx = open(200)?;
    let sent = [
        frame(0x124, &[9]),
        frame(0x123, &[1, 2, 3]),
        frame(0x18FE_F200 | EFF, &[4]),
        frame(0x18FE_F1AB | EFF, &[5, 6]),
        frame(0x0F1, &[]),
    ];
    for f in &sent {
        tx.write_frame(f).map_err(|e| e.to_string())?;
    }
    let got_all = drain(&all);
    check(got_all.len() == sent.len(), || {
        format!("unfiltered socket got {} of 5 frames", got_all.len())
    })?;
    let got: Vec<(u32, bool, Vec<u8>)> = drain(&filtered)
        .iter()
        .map(|f| (f.raw_id(), f.is_extended(), f.data().to_vec()))
        .collect();
    check(
        got == vec![
            (0x123, false, vec![1, 2, 3]),
            (0x18FE_F1AB, true, vec![5, 6]),
        ],
        || format!("filtered socket got {got:x?}"),
    )?;
    // The sender does not see its own frames (CAN_RAW_RECV_OWN_MSGS is off by default).
    check(drain(&tx).is_empty(), || "sender saw its own frames".into())
}

fn can_fd_frames() -> Result<(), String> {
    let rx = CanFdSocket::open(IFACE).map_err(|e| e.to_string())?;
    rx.set_read_timeout(Duration::from_millis(2000))
        .map_err(|e| e.to_string())?;
    let classic_only = open(200)?;
    let tx = CanFdSocket::open(IFACE).map_err(|e| e.to_string())?;
    let data: Vec<u8> = (0..64).collect();
    let fd = CanFdFrame::new(id(0x18FF_0001 | EFF), &data).ok_or("FD frame")?;
    tx.write_frame(&fd).map_err(|e| e.to_string())?;
    match rx.read_frame().map_err(|e| e.to_string())? {
        CanAnyFrame::Fd(f) => check(f.data() == data.as_slice(), || "FD payload differs".into())?,
        other => return Err(format!("expected an FD frame, got {other:?}")),
    }
    // A classic socket never sees FD frames.
    check(drain(&classic_only).is_empty(), || {
        "classic socket received an FD frame".into()
    })
}

/// vcan has no controller: the kernel never raises bus-off or error-passive on it. What it
/// does show is the delivery rule: a frame with `CAN_ERR_FLAG` (as a controller driver would
/// send up) reaches only sockets whose error mask has its class bits, never the default ones.
fn error_frames() -> Result<(), String> {
    let plain = open(200)?;
    let errors = open(2000)?;
    errors
        .set_error_filter_accept_all()
        .map_err(|e| e.to_string())?;
    let busoff_only = open(200)?;
    busoff_only
        .set_error_filter(0x40) // CAN_ERR_BUSOFF
        .map_err(|e| e.to_string())?;
    let tx = open(200)?;
    // CAN_ERR_CRTL with data[1] = CAN_ERR_CRTL_RX_PASSIVE: "controller error-passive".
    let ctrl =
        CanErrorFrame::new_error(0x004, &[0, 0x10, 0, 0, 0, 0, 0, 0]).map_err(|e| e.to_string())?;
    tx.write_frame(&CanFrame::Error(ctrl))
        .map_err(|e| format!("sending an error frame on vcan: {e}"))?;
    let got = errors
        .read_frame()
        .map_err(|e| format!("error socket: {e}"))?;
    check(
        matches!(got, CanFrame::Error(_)) && got.id_word() & ERR != 0,
        || format!("expected an error frame, got {got:?}"),
    )?;
    check(drain(&plain).is_empty(), || {
        "a socket without an error mask received an error frame".into()
    })?;
    check(drain(&busoff_only).is_empty(), || {
        "a bus-off-only error mask received a controller error".into()
    })?;
    let dropped = std::fs::read_to_string(format!("/sys/class/net/{IFACE}/statistics/rx_dropped"))
        .map_err(|e| e.to_string())?;
    check(dropped.trim().parse::<u64>().is_ok(), || {
        format!("rx_dropped unreadable: {dropped}")
    })
}

/// A 20-byte answer needs a first frame, the requester's flow control and two consecutive
/// frames; a raw socket on the side sees them, padded to 8 bytes with 0xCC.
fn isotp_exchange() -> Result<(), String> {
    let sniff = open(1000)?;
    rt()?.block_on(async {
        let tester = AsyncIsoTp::open(IFACE, id(0x7E8), id(0x7E0), Some(0xCC))
            .map_err(|e| format!("tester: {e}"))?;
        let ecu = AsyncIsoTp::open(IFACE, id(0x7E0), id(0x7E8), Some(0xCC))
            .map_err(|e| format!("ecu: {e}"))?;
        let mut answer = vec![0x49, 0x02, 0x01];
        answer.extend_from_slice(b"WF0XXXTTGXKA12345");
        tester
            .send(&[0x09, 0x02])
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), ecu.recv(&mut buf))
            .await
            .map_err(|_| "ECU got no request")?
            .map_err(|e| e.to_string())?;
        check(buf[..n] == [0x09, 0x02], || {
            format!("request {:x?}", &buf[..n])
        })?;
        ecu.send(&answer).await.map_err(|e| e.to_string())?;
        let n = tokio::time::timeout(Duration::from_secs(5), tester.recv(&mut buf))
            .await
            .map_err(|_| "tester got no answer")?
            .map_err(|e| e.to_string())?;
        check(buf[..n] == answer[..], || {
            format!("answer {:x?}", &buf[..n])
        })
    })?;
    let wire: Vec<(u32, Vec<u8>)> = drain(&sniff)
        .iter()
        .map(|f| (f.raw_id(), f.data().to_vec()))
        .collect();
    let kinds: Vec<(u32, u8)> = wire.iter().map(|(i, d)| (*i, d[0] & 0xF0)).collect();
    check(
        kinds
            == vec![
                (0x7E0, 0x00),
                (0x7E8, 0x10),
                (0x7E0, 0x30),
                (0x7E8, 0x20),
                (0x7E8, 0x20),
            ],
        || format!("frames on the wire: {wire:x?}"),
    )?;
    check(wire.iter().all(|(_, d)| d.len() == 8), || {
        format!("unpadded frames: {wire:x?}")
    })?;
    check(
        wire[0].1 == [0x02, 0x09, 0x02, 0xCC, 0xCC, 0xCC, 0xCC, 0xCC],
        || format!("request frame {:x?}", wire[0].1),
    )
}

/// 100 bytes to one address (TP.CM RTS/CTS, then 15 TP.DT) and to all (TP.CM BAM), through the
/// kernel's can-j1939; a raw socket counts the transport frames.
fn j1939_transport() -> Result<(), String> {
    const NO_PGN: u32 = 0x40000;
    let sniff = open(1000)?;
    let rx = j1939_socket(IFACE, NO_PGN, 0x20).map_err(|e| format!("rx: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    // A J1939 socket receives broadcasts only with SO_BROADCAST set.
    rx.set_broadcast(true).map_err(|e| e.to_string())?;
    let tx = j1939_socket(IFACE, NO_PGN, 0x30).map_err(|e| format!("tx: {e}"))?;
    tx.set_broadcast(true).map_err(|e| e.to_string())?;
    let msg: Vec<u8> = (0..100u8).collect();
    let name = socketcan::addr::J1939_NO_NAME;
    // Proprietary A (PGN 0xEF00, PDU1) to address 0x20: connection mode.
    let to = CanAddr::from_iface_j1939(IFACE, name, 0xEF00, 0x20).map_err(|e| e.to_string())?;
    let t = Instant::now();
    tx.send_to(&msg, &to.into_sock_addr())
        .map_err(|e| format!("send_to 0x20: {e}"))?;
    let mut buf = [0u8; 256];
    let n = (&rx).read(&mut buf).map_err(|e| format!("rx: {e}"))?;
    check(buf[..n] == msg[..], || {
        format!("received {n} bytes {:x?}", &buf[..n])
    })?;
    println!(
        "  j1939 RTS/CTS transfer of 100 bytes took {} ms",
        t.elapsed().as_millis()
    );
    // Vehicle identification (PGN 0xFEEC, PDU2) to everyone: BAM.
    let all = CanAddr::from_iface_j1939(IFACE, name, 0xFEEC, 0xFF).map_err(|e| e.to_string())?;
    tx.send_to(&msg, &all.into_sock_addr())
        .map_err(|e| format!("send_to broadcast: {e}"))?;
    let n = (&rx).read(&mut buf).map_err(|e| format!("rx BAM: {e}"))?;
    check(buf[..n] == msg[..], || format!("BAM received {n} bytes"))?;
    std::thread::sleep(Duration::from_millis(200));
    let frames = drain(&sniff);
    let pf = |f: &CanFrame| (f.raw_id() >> 16) & 0xFF;
    let cm: Vec<u8> = frames
        .iter()
        .filter(|f| pf(f) == 0xEC)
        .map(|f| f.data()[0])
        .collect();
    let dt = frames.iter().filter(|f| pf(f) == 0xEB).count();
    // RTS (16), CTS (17), EndOfMsgAck (19), BAM (32); 15 data packets each way.
    check(
        cm.contains(&16) && cm.contains(&17) && cm.contains(&19) && cm.contains(&32),
        || format!("TP.CM control bytes seen: {cm:?}"),
    )?;
    check(dt == 30, || format!("{dt} TP.DT frames, expected 2 x 15"))
}
