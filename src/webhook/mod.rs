//! The HTTPS mutating admission webhook (axum on hyper, rustls).
//!
//! Routes: `POST /mutate`, `GET /healthz`, `GET /readyz`, `GET /metrics`.
//! The handler only reads the body and wraps [`review::handle`]; all decisions
//! are made by the injection engine. The server loop is [`crate::http::serve`].

pub mod metrics;
pub mod pools;
pub mod review;
pub mod rotator;
pub mod tls;

pub use crate::http::Limits;

use crate::http::{metrics_response, readiness, text, MemoryBudget, Peer, Rejections, Reservation};
use crate::injection::{Injector, PoolSource};
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Largest AdmissionReview body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Deadline when the API server sends no `?timeout=` (its own maximum is 30 s).
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// The most a client's `?timeout=` is honoured: the API server's own maximum
/// webhook timeout. A longer one (`1h`) cannot hold a connection that long.
pub const MAX_DEADLINE: Duration = Duration::from_secs(30);

/// Memory and time bounds of review handling (besides [`Limits`]).
#[derive(Debug, Clone)]
pub struct ReviewLimits {
    /// Bytes of request and response bodies held at once, all clients.
    pub body_memory: usize,
    /// The share of `body_memory` one client IP may hold.
    pub body_memory_per_ip: usize,
    /// Cap on the `?timeout=` deadline.
    pub max_deadline: Duration,
    /// Reviews run through the engine at once (the others wait, within
    /// their deadline): what bounds the engine's memory.
    pub concurrent_reviews: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            body_memory: 64 * 1024 * 1024,
            body_memory_per_ip: 16 * 1024 * 1024,
            max_deadline: MAX_DEADLINE,
            concurrent_reviews: 2,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (a mounted Secret), re-read every `reload_interval`.
    Files {
        cert: PathBuf,
        key: PathBuf,
        reload_interval: Duration,
    },
    /// A store someone else feeds: the self-managed certificate's
    /// [`rotator::Rotator`], from its Secret. Handshakes fail until it holds
    /// a certificate.
    Store(Arc<tls::CertStore>),
}

/// Where and how the webhook serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// Optional plain-HTTP listener for `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: Option<SocketAddr>,
    pub tls: TlsSource,
    pub limits: Limits,
}

struct Inner {
    injector: Injector,
    pools: Arc<dyn PoolSource>,
    metrics: Arc<Metrics>,
    in_flight: Semaphore,
    engine: Semaphore,
    bodies: Arc<MemoryBudget>,
    limits: ReviewLimits,
    ready: Arc<AtomicBool>,
    cert_trusted: Arc<AtomicBool>,
    draining: AtomicBool,
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(
        injector: Injector,
        pools: Arc<dyn PoolSource>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        max_in_flight: usize,
    ) -> Self {
        Self::with_limits(
            injector,
            pools,
            metrics,
            ready,
            max_in_flight,
            ReviewLimits::default(),
        )
    }

    /// [`AppState::new`] with other memory and time bounds.
    pub fn with_limits(
        injector: Injector,
        pools: Arc<dyn PoolSource>,
        metrics: Arc<Metrics>,
        ready: Arc<AtomicBool>,
        max_in_flight: usize,
        limits: ReviewLimits,
    ) -> Self {
        Self(Arc::new(Inner {
            injector,
            pools,
            metrics,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            engine: Semaphore::new(limits.concurrent_reviews.max(1)),
            bodies: MemoryBudget::new(limits.body_memory, limits.body_memory_per_ip),
            limits,
            ready,
            cert_trusted: Arc::new(AtomicBool::new(true)),
            draining: AtomicBool::new(false),
        }))
    }

    /// Bytes of bodies held now.
    pub fn body_memory_used(&self) -> usize {
        self.0.bodies.used()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The switch `/readyz` reads for "the served certificate is trusted by
    /// the caBundle"; true unless someone (the self-managed certificate's
    /// rotator) manages it.
    pub fn certificate_trusted(&self) -> Arc<AtomicBool> {
        self.0.cert_trusted.clone()
    }
}

/// The HTTPS router.
pub fn router(state: AppState) -> Router {
    probes_router(state.clone()).merge(
        Router::new()
            .route("/mutate", post(mutate))
            .with_state(state),
    )
}

/// Probes and metrics only (the plain-HTTP listener).
pub fn probes_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    readiness(if state.0.draining.load(Ordering::Relaxed) {
        Some("shutting down")
    } else if !state.0.ready.load(Ordering::Relaxed) {
        Some("pool cache not synced")
    } else if !state.0.cert_trusted.load(Ordering::Relaxed) {
        Some("the served certificate is not yet trusted by the webhook configuration's caBundle")
    } else {
        None
    })
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    metrics_response(state.0.metrics.encode())
}

/// The API server's `?timeout=5s`, at most `max`.
pub fn deadline(uri: &Uri, max: Duration) -> Duration {
    uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout="))
        .and_then(|v| crate::duration::parse(v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_DEADLINE)
        .min(max)
}

/// How much of a refused body is read (and dropped) before answering 413
/// over HTTP/2 (see [`too_large`]).
const DRAIN_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// The 413 answer. Over HTTP/2 the rest of the body is read and dropped
/// first (up to [`DRAIN_LIMIT_BYTES`] in all, within the request's
/// deadline): a client cannot stop sending a stream midway, and answering
/// while it still sends ends in a reset stream that clients (curl, Go)
/// report as a stream error instead of the status. HTTP/1.1 needs none of
/// this: the connection is closed after the answer.
async fn too_large(
    metrics: &Metrics,
    version: Version,
    body: &mut Body,
    until: tokio::time::Instant,
) -> Response {
    metrics.reject("too_large");
    if version == Version::HTTP_2 {
        let _ = tokio::time::timeout_at(until, async {
            let mut read = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len());
                if read > DRAIN_LIMIT_BYTES {
                    break;
                }
            }
        })
        .await;
    }
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("AdmissionReview body exceeds {MAX_BODY_BYTES} bytes"),
    )
}

fn retry_later(message: &'static str) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        message,
    )
        .into_response()
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    NoMemory,
    Read(String),
}

/// Reads the body into memory, holding its bytes from `reservation` as
/// they arrive.
async fn read_body(body: &mut Body, reservation: &mut Reservation) -> Result<Vec<u8>, BodyError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if out.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        if !reservation.try_grow(chunk.len()) {
            return Err(BodyError::NoMemory);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A response body that gives its bytes back to the budget once sent.
struct HeldBody {
    inner: http_body_util::Full<bytes::Bytes>,
    _held: Reservation,
}

impl hyper::body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// `POST /mutate`. The body is read first, within the deadline and the
/// memory budget, and only then does the review take one of the
/// `max_in_flight` slots (so slow uploads hold no slot), and then one of the
/// engine's `concurrent_reviews` turns.
async fn mutate(
    State(state): State<AppState>,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    peer: Option<Extension<Peer>>,
    mut body: Body,
) -> Response {
    let inner = &state.0;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let deadline = deadline(&uri, inner.limits.max_deadline);
    let started = tokio::time::Instant::now();
    let until = started + deadline;
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return too_large(&inner.metrics, version, &mut body, until).await;
    }
    let mut reservation = inner.bodies.reserve(peer.map(|Extension(p)| p.0.ip()));
    let bytes = match tokio::time::timeout(deadline, read_body(&mut body, &mut reservation)).await {
        Err(_) => {
            inner.metrics.reject("deadline");
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("request body not received within the {deadline:?} deadline"),
            );
        }
        Ok(Err(BodyError::TooLarge)) => {
            return too_large(&inner.metrics, version, &mut body, until).await;
        }
        Ok(Err(BodyError::NoMemory)) => {
            inner.metrics.reject("memory");
            return retry_later("runyard webhook is at its memory limit for request bodies; retry");
        }
        Ok(Err(BodyError::Read(e))) => {
            inner.metrics.reject("bad_request");
            return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}"));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let Ok(_permit) = inner.in_flight.try_acquire() else {
        inner.metrics.reject("overloaded");
        return retry_later("runyard webhook is at its concurrency limit; retry");
    };
    let remaining = deadline.saturating_sub(started.elapsed());
    let Ok(Ok(_turn)) = tokio::time::timeout(remaining, inner.engine.acquire()).await else {
        inner.metrics.reject("deadline");
        return text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the review did not start within the {deadline:?} deadline"),
        );
    };

    let start = Instant::now();
    inner.metrics.in_flight.inc();
    let result = review::handle(&bytes, &inner.injector, inner.pools.as_ref());
    inner.metrics.in_flight.dec();
    drop(bytes);
    match result {
        Ok(handled) => {
            let kind = handled.kind.label();
            inner
                .metrics
                .review_duration
                .get_or_create(&metrics::ReviewLabels { kind })
                .observe(start.elapsed().as_secs_f64());
            let reason = match handled.decision {
                review::Decision::Denied(reason) => reason,
                _ => "",
            };
            inner
                .metrics
                .decisions
                .get_or_create(&metrics::DecisionLabels {
                    kind,
                    decision: handled.decision.label(),
                    reason,
                })
                .inc();
            match &handled.message {
                Some(message) => {
                    info!(uid = %handled.uid, kind, dry_run = handled.dry_run, reason, %message, "denied")
                }
                None => {
                    debug!(uid = %handled.uid, kind, dry_run = handled.dry_run, decision = handled.decision.label(), "reviewed")
                }
            }
            // The response is held against the budget until it is sent.
            reservation.grow_to(handled.body.len());
            let body = HeldBody {
                inner: http_body_util::Full::new(bytes::Bytes::from(handled.body)),
                _held: reservation,
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                Body::new(body),
            )
                .into_response()
        }
        Err(e) => {
            inner.metrics.reject("bad_request");
            warn!(error = %e, "unreadable AdmissionReview");
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

/// A running webhook server.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    pub certs: Arc<tls::CertStore>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, marks `/readyz` unready, lets in-flight reviews finish
    /// and closes idle keep-alive connections.
    pub fn shutdown(&self) {
        self.state.0.draining.store(true, Ordering::Relaxed);
        let _ = self.shutdown.send(true);
    }

    /// Waits until every listener has drained.
    pub async fn wait(self) -> Result<(), WebhookError> {
        for task in self.tasks {
            task.await?;
        }
        Ok(())
    }
}

/// Binds the listeners and starts serving.
pub async fn start(options: ServerOptions, state: AppState) -> Result<Running, WebhookError> {
    tls::install_crypto_provider();
    let (certs, reload_interval) = match &options.tls {
        TlsSource::Files {
            cert,
            key,
            reload_interval,
        } => (
            Arc::new(tls::CertStore::load(cert, key)?),
            Some(*reload_interval),
        ),
        TlsSource::Store(store) => (store.clone(), None),
    };
    let config = Arc::new(tls::server_config(certs.clone())?);
    let listener =
        TcpListener::bind(options.listen)
            .await
            .map_err(|source| WebhookError::Bind {
                addr: options.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| WebhookError::Bind {
        addr: options.listen,
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let metrics = state.0.metrics.clone();

    let rejections: Arc<dyn Rejections> = metrics.clone();
    tasks.push(tokio::spawn(crate::http::serve(
        listener,
        Some(TlsAcceptor::from(config)),
        router(state.clone()),
        options.limits.clone(),
        Some(rejections.clone()),
        shutdown_rx.clone(),
    )));

    let mut metrics_addr = None;
    if let Some(listen) = options.metrics_listen {
        let l = TcpListener::bind(listen)
            .await
            .map_err(|source| WebhookError::Bind {
                addr: listen,
                source,
            })?;
        metrics_addr = l.local_addr().ok();
        tasks.push(tokio::spawn(crate::http::serve(
            l,
            None,
            probes_router(state.clone()),
            options.limits.clone(),
            Some(rejections),
            shutdown_rx.clone(),
        )));
    }

    if let Some(interval) = reload_interval {
        tokio::spawn(reload_files(
            certs.clone(),
            interval.max(Duration::from_millis(10)),
            metrics,
            shutdown_rx,
        ));
    }

    info!(%addr, metrics = ?metrics_addr, "webhook listening");
    Ok(Running {
        addr,
        metrics_addr,
        state,
        certs,
        shutdown,
        tasks,
    })
}

/// Re-reads the certificate files every `interval` until shutdown.
async fn reload_files(
    store: Arc<tls::CertStore>,
    interval: Duration,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match store.reload_if_changed() {
            Ok(true) => {
                metrics.cert_reloads.inc();
                info!("serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics.cert_reload_errors.inc();
                warn!(error = %e, "certificate reload failed; still serving the previous certificate");
            }
        }
    }
}
