//! The HTTP endpoint of `[metrics] listen`: `GET /metrics` (Prometheus text, see `exposition`),
//! `GET /health` (200 while pgmux accepts clients, 503 once it drains), 404 for anything else.

use super::exposition::Snapshot;
use crate::frontend::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves until the process exits; returns at once when `listen` is "". Metrics are not worth
/// stopping the pooler for: a bind failure is logged and pgmux carries on without them.
pub async fn serve(shared: Arc<Shared>) {
    let addr = shared.config.load().metrics.listen.clone();
    if addr.is_empty() {
        return;
    }
    let listener = match TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics on {addr}; carrying on without them");
            return;
        }
    };
    tracing::info!("metrics on http://{addr}/metrics");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&shared, &req);
                async move { Ok::<_, Infallible>(response) }
            });
            // A header timeout so that idle or slow scrapers cannot pile up connections.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn respond(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, OPENMETRICS, Snapshot::read(shared).encode()),
        (&Method::GET, "/health") if !shared.shutdown.is_draining() => {
            (StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        (&Method::GET, "/health") => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
