//! A TCP relay in front of the broker that a test can close (cutting every link through it
//! and refusing new ones) and open again, without touching the broker. It makes restarts
//! deterministic: the test re-subscribes first, then lets the gateway back in.

use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The relay (see the module docs). Dropping it stops it.
pub struct Gate {
    port: u16,
    open: Arc<watch::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Gate {
    /// A gate on a free loopback port relaying to `127.0.0.1:target_port`, initially open.
    pub async fn start(target_port: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let port = listener.local_addr().expect("gate addr").port();
        let open = Arc::new(watch::Sender::new(true));
        let state = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*state.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut closed = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target_port)).await
                    else {
                        return;
                    };
                    let mut inbound = inbound;
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = closed.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Gate { port, open, task }
    }

    /// The port the gateway should connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts every relayed connection and refuses new ones (accepted, then closed at once).
    pub fn close(&self) {
        self.open.send_replace(false);
    }

    /// Relays new connections again.
    pub fn open(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
        self.task.abort();
    }
}
