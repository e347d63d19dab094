//! Kernel CAN sockets for OBD-II: ISO-TP (`CAN_ISOTP`) datagram sockets for the physical
//! request/response exchanges, a raw CAN socket for the functional discovery request.
//!
//! socketcan 4 ships raw CAN sockets and the ISO-TP/J1939 socket *addresses* (`CanAddr`) but no
//! ISO-TP socket type; the dedicated `socketcan-isotp` crate is blocking-only and pins nix 0.26.
//! So an ISO-TP socket here is a `socket2::Socket` (`AF_CAN`, `SOCK_DGRAM`, `CAN_ISOTP`) bound
//! to socketcan's `CanAddr`, with its options set through socketcan's safe
//! [`SocketOptions`] setter, and made async with tokio's `AsyncFd`: no `unsafe` anywhere.
//! The same construction gives J1939 sockets ([`j1939_socket`]), used by the real-kernel tests.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

use socketcan::{CanAddr, ExtendedId, Id, SocketOptions, StandardId};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `AF_CAN`.
const AF_CAN: i32 = 29;
/// `CAN_ISOTP` protocol number.
const CAN_ISOTP: i32 = 6;
/// `CAN_J1939` protocol number.
const CAN_J1939: i32 = 7;
/// `SOL_CAN_ISOTP` (`SOL_CAN_BASE + CAN_ISOTP`).
const SOL_CAN_ISOTP: i32 = 100 + CAN_ISOTP;
/// `CAN_ISOTP_OPTS`: `struct can_isotp_options`.
const CAN_ISOTP_OPTS: i32 = 1;
/// `CAN_ISOTP_TX_PADDING` flag: pad transmitted frames to 8 bytes.
const CAN_ISOTP_TX_PADDING: u32 = 0x004;
/// Largest ISO-TP message read (the kernel's limit for classic CAN is 4095 bytes).
pub const MAX_MESSAGE: usize = 4095;

/// A CAN identifier from its raw value: 29-bit when `extended`.
///
/// # Errors
/// An identifier too large for its width.
pub fn can_id(raw: u32, extended: bool) -> io::Result<Id> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad CAN id 0x{raw:X}"));
    if extended {
        ExtendedId::new(raw).map(Id::Extended).ok_or_else(bad)
    } else {
        u16::try_from(raw)
            .ok()
            .and_then(StandardId::new)
            .map(Id::Standard)
            .ok_or_else(bad)
    }
}

/// A kernel ISO-TP socket: one peer, sending on `tx_id` and receiving on `rx_id`, with the
/// kernel doing segmentation, flow control and reassembly.
#[derive(Debug)]
pub struct IsoTpSocket(socket2::Socket);

impl AsRawFd for IsoTpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl SocketOptions for IsoTpSocket {}

impl IsoTpSocket {
    /// Opens an ISO-TP socket on `iface`; `padding` pads every transmitted frame to 8 bytes
    /// with that byte (ISO 15765-4 requires DLC 8 for OBD-II).
    ///
    /// # Errors
    /// No such interface, no `can-isotp` kernel module, or a bind failure.
    pub fn open(iface: &str, rx_id: Id, tx_id: Id, padding: Option<u8>) -> io::Result<Self> {
        let addr = CanAddr::from_iface_isotp(iface, rx_id, tx_id)?;
        let sock = socket2::Socket::new(
            socket2::Domain::from(AF_CAN),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::from(CAN_ISOTP)),
        )?;
        let me = Self(sock);
        if let Some(pad) = padding {
            me.set_socket_option_bytes(SOL_CAN_ISOTP, CAN_ISOTP_OPTS, &isotp_options(pad))?;
        }
        me.0.bind(&addr.into_sock_addr())?;
        me.0.set_nonblocking(true)?;
        Ok(me)
    }

    /// Sends one message (the kernel segments it); non-blocking.
    ///
    /// # Errors
    /// As `send(2)`; `WouldBlock` while a previous message is still being sent.
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        let n = self.0.send(msg)?;
        if n == msg.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!("sent {n} of {} bytes", msg.len())))
        }
    }

    /// Receives one reassembled message into `buf`; non-blocking.
    ///
    /// # Errors
    /// As `recv(2)`; `WouldBlock` when nothing is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.0).read(buf)
    }
}

/// `struct can_isotp_options` with TX padding on: flags, frame_txtime, ext_address,
/// txpad_content, rxpad_content, rx_ext_address (12 bytes, native endian).
fn isotp_options(pad: u8) -> [u8; 12] {
    let mut o = [0u8; 12];
    o[0..4].copy_from_slice(&CAN_ISOTP_TX_PADDING.to_ne_bytes());
    o[9] = pad;
    o[10] = pad;
    o
}

/// An [`IsoTpSocket`] registered with the tokio reactor.
#[derive(Debug)]
pub struct AsyncIsoTp(AsyncFd<IsoTpSocket>);

impl AsyncIsoTp {
    /// Opens an ISO-TP socket (see [`IsoTpSocket::open`]).
    ///
    /// # Errors
    /// As [`IsoTpSocket::open`]; also outside a tokio runtime.
    pub fn open(iface: &str, rx_id: Id, tx_id: Id, padding: Option<u8>) -> io::Result<Self> {
        let sock = IsoTpSocket::open(iface, rx_id, tx_id, padding)?;
        // tokio 1.54 deprecates `AsyncFd::new` for its safe signature over a bare `AsRawFd`
        // (a caller could close the fd while it is registered); its replacement `register`
        // is `unsafe`, which this workspace forbids. The concern does not arise here: the
        // `AsyncFd` owns the socket2 socket, which owns the fd and closes it only on drop,
        // after deregistration. socketcan's own tokio sockets make the same call.
        #[allow(deprecated)]
        let fd = AsyncFd::new(sock)?;
        Ok(Self(fd))
    }

    /// Sends one message.
    ///
    /// # Errors
    /// As [`IsoTpSocket::send`].
    pub async fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.0.async_io(Interest::WRITABLE, |s| s.send(msg)).await
    }

    /// Receives one message into `buf`.
    ///
    /// # Errors
    /// As [`IsoTpSocket::recv`]; a flow-control timeout or a wrong sequence number shows as
    /// an error here (the kernel drops that message).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.async_io(Interest::READABLE, |s| s.recv(buf)).await
    }
}

/// Opens a kernel J1939 datagram socket on `iface` bound to source address `addr` (and `pgn`
/// for receiving, `J1939_NO_PGN` for any); send with `send_to` a `CanAddr` built with
/// [`CanAddr::from_iface_j1939`]. The kernel runs the transport protocol (TP.CM/TP.DT) for
/// messages over 8 bytes.
///
/// # Errors
/// No such interface, no `can-j1939` kernel module, or a bind failure.
pub fn j1939_socket(iface: &str, pgn: u32, addr: u8) -> io::Result<socket2::Socket> {
    let bind = CanAddr::from_iface_j1939(iface, socketcan::addr::J1939_NO_NAME, pgn, addr)?;
    let sock = socket2::Socket::new(
        socket2::Domain::from(AF_CAN),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::from(CAN_J1939)),
    )?;
    sock.bind(&bind.into_sock_addr())?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_by_width() {
        assert!(matches!(can_id(0x7DF, false), Ok(Id::Standard(_))));
        assert!(matches!(can_id(0x18DB_33F1, true), Ok(Id::Extended(_))));
        assert!(can_id(0x800, false).is_err());
        assert!(can_id(0x2000_0000, true).is_err());
    }

    #[test]
    fn isotp_options_layout() {
        let o = isotp_options(0xCC);
        assert_eq!(u32::from_ne_bytes([o[0], o[1], o[2], o[3]]), 4);
        assert_eq!(&o[4..], &[0, 0, 0, 0, 0, 0xCC, 0xCC, 0]);
    }

    #[test]
    fn open_fails_cleanly_without_the_interface() {
        let id = can_id(0x7E8, false).expect("id");
        // The host kernel may lack CAN entirely; either way this is an error, not a panic.
        assert!(IsoTpSocket::open("nosuchcan9", id, id, Some(0x55)).is_err());
        assert!(j1939_socket("nosuchcan9", 0, 0x20).is_err());
    }
}
