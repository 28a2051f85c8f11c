//! A minimal HTTPS client for tests and the load generator: rustls (ring) with
//! a given CA, HTTP/1.1 or HTTP/2 on one kept-alive connection.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type ClientTls = TlsStream<TcpStream>;

pub fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    client_config_at(
        ca_pem,
        alpn,
        versions,
        Arc::new(rustls::time_provider::DefaultTimeProvider),
    )
}

/// A client config that checks certificates at the time `time` says (tests
/// with a clock they control).
pub fn client_config_at(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
    time: Arc<dyn rustls::time_provider::TimeProvider>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_details(
        Arc::new(rustls::crypto::ring::default_provider()),
        time,
    )
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Opens a TLS connection to `addr` as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<ClientTls> {
    tls_connect_as(addr, config, "localhost").await
}

/// Opens a TLS connection to `addr`, checking the certificate for `name`.
pub async fn tls_connect_as(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<ClientTls> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One kept-alive connection.
pub struct Conn {
    pub sender: Sender,
    /// The connection driver; it ends when the server closes the connection.
    pub driver: JoinHandle<()>,
    pub alpn: Option<Vec<u8>>,
    pub peer_cert: Option<Vec<u8>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Conn {
    /// Connects with HTTP/2 if `h2`, else HTTP/1.1.
    pub async fn open(addr: SocketAddr, ca_pem: &str, h2: bool) -> std::io::Result<Conn> {
        let alpn: &[&[u8]] = if h2 { &[b"h2"] } else { &[b"http/1.1"] };
        let config = client_config(ca_pem, alpn, rustls::DEFAULT_VERSIONS);
        Self::open_with(addr, config).await
    }

    pub async fn open_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Conn> {
        Self::open_as(addr, config, "localhost").await
    }

    /// Connects checking the certificate for `name` (e.g. a Service's DNS name).
    pub async fn open_as(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> std::io::Result<Conn> {
        let tls = tls_connect_as(addr, config, name).await?;
        let (_, session) = tls.get_ref();
        let alpn = session.alpn_protocol().map(|p| p.to_vec());
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec());
        let io = TokioIo::new(tls);
        let map = |e: hyper::Error| std::io::Error::other(e);
        let (sender, driver) = if alpn.as_deref() == Some(b"h2") {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(map)?;
            (
                Sender::H2(s),
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        } else {
            let (s, conn) = http1::handshake(io).await.map_err(map)?;
            (
                Sender::H1(s),
                tokio::spawn(async move {
                    let _ = conn.await;
                }),
            )
        };
        Ok(Conn {
            sender,
            driver,
            alpn,
            peer_cert,
        })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Reply, hyper::Error> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request");
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<Reply, hyper::Error> {
        self.request("POST", path, body.into()).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, hyper::Error> {
        self.request("GET", path, Bytes::new()).await
    }
}
