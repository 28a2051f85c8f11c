//! HTTPS downloads for `launcher init`: rustls with the Mozilla roots (plus an
//! optional extra CA, e.g. a private mirror's), redirects followed, a size
//! cap, streamed to a file while its SHA-256 is computed.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use ring::digest::{Context, SHA256};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

/// Largest download accepted.
pub const MAX_DOWNLOAD_BYTES: u64 = 2 * 1024 * 1024 * 1024;
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {0:?}: only https:// URLs are fetched")]
    NotHttps(String),
    #[error("reading the CA file {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("cannot reach {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: too many redirects")]
    Redirects { url: String },
    #[error("{url}: larger than {MAX_DOWNLOAD_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: {detail}")]
    Transfer { url: String, detail: String },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}: timed out")]
    Timeout { url: String },
}

/// TLS client configuration: Mozilla roots plus the PEM CAs in `extra_ca`.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, FetchError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        let err = |detail: String| FetchError::Ca {
            path: path.display().to_string(),
            detail,
        };
        let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.map_err(|e| err(e.to_string()))?)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .map_err(|e| FetchError::Ca {
        path: String::new(),
        detail: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Downloads `url` into `dest` (a new file; whatever was there, a planted
/// link included, is removed first, never followed) and returns the
/// lower-case hex SHA-256 of what was written.
pub async fn fetch_to_file(
    url: &str,
    dest: &Path,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<String, FetchError> {
    tokio::time::timeout(timeout, fetch_inner(url, dest, tls))
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
        })?
}

async fn fetch_inner(
    url: &str,
    dest: &Path,
    tls: Arc<rustls::ClientConfig>,
) -> Result<String, FetchError> {
    let mut current = url::Url::parse(url).map_err(|_| FetchError::NotHttps(url.to_string()))?;
    for _ in 0..=MAX_REDIRECTS {
        if current.scheme() != "https" {
            return Err(FetchError::NotHttps(current.to_string()));
        }
        let host = current
            .host_str()
            .ok_or_else(|| FetchError::NotHttps(current.to_string()))?
            .to_string();
        let port = current.port_or_known_default().unwrap_or(443);
        let connect_err = |detail: String| FetchError::Connect {
            host: host.clone(),
            detail,
        };
        let tcp = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| connect_err("connect timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| connect_err(e.to_string()))?;
        let stream = TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = match current.query() {
            Some(q) => format!("{}?{q}", current.path()),
            None => current.path().to_string(),
        };
        let req = http::Request::builder()
            .uri(path)
            .header(http::header::HOST, &host)
            .header(
                http::header::USER_AGENT,
                concat!("runyard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Transfer {
                url: current.to_string(),
                detail: e.to_string(),
            })?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| FetchError::Transfer {
                url: current.to_string(),
                detail: e.to_string(),
            })?;
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or(FetchError::Status {
                    url: current.to_string(),
                    status: status.as_u16(),
                })?;
            current = current
                .join(location)
                .map_err(|_| FetchError::NotHttps(location.to_string()))?;
            continue;
        }
        if !status.is_success() {
            return Err(FetchError::Status {
                url: current.to_string(),
                status: status.as_u16(),
            });
        }
        let write_err = |source| FetchError::Write {
            path: dest.display().to_string(),
            source,
        };
        // Never through a link planted at `dest` (see `safe_fs`).
        let mut file =
            tokio::fs::File::from_std(super::safe_fs::replace_file(dest).map_err(write_err)?);
        let mut digest = Context::new(&SHA256);
        let mut total: u64 = 0;
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FetchError::Transfer {
                url: current.to_string(),
                detail: e.to_string(),
            })?;
            if let Ok(chunk) = frame.into_data() {
                total += chunk.len() as u64;
                if total > MAX_DOWNLOAD_BYTES {
                    return Err(FetchError::TooLarge {
                        url: current.to_string(),
                    });
                }
                digest.update(&chunk);
                file.write_all(&chunk).await.map_err(write_err)?;
            }
        }
        file.flush().await.map_err(write_err)?;
        file.sync_all().await.map_err(write_err)?;
        return Ok(hex(digest.finish().as_ref()));
    }
    Err(FetchError::Redirects {
        url: url.to_string(),
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut digest = Context::new(&SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(hex(digest.finish().as_ref()))
}
