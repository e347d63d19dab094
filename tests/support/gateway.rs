//! A real `waymark run` process for end-to-end tests: written config, real store file, real
//! jsonl TCP port, SIGKILL and restart.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Options for the gateway's config file.
#[derive(Debug, Clone)]
pub struct GatewayOpts {
    /// Broker port (plaintext on 127.0.0.1).
    pub broker_port: u16,
    /// Vehicle id.
    pub vehicle: String,
    /// Extra TOML appended to `[store]`.
    pub store_extra: String,
    /// Extra TOML appended to `[pipeline]`.
    pub pipeline_extra: String,
    /// Extra TOML appended to `[mqtt]`.
    pub mqtt_extra: String,
    /// Store directory (defaults to the gateway's temp dir).
    pub store_dir: Option<PathBuf>,
    /// Extra TOML appended after the jsonl source (more `[[sources]]`).
    pub sources_extra: String,
    /// Extra environment of the process (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub env: Vec<(String, String)>,
}

impl GatewayOpts {
    /// Defaults for a broker on `port`.
    pub fn new(broker_port: u16) -> Self {
        Self {
            broker_port,
            vehicle: "TRUCK-E2E".into(),
            store_extra: String::new(),
            pipeline_extra: String::new(),
            mqtt_extra: String::new(),
            store_dir: None,
            sources_extra: String::new(),
            env: Vec::new(),
        }
    }
}

/// A `waymark run` child process.
pub struct Gateway {
    /// Temp dir holding the config (and the store unless `store_dir` was given).
    pub dir: tempfile::TempDir,
    /// The config file.
    pub config: PathBuf,
    /// The store file.
    pub store: PathBuf,
    /// The jsonl TCP address.
    pub jsonl: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Writes the config and starts the process; returns once the jsonl port accepts.
    pub fn start(opts: &GatewayOpts) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = opts
            .store_dir
            .clone()
            .unwrap_or_else(|| dir.path().to_path_buf());
        let store = store_dir.join("buffer.db");
        let jsonl: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("waymark.toml");
        let text = format!(
            r#"
[vehicle]
id = "{vehicle}"

[store]
path = "{store}"
min_free_disk_bytes = 0
{store_extra}

[pipeline]
{window}
{pipeline_extra}

[mqtt]
host = "127.0.0.1"
port = {port}
tls = false
keep_alive_s = 5
reconnect_min_ms = 100
reconnect_max_ms = 1000
status_interval_s = 5
telemetry_publish_interval_ms = 500
{mqtt_extra}

[[sources]]
type = "jsonl"
tcp_listen = "{jsonl}"
{sources_extra}
"#,
            vehicle = opts.vehicle,
            store = store.display(),
            store_extra = opts.store_extra,
            pipeline_extra = opts.pipeline_extra,
            // A test may set its own window in `pipeline_extra`.
            window = if opts.pipeline_extra.contains("batch_window_ms") {
                ""
            } else {
                "batch_window_ms = 200"
            },
            port = opts.broker_port,
            mqtt_extra = opts.mqtt_extra,
            sources_extra = opts.sources_extra,
        );
        std::fs::write(&config, text).unwrap();
        let log = dir.path().join("waymark.log");
        let mut gw = Self {
            dir,
            config,
            store,
            jsonl,
            child: None,
            log,
            env: opts.env.clone(),
        };
        gw.spawn();
        gw
    }

    /// Starts the process again (after [`Gateway::kill`]) on the same config and store.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_waymark"))
            .args(["--log", "info,waymark_gateway=debug", "run", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawning waymark");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.jsonl).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "waymark exited with {status} before listening:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "waymark did not listen:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("not running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("waymark did not stop on SIGTERM:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The process's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A jsonl client connection.
    pub fn connect(&self) -> Jsonl {
        Jsonl::connect(self.jsonl)
    }

    /// Runs `waymark status --json` on the store.
    pub fn status_json(&self) -> serde_json::Value {
        status_json(&self.store)
    }
}

/// `waymark status --json --store PATH`.
pub fn status_json(store: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["status", "--json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A jsonl client: writes lines, reads answers.
pub struct Jsonl {
    wr: TcpStream,
    rd: BufReader<TcpStream>,
}

impl Jsonl {
    /// Connects.
    pub fn connect(addr: SocketAddr) -> Self {
        let wr = TcpStream::connect(addr).unwrap();
        wr.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let rd = BufReader::new(wr.try_clone().unwrap());
        Self { wr, rd }
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.wr.write_all(bytes)
    }

    /// Sends a reading line (no answer expected).
    pub fn reading(&mut self, signal: &str, value: f64, time_ms: i64) -> std::io::Result<()> {
        let line = format!(
            "{{\"kind\":\"reading\",\"signal\":\"{signal}\",\"value\":{value},\"unit\":\"km/h\",\"time\":\"{}\"}}\n",
            waymark_wire::time::format_rfc3339_ms(time_ms)
        );
        self.wr.write_all(line.as_bytes())
    }

    /// Sends an event line with a producer id and returns the gateway's answer.
    pub fn event(
        &mut self,
        id: uuid::Uuid,
        type_: &str,
        n: u64,
    ) -> std::io::Result<serde_json::Value> {
        let line = format!(
            "{{\"kind\":\"event\",\"id\":\"{id}\",\"type\":\"{type_}\",\"priority\":\"milestone\",\"data\":{{\"n\":{n}}}}}\n"
        );
        self.wr.write_all(line.as_bytes())?;
        self.answer()
    }

    /// Reads one answer line.
    pub fn answer(&mut self) -> std::io::Result<serde_json::Value> {
        let mut line = String::new();
        if self.rd.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        serde_json::from_str(&line).map_err(std::io::Error::other)
    }
}
