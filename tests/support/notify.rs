//! A fake systemd notify socket: a real `AF_UNIX` datagram socket in a temp dir whose path is
//! given to the gateway as `NOTIFY_SOCKET` (or to `Notifier::to_path`); the test reads what the
//! gateway says. Shared by the e2e tests and the gateway's `systemd` unit tests (`#[path]`).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The notify socket, read by the test.
pub struct FakeSystemd {
    _dir: tempfile::TempDir,
    sock: UnixDatagram,
    /// Where the socket is bound: the `NOTIFY_SOCKET` value.
    pub path: PathBuf,
}

impl FakeSystemd {
    /// Binds a fresh socket.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        FakeSystemd {
            _dir: dir,
            sock,
            path,
        }
    }

    /// The next message, or `None` if none arrives within `within` (a hang guard, or the
    /// window of a negative check).
    pub fn next(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(len) => return Some(String::from_utf8_lossy(&buf[..len]).into_owned()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("notify socket: {e}"),
            }
        }
        None
    }

    /// Messages until one contains `what` (60 s hang guard; the panic adds `context()`, e.g.
    /// the gateway's log).
    pub fn until(&self, what: &str, context: impl Fn() -> String) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(m) = self.next(Duration::from_millis(200)) {
                let hit = m.contains(what);
                seen.push(m);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no {what:?}; got {seen:?}\n{}", context());
    }
}
