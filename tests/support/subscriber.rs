//! A subscriber that records every message the broker delivers (a rumqttc client in a
//! background task). It reconnects and re-subscribes by itself after a broker restart;
//! [`Subscriber::subscriptions`] counts SUBACKs so a test can wait until it is back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic.
    pub topic: String,
    /// Payload.
    pub payload: Vec<u8>,
    /// Whether the broker sent it as a retained message (on subscribe).
    pub retain: bool,
}

impl Message {
    /// The payload as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// The recording subscriber (see the module docs). Stops on drop.
pub struct Subscriber {
    messages: Arc<Mutex<Vec<Message>>>,
    subacks: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects to the plain listener on `port`, subscribes to `filter` (QoS 1) and waits for
    /// the SUBACK.
    pub async fn connect(port: u16, filter: &str) -> Subscriber {
        let id = format!("test-sub-{}", uuid::Uuid::now_v7().simple());
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let (suback_tx, subacks) = watch::channel(0u64);
        let filter = filter.to_string();
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                            eprintln!("subscriber: subscribe failed: {e}");
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        suback_tx.send_modify(|n| *n += 1);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Message {
                                topic: p.topic,
                                payload: p.payload.to_vec(),
                                retain: p.retain,
                            });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        });
        let sub = Subscriber {
            messages,
            subacks,
            task,
        };
        sub.wait_subscribed(1).await;
        sub
    }

    /// SUBACKs received so far (one per (re)connection).
    pub fn subscriptions(&self) -> u64 {
        *self.subacks.borrow()
    }

    /// Waits until at least `n` SUBACKs were received.
    pub async fn wait_subscribed(&self, n: u64) {
        let mut rx = self.subacks.clone();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|&got| got >= n))
            .await
            .unwrap_or_else(|_| panic!("subscriber got no SUBACK #{n} within 20 s"))
            .expect("subscriber task ended");
    }

    /// Everything received so far, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Messages received on `topic`, in arrival order.
    pub fn on(&self, topic: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .collect()
    }

    /// Waits until `check` holds for the messages received so far; panics naming `what`
    /// after `timeout` (an upper bound only).
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&[Message]) -> bool,
    ) -> Vec<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.messages();
            if check(&got) {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; received {} messages",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
