//! One CAN frame as the decoders see it, whatever it came from (a SocketCAN socket or a
//! candump log line): classic or FD, data, remote or error frame.
//!
//! Invariants: `id` never carries flags (they are the `extended` / `kind` fields); a standard
//! id is at most `0x7FF`, an extended one at most `0x1FFF_FFFF`; `len` is at most 8 for a
//! classic frame and one of the FD lengths (at most 64) for an FD frame; bytes past `len`
//! are zero.

/// SocketCAN's `CAN_EFF_FLAG`: the id word holds a 29-bit id.
pub const EFF_FLAG: u32 = 0x8000_0000;
/// SocketCAN's `CAN_RTR_FLAG`: remote transmission request.
pub const RTR_FLAG: u32 = 0x4000_0000;
/// SocketCAN's `CAN_ERR_FLAG`: an error frame made by the controller driver.
pub const ERR_FLAG: u32 = 0x2000_0000;
/// Largest 29-bit id.
pub const EFF_MASK: u32 = 0x1FFF_FFFF;
/// Largest 11-bit id.
pub const SFF_MASK: u32 = 0x7FF;
/// Largest FD payload.
pub const MAX_FD_LEN: usize = 64;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A data frame (classic or FD).
    Data,
    /// A remote transmission request (classic only; no data).
    Remote,
    /// An error frame: `id` holds the `CAN_ERR_*` class bits, `data` the details.
    Error,
}

/// One frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The id without flags.
    pub id: u32,
    /// 29-bit id.
    pub extended: bool,
    /// CAN FD frame.
    pub fd: bool,
    /// Data, remote or error.
    pub kind: Kind,
    /// Payload length (a remote frame's requested length).
    pub len: u8,
    data: [u8; MAX_FD_LEN],
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}", self.id)?;
        f.write_str(if self.fd { "##" } else { "#" })?;
        for b in self.data() {
            write!(f, "{b:02X}")?;
        }
        write!(f, " ({:?})", self.kind)
    }
}

/// Why bytes could not be a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The id does not fit in 11 (standard) or 29 (extended) bits.
    #[error("id {0:#X} out of range")]
    IdRange(u32),
    /// More data than the frame type carries.
    #[error("{0} data bytes: too long")]
    TooLong(usize),
    /// An FD length that is not one of 0..=8, 12, 16, 20, 24, 32, 48, 64.
    #[error("{0} data bytes: not a CAN FD length")]
    FdLength(usize),
}

/// Whether `n` is a valid CAN FD payload length.
pub fn is_fd_len(n: usize) -> bool {
    n <= 8 || matches!(n, 12 | 16 | 20 | 24 | 32 | 48 | 64)
}

impl Frame {
    /// A data frame.
    ///
    /// # Errors
    /// The id or the length is out of range for the frame type.
    pub fn data_frame(id: u32, extended: bool, fd: bool, data: &[u8]) -> Result<Self, FrameError> {
        check_id(id, extended)?;
        if fd {
            if !is_fd_len(data.len()) {
                return Err(FrameError::FdLength(data.len()));
            }
        } else if data.len() > 8 {
            return Err(FrameError::TooLong(data.len()));
        }
        let mut buf = [0u8; MAX_FD_LEN];
        buf[..data.len()].copy_from_slice(data);
        Ok(Frame {
            id,
            extended,
            fd,
            kind: Kind::Data,
            len: data.len() as u8,
            data: buf,
        })
    }

    /// A remote frame asking for `len` bytes.
    ///
    /// # Errors
    /// The id is out of range, or `len` > 8.
    pub fn remote(id: u32, extended: bool, len: u8) -> Result<Self, FrameError> {
        check_id(id, extended)?;
        if len > 8 {
            return Err(FrameError::TooLong(len.into()));
        }
        Ok(Frame {
            id,
            extended,
            fd: false,
            kind: Kind::Remote,
            len,
            data: [0; MAX_FD_LEN],
        })
    }

    /// An error frame: `class` the `CAN_ERR_*` bits of the id word (without `ERR_FLAG`).
    ///
    /// # Errors
    /// More than 8 data bytes.
    pub fn error(class: u32, data: &[u8]) -> Result<Self, FrameError> {
        if data.len() > 8 {
            return Err(FrameError::TooLong(data.len()));
        }
        let mut buf = [0u8; MAX_FD_LEN];
        buf[..data.len()].copy_from_slice(data);
        Ok(Frame {
            id: class & EFF_MASK,
            extended: false,
            fd: false,
            kind: Kind::Error,
            len: data.len() as u8,
            data: buf,
        })
    }

    /// A frame from a SocketCAN id word (with its `EFF`/`RTR`/`ERR` flags) and payload.
    ///
    /// # Errors
    /// As [`Frame::data_frame`].
    pub fn from_id_word(word: u32, fd: bool, data: &[u8]) -> Result<Self, FrameError> {
        if word & ERR_FLAG != 0 {
            return Frame::error(word & EFF_MASK, data);
        }
        let extended = word & EFF_FLAG != 0;
        let id = if extended {
            word & EFF_MASK
        } else {
            word & SFF_MASK
        };
        if word & RTR_FLAG != 0 && !fd {
            return Frame::remote(id, extended, data.len().min(8) as u8);
        }
        Frame::data_frame(id, extended, fd, data)
    }

    /// The payload (empty for a remote frame).
    pub fn data(&self) -> &[u8] {
        match self.kind {
            Kind::Remote => &[],
            _ => &self.data[..usize::from(self.len)],
        }
    }
}

fn check_id(id: u32, extended: bool) -> Result<(), FrameError> {
    let max = if extended { EFF_MASK } else { SFF_MASK };
    if id > max {
        return Err(FrameError::IdRange(id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert!(Frame::data_frame(0x7FF, false, false, &[1]).is_ok());
        assert_eq!(
            Frame::data_frame(0x800, false, false, &[]),
            Err(FrameError::IdRange(0x800))
        );
        assert!(Frame::data_frame(EFF_MASK, true, false, &[0; 8]).is_ok());
        assert_eq!(
            Frame::data_frame(1, true, false, &[0; 9]),
            Err(FrameError::TooLong(9))
        );
        assert!(Frame::data_frame(1, true, true, &[0; 12]).is_ok());
        assert_eq!(
            Frame::data_frame(1, true, true, &[0; 13]),
            Err(FrameError::FdLength(13))
        );
        assert!(Frame::remote(1, false, 9).is_err());
    }

    #[test]
    fn id_words() {
        let f = Frame::from_id_word(0x8CF0_0400, false, &[1, 2]).expect("valid");
        assert_eq!((f.id, f.extended, f.kind), (0x0CF0_0400, true, Kind::Data));
        assert_eq!(f.data(), &[1, 2]);
        let f = Frame::from_id_word(0x2000_0040, false, &[0; 8]).expect("valid");
        assert_eq!((f.id, f.kind), (0x40, Kind::Error));
        let f = Frame::from_id_word(0x4000_0123, false, &[0; 4]).expect("valid");
        assert_eq!((f.id, f.kind, f.data().len()), (0x123, Kind::Remote, 0));
    }
}
