//! The live dashboard of the metrics listener (`[metrics] dashboard`): `GET /dashboard`, a page
//! embedded in the binary that reads `/api/*` every second and draws the last minutes kept by
//! `history`. Read-only; `basic_auth` guards it when `[metrics] auth_users` is set.

pub mod api;
pub mod basic_auth;
pub mod history;
pub mod json;

use crate::frontend::Shared;
use bytes::Bytes;

/// What the dashboard keeps: the series, and the logins that passed.
#[derive(Default)]
pub struct State {
    pub history: history::History,
    pub logins: basic_auth::Logins,
}

pub const HTML: &str = "text/html; charset=utf-8";
pub const JSON: &str = "application/json";

/// The page's own files: no CDN, no build step.
const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/style.css");

/// The content type and body of a dashboard path; None: not one.
pub fn get(shared: &Shared, path: &str) -> Option<(&'static str, Bytes)> {
    let json = |body: String| Some((JSON, Bytes::from(body)));
    match path {
        "/dashboard" | "/dashboard/" => Some((HTML, Bytes::from_static(PAGE.as_bytes()))),
        "/dashboard/app.js" => Some(("text/javascript; charset=utf-8", Bytes::from_static(SCRIPT.as_bytes()))),
        "/dashboard/style.css" => Some(("text/css; charset=utf-8", Bytes::from_static(STYLE.as_bytes()))),
        "/api/summary" => json(api::summary(shared)),
        "/api/pools" => json(api::pools(shared)),
        "/api/replicas" => json(api::replicas(shared)),
        "/api/breakers" => json(api::breakers(shared)),
        "/api/slow_queries" => json(api::slow_queries(shared)),
        _ => None,
    }
}

/// The page loads only its own script and style, and talks only to this listener.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
