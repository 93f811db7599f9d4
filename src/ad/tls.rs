//! HTTPS for `tv1 serve`: a certificate and key from PEM files, replaced without a restart.
//!
//! Every agent request carries the API key, so on a network the key must travel inside TLS.
//! [`ReloadingCert`] holds the certificate the server presents; [`ReloadingCert::watch`] reads
//! the two files every [`RELOAD_INTERVAL`] and, when they changed and form a valid pair, the
//! next handshake presents the new certificate. Connections already open keep theirs. A pair
//! that does not load (a key written before its certificate, a typo) is logged and the old
//! certificate stays: a renewal half done never takes the endpoint down.
//!
//! TLS 1.2 and 1.3 with rustls' safe defaults (aws-lc-rs), ALPN `http/1.1` only (the server
//! speaks HTTP/1.1, see [`super::serve`]).

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// How often the certificate files are read for a change: a renewed certificate is presented
/// within this long.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (BEGIN CERTIFICATE)")]
    NoCertificate { path: PathBuf },
    #[error(
        "{path} holds no PEM private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
    )]
    NoKey { path: PathBuf },
    #[error("{cert} and {key} do not form a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The certificate chain and private key files (PEM) `tv1 serve` presents.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The server certificate first, then any intermediates.
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl CertFiles {
    /// Both files' bytes, read now.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// The pair in `cert_pem` and `key_pem`, checked to belong together.
    fn parse(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::NoKey {
            path: self.key.clone(),
        })?;
        // Parses the key and compares its public half with the certificate's.
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Pair {
            cert: self.cert.clone(),
            key: self.key.clone(),
            source,
        })
    }
}

fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

/// The certificate presented to each new connection, replaceable while serving.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// SHA-256 of the files' bytes this was loaded from (or last failed to load from): a change
    /// is a change of content, whatever the file times say. A digest, so that the private key
    /// is held only where rustls holds it, never in a `Debug` of ours.
    source: [u8; 32],
}

/// The digest `Loaded::source` compares.
fn digest((cert, key): &(Vec<u8>, Vec<u8>)) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

impl ReloadingCert {
    /// Loads `files` now: an error here (missing file, no key, a key of another certificate)
    /// stops `tv1 serve` before it listens.
    pub fn load(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let bytes = files.read()?;
        let key = Arc::new(files.parse(&bytes.0, &bytes.1)?);
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Loaded {
                key,
                source: digest(&bytes),
            }),
        }))
    }

    /// Reads the files once; returns whether a new certificate is now presented. A pair that
    /// changed but does not load is logged once and the previous certificate stays.
    pub fn reload(&self) -> bool {
        let bytes = match self.files.read() {
            Ok(b) => b,
            // Mid-rename, or removed: the next round sees the new files.
            Err(e) => {
                tracing::debug!(error = %e, "certificate files not readable this round");
                return false;
            }
        };
        let source = digest(&bytes);
        if self.current.read().expect("not poisoned").source == source {
            return false;
        }
        let parsed = self.files.parse(&bytes.0, &bytes.1);
        let mut current = self.current.write().expect("not poisoned");
        current.source = source;
        match parsed {
            Ok(key) => {
                current.key = Arc::new(key);
                tracing::info!(cert = %self.files.cert.display(), "certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "certificate files changed but do not load; still presenting the previous certificate");
                false
            }
        }
    }

    /// Reloads every [`RELOAD_INTERVAL`], for as long as the task runs.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let me = self.clone();
            // File reads are blocking calls: off the async workers.
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
        }
    }

    /// The rustls server configuration that presents this certificate.
    pub fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .expect("the default provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    fn presented(c: &ReloadingCert) -> Vec<u8> {
        c.current.read().unwrap().key.cert[0].to_vec()
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_at_start_and_ignored_on_reload() {
        let dir = std::env::temp_dir().join(format!("tv1-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a_cert, a_key) = pair("a.example");
        let (b_cert, b_key) = pair("b.example");
        let err = ReloadingCert::load(files(&dir, &a_cert, &b_key)).unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
        let err = ReloadingCert::load(files(&dir, &a_cert, "")).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        let err = ReloadingCert::load(files(&dir, "", &a_key)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

        let served = ReloadingCert::load(files(&dir, &a_cert, &a_key)).unwrap();
        let first = presented(&served);
        assert!(
            !served.reload(),
            "unchanged files are not a new certificate"
        );
        // A renewal half written: the new certificate, the old key.
        files(&dir, &b_cert, &a_key);
        assert!(!served.reload());
        assert_eq!(presented(&served), first);
        // ...and then complete.
        files(&dir, &b_cert, &b_key);
        assert!(served.reload());
        assert_ne!(presented(&served), first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
