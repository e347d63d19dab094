//! TLS client configuration for the broker connection: rustls with the ring provider.
//!
//! The provider is passed explicitly (`ClientConfig::builder_with_provider`), never taken
//! from the process default, so a dependency that compiles aws-lc into the tree cannot make
//! the first TLS connection panic (CRATES.md §1.3, pitfall 5). The broker is authenticated by
//! the CA certificate(s) in `ca_file` only (no system roots: a vehicle talks to one broker);
//! a client certificate and key make it mutual TLS. Every error names the file at fault.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::MqttConfig;

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `tls = true` (the default) but no `ca_file` is configured.
    #[error("mqtt.ca_file is required when mqtt.tls is true (set tls = false for plaintext)")]
    MissingCa,
    /// Only one of `client_cert_file` and `client_key_file` is set.
    #[error("mqtt.client_cert_file and mqtt.client_key_file must be set together")]
    IncompleteClientAuth,
    /// A PEM file cannot be read or parsed (missing, unreadable, malformed).
    #[error("cannot read {what} from {path}: {source}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reading or parsing error.
        #[source]
        source: pem::Error,
    },
    /// A PEM file holds no item of the expected kind.
    #[error("{path} holds no {what}")]
    Empty {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate in `ca_file` is not a usable trust anchor.
    #[error("invalid CA certificate in {path}: {source}")]
    InvalidCa {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The client certificate and key cannot be used together (key does not match the
    /// certificate, unsupported key type).
    #[error("client certificate {cert} with key {key} is unusable: {source}")]
    ClientAuth {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The ring provider refused the default protocol versions (only on a build bug).
    #[error("TLS provider setup failed: {0}")]
    Provider(#[source] rustls::Error),
}

/// Builds the rustls client configuration for `[mqtt]`, or `None` when `tls = false`.
///
/// # Errors
/// See [`TlsError`]; each names the offending file or key.
pub fn client_config(cfg: &MqttConfig) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    if !cfg.tls {
        return Ok(None);
    }
    let ca_file = cfg.ca_file.as_deref().ok_or(TlsError::MissingCa)?;
    let roots = load_roots(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Provider)?
        .with_root_certificates(roots);
    let config = match (&cfg.client_cert_file, &cfg.client_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert, "client certificate")?;
            let key_der = load_key(key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|source| TlsError::ClientAuth {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?
        }
        _ => return Err(TlsError::IncompleteClientAuth),
    };
    Ok(Some(Arc::new(config)))
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_err = |source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_err)?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::InvalidCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const WHAT: &str = "private key (PKCS#8, PKCS#1 or SEC1 PEM)";
    PrivateKeyDer::from_pem_file(path).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::Empty {
            what: WHAT,
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            what: WHAT,
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = ca_params.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca_params, ca_key);
            let client_key = rcgen::KeyPair::generate().unwrap();
            let client = rcgen::CertificateParams::new(vec!["vehicle".to_string()])
                .unwrap()
                .signed_by(&client_key, &issuer)
                .unwrap();
            let other_key = rcgen::KeyPair::generate().unwrap();
            let f = Files { dir };
            f.write("ca.pem", &ca.pem());
            f.write("client.pem", &client.pem());
            f.write("client.key", &client_key.serialize_pem());
            f.write("other.key", &other_key.serialize_pem());
            f.write("empty.pem", "");
            f.write(
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
            );
            f
        }
        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.dir.path().join(name), text).unwrap();
        }
        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn cfg(ca: Option<PathBuf>, cert: Option<PathBuf>, key: Option<PathBuf>) -> MqttConfig {
        let mut c: MqttConfig = toml::from_str("host = \"broker.example\"").unwrap();
        c.ca_file = ca;
        c.client_cert_file = cert;
        c.client_key_file = key;
        c
    }

    #[test]
    fn plaintext_only_when_tls_is_false() {
        let f = Files::new();
        let mut c = cfg(None, None, None);
        assert!(matches!(client_config(&c), Err(TlsError::MissingCa)));
        c.tls = false;
        assert!(client_config(&c).unwrap().is_none());
        c.tls = true;
        c.ca_file = Some(f.path("ca.pem"));
        assert!(client_config(&c).unwrap().is_some());
    }

    #[test]
    fn mutual_tls() {
        let f = Files::new();
        let c = cfg(
            Some(f.path("ca.pem")),
            Some(f.path("client.pem")),
            Some(f.path("client.key")),
        );
        let config = client_config(&c).unwrap().unwrap();
        assert!(config.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn errors_name_the_file() {
        let f = Files::new();
        let cases = [
            (cfg(Some(f.path("missing.pem")), None, None), "missing.pem"),
            (cfg(Some(f.path("empty.pem")), None, None), "empty.pem"),
            (cfg(Some(f.path("garbage.pem")), None, None), "garbage.pem"),
            (
                cfg(
                    Some(f.path("ca.pem")),
                    Some(f.path("empty.pem")),
                    Some(f.path("client.key")),
                ),
                "empty.pem",
            ),
            (
                cfg(
                    Some(f.path("ca.pem")),
                    Some(f.path("client.pem")),
                    Some(f.path("ca.pem")),
                ),
                "ca.pem",
            ),
            (
                cfg(
                    Some(f.path("ca.pem")),
                    Some(f.path("client.pem")),
                    Some(f.path("nokey.pem")),
                ),
                "nokey.pem",
            ),
            (
                cfg(
                    Some(f.path("ca.pem")),
                    Some(f.path("client.pem")),
                    Some(f.path("other.key")),
                ),
                "other.key",
            ),
        ];
        for (c, name) in cases {
            let err = client_config(&c).unwrap_err().to_string();
            assert!(err.contains(name), "{err:?} should name {name}");
        }
    }

    #[test]
    fn cert_and_key_go_together() {
        let f = Files::new();
        let c = cfg(Some(f.path("ca.pem")), Some(f.path("client.pem")), None);
        assert!(matches!(
            client_config(&c),
            Err(TlsError::IncompleteClientAuth)
        ));
        let c = cfg(Some(f.path("ca.pem")), None, Some(f.path("client.key")));
        assert!(matches!(
            client_config(&c),
            Err(TlsError::IncompleteClientAuth)
        ));
    }
}
