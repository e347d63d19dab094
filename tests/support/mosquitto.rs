//! A real Mosquitto broker as a child process on free 127.0.0.1 ports.
//!
//! Every broker has a plain listener (`port()`, for subscribers and plaintext tests) and, with
//! [`MosquittoOptions::tls`], a TLS listener (`tls_port()`) whose certificates are generated
//! in-process by rcgen: a CA, a server certificate for `127.0.0.1` and `localhost`, a client
//! certificate for mutual TLS, and a "rogue" client certificate from another CA.
//!
//! Persistence is on, in the broker's temp dir: [`Mosquitto::stop`] (SIGTERM) saves the
//! session store, [`Mosquitto::start_again`] with `persistence = true` keeps it (sessions are
//! resumed) and with `false` deletes it first (sessions are lost). [`Mosquitto::kill`]
//! (SIGKILL) saves nothing. [`Mosquitto::freeze`] (SIGSTOP) makes the broker accept bytes
//! into its socket buffers but answer nothing, so publishes stay unacknowledged.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// Where Debian installs the broker; `MOSQUITTO` overrides it.
const DEFAULT_BINARY: &str = "/usr/sbin/mosquitto";

/// TLS listener mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Server certificate only.
    ServerOnly,
    /// Clients must present a certificate signed by the test CA.
    Mutual,
}

/// How to start the broker.
#[derive(Debug, Clone, Default)]
pub struct MosquittoOptions {
    /// Add a TLS listener.
    pub tls: Option<TlsMode>,
}

/// Certificate files (PEM) generated for a TLS broker.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A client certificate signed by a different CA (must be rejected).
    pub rogue_cert: PathBuf,
    /// Its key.
    pub rogue_key: PathBuf,
}

/// A running (or stopped) broker. Killed on drop.
pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    tls_port: Option<u16>,
    certs: Option<Certs>,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let path =
        std::env::var_os("MOSQUITTO").map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
    assert!(
        path.exists(),
        "mosquitto not found at {}: the end-to-end tests need a real broker. Install it with \
         `apt-get install -y mosquitto mosquitto-clients` (or set MOSQUITTO=/path/to/mosquitto), \
         then run `cargo test --workspace` again.",
        path.display()
    );
    path
}

fn current_user() -> String {
    Command::new("id")
        .arg("-un")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "root".to_string())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Generates the CA, server, client and rogue certificates into `dir`.
fn generate_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-signed CA");
        (cert, Issuer::new(params, key))
    };
    let leaf = |names: Vec<String>, cn: &str, issuer: &Issuer<'static, KeyPair>| {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).expect("signed leaf");
        (cert.pem(), key.serialize_pem())
    };
    let (ca_cert, issuer) = ca("Waymark test CA");
    let (_, rogue_issuer) = ca("Rogue CA");
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        "localhost",
        &issuer,
    );
    let (client_cert, client_key) = leaf(vec!["TEST-1".into()], "TEST-1", &issuer);
    let (rogue_cert, rogue_key) = leaf(vec!["TEST-1".into()], "TEST-1", &rogue_issuer);
    let certs = Certs {
        ca: dir.join("ca.pem"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
        rogue_cert: dir.join("rogue.pem"),
        rogue_key: dir.join("rogue.key"),
    };
    write(&certs.ca, &ca_cert.pem());
    write(&dir.join("server.pem"), &server_cert);
    write(&dir.join("server.key"), &server_key);
    write(&certs.client_cert, &client_cert);
    write(&certs.client_key, &client_key);
    write(&certs.rogue_cert, &rogue_cert);
    write(&certs.rogue_key, &rogue_key);
    certs
}

/// Starts mosquitto with `dir/mosquitto.conf` and waits until it accepts on every port.
async fn spawn(dir: &Path, port: u16, tls_port: Option<u16>) -> Result<Child, String> {
    let log = || std::fs::read_to_string(dir.join("mosquitto.log")).unwrap_or_default();
    let mut child = Command::new(binary())
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start mosquitto: {e}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for port in std::iter::once(port).chain(tls_port) {
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if let Some(status) = child.try_wait().ok().flatten() {
                return Err(format!(
                    "mosquitto exited with {status} at start; log:\n{}",
                    log()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                if child.kill().is_ok() && child.wait().is_err() {
                    eprintln!("mosquitto did not report its exit");
                }
                return Err(format!(
                    "mosquitto does not accept on port {port}; log:\n{}",
                    log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(child)
}

impl Mosquitto {
    /// Starts a broker and waits until every listener accepts connections. A port taken
    /// between choosing and binding it (by another test) is retried with fresh ports.
    pub async fn start(opts: MosquittoOptions) -> Mosquitto {
        binary();
        let dir = tempfile::tempdir().expect("broker temp dir");
        let certs = opts.tls.map(|_| generate_certs(dir.path()));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = super::free_port();
            let tls_port = opts.tls.map(|_| super::free_port());
            let mut conf = format!(
                "per_listener_settings false\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {dir}/\n\
                 persistence_file mosquitto.db\n\
                 autosave_interval 3600\n\
                 log_dest file {dir}/mosquitto.log\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 connection_messages true\n\
                 user {user}\n\
                 listener {port} 127.0.0.1\n",
                dir = dir.path().display(),
                user = current_user(),
            );
            if let (Some(mode), Some(p), Some(c)) = (opts.tls, tls_port, &certs) {
                conf.push_str(&format!(
                    "listener {p} 127.0.0.1\n\
                     cafile {ca}\n\
                     certfile {dir}/server.pem\n\
                     keyfile {dir}/server.key\n\
                     require_certificate {require}\n",
                    ca = c.ca.display(),
                    dir = dir.path().display(),
                    require = mode == TlsMode::Mutual,
                ));
            }
            write(&dir.path().join("mosquitto.conf"), &conf);
            match spawn(dir.path(), port, tls_port).await {
                Ok(child) => {
                    return Mosquitto {
                        dir,
                        port,
                        tls_port,
                        certs,
                        child: Some(child),
                    };
                }
                Err(e) if attempt < 5 => {
                    eprintln!("mosquitto start attempt {attempt} failed, retrying: {e}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The plain listener's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS listener's port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("broker started without TLS")
    }

    /// The generated certificates.
    pub fn certs(&self) -> &Certs {
        self.certs.as_ref().expect("broker started without TLS")
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Sends a signal; false if it could not be sent.
    fn send(&self, sig: &str) -> bool {
        let Some(child) = &self.child else {
            return true;
        };
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn signal(&self, sig: &str) {
        assert!(self.send(sig), "kill -{sig} mosquitto failed");
    }

    /// SIGTERM and wait for the exit: connections close, the session store is saved.
    pub async fn stop(&mut self) {
        self.signal("CONT");
        self.signal("TERM");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Some(child) = &mut self.child {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the broker dies at once and saves nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only if it already exited, which is what we want.
            if child.kill().is_ok() && child.wait().is_err() {
                eprintln!("mosquitto {} did not report its exit", child.id());
            }
        }
    }

    /// SIGSTOP: the broker stops answering; clients' bytes pile up in its socket buffers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`Mosquitto::freeze`].
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Starts the broker again on the same ports. `persistence = true` keeps the session
    /// store saved by [`Mosquitto::stop`] (sessions resume); `false` deletes it (sessions
    /// and retained messages are lost).
    pub async fn start_again(&mut self, persistence: bool) {
        assert!(self.child.is_none(), "stop() or kill() the broker first");
        if !persistence {
            let db = self.dir.path().join("mosquitto.db");
            if db.exists() {
                std::fs::remove_file(&db).expect("remove session store");
            }
        }
        let child = spawn(self.dir.path(), self.port, self.tls_port)
            .await
            .unwrap_or_else(|e| panic!("restart on the same ports failed: {e}"));
        self.child = Some(child);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        // A frozen process dies of SIGKILL too; CONT is only courtesy.
        self.send("CONT");
        self.kill();
    }
}
