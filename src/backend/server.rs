//! One server connection and what it remembers between the clients it serves.

use super::settings::Settings;
use crate::stream::Stream;
use bytes::BytesMut;

pub struct ServerConn {
    pub stream: Stream,
    /// Bytes read from the server and not yet forwarded.
    pub buf: BytesMut,
    pub id: u64,
    pub addr: String,
    pub process_id: i32,
    pub secret_key: i32,
    /// When it was opened (`stats::now_us`): server_lifetime counts from here.
    pub created_us: u64,
    /// When it was last checked in (`stats::now_us`); the janitor closes connections idle past
    /// server_idle_timeout.
    pub idle_since_us: u64,
    /// Client settings applied to this session, as far as pgmux knows.
    pub settings: Settings,
    /// Pooler-wide prepared statements it holds (transaction and statement modes).
    pub prepared: crate::prepared::ServerStatements,
    /// The pool's RECONNECT generation when it was opened.
    pub generation: u32,
    /// The worker whose reactor watches the socket (None: the main thread's).
    pub worker: Option<u16>,
    /// A client's LISTEN ran on it and no UNLISTEN * since: it must not go back to the pool.
    pub listening: bool,
    /// The slow-query capture buffer of the transactions it serves (`stats::meter`), kept here
    /// between them: a server is used by one transaction at a time, and there are few servers.
    pub capture: Vec<u8>,
}

impl ServerConn {
    /// True when the idle socket has nothing to say: a server that closed it, or sent an
    /// unsolicited message (a FATAL before a shutdown), is not handed to a client. A cheap
    /// non-blocking probe (see `Stream::is_quiet`); a connection found not quiet is dropped.
    pub fn is_quiet(&mut self) -> bool {
        self.stream.is_quiet()
    }
}

impl ServerConn {
    /// Moves the socket to this thread's worker, so the worker that polls it is the one told
    /// when it is ready; TLS connections stay where they are (their readiness still reaches
    /// this worker, through the other one's reactor).
    pub fn rehome(mut self: Box<Self>) -> std::io::Result<Box<ServerConn>> {
        let here = crate::worker::current();
        if here.is_none() || here == self.worker || self.stream.is_tls() {
            return Ok(self);
        }
        self.stream = self.stream.rehome()?;
        self.worker = here;
        Ok(self)
    }
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server #{} {} pid {}", self.id, self.addr, self.process_id)
    }
}

/// What a query pgmux ran for itself ended with.
pub struct Outcome {
    pub error: Option<crate::protocol::messages::PgError>,
    pub status: u8,
    /// The first row's values, as text (NULL as None); empty when no row came.
    pub row: Vec<Option<String>>,
    /// ParameterStatus the server sent meanwhile (a SET of a reported setting), as it
    /// normalised the values: `DateStyle` `ISO, DMY` for `iso,dmy`.
    pub reported: Vec<(String, String)>,
    /// The first value of every row after the first (non-NULL ones).
    pub column: Vec<String>,
    /// NotificationResponse frames that came meanwhile (the server had run LISTEN).
    pub notifications: Vec<bytes::Bytes>,
}

impl ServerConn {
    /// Runs SQL of pgmux's own (settings, ROLLBACK, server_reset_query) and reads up to its
    /// ReadyForQuery; nothing of the answer reaches a client. Only for a server with no pending
    /// answers: the caller's tracking guarantees it.
    pub async fn run(&mut self, sql: &str) -> Result<Outcome, super::BackendError> {
        use crate::protocol::frame::peek_header;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut out = BytesMut::new();
        crate::protocol::messages::query(&mut out, sql);
        // A reset or check query may drop prepared statements: forgetting them only costs a
        // re-parse, while believing in one the server lost would fail a client's Bind.
        let lower = sql.to_ascii_lowercase();
        if lower.contains("discard") || lower.contains("deallocate") {
            self.prepared.clear();
        }
        let io = |addr: &str, source| super::BackendError::Io {
            addr: addr.to_owned(),
            source,
        };
        self.stream.write_all(&out).await.map_err(|e| io(&self.addr, e))?;
        self.stream.flush().await.map_err(|e| io(&self.addr, e))?;
        let mut error = None;
        let mut row = None;
        let mut reported = Vec::new();
        let (mut column, mut notifications) = (Vec::new(), Vec::new());
        loop {
            let frame = peek_header(&self.buf, usize::MAX >> 1).map_err(|e| super::BackendError::Protocol {
                addr: self.addr.clone(),
                what: e.to_string(),
            })?;
            match frame {
                Some((tag, total)) if self.buf.len() >= total => {
                    let frame = self.buf.split_to(total);
                    match tag {
                        b'Z' => {
                            let status = frame.get(5).copied().unwrap_or(b'?');
                            let row = row.unwrap_or_default();
                            return Ok(Outcome {
                                error,
                                status,
                                row,
                                reported,
                                column,
                                notifications,
                            });
                        }
                        b'E' if error.is_none() => error = Some(parse_error(&frame[5..])),
                        b'D' if row.is_none() => row = Some(data_row(&frame[5..])),
                        b'D' => column.extend(data_row(&frame[5..]).into_iter().next().flatten()),
                        b'A' => notifications.push(frame.freeze()),
                        b'S' => reported.extend(parameter_status(&frame[5..])),
                        _ => {}
                    }
                }
                _ => {
                    if self
                        .stream
                        .read_buf(&mut self.buf)
                        .await
                        .map_err(|e| io(&self.addr, e))?
                        == 0
                    {
                        return Err(io(&self.addr, std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
            }
        }
    }
}

/// A ParameterStatus body: name and value; None when malformed.
fn parameter_status(body: &[u8]) -> Option<(String, String)> {
    let mut parts = body.split(|&b| b == 0);
    let name = std::str::from_utf8(parts.next()?).ok()?;
    let value = std::str::from_utf8(parts.next()?).ok()?;
    Some((name.to_owned(), value.to_owned()))
}

/// The values of a DataRow body, as text; tolerant of anything malformed (it stops there).
fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    let Some(count) = body.get(..2).map(|b| i16::from_be_bytes([b[0], b[1]])) else {
        return values;
    };
    let mut pos = 2;
    for _ in 0..count.max(0) {
        let Some(len) = body
            .get(pos..pos + 4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            break;
        };
        pos += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let Some(value) = body.get(pos..pos + len as usize) else {
            break;
        };
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        pos += len as usize;
    }
    values
}

/// Fields of an ErrorResponse body (type byte, text, NUL), tolerant of anything malformed.
pub fn parse_error(body: &[u8]) -> crate::protocol::messages::PgError {
    let mut error = crate::protocol::messages::PgError::new("XX000", "");
    for field in body.split(|&b| b == 0) {
        let Some((&kind, text)) = field.split_first() else {
            continue;
        };
        let text = String::from_utf8_lossy(text).into_owned();
        match kind {
            b'S' => error.fatal = text == "FATAL" || text == "PANIC",
            b'C' => error.code = text,
            b'M' => error.message = text,
            b'D' => error.detail = Some(text),
            b'H' => error.hint = Some(text),
            _ => {}
        }
    }
    error
}
