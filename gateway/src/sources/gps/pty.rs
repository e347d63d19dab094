//! A pseudo-terminal that plays a serial receiver: the gateway opens its slave end (through
//! a stable symlink, as it would `/dev/serial/by-id/...`) and whoever holds the [`Pty`]
//! writes what the receiver would send into the master end. Used by `waymark demo` and by
//! the `gps` source tests; no external tool needed.
//!
//! Dropping the [`Pty`] closes the master: the gateway's reads of the slave then fail, as
//! on a USB unplug. [`Pty::open`] on the same link again is the replug (the symlink is
//! replaced atomically, so the path never dangles between two ptys).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};

/// The master end of a pseudo-terminal and the path of its slave.
#[derive(Debug)]
pub struct Pty {
    master: File,
    slave_path: PathBuf,
}

impl Pty {
    /// Creates a pty in raw mode (no echo, no CR/LF translation) and points `link` at its
    /// slave.
    ///
    /// # Errors
    /// When the pty cannot be made or the link cannot be written.
    pub fn open(link: &Path) -> std::io::Result<Pty> {
        let master: OwnedFd =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
        grantpt(&master)?;
        unlockpt(&master)?;
        let name = ptsname(&master, Vec::new())?;
        let slave_path = PathBuf::from(name.to_string_lossy().into_owned());
        // Raw mode on the slave, so nothing is translated before the gateway sets its own.
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)?;
        let mut t = tcgetattr(&slave)?;
        t.make_raw();
        tcsetattr(&slave, OptionalActions::Now, &t)?;
        drop(slave);
        let tmp = link.with_extension("pty-tmp");
        // A leftover from an earlier run may or may not be there.
        std::fs::remove_file(&tmp).ok();
        std::os::unix::fs::symlink(&slave_path, &tmp)?;
        std::fs::rename(&tmp, link)?;
        Ok(Pty {
            master: File::from(master),
            slave_path,
        })
    }

    /// The slave's `/dev/pts/N`.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// Writes all of `bytes` (blocking while the reader is behind).
    ///
    /// # Errors
    /// When the slave side is gone.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.master.write_all(bytes)
    }
}
