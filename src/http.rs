//! The HTTP server pieces the webhook and the controller's probes share: a
//! listener loop over hyper (HTTP/1.1 and HTTP/2, optionally behind rustls)
//! with connection limits (in total and per client IP, evicting the
//! longest-idle connection to make room), handshake, header and idle
//! timeouts, and a graceful drain on shutdown; a memory budget for request
//! bodies; and the small responses every endpoint uses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// Resource limits of a server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Reviews handled at once; further requests get 429 immediately.
    pub max_in_flight: usize,
    /// Open connections. At the limit, the connection idle the longest is
    /// closed to make room; when none is idle, the new one is refused.
    pub max_connections: usize,
    /// Open connections from one IP address (same eviction as above), so one
    /// client cannot take the room the API server needs.
    pub max_connections_per_ip: usize,
    /// Time allowed for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time allowed for a client to send request headers; also how long a new
    /// connection may stay silent before its first request.
    pub header_read_timeout: Duration,
    /// A connection without a request in progress for this long is closed
    /// (HTTP/1.1 and HTTP/2; pings are not requests).
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Time allowed for in-flight requests to finish on shutdown.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            max_connections: 1024,
            max_connections_per_ip: 256,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_concurrent_streams: 32,
            shutdown_timeout: Duration::from_secs(25),
        }
    }
}

/// The client's address, put into every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A byte budget shared by all requests, with a share per client IP: what
/// request (and response) bodies may hold in memory at once.
#[derive(Debug)]
pub struct MemoryBudget {
    total: usize,
    per_peer: usize,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Default)]
struct BudgetState {
    used: usize,
    peers: HashMap<IpAddr, usize>,
}

/// Bytes held from a [`MemoryBudget`]; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    peer: Option<IpAddr>,
    bytes: usize,
}

impl MemoryBudget {
    /// `total` bytes, at most `per_peer` of them for one IP address.
    pub fn new(total: usize, per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_peer: per_peer.min(total),
            state: Mutex::new(BudgetState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty reservation for `peer`, to grow as bytes arrive.
    pub fn reserve(self: &Arc<Self>, peer: Option<IpAddr>) -> Reservation {
        Reservation {
            budget: self.clone(),
            peer,
            bytes: 0,
        }
    }

    /// Bytes held now (all clients).
    pub fn used(&self) -> usize {
        self.state().used
    }
}

impl Reservation {
    /// Holds `more` bytes if the budget and the client's share allow.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let budget = self.budget.clone();
        let mut state = budget.state();
        let peer_used = self
            .peer
            .and_then(|p| state.peers.get(&p).copied())
            .unwrap_or(0);
        if state.used + more > budget.total
            || (self.peer.is_some() && peer_used + more > budget.per_peer)
        {
            return false;
        }
        self.hold(&mut state, more);
        true
    }

    /// Holds `more` bytes even over the budget (for a response already built:
    /// the bytes exist either way, and are counted against new requests).
    pub fn grow_to(&mut self, bytes: usize) {
        if bytes > self.bytes {
            let budget = self.budget.clone();
            let mut state = budget.state();
            self.hold(&mut state, bytes - self.bytes);
        }
    }

    fn hold(&mut self, state: &mut BudgetState, more: usize) {
        state.used += more;
        if let Some(p) = self.peer {
            *state.peers.entry(p).or_insert(0) += more;
        }
        self.bytes += more;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut state = self.budget.state();
        state.used = state.used.saturating_sub(self.bytes);
        if let Some(p) = self.peer {
            if let Some(n) = state.peers.get_mut(&p) {
                *n = n.saturating_sub(self.bytes);
                if *n == 0 {
                    state.peers.remove(&p);
                }
            }
        }
    }
}

/// Counts requests and connections refused before they reach a handler.
pub trait Rejections: Send + Sync {
    fn reject(&self, reason: &'static str);
}

/// A plain-text response.
pub fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

/// A Prometheus/OpenMetrics text exposition.
pub fn metrics_response(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `/readyz`: 200 `ok`, or 503 with why not.
pub fn readiness(not_ready: Option<&str>) -> Response {
    match not_ready {
        None => "ok".into_response(),
        Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams.max(1))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// One open connection, as the accept loop sees it.
#[derive(Debug)]
struct Tracked {
    peer: IpAddr,
    /// Requests in progress.
    active: AtomicUsize,
    /// When the last request ended (or the connection opened), in ms since
    /// the server started.
    idle_since: AtomicU64,
    /// Whether a request was ever received.
    used: AtomicBool,
    /// Asked to close (evicted, idle, or shutting down).
    closing: AtomicBool,
    close: Notify,
}

impl Tracked {
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::SeqCst) == 0 && !self.closing.load(Ordering::SeqCst)
    }
    fn ask_to_close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_one();
    }
}

/// The open connections: counts in total and per IP, and who to evict.
struct Connections {
    started: Instant,
    limits: Limits,
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    next_id: AtomicU64,
    /// Signalled whenever a connection ends (for the drain).
    ended: Notify,
}

impl Connections {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `peer`, closing the longest-idle connection
    /// (of that IP when its share is full, else of all) to make room; `None`
    /// when every connection in the way is busy with a request.
    fn admit(&self, peer: IpAddr) -> Option<(u64, Arc<Tracked>)> {
        let mut open = self.lock();
        // Connections already asked to close do not count: they go at once.
        let counted = |ip: Option<IpAddr>| {
            open.values()
                .filter(|c| !c.closing.load(Ordering::SeqCst))
                .filter(|c| ip.is_none_or(|ip| c.peer == ip))
                .count()
        };
        let evict = |ip: Option<IpAddr>| {
            open.values()
                .filter(|c| c.is_idle() && ip.is_none_or(|ip| c.peer == ip))
                .min_by_key(|c| c.idle_since.load(Ordering::SeqCst))
                .cloned()
        };
        if counted(Some(peer)) >= self.limits.max_connections_per_ip.max(1) {
            evict(Some(peer))?.ask_to_close();
        }
        if counted(None) >= self.limits.max_connections.max(1) {
            evict(None)?.ask_to_close();
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let tracked = Arc::new(Tracked {
            peer,
            active: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            used: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close: Notify::new(),
        });
        open.insert(id, tracked.clone());
        Some((id, tracked))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.ended.notify_waiters();
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.ask_to_close();
        }
    }

    fn count(&self) -> usize {
        self.lock().len()
    }
}

/// Counts a request as in progress on its connection while it is handled.
struct ActiveGuard {
    conn: Arc<Tracked>,
    connections: Arc<Connections>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.conn
            .idle_since
            .store(self.connections.now_ms(), Ordering::SeqCst);
        self.conn.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown`
/// turns true, then drains: in-flight requests finish, idle keep-alive
/// connections are closed. `rejections` counts refused connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    rejections: Option<Arc<dyn Rejections>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&limits));
    let connections = Arc::new(Connections {
        started: Instant::now(),
        limits: limits.clone(),
        open: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        ended: Notify::new(),
    });
    loop {
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some((id, tracked)) = connections.admit(peer.ip()) else {
            if let Some(r) = &rejections {
                r.reject("connection_limit");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let tls = tls.clone();
        let builder = builder.clone();
        let app = app.clone();
        let connections = connections.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let conn = Conn {
                tracked,
                connections: connections.clone(),
                peer,
                limits,
            };
            match tls {
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(
                        conn.limits.handshake_timeout,
                        acceptor.accept(stream),
                    );
                    tokio::select! {
                        done = handshake => match done {
                            Ok(Ok(stream)) => conn.serve(&builder, stream, app).await,
                            Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%peer, "TLS handshake timed out"),
                        },
                        _ = conn.tracked.close.notified() => debug!(%peer, "closed during the handshake"),
                    }
                }
                None => conn.serve(&builder, stream, app).await,
            }
            connections.remove(id);
        });
    }
    drop(listener);
    connections.close_all();
    let drained = async {
        loop {
            let ended = connections.ended.notified();
            if connections.count() == 0 {
                return;
            }
            ended.await;
        }
    };
    if tokio::time::timeout(limits.shutdown_timeout, drained)
        .await
        .is_err()
    {
        warn!("connections still open after the shutdown timeout; closing them");
    }
}

/// Resolves once shutdown is requested (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// How long a connection asked to close may take when no request is in
/// progress (a client that ignores GOAWAY or a half-sent request head).
const CLOSE_GRACE: Duration = Duration::from_secs(2);

struct Conn {
    tracked: Arc<Tracked>,
    connections: Arc<Connections>,
    peer: SocketAddr,
    limits: Limits,
}

impl Conn {
    /// How long this connection may stay without a request now.
    fn idle_limit(&self) -> Duration {
        if self.tracked.used.load(Ordering::SeqCst) {
            self.limits.idle_timeout
        } else {
            self.limits
                .header_read_timeout
                .min(self.limits.idle_timeout)
        }
    }

    async fn serve<I>(&self, builder: &auto::Builder<TokioExecutor>, io: I, app: Router)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tracked, connections, peer) =
            (self.tracked.clone(), self.connections.clone(), self.peer);
        let service =
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                tracked.used.store(true, Ordering::SeqCst);
                tracked.active.fetch_add(1, Ordering::SeqCst);
                let guard = ActiveGuard {
                    conn: tracked.clone(),
                    connections: connections.clone(),
                };
                req.extensions_mut().insert(Peer(peer));
                let app = app.clone();
                async move {
                    let response =
                        tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await;
                    drop(guard);
                    response
                }
            });
        let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
        tokio::pin!(conn);
        let mut closing_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(100).min(self.idle_limit()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = self.tracked.close.notified(), if closing_since.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                _ = tick.tick() => {
                    let idle = self.tracked.active.load(Ordering::SeqCst) == 0;
                    if closing_since.is_none() && self.tracked.closing.load(Ordering::SeqCst) {
                        conn.as_mut().graceful_shutdown();
                        closing_since = Some(Instant::now());
                        continue;
                    }
                    match closing_since {
                        None if idle => {
                            let since = self.tracked.idle_since.load(Ordering::SeqCst);
                            let idle_for = self.connections.now_ms().saturating_sub(since);
                            if Duration::from_millis(idle_for) >= self.idle_limit() {
                                debug!(%peer, "closing an idle connection");
                                self.tracked.closing.store(true, Ordering::SeqCst);
                                conn.as_mut().graceful_shutdown();
                                closing_since = Some(Instant::now());
                            }
                        }
                        // Asked to close and nothing in progress: a client
                        // that keeps it open anyway is cut off.
                        Some(since) if idle && since.elapsed() >= CLOSE_GRACE => return,
                        _ => {}
                    }
                }
            }
        }
    }
}
