//! The metrics listener over plain HTTP/1.0 (one request per connection): `http_get` with
//! optional basic auth, `api` for the dashboard's JSON, and SHOW rows by column name to compare
//! them with.
use base64::Engine;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// An answer: status, headers (names lowercased), body.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// GET `path` on 127.0.0.1:`port`, as `auth` (user, password) when given; None while nothing
/// listens. Blocking (10 s read timeout).
pub fn http_get(port: u16, path: &str, auth: Option<(&str, &str)>) -> Option<HttpReply> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n");
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Some(HttpReply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// GET /api/`name` (200 expected) as parsed JSON; blocking.
pub fn api(port: u16, name: &str, auth: Option<(&str, &str)>) -> serde_json::Value {
    let reply = http_get(port, &format!("/api/{name}"), auth).unwrap_or_else(|| panic!("GET /api/{name}: no answer"));
    assert_eq!(reply.status, 200, "GET /api/{name}: {reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"), "{reply:?}");
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("/api/{name} is not JSON ({e}): {}", reply.body))
}

pub type Row = HashMap<String, String>;

/// Every row of a console SHOW, by column name (NULL as "").
pub async fn show_rows(console: &Client, show: &str) -> Vec<Row> {
    let msgs = console
        .simple_query(show)
        .await
        .unwrap_or_else(|e| panic!("{show}: {e}"));
    super::text_rows(&msgs)
}

/// A JSON value as the console prints it: strings bare, null as "", booleans 0/1.
pub fn as_console(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => u8::from(*b).to_string(),
        other => other.to_string(),
    }
}
