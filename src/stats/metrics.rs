//! The HTTP endpoint of `[metrics] listen`: `GET /metrics` (Prometheus text, see `exposition`),
//! `GET /health` (200 while pgmux accepts clients, 503 once it drains), the dashboard and its
//! API (`crate::dashboard`) unless `[metrics] dashboard = false`, 404 for anything else. With
//! `[metrics] auth_users`, every path but /health (which probes must reach) asks for basic auth.

use super::exposition::Snapshot;
use crate::frontend::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics listener of `[metrics] listen` (None when it is "" or cannot be bound: metrics
/// are not worth stopping the pooler for, so a bind failure is logged and pgmux carries on).
pub fn bind(addr: &str) -> Option<std::net::TcpListener> {
    if addr.is_empty() {
        return None;
    }
    let bound = std::net::TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l));
    match bound {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics on {addr}; carrying on without them");
            None
        }
    }
}

/// Serves on `listener` (from `bind`, or an old process's in an upgrade) until the process
/// exits, or until an upgrade hands it to the new process.
pub async fn serve(shared: Arc<Shared>, listener: Option<std::net::TcpListener>) {
    let Some(listener) = listener else { return };
    let addr = match listener.local_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => shared.config.load().metrics.listen.clone(),
    };
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics on {addr}; carrying on without them");
            return;
        }
    };
    tracing::info!("metrics on http://{addr}/metrics");
    if shared.config.load().metrics.dashboard {
        tracing::info!("dashboard on http://{addr}/dashboard");
    }
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.draining(), if !draining => {
                draining = true;
                if shared.shutdown.is_upgrade() {
                    tracing::info!("metrics listener handed to the new process");
                    return;
                }
                continue;
            }
        };
        let stream = match accepted {
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
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, req).await) }
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

async fn respond(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (method, path) = (req.method(), req.uri().path());
    if method == Method::GET && path == "/health" {
        return match shared.shutdown.is_draining() {
            false => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            true => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into()),
        };
    }
    let config = shared.config.load_full();
    let authorization = req.headers().get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let logins = &shared.dashboard.logins;
    if !logins.allowed(&config, &shared.secret, authorization).await {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain",
            "authentication required\n".into(),
        );
        let challenge = HeaderValue::from_static("Basic realm=\"pgmux\", charset=\"UTF-8\"");
        response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        return response;
    }
    let found = match (method, path) {
        (&Method::GET, "/metrics") => Some((OPENMETRICS, Bytes::from(Snapshot::read(shared).encode()))),
        (&Method::GET, path) if config.metrics.dashboard => crate::dashboard::get(shared, path),
        _ => None,
    };
    let Some((content_type, body)) = found else {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into());
    };
    let mut response = reply(StatusCode::OK, content_type, body);
    if content_type == crate::dashboard::HTML {
        let csp = HeaderValue::from_static(crate::dashboard::CONTENT_SECURITY_POLICY);
        response.headers_mut().insert("content-security-policy", csp);
    }
    response
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Numbers of this moment: never from a cache.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}
