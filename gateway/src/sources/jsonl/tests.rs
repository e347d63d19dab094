//! The jsonl source over real Unix and loopback TCP sockets (and, where timing must be exact,
//! over an in-memory duplex pipe with paused tokio time): readings flow, events are answered
//! only after their commit and in line order, store errors are answered, malformed and
//! overlong lines are answered and counted, the connection limit, backpressure without loss,
//! the rate limit, socket-file handling, shutdown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Value as Json, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;
use waymark_wire::Value;

use super::*;
use crate::config::{SourceConfig, StoreConfig};
use crate::shutdown::Trigger;
use crate::store::Store;

/// Upper bound for anything the tests wait for; only reached when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);
const ID: &str = "019ab0a4-4b3e-7c1a-9f00-0123456789ab";

// ---------------------------------------------------------------- a sink we can hold or fail

/// An event sink whose commits can be held (until `release`) or failed (`fail_next`), with
/// the store's dedup semantics. Exists to observe *when* answers are written.
#[derive(Clone)]
struct FakeSink(Arc<FakeInner>);

struct FakeInner {
    gate: Semaphore,
    fail_next: Mutex<u32>,
    started: Mutex<Vec<NewEvent>>,
    known: Mutex<(u64, HashMap<Uuid, Accepted>)>,
}

use crate::store::NewEvent;

impl FakeSink {
    fn open() -> Self {
        Self::with_permits(Semaphore::MAX_PERMITS)
    }
    fn holding() -> Self {
        Self::with_permits(0)
    }
    fn with_permits(n: usize) -> Self {
        FakeSink(Arc::new(FakeInner {
            gate: Semaphore::new(n),
            fail_next: Mutex::new(0),
            started: Mutex::new(Vec::new()),
            known: Mutex::new((0, HashMap::new())),
        }))
    }
    /// Lets `n` held commits complete.
    fn release(&self, n: usize) {
        self.0.gate.add_permits(n);
    }
    fn fail_next(&self, n: u32) {
        *self.0.fail_next.lock().unwrap() = n;
    }
    fn started(&self) -> usize {
        self.0.started.lock().unwrap().len()
    }
}

impl EventSink for FakeSink {
    type Error = String;

    fn append_event(&self, ev: NewEvent) -> impl Future<Output = Result<Accepted, String>> + Send {
        let inner = self.0.clone();
        async move {
            inner.started.lock().unwrap().push(ev.clone());
            inner
                .gate
                .acquire()
                .await
                .expect("gate is never closed")
                .forget();
            {
                let mut fail = inner.fail_next.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return Err("store unavailable: disk full".to_string());
                }
            }
            let mut known = inner.known.lock().unwrap();
            if let Some(acc) = known.1.get(&ev.id) {
                return Ok(Accepted {
                    duplicate: true,
                    ..*acc
                });
            }
            known.0 += 1;
            let acc = Accepted {
                id: ev.id,
                sequence: known.0,
                duplicate: false,
            };
            known.1.insert(ev.id, acc);
            Ok(acc)
        }
    }
}

// ---------------------------------------------------------------- harness

struct Harness {
    readings: mpsc::Receiver<Reading>,
    health: Arc<Health>,
    trigger: Trigger,
    task: JoinHandle<Result<(), SourceError>>,
    unix: PathBuf,
    tcp: SocketAddr,
    _dir: tempfile::TempDir,
}

fn config(dir: &Path) -> JsonlConfig {
    JsonlConfig {
        name: "apps".into(),
        unix_socket: Some(dir.join("apps.sock")),
        tcp_listen: Some("127.0.0.1:0".parse().unwrap()),
        max_line_bytes: 64 * 1024,
        max_lines_per_s: 0,
        max_connections: 16,
    }
}

async fn start<E: EventSink>(
    sink: E,
    channel: usize,
    tweak: impl FnOnce(&mut JsonlConfig),
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    tweak(&mut cfg);
    let source = Jsonl::bind(&cfg).unwrap();
    let (unix, tcp) = (
        source.unix_path().unwrap().to_path_buf(),
        source.tcp_addr().unwrap(),
    );
    let (tx, rx) = mpsc::channel(channel);
    let health = Arc::new(Health::default());
    let trigger = Trigger::new();
    let task =
        tokio::spawn(source.serve(tx, sink, health.clone(), Clock::new(), trigger.subscribe()));
    Harness {
        readings: rx,
        health,
        trigger,
        task,
        unix,
        tcp,
        _dir: dir,
    }
}

impl Harness {
    async fn reading(&mut self) -> Reading {
        tokio::time::timeout(DEADLINE, self.readings.recv())
            .await
            .expect("a reading within the deadline")
            .expect("channel open")
    }
    fn rejected(&self) -> u64 {
        self.health.counters.snapshot().lines_rejected
    }
    async fn stop(self) -> Result<(), SourceError> {
        self.trigger.fire();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("source stops")
            .expect("no panic")
    }
}

struct Client<R, W> {
    answers: Lines<BufReader<R>>,
    w: W,
}

async fn unix_client(
    path: &Path,
) -> Client<tokio::net::unix::OwnedReadHalf, tokio::net::unix::OwnedWriteHalf> {
    let (r, w) = UnixStream::connect(path).await.unwrap().into_split();
    Client {
        answers: BufReader::new(r).lines(),
        w,
    }
}

async fn tcp_client(
    addr: SocketAddr,
) -> Client<tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf> {
    let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
    Client {
        answers: BufReader::new(r).lines(),
        w,
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Client<R, W> {
    async fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).await.unwrap();
    }
    async fn answer(&mut self) -> Json {
        let line = tokio::time::timeout(DEADLINE, self.answers.next_line())
            .await
            .expect("an answer within the deadline")
            .unwrap()
            .expect("connection still open");
        serde_json::from_str(&line).unwrap()
    }
    async fn eof(&mut self) {
        let next = tokio::time::timeout(DEADLINE, self.answers.next_line())
            .await
            .expect("closed within the deadline");
        assert!(
            matches!(next, Ok(None) | Err(_)),
            "expected end of stream, got {next:?}"
        );
    }
}

/// Polls `cond` until it holds (the deadline only catches a broken implementation).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn reading_line(signal: &str, value: f64) -> String {
    format!(
        "{}\n",
        json!({"kind": "reading", "signal": signal, "value": value, "unit": "km/h"})
    )
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn readings_flow_over_unix_and_tcp() {
    let mut h = start(FakeSink::open(), 64, |_| {}).await;
    let mut u = unix_client(&h.unix).await;
    let mut t = tcp_client(h.tcp).await;
    u.send("{\"kind\":\"reading\",\"signal\":\"Vehicle.Speed\",\"value\":52.3,\"unit\":\"km/h\",\"time\":\"2026-11-23T07:52:50.123Z\"}\r\n").await;
    let r = h.reading().await;
    assert_eq!(
        r,
        Reading {
            signal: "Vehicle.Speed".into(),
            value: Value::Num(52.3),
            unit: "km/h".into(),
            time: 1_795_420_370_123,
            source: "apps".into(),
        }
    );
    let before = crate::clock::system_ms();
    t.send("{\"kind\":\"reading\",\"signal\":\"Vehicle.Gear\",\"value\":\"D\"}\n")
        .await;
    let r = h.reading().await;
    assert_eq!(
        (r.signal.as_str(), r.value, r.unit.as_str()),
        ("Vehicle.Gear", Value::Text("D".into()), "")
    );
    assert!(
        r.time >= before && r.time <= crate::clock::system_ms(),
        "receive time used"
    );
    // Many lines in one write, split anywhere, keep their order.
    let batch: String = (0..500)
        .map(|i| reading_line("Vehicle.Speed", f64::from(i)))
        .collect();
    let (a, b) = batch.split_at(batch.len() / 3);
    u.send(a).await;
    u.send(b).await;
    for i in 0..500 {
        assert_eq!(h.reading().await.value, Value::Num(f64::from(i)));
    }
    // A last line without LF counts when the producer closes.
    u.send("{\"kind\":\"reading\",\"signal\":\"x\",\"value\":1}")
        .await;
    u.w.shutdown().await.unwrap();
    assert_eq!(h.reading().await.signal, "x");
    u.eof().await;
    assert_eq!(h.rejected(), 0);
    assert_eq!(h.health.components()["jsonl:apps"].state, HealthState::Ok);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn event_is_answered_only_after_its_commit_and_answers_keep_line_order() {
    let sink = FakeSink::holding();
    let mut h = start(sink.clone(), 64, |_| {}).await;
    let mut c = unix_client(&h.unix).await;
    c.send(&format!(
        "{}\n{}{}\n{}\n",
        json!({"kind": "event", "type": "waymark.pod.delivered", "data": {"stop": "S3"}, "id": ID, "priority": "alert"}),
        reading_line("Vehicle.Speed", 10.0),
        "{\"kind\":\"reading\",\"signal\":\"a\",\"value\":[1]}",
        json!({"kind": "event", "type": "waymark.milestone.arrived", "data": {}}),
    ))
    .await;
    // Both events are committing at once (not one at a time) ...
    until("both appends started", || sink.started() == 2).await;
    // ... the reading after the first event went through ...
    assert_eq!(h.reading().await.value, Value::Num(10.0));
    // ... and the bad line was judged, but nothing is answered while line 1 is uncommitted.
    until("line 3 rejected", || h.rejected() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut probe = [0u8; 1];
    assert!(
        matches!(c.answers.get_ref().get_ref().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
        "an answer was written before the commit"
    );
    let started = sink.0.started.lock().unwrap().clone();
    assert_eq!(started[0].id, Uuid::parse_str(ID).unwrap());
    assert_eq!(started[0].lane, crate::store::Lane::Alert);
    assert_eq!(started[1].lane, crate::store::Lane::Milestone);

    // Commit the first event: its answer and the rejection behind it come; line 4 still waits.
    sink.release(1);
    assert_eq!(
        c.answer().await,
        json!({"ok": true, "line": 1, "id": ID, "sequence": 1, "duplicate": false})
    );
    let rej = c.answer().await;
    assert_eq!(
        (rej["ok"].clone(), rej["line"].clone()),
        (json!(false), json!(3))
    );
    assert!(
        rej["error"]
            .as_str()
            .unwrap()
            .starts_with("field `value`: expected a number, boolean or string"),
        "{rej}"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(c.answers.get_ref().buffer().is_empty());
    assert!(
        matches!(c.answers.get_ref().get_ref().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    );

    sink.release(1);
    let a = c.answer().await;
    assert_eq!(
        (a["ok"].clone(), a["line"].clone(), a["sequence"].clone()),
        (json!(true), json!(4), json!(2))
    );
    let id = Uuid::parse_str(a["id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(id, sink.0.started.lock().unwrap()[1].id);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn store_error_is_answered_and_the_retry_is_exactly_once() {
    let sink = FakeSink::open();
    sink.fail_next(1);
    let h = start(sink.clone(), 64, |_| {}).await;
    let mut c = tcp_client(h.tcp).await;
    let ev =
        json!({"kind": "event", "type": "waymark.pod.delivered", "data": {"stop": "S3"}, "id": ID});
    c.send(&format!("{ev}\n")).await;
    assert_eq!(
        c.answer().await,
        json!({"ok": false, "line": 1, "id": ID, "error": "store unavailable: disk full"})
    );
    let health = &h.health.components()["jsonl:apps"];
    assert_eq!(health.state, HealthState::Degraded);
    assert_eq!(
        health.detail.as_deref(),
        Some("store refuses events: store unavailable: disk full")
    );
    // The producer retries with the same id: stored once, the second retry is a duplicate.
    c.send(&format!("{ev}\n{ev}\n")).await;
    assert_eq!(
        c.answer().await,
        json!({"ok": true, "line": 2, "id": ID, "sequence": 1, "duplicate": false})
    );
    assert_eq!(
        c.answer().await,
        json!({"ok": true, "line": 3, "id": ID, "sequence": 1, "duplicate": true})
    );
    assert_eq!(h.health.components()["jsonl:apps"].state, HealthState::Ok);
    // A store error is not a rejected line.
    assert_eq!(h.rejected(), 0);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn events_commit_in_the_real_store_through_the_source_trait() {
    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.path().join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let mut cfg = config(dir.path());
    cfg.tcp_listen = None;
    let source = Jsonl::bind(&cfg).unwrap();
    assert_eq!(source.component(), "jsonl:apps");
    let (tx, mut rx) = mpsc::channel(8);
    let trigger = Trigger::new();
    let ctx = SourceContext {
        readings: tx,
        store: store.clone(),
        health: health.clone(),
        clock: Clock::new(),
    };
    let task = tokio::spawn(Source::run(source, ctx, trigger.subscribe()));

    let mut c = unix_client(&dir.path().join("apps.sock")).await;
    let ev = json!({"kind": "event", "type": "waymark.pod.delivered", "data": {"stop": "S3"}, "id": ID,
                    "time": "2026-11-23T07:52:50.123Z", "subject": "stop/S3"});
    c.send(&format!(
        "{ev}\n{}{ev}\n",
        reading_line("Vehicle.Speed", 1.0)
    ))
    .await;
    let first = c.answer().await;
    assert_eq!(
        (
            first["ok"].clone(),
            first["line"].clone(),
            first["id"].clone()
        ),
        (json!(true), json!(1), json!(ID))
    );
    assert_eq!(first["duplicate"], json!(false));
    let again = c.answer().await;
    assert_eq!(again["line"], json!(3));
    assert_eq!(
        (again["duplicate"].clone(), again["sequence"].clone()),
        (json!(true), first["sequence"].clone())
    );
    assert_eq!(rx.recv().await.unwrap().signal, "Vehicle.Speed");

    trigger.fire();
    let result = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
    c.eof().await;
    store.close().await.unwrap();
}

#[tokio::test]
async fn malformed_lines_are_answered_counted_and_the_connection_survives() {
    let mut h = start(FakeSink::open(), 64, |_| {}).await;
    let mut c = unix_client(&h.unix).await;
    c.send(&reading_line("a", 1.0)).await;
    c.send("{\"kind\":\"reading\",\"signal\":\"a\",\"value\":1\n")
        .await;
    c.send("{\"kind\":\"telemetry\"}\n").await;
    c.send("\n   \n").await;
    c.send(&reading_line("a", 2.0)).await;
    c.send("{\"kind\":\"reading\",\"signal\":\"a\",\"value\":1,\"unti\":\"m\"}\n")
        .await;
    c.send("\u{1}\u{2}binary\n").await;
    let a = c.answer().await;
    assert_eq!(a["line"], json!(2));
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid JSON: EOF while parsing an object at column"),
        "{a}"
    );
    let a = c.answer().await;
    assert_eq!(a["line"], json!(3));
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("field `kind`: unknown kind \"telemetry\""),
        "{a}"
    );
    let a = c.answer().await;
    assert_eq!(
        (a["line"].clone(), a["ok"].clone()),
        (json!(7), json!(false))
    );
    assert!(
        a["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown field \"unti\""),
        "{a}"
    );
    let a = c.answer().await;
    assert_eq!(a["line"], json!(8));
    assert_eq!(h.reading().await.value, Value::Num(1.0));
    assert_eq!(h.reading().await.value, Value::Num(2.0));
    assert_eq!(h.rejected(), 4);
    // Still open for more.
    c.send(&reading_line("a", 3.0)).await;
    assert_eq!(h.reading().await.value, Value::Num(3.0));
    h.stop().await.unwrap();
}

#[tokio::test]
async fn overlong_line_is_skipped_and_answered() {
    let mut h = start(FakeSink::open(), 64, |c| c.max_line_bytes = 1024).await;
    let mut c = tcp_client(h.tcp).await;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..16 {
        c.w.write_all(&chunk).await.unwrap();
    }
    c.send("\r\n").await;
    c.send(&reading_line("after", 1.0)).await;
    let long_ok = format!(
        "{{\"kind\":\"reading\",\"signal\":\"s\",\"value\":\"{}\"}}",
        "v".repeat(200)
    );
    c.send(&format!("{long_ok}\n")).await;
    assert_eq!(
        c.answer().await,
        json!({"ok": false, "line": 1, "error": "line too long: 1048576 bytes, the limit is 1024 (skipped)"})
    );
    assert_eq!(h.reading().await.signal, "after");
    assert_eq!(h.reading().await.signal, "s");
    assert_eq!(h.rejected(), 1);
    h.stop().await.unwrap();
}

#[tokio::test]
async fn connections_beyond_the_limit_get_one_error_line_and_are_closed() {
    let mut h = start(FakeSink::open(), 64, |c| c.max_connections = 1).await;
    let mut first = unix_client(&h.unix).await;
    first.send("oops\n").await;
    assert_eq!(first.answer().await["line"], json!(1));

    let mut second = tcp_client(h.tcp).await;
    assert_eq!(
        second.answer().await,
        json!({"ok": false, "line": 0, "error": "too many connections (limit 1)"})
    );
    second.eof().await;
    let mut third = unix_client(&h.unix).await;
    assert_eq!(
        third.answer().await["error"],
        json!("too many connections (limit 1)")
    );
    third.eof().await;

    // The first one is unaffected; once it is gone a new connection is accepted.
    first.send(&reading_line("a", 1.0)).await;
    assert_eq!(h.reading().await.signal, "a");
    drop(first);
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut c = unix_client(&h.unix).await;
        // A refused connection may already be closed for writing.
        if c.w.write_all(b"oops\n").await.is_ok() && c.answer().await["line"] == json!(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < give_up, "slot never freed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.stop().await.unwrap();
}

#[tokio::test]
async fn a_full_pipeline_stops_reading_and_loses_nothing() {
    const N: usize = 50_000;
    let mut h = start(FakeSink::open(), 4, |_| {}).await;
    let path = h.unix.clone();
    // ~4 MB: far more than the socket buffers and the line buffer hold.
    let producer = tokio::spawn(async move {
        let mut c = unix_client(&path).await;
        let all: String = (0..N)
            .map(|i| reading_line("Vehicle.Odometer", i as f64))
            .collect();
        c.w.write_all(all.as_bytes()).await.unwrap();
        c.w.shutdown().await.unwrap();
        c
    });
    until("the channel to fill", || h.readings.len() == 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !producer.is_finished(),
        "the producer could write everything although nobody took readings"
    );
    assert_eq!(h.readings.len(), 4);
    for i in 0..N {
        assert_eq!(h.reading().await.value, Value::Num(i as f64), "reading {i}");
    }
    let mut c = producer.await.unwrap();
    c.eof().await;
    assert_eq!(h.rejected(), 0);
    h.stop().await.unwrap();
}

/// Builds the per-source state for driving one connection over an in-memory pipe.
fn shared<E: EventSink>(
    sink: E,
    readings: mpsc::Sender<Reading>,
    lines_per_s: u32,
) -> Arc<Shared<E>> {
    Arc::new(Shared {
        settings: Settings {
            name: "apps".into(),
            component: "jsonl:apps".into(),
            max_line_bytes: 1024,
            max_lines_per_s: lines_per_s,
            max_connections: 1,
        },
        readings,
        events: sink,
        health: Arc::new(Health::default()),
        clock: Clock::new(),
        store_degraded: AtomicBool::new(false),
    })
}

#[tokio::test(start_paused = true)]
async fn backpressure_is_exact_over_a_pipe() {
    let (client, server) = tokio::io::duplex(256);
    let (sr, sw) = tokio::io::split(server);
    let (tx, mut rx) = mpsc::channel(3);
    let trigger = Trigger::new();
    let conn = tokio::spawn(connection(
        sr,
        sw,
        shared(FakeSink::open(), tx, 0),
        trigger.subscribe(),
        "pipe".into(),
    ));
    let (_cr, mut cw) = tokio::io::split(client);
    let producer = tokio::spawn(async move {
        for i in 0..200 {
            cw.write_all(reading_line("v", f64::from(i)).as_bytes())
                .await
                .unwrap();
        }
        cw
    });
    // Paused time advances only when every task is blocked: everything has settled now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(rx.len(), 3, "the channel is full");
    assert!(
        !producer.is_finished(),
        "the connection kept reading although the pipeline was full"
    );
    for i in 0..200 {
        assert_eq!(rx.recv().await.unwrap().value, Value::Num(f64::from(i)));
    }
    let mut cw = producer.await.unwrap();
    cw.shutdown().await.unwrap();
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_pauses_reading_instead_of_dropping() {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (sr, sw) = tokio::io::split(server);
    let (tx, mut rx) = mpsc::channel(1000);
    let trigger = Trigger::new();
    let conn = tokio::spawn(connection(
        sr,
        sw,
        shared(FakeSink::open(), tx, 10),
        trigger.subscribe(),
        "pipe".into(),
    ));
    let (_cr, mut cw) = tokio::io::split(client);
    let t0 = tokio::time::Instant::now();
    let all: String = (0..25).map(|i| reading_line("v", f64::from(i))).collect();
    cw.write_all(all.as_bytes()).await.unwrap();
    cw.shutdown().await.unwrap();
    let mut at = Vec::new();
    for i in 0..25 {
        assert_eq!(rx.recv().await.unwrap().value, Value::Num(f64::from(i)));
        at.push(tokio::time::Instant::now() - t0);
    }
    // A burst of one second's worth (10), then one line every 100 ms.
    assert!(
        at[..10].iter().all(|d| *d < Duration::from_millis(1)),
        "{at:?}"
    );
    for (k, d) in at[10..].iter().enumerate() {
        let due = Duration::from_millis(100 * (k as u64 + 1));
        assert!(
            *d >= due && *d < due + Duration::from_millis(5),
            "line {}: {d:?} {at:?}",
            k + 11
        );
    }
    assert!(conn.await.unwrap().is_ok());
}

#[tokio::test]
async fn shutdown_waits_for_events_in_flight_and_answers_them() {
    let sink = FakeSink::holding();
    let h = start(sink.clone(), 64, |_| {}).await;
    let mut c = unix_client(&h.unix).await;
    c.send(&format!(
        "{}\n",
        json!({"kind": "event", "type": "waymark.pod.delivered", "data": {}, "id": ID})
    ))
    .await;
    until("the append started", || sink.started() == 1).await;
    h.trigger.fire();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !h.task.is_finished(),
        "the source stopped with an event uncommitted"
    );
    // The socket file is gone already: no new connections during the shutdown.
    assert!(!h.unix.exists());
    sink.release(1);
    assert_eq!(
        c.answer().await,
        json!({"ok": true, "line": 1, "id": ID, "sequence": 1, "duplicate": false})
    );
    c.eof().await;
    tokio::time::timeout(DEADLINE, h.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(h.health.components()["jsonl:apps"].state, HealthState::Down);
}

#[tokio::test]
async fn unix_socket_file_mode_stale_file_and_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("apps.sock");
    let mut cfg = config(dir.path());
    cfg.tcp_listen = None;

    // A stale socket (its listener gone) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let source = Jsonl::bind(&cfg).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, SOCKET_MODE);

    // A live one is not.
    assert!(matches!(
        Jsonl::bind(&cfg),
        Err(JsonlError::SocketInUse { .. })
    ));

    // Stopping removes the file.
    let (tx, _rx) = mpsc::channel(1);
    let trigger = Trigger::new();
    let task = tokio::spawn(source.serve(
        tx,
        FakeSink::open(),
        Arc::new(Health::default()),
        Clock::new(),
        trigger.subscribe(),
    ));
    trigger.fire();
    task.await.unwrap().unwrap();
    assert!(!path.exists());

    // Anything that is not a socket is left alone.
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        Jsonl::bind(&cfg),
        Err(JsonlError::NotASocket { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // A missing directory is a bind error naming the path.
    cfg.unix_socket = Some(dir.path().join("missing/apps.sock"));
    let err = Jsonl::bind(&cfg).unwrap_err();
    assert!(matches!(err, JsonlError::BindUnix { .. }));
    assert!(err.to_string().contains("missing/apps.sock"), "{err}");
}

#[tokio::test]
async fn tcp_must_be_loopback_and_one_listener_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.unix_socket = None;
    for addr in ["0.0.0.0:7410", "192.0.2.1:7410", "[::]:7410"] {
        cfg.tcp_listen = Some(addr.parse().unwrap());
        assert!(
            matches!(Jsonl::bind(&cfg), Err(JsonlError::NotLoopback { .. })),
            "{addr}"
        );
    }
    cfg.tcp_listen = None;
    assert!(matches!(
        Jsonl::bind(&cfg),
        Err(JsonlError::NoListener { .. })
    ));
    // A busy port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.tcp_listen = Some(taken.local_addr().unwrap());
    assert!(matches!(Jsonl::bind(&cfg), Err(JsonlError::BindTcp { .. })));
}

#[tokio::test]
async fn spawn_all_builds_everything_first() {
    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let store_cfg = StoreConfig {
        path: dir.path().join("buffer.db"),
        ..StoreConfig::default()
    };
    let store = Store::open(&store_cfg, "TRUCK-042", health.clone()).unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let ctx = SourceContext {
        readings: tx,
        store: store.clone(),
        health,
        clock: Clock::new(),
    };
    let trigger = Trigger::new();

    // The second source cannot bind: nothing runs, and the first one's socket file is gone.
    let mut good = config(dir.path());
    good.tcp_listen = None;
    let mut bad = config(dir.path());
    bad.name = "bad".into();
    bad.unix_socket = None;
    bad.tcp_listen = Some("10.1.2.3:7410".parse().unwrap());
    let sources = [SourceConfig::Jsonl(good.clone()), SourceConfig::Jsonl(bad)];
    let err = crate::sources::spawn_all(&sources, &ctx, &trigger.subscribe()).unwrap_err();
    assert!(
        matches!(err, SourceError::Jsonl(JsonlError::NotLoopback { .. })),
        "{err}"
    );
    assert!(!dir.path().join("apps.sock").exists());

    let mut set =
        crate::sources::spawn_all(&[SourceConfig::Jsonl(good)], &ctx, &trigger.subscribe())
            .unwrap();
    let mut c = unix_client(&dir.path().join("apps.sock")).await;
    c.send("{}\n").await;
    assert_eq!(
        c.answer().await["error"],
        json!("field `kind`: missing, expected \"reading\" or \"event\" at column 2")
    );
    trigger.fire();
    let exit = tokio::time::timeout(DEADLINE, set.join_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.component, "jsonl:apps");
    assert!(exit.result.is_ok());
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_vanished_pipeline_ends_the_source_with_an_error() {
    let h = start(FakeSink::open(), 4, |_| {}).await;
    let Harness {
        readings,
        task,
        unix,
        tcp,
        health,
        _dir,
        ..
    } = h;
    drop(readings);
    // An idle connection does not keep the source alive.
    let _idle = tcp_client(tcp).await;
    let mut c = unix_client(&unix).await;
    c.send(&reading_line("a", 1.0)).await;
    let result = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(
        matches!(result, Err(SourceError::PipelineClosed)),
        "{result:?}"
    );
    let state = &health.components()["jsonl:apps"];
    assert_eq!(state.state, HealthState::Down);
    assert_eq!(
        state.detail.as_deref(),
        Some("the pipeline stopped taking readings")
    );
}
