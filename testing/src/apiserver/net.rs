//! The fake API server on a loopback socket (plain HTTP/1.1), for tests that
//! run a runyard binary as a process: give it [`HttpListener::kubeconfig`].

use super::serve::FakeService;
use super::FakeApiServer;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// A running listener; it stops when dropped.
pub struct HttpListener {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpListener {
    /// A kubeconfig for `http://ADDR` (no credentials), default namespace `ns`.
    pub fn kubeconfig(&self, ns: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {ns}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            addr = self.addr
        )
    }
}

impl Drop for HttpListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Serves the API on `127.0.0.1` (a free port) over plain HTTP; every
    /// request is made as `user`. Watches and log follows stream as they do
    /// for in-process clients.
    pub async fn listen(&self, user: &str) -> std::io::Result<HttpListener> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let handle = self.client_handle(user);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let svc = FakeService {
                    shared: handle.shared.clone(),
                    client: handle.state.clone(),
                };
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let svc = svc.clone();
                            async move {
                                let (parts, body) = req.into_parts();
                                let bytes = match body.collect().await {
                                    Ok(b) => b.to_bytes(),
                                    Err(_) => bytes::Bytes::new(),
                                };
                                let req =
                                    Request::from_parts(parts, kube::client::Body::from(bytes));
                                svc.oneshot(req).await
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(HttpListener { addr, task })
    }
}
