//! The scenarios of issue 7.

use std::time::Duration;

use crate::harness::{Bridge, Publisher, Receiver, event, events_topic, wait_until};
use crate::mosquitto::{Mosquitto, MosquittoOptions};

const MILESTONE: &str = "waymark.milestone.arrived";

fn targets(url: &str, erp_extra: &str) -> String {
    format!(
        r#"
[[targets]]
name = "erp"
url = "{url}/erp"
types = ["waymark.milestone.*", "waymark.pod.*"]
secret_file = "target.secret"
retry_min_ms = 50
retry_max_ms = 400
max_attempts = 1000
{erp_extra}

[[targets]]
name = "portal"
url = "{url}/portal"
types = ["*"]
secret_file = "target.secret"
retry_min_ms = 50
retry_max_ms = 400
"#
    )
}

/// Publishes `payload` every 200 ms until `target` got a request with `key`: the bridge's
/// subscription exists from then on (its session is persistent).
async fn publish_until_seen(
    p: &mut Publisher,
    recv: &Receiver,
    target: &str,
    topic: &str,
    key: &str,
    payload: &[u8],
) {
    for _ in 0..150 {
        p.publish(topic, payload.to_vec()).await;
        for _ in 0..10 {
            if recv.requests(target).iter().any(|r| r.key == key) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("{target} never received {key}");
}

fn assert_each_once(recv: &Receiver, target: &str, ids: &[String]) {
    let accepted = recv.accepted(target);
    assert_eq!(accepted.len(), ids.len(), "{target}: distinct events");
    for id in ids {
        assert_eq!(accepted.get(id), Some(&1), "{target}: {id} delivered once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_duplicates_broker_restart_outage_and_sigkill() {
    let mut broker = Mosquitto::start(MosquittoOptions::default()).await;
    let recv = Receiver::start().await;
    recv.answer("erp", 503);
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::configure(
        dir.path(),
        broker.port(),
        &targets(&recv.url, "concurrency = 2"),
    );
    bridge.start();

    // 200 events, each published twice, while the ERP answers 503.
    let mut p = Publisher::connect(broker.port(), "vehicle-V1").await;
    let mut ids = Vec::new();
    let mut payloads = Vec::new();
    let (id, first) = event("V1", 1, MILESTONE);
    publish_until_seen(&mut p, &recv, "portal", &events_topic("V1"), &id, &first).await;
    ids.push(id);
    payloads.push(first);
    for seq in 2..=200 {
        let (id, body) = event("V1", seq, MILESTONE);
        ids.push(id);
        payloads.push(body);
    }
    for body in payloads.iter().skip(1) {
        p.publish(&events_topic("V1"), body.clone()).await;
        p.publish(&events_topic("V1"), body.clone()).await;
    }
    p.flush().await;
    // The portal keeps receiving while the ERP is down, and receives each event once.
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        wait_until(
            "portal receives 200 events",
            Duration::from_secs(70),
            || recv.accepted("portal").len() == 200,
        ),
    )
    .await;
    assert!(
        done.is_ok(),
        "portal got {}; status {}; log:\n{}",
        recv.accepted("portal").len(),
        bridge.status(),
        bridge.log()
    );
    assert!(recv.accepted("erp").is_empty());
    assert!(
        recv.requests("erp").iter().all(|r| r.status == 503) && !recv.requests("erp").is_empty(),
        "the ERP was tried, and answered 503"
    );
    assert_each_once(&recv, "portal", &ids);

    // Broker restart (sessions kept), then 100 new events and the first 50 again.
    broker.stop().await;
    broker.start_again(true).await;
    let mut p = Publisher::connect(broker.port(), "vehicle-V1-b").await;
    for seq in 201..=300 {
        let (id, body) = event("V1", seq, MILESTONE);
        ids.push(id);
        payloads.push(body);
    }
    let (id, body) = (ids[200].clone(), payloads[200].clone());
    // The bridge's reconnect (and its session) is proven when the first new event arrives.
    publish_until_seen(&mut p, &recv, "portal", &events_topic("V1"), &id, &body).await;
    for body in payloads[201..].iter().chain(&payloads[..50]) {
        p.publish(&events_topic("V1"), body.clone()).await;
    }
    p.flush().await;
    wait_until(
        "portal receives 300 events",
        Duration::from_secs(60),
        || recv.accepted("portal").len() == 300,
    )
    .await;
    assert_each_once(&recv, "portal", &ids);

    // The ERP recovers; the bridge is SIGKILLed while it delivers the backlog.
    recv.delay("erp", 5);
    recv.answer("erp", 200);
    wait_until("ERP starts receiving", Duration::from_secs(30), || {
        recv.accepted("erp").len() >= 20
    })
    .await;
    bridge.kill();
    let before = recv.accepted("erp").len();
    assert!(before < 300, "killed mid-delivery ({before} delivered)");
    bridge.start();
    wait_until("ERP receives all 300", Duration::from_secs(60), || {
        recv.accepted("erp").len() == 300
    })
    .await;
    // Every event reached the ERP; a request in flight when the process died may be sent
    // again (with the same Idempotency-Key and body), at most one outbox batch
    // (4 × concurrency).
    let accepted = recv.accepted("erp");
    let repeated: usize = accepted.values().map(|n| n - 1).sum();
    assert!(repeated <= 8, "{repeated} repeated deliveries");
    for r in recv.requests("erp") {
        assert!(r.signed, "signature of {}", r.key);
        let i = ids.iter().position(|id| *id == r.key).unwrap();
        assert_eq!(r.body, payloads[i], "body is the event byte for byte");
    }
    assert!(recv.requests("portal").iter().all(|r| r.signed));
    assert_each_once(&recv, "portal", &ids);

    let status = bridge.status();
    for t in ["erp", "portal"] {
        assert_eq!(status["targets"][t]["backlog"], 0, "{status}");
        assert_eq!(status["targets"][t]["dlq"], 0, "{status}");
    }
    assert_eq!(status["events"], 300, "{status}");
    assert!(
        status["counters"]["duplicates"].as_i64().unwrap() >= 249,
        "{status}"
    );
    assert!(
        status["open_gaps"].as_object().unwrap().is_empty(),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_goes_to_the_dlq_and_replay_delivers_once() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let recv = Receiver::start().await;
    recv.answer("erp", 422);
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::configure(dir.path(), broker.port(), &targets(&recv.url, ""));
    bridge.start();
    let mut p = Publisher::connect(broker.port(), "vehicle-V7").await;
    let (id, body) = event("V7", 1, "waymark.pod.delivered");
    publish_until_seen(&mut p, &recv, "erp", &events_topic("V7"), &id, &body).await;
    wait_until("dead letter", Duration::from_secs(30), || {
        let out = bridge.cli(&["dlq", "list", "--target", "erp"]);
        String::from_utf8_lossy(&out.stdout).contains(&id)
    })
    .await;
    let list = bridge.cli(&["dlq", "list"]);
    let row: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(row["reason"], "HTTP 422 (permanent)");
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["event_type"], "waymark.pod.delivered");
    assert_eq!(recv.requests("erp").len(), 1, "a 4xx is not retried");
    let show = bridge.cli(&["dlq", "show", &id]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("\"specversion\":\"1.0\""));
    assert_eq!(bridge.status()["targets"]["erp"]["dlq"], 1);

    // Replay needs a filter; a time range that matches nothing moves nothing.
    assert_eq!(bridge.cli(&["dlq", "replay"]).status.code(), Some(2));
    let none = bridge.cli(&["dlq", "replay", "--since", "2099-01-01T00:00:00Z"]);
    assert!(String::from_utf8_lossy(&none.stdout).starts_with("0 event"));

    recv.answer("erp", 200);
    let out = bridge.cli(&["dlq", "replay", "--id", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("1 event"),
        "{out:?}"
    );
    wait_until("replayed delivery", Duration::from_secs(30), || {
        recv.accepted("erp").get(&id) == Some(&1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(recv.accepted("erp").get(&id), Some(&1), "delivered once");
    assert!(bridge.cli(&["dlq", "list"]).stdout.is_empty());
    let status = bridge.status();
    assert_eq!(status["targets"]["erp"]["dlq"], 0, "{status}");
    assert_eq!(status["targets"]["erp"]["backlog"], 0, "{status}");
    assert_eq!(status["counters"]["replayed"], 1, "{status}");
    assert_eq!(recv.accepted("portal").get(&id), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_with_reasons_and_raises_gap_alerts() {
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::configure(
        dir.path(),
        broker.port(),
        &format!(
            "[gaps]\nalert_after_s = 1\n\n[[targets]]\nname = \"ops\"\nurl = \"{u}/ops\"\n\
             types = [\"waymark.bridge.*\"]\nsecret_file = \"target.secret\"\n\n\
             [[targets]]\nname = \"portal\"\nurl = \"{u}/portal\"\ntypes = [\"waymark.milestone.*\"]\n\
             secret_file = \"target.secret\"\n",
            u = recv.url
        ),
    );
    bridge.start();
    let mut p = Publisher::connect(broker.port(), "vehicle-V1").await;
    let (id1, e1) = event("V1", 1, MILESTONE);
    publish_until_seen(&mut p, &recv, "portal", &events_topic("V1"), &id1, &e1).await;

    // A vehicle speaking for another, an oversized message, a malformed one.
    let (_, spoofed) = event("V2", 1, MILESTONE);
    p.publish(&events_topic("V1"), spoofed).await;
    let (_, mut big) = event("V1", 2, MILESTONE);
    big.resize(70_000, b' ');
    p.publish(&events_topic("V1"), big).await;
    p.publish(&events_topic("V1"), b"{\"specversion\": ".to_vec())
        .await;
    // A gap: 2 is missing.
    let (_, e3) = event("V1", 3, MILESTONE);
    p.publish(&events_topic("V1"), e3).await;
    p.flush().await;

    wait_until("gap alert", Duration::from_secs(30), || {
        !recv.requests("ops").is_empty()
    })
    .await;
    let alert: serde_json::Value = serde_json::from_slice(&recv.requests("ops")[0].body).unwrap();
    assert_eq!(alert["type"], "waymark.bridge.sequence_gap");
    assert_eq!(alert["subject"], "V1");
    assert_eq!(alert["data"]["first_sequence"], 2);
    assert_eq!(alert["data"]["last_sequence"], 2);
    let status = bridge.status();
    assert_eq!(status["open_gaps"]["V1"]["missing"], 1, "{status}");
    for kind in ["spoofed", "oversized", "malformed"] {
        assert_eq!(
            status["counters"][format!("rejected.{kind}")],
            1,
            "{status}"
        );
    }
    let rejects = String::from_utf8(bridge.cli(&["rejects"]).stdout).unwrap();
    assert!(
        rejects.contains("is not the topic's vehicle \\\"V1\\\""),
        "{rejects}"
    );
    assert!(rejects.contains("70000 bytes"), "{rejects}");
    assert!(rejects.contains("\"kind\":\"malformed\""), "{rejects}");

    // The late arrival closes the gap.
    let (id2, e2) = event("V1", 2, MILESTONE);
    p.publish(&events_topic("V1"), e2).await;
    p.flush().await;
    wait_until("late event delivered", Duration::from_secs(30), || {
        recv.accepted("portal").contains_key(&id2)
    })
    .await;
    let status = bridge.status();
    assert!(
        status["open_gaps"].as_object().unwrap().is_empty(),
        "{status}"
    );
    assert_eq!(status["counters"]["gaps_closed"], 1, "{status}");
    // Only the valid events reached the portal; one alert reached ops.
    assert_eq!(recv.accepted("portal").len(), 3);
    assert_eq!(recv.accepted("ops").len(), 1);
    assert!(bridge.log().contains("message rejected"));
}

#[test]
fn check_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bridge = Bridge::configure(
        dir.path(),
        1883,
        "[[targets]]\nname = \"erp\"\nurl = \"ftp://x\"\nsecret_file = \"target.secret\"\n",
    );
    let out = bridge.cli(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bridge.toml: targets[0].url:"), "{err}");
    let good = Bridge::configure(dir.path(), 1883, "");
    let out = good.cli(&["check-config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_decoded_forwarded_and_written_as_json_lines() {
    use waymark_wire::{Reading, Value};
    let broker = Mosquitto::start(MosquittoOptions::default()).await;
    let recv = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = crate::free_port();
    let mut bridge = Bridge::configure(
        dir.path(),
        broker.port(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{m}\"\n\n\
             [telemetry]\ntarget = \"map\"\njsonl_path = \"telemetry.jsonl\"\n\n\
             [[targets]]\nname = \"map\"\nurl = \"{u}/map\"\nsecret_file = \"target.secret\"\n",
            u = recv.url,
            m = metrics_port,
        ),
    );
    let toml = std::fs::read_to_string(dir.path().join("bridge.toml")).unwrap();
    std::fs::write(
        dir.path().join("bridge.toml"),
        toml.replace("tls = false\n", "tls = false\nsubscribe_telemetry = true\n"),
    )
    .unwrap();
    bridge.start();
    let readings: Vec<Reading> = (0..50)
        .map(|i| Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(f64::from(i) * 1.5),
            unit: "km/h".into(),
            time: 1_795_420_370_000 + i64::from(i) * 1000,
            source: "can0".into(),
        })
        .collect();
    let payload = waymark_wire::telemetry::encode(&readings).unwrap();
    let mut p = Publisher::connect(broker.port(), "vehicle-V3").await;
    let topic = "waymark/v1/vehicles/V3/telemetry";
    // Publish until one batch arrives (the subscription exists from then on).
    for _ in 0..150 {
        p.publish(topic, payload.clone()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !recv.requests("map").is_empty() {
            break;
        }
    }
    let req = recv
        .requests("map")
        .first()
        .cloned()
        .expect("a batch arrives");
    assert!(req.signed);
    let ev: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(ev["type"], "waymark.telemetry.batch");
    assert_eq!(ev["source"], "urn:waymark:vehicle:V3");
    assert_eq!(ev["id"], req.key.as_str());
    let back: Vec<Reading> = serde_json::from_value(ev["data"]["readings"].clone()).unwrap();
    assert_eq!(back, readings);
    let lines = std::fs::read_to_string(dir.path().join("telemetry.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["vehicle"], "V3");
    assert_eq!(first["signal"], "Vehicle.Speed");
    assert_eq!(first["time"], 1_795_420_370_000i64);
    assert_eq!(lines.lines().count() % 50, 0);
    // A batch that does not decode is rejected, not forwarded.
    let mut bad = payload.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    p.publish(topic, bad).await;
    p.flush().await;
    wait_until(
        "malformed telemetry rejected",
        Duration::from_secs(30),
        || bridge.status()["counters"]["rejected.malformed"] == 1,
    )
    .await;
}
