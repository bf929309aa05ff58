//! The PS's HTTP side: `/metrics` (Prometheus text), `/healthz` (the process serves),
//! `/readyz` (parameters loaded and gRPC listening), `/status` (JSON, see `status.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/status", get(status))
        .with_state(shared)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, draco_metrics::CONTENT_TYPE)], shared.metrics.render())
}

async fn ready(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.ready.load(std::sync::atomic::Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let status = shared.status.lock().expect("status lock").clone();
    axum::Json(status)
}
