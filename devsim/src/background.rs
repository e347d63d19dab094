//! The simulator on its own thread, for tests: scripts are run on request, and between them
//! the device keeps answering the gateway and retrying, as real firmware does.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Command, Sim, SimError, parse};

type Request = (Vec<Command>, mpsc::Sender<Result<bool, String>>);

/// A [`Sim`] on a pseudo-terminal, running on a thread until dropped.
pub struct Background {
    tx: Option<mpsc::Sender<Request>>,
    log: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Creates the pty (and `link` to it) and starts the thread.
    ///
    /// # Errors
    /// When the pty or link cannot be made.
    pub fn start(link: &Path, retry: Duration) -> Result<Background, SimError> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let mut sim = Sim::pty(
            Some(link),
            retry,
            Box::new(move |line: &str| {
                if let Ok(mut l) = sink.lock() {
                    l.push(line.to_string());
                }
            }),
        )?;
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = std::thread::spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok((cmds, reply)) => {
                        let mut result = Ok(true);
                        for c in cmds {
                            match sim.command(c) {
                                Ok(true) => {}
                                Ok(false) => {
                                    result = Ok(false);
                                    break;
                                }
                                Err(e) => {
                                    result = Err(e.to_string());
                                    break;
                                }
                            }
                        }
                        let _ignored = reply.send(result);
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if sim
                            .service(Instant::now() + Duration::from_millis(10))
                            .is_err()
                        {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Ok(Background {
            tx: Some(tx),
            log,
            thread: Some(thread),
        })
    }

    /// Runs `script` (blocking) and returns whether every `wait`/`expect-nack` succeeded.
    ///
    /// # Errors
    /// A script that does not parse, or a simulator error, as text.
    pub fn run(&self, script: &str) -> Result<bool, String> {
        let cmds = parse(script).map_err(|e| e.to_string())?;
        let (reply, answer) = mpsc::channel();
        self.tx
            .as_ref()
            .ok_or("stopped")?
            .send((cmds, reply))
            .map_err(|_| "simulator thread gone".to_string())?;
        answer
            .recv()
            .map_err(|_| "simulator thread gone".to_string())?
    }

    /// Every line the simulator reported so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Lines equal to `line` so far.
    pub fn count(&self, line: &str) -> usize {
        self.log().iter().filter(|l| *l == line).count()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ignored = t.join();
        }
    }
}
