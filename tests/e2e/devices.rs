//! The `waymark` process with a `device` source against `waymark-devsim` on a real
//! pseudo-terminal and a real Mosquitto: POD presses reach the broker exactly once, through
//! lost acks and a SIGKILL between the commit and the ack; a garbage flood neither grows the
//! gateway's memory nor stops other data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use waymark_devsim::Background;
use waymark_wire::topics::{self, Stream};

use crate::support::gateway::{Gateway, GatewayOpts};
use crate::support::{Mosquitto, MosquittoOptions, Subscriber};

const VEHICLE: &str = "TRUCK-E2E";
const GUARD: Duration = Duration::from_secs(90);

struct Rig {
    _rt: tokio::runtime::Runtime,
    _broker: Mosquitto,
    sub: Subscriber,
    sim: Arc<Background>,
    _dir: tempfile::TempDir,
    gw: Gateway,
}

fn rig() -> Rig {
    rig_with("")
}

fn rig_with(device_extra: &str) -> Rig {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = rt.block_on(Mosquitto::start(MosquittoOptions::default()));
    let sub = rt.block_on(Subscriber::connect(
        broker.port(),
        &format!("waymark/v1/vehicles/{VEHICLE}/+"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-Waymark_POD-if00");
    let sim = Arc::new(Background::start(&link, Duration::from_millis(100)).unwrap());
    let mut opts = GatewayOpts::new(broker.port());
    opts.sources_extra = format!(
        "[[sources]]\ntype = \"device\"\nname = \"pod\"\ndevice = \"{}\"\n\
         reopen_min_ms = 50\nreopen_max_ms = 500\n{device_extra}\n",
        link.display()
    );
    let gw = Gateway::start(&opts);
    Rig {
        _rt: rt,
        _broker: broker,
        sub,
        sim,
        _dir: dir,
        gw,
    }
}

impl Rig {
    fn script(&self, text: &str) {
        let ok = self.sim.run(text);
        assert_eq!(
            ok,
            Ok(true),
            "devsim log:\n{}\ngateway log:\n{}",
            self.sim.log().join("\n"),
            self.gw.log_text()
        );
    }

    /// Every POD event on the broker: (event id, device_seq), copies included.
    fn pods(&self) -> Vec<(String, u64)> {
        self.sub
            .messages()
            .into_iter()
            .filter(|m| {
                matches!(
                    topics::parse(topics::DEFAULT_PREFIX, &m.topic),
                    Some((_, Stream::Events))
                )
            })
            .map(|m| m.json())
            .filter(|e| {
                e["type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("waymark.pod."))
            })
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_string(),
                    e["data"]["device_seq"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn wait_pods(&self, what: &str, check: impl Fn(&[(String, u64)]) -> bool) {
        let deadline = std::time::Instant::now() + GUARD;
        while !check(&self.pods()) {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {:?}\ngateway log:\n{}",
                self.pods(),
                self.gw.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn pod_presses_are_published_exactly_once_across_lost_acks_and_sigkill() {
    let mut rig = rig();
    rig.script("hello id=00000000000004d2\npod seq=1 outcome=delivered stop=S-1\nwait 60000");
    rig.wait_pods("the first POD", |p| p.len() == 1);

    // Acks lost: the device retries; one event.
    rig.script("ignore-acks 3\npod seq=2 outcome=damaged\nsleep 600\nwait 60000");

    // The device never sees the ack of seq 3 (as if the power went after the commit); the
    // gateway is SIGKILLed while the device retries, then restarted.
    rig.script("ignore-acks 1000000\npod seq=3 outcome=refused");
    rig.wait_pods("the committed POD 3", |p| p.iter().any(|(_, s)| *s == 3));
    rig.script("sleep 500");
    rig.gw.kill();
    rig.script("sleep 500");
    rig.gw.spawn();
    rig.script("ignore-acks 0\nwait 60000");
    assert!(rig.sim.log().iter().any(|l| l == "sent hello (again)"));
    // Let any republish of the restarted gateway arrive before counting.
    rig.script("pod seq=4\nwait 60000");
    rig.wait_pods("POD 4", |p| p.iter().any(|(_, s)| *s == 4));

    let pods = rig.pods();
    let ids: BTreeSet<_> = pods.iter().map(|(id, _)| id.clone()).collect();
    let seqs: BTreeSet<_> = pods.iter().map(|(_, s)| *s).collect();
    assert_eq!(ids.len(), 4, "one event per press: {pods:?}");
    assert_eq!(seqs, BTreeSet::from([1, 2, 3, 4]));
}

#[test]
fn garbage_flood_does_not_grow_memory_and_other_data_flows() {
    // The highest frame limit, so the gateway reads the flood at 2.5 MB/s and every byte
    // goes through its decoder.
    let rig = rig_with("max_frames_per_s = 10000");
    rig.script("hello\npod seq=1\nwait 60000");
    let pid = rig.gw.pid().unwrap();
    let before = vm_rss_kib(pid);
    let mut jsonl = rig.gw.connect();
    for round in 0..5u64 {
        rig.script("garbage 2000000\noversized 1000000\nbadcrc");
        // Other sources are served during the flood.
        let answer = jsonl
            .event(uuid::Uuid::now_v7(), "waymark.test.during_flood", round)
            .unwrap();
        assert_eq!(answer["ok"], true, "{answer}");
    }
    rig.script("pod seq=2\nwait 60000");
    rig.wait_pods("the POD after the flood", |p| {
        p.iter().any(|(_, s)| *s == 2)
    });
    let taken: Vec<_> = rig
        .sim
        .log()
        .into_iter()
        .filter(|l| l.contains("taken by the port"))
        .collect();
    assert!(
        taken.len() == 10
            && taken.iter().all(|l| {
                let (sent, took) = l.split_once(" (").unwrap();
                let n = |s: &str| s.parse::<u64>().unwrap();
                n(took.split(' ').next().unwrap()) >= n(sent.rsplit(' ').next().unwrap())
            }),
        "the gateway swallowed the whole flood: {taken:?}"
    );
    let after = vm_rss_kib(pid);
    println!("gateway VmRSS before the flood {before} KiB, after 15 MB of garbage {after} KiB");
    assert!(
        after < before + 8 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
}
