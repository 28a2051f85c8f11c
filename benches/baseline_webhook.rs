//! The baseline of BENCHMARKS.md's headline ratio: a minimal HTTPS admission
//! webhook written the way kube-rs' `admission_controller` example is (axum,
//! the typed `kube::core::admission` review with a `DynamicObject`, one JSON
//! Patch operation that adds a label), built from runyard's own dependencies
//! and served with runyard's TLS configuration (rustls, TLS 1.2/1.3, ALPN h2 and
//! http/1.1, the same certificate resolver) and allocator.
//!
//! It does none of runyard's work (no pools, no injection, no policy, no
//! limits): it is the cost of "parse a review, answer a one-label patch".
//!
//! ```sh
//! cargo build --release --example baseline_webhook
//! target/release/examples/baseline_webhook --listen 127.0.0.1:18444 \
//!     --tls-cert DIR/tls.crt --tls-key DIR/tls.key
//! ```
//! `benches/compare-baseline.sh` runs it against `runyard webhook`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:18444")]
    listen: SocketAddr,
    #[arg(long)]
    tls_cert: PathBuf,
    #[arg(long)]
    tls_key: PathBuf,
}

async fn mutate(
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(req) => req,
        Err(e) => {
            return Json(AdmissionResponse::invalid(e.to_string()).into_review());
        }
    };
    let mut res = AdmissionResponse::from(&req);
    if let Some(obj) = &req.object {
        let has_labels = obj.metadata.labels.is_some();
        let mut ops = Vec::new();
        if !has_labels {
            ops.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
                path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "labels"]),
                value: serde_json::json!({}),
            }));
        }
        ops.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
            path: json_patch::jsonptr::PointerBuf::from_tokens([
                "metadata",
                "labels",
                "baseline.example.com/seen",
            ]),
            value: serde_json::Value::String("true".into()),
        }));
        res = match res.with_patch(json_patch::Patch(ops)) {
            Ok(r) => r,
            Err(e) => AdmissionResponse::invalid(e.to_string()),
        };
    }
    Json(res.into_review())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    runyard::webhook::tls::install_crypto_provider();
    let store = Arc::new(runyard::webhook::tls::CertStore::load(
        &args.tls_cert,
        &args.tls_key,
    )?);
    let config = runyard::webhook::tls::server_config(store)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = Router::new().route("/mutate", post(mutate));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("baseline webhook on https://{}/mutate", args.listen);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}
