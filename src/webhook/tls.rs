//! TLS for the webhook: rustls with the ring provider, TLS 1.2 and 1.3 only, and
//! a certificate resolver whose key pair is swapped when the files change, or
//! when the self-managed certificate's rotator sets a new one from its Secret.
//!
//! Kubernetes updates a mounted Secret by swapping a `..data` symlink, which
//! inotify on the file misses; the files are therefore re-read by path on a
//! timer and compared byte for byte. Established connections keep their
//! session; new handshakes get the new certificate.

use arc_swap::ArcSwapOption;
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {detail}")]
    BadPem { path: PathBuf, detail: String },
    #[error("the private key in {path} is not usable: {source}")]
    BadKey {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Installs ring as the process-wide rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = provider::default_provider().install_default();
}

/// Parses a certificate chain and private key from PEM bytes; `cert_from` and
/// `key_from` say where they came from, for error messages.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_from: &Path,
    key_from: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadPem {
            path: cert_from.to_path_buf(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_from.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadPem {
        path: key_from.to_path_buf(),
        detail: e.to_string(),
    })?;
    let signing = provider::sign::any_supported_type(&key).map_err(|source| TlsError::BadKey {
        path: key_from.to_path_buf(),
        source,
    })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|source| TlsError::BadKey {
        path: key_from.to_path_buf(),
        source,
    })?;
    Ok(ck)
}

/// The serving certificate. Either loaded from files and re-read by
/// [`reload_if_changed`](Self::reload_if_changed), or fed by someone else
/// with [`set`](Self::set) (the self-managed certificate's rotator, from its
/// Secret). Until a certificate is set, handshakes fail.
#[derive(Debug)]
pub struct CertStore {
    files: Option<(PathBuf, PathBuf)>,
    current: ArcSwapOption<CertifiedKey>,
    /// The PEM of what is served, to tell a change from a re-read.
    loaded: Mutex<(Vec<u8>, Vec<u8>)>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl CertStore {
    /// Loads the certificate and key; fails if either is unusable.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let (cert, key) = (read(&cert_path)?, read(&key_path)?);
        let ck = certified_key(&cert, &key, &cert_path, &key_path)?;
        Ok(Self {
            files: Some((cert_path, key_path)),
            current: ArcSwapOption::from_pointee(ck),
            loaded: Mutex::new((cert, key)),
        })
    }

    /// A store without a certificate yet, fed with [`set`](Self::set).
    pub fn empty() -> Self {
        Self {
            files: None,
            current: ArcSwapOption::empty(),
            loaded: Mutex::new((Vec::new(), Vec::new())),
        }
    }

    /// Serves this pair to new handshakes if it differs from the current one
    /// and parses; returns whether it changed. On error the previous
    /// certificate stays in use.
    pub fn set(
        &self,
        cert: &[u8],
        key: &[u8],
        cert_from: &Path,
        key_from: &Path,
    ) -> Result<bool, TlsError> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.0 == cert && loaded.1 == key && self.current.load().is_some() {
            return Ok(false);
        }
        // A writer may have replaced one file but not yet the other: a
        // mismatched pair fails `keys_match` and is retried on the next tick.
        let ck = certified_key(cert, key, cert_from, key_from)?;
        self.current.store(Some(Arc::new(ck)));
        *loaded = (cert.to_vec(), key.to_vec());
        Ok(true)
    }

    /// Re-reads the files; swaps in the new key pair if they changed and parse.
    /// Returns whether a new certificate is now served. On error the previous
    /// certificate stays in use. A store without files never changes here.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some((cert_path, key_path)) = &self.files else {
            return Ok(false);
        };
        let (cert, key) = (read(cert_path)?, read(key_path)?);
        self.set(&cert, &key, cert_path, key_path)
    }

    /// The PEM certificate chain served now, if any.
    pub fn served_cert(&self) -> Option<Vec<u8>> {
        self.current.load().as_ref()?;
        let loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(loaded.0.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// A rustls server configuration (TLS 1.2/1.3, ALPN h2 and http/1.1) serving
/// whatever `store` currently holds.
pub fn server_config(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
