//! Opening a server connection: TCP or a Unix socket, StartupMessage, authentication as a client, parameters.

use super::error::BackendError;
use super::server::{parse_error, ServerConn};
use super::settings::Settings;
use crate::config::{Secret, ServerTlsMode};
use crate::protocol::frame::peek_header;
use crate::stream::tokio_io::Counted;
use crate::stream::Stream;
use crate::tls::{server_name, ServerTls};
use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::{backend::Message, frontend};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Login-phase messages are small; a larger one means the peer is not a PostgreSQL server.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A name or address, or (starting with '/') the directory of the server's socket file.
    pub host: String,
    pub port: u16,
    pub database: String,
    pub connect_timeout: Duration,
    /// TLS to this server (server_tls_mode); None for plain TCP.
    pub tls: Option<ServerTls>,
}

impl Target {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// libpq's rule: a host that starts with '/' is the directory holding the server's socket
    /// file, named after the port.
    pub fn socket_path(&self) -> Option<String> {
        self.host
            .starts_with('/')
            .then(|| format!("{}/.s.PGSQL.{}", self.host.trim_end_matches('/'), self.port))
    }

    /// A connected socket, before any byte is sent: the socket file, or TCP (no delay, with
    /// the `tcp_*` keepalive options). TLS is for the caller, and never over a Unix socket (as libpq).
    pub async fn open(&self) -> std::io::Result<Socket> {
        if let Some(path) = self.socket_path() {
            return Ok(Socket::Unix(UnixStream::connect(path).await?));
        }
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await?;
        crate::tcp::current().apply(socket2::SockRef::from(&stream));
        Ok(Socket::Tcp(stream))
    }
}

pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// The stream to talk over: TLS over TCP when `tls` is given (see `start_tls`), the socket
    /// itself otherwise.
    pub async fn into_stream(self, tls: Option<&ServerTls>, host: &str, addr: &str) -> Result<Stream, BackendError> {
        Ok(match (self, tls) {
            (Socket::Tcp(tcp), Some(tls)) => start_tls(tcp, tls, host, addr).await?,
            (Socket::Tcp(tcp), None) => plain(tcp, addr)?,
            (Socket::Unix(unix), _) => Stream::Unix(Counted::new(unix)),
        })
    }
}

/// A plain TCP connection to a server, on pgmux's reactor.
fn plain(tcp: TcpStream, addr: &str) -> Result<Stream, BackendError> {
    crate::stream::Tcp::from_tokio(tcp)
        .map(Stream::Plain)
        .map_err(|source| BackendError::Connect {
            addr: addr.to_owned(),
            source,
        })
}

/// Who to log in as.
#[derive(Clone, PartialEq)]
pub struct Credentials {
    pub user: String,
    pub password: Option<Secret>,
    /// With a SCRAM secret as `password`: the ClientKey a client of this user revealed when it
    /// authenticated against that secret, which logs in to a server holding the same secret.
    pub client_key: Option<[u8; 32]>,
}

/// A SASL exchange in progress: with the password, or with a ClientKey (`scram_key`).
enum Sasl<'a> {
    Password(ScramSha256),
    Key(super::scram_key::KeyClient<'a>),
}

/// A logged-in server connection and the ParameterStatus values the server reported.
pub async fn connect(
    target: &Target,
    creds: &Credentials,
) -> Result<(Box<ServerConn>, Vec<(String, String)>), BackendError> {
    // Counted while it runs: the connect and a TLS handshake run on tokio's reactor.
    let _tokio = crate::stream::tokio_io::Guard::hold();
    let addr = target.addr();
    let login = login(target, creds, &addr);
    if target.connect_timeout.is_zero() {
        return login.await;
    }
    tokio::time::timeout(target.connect_timeout, login)
        .await
        .map_err(|_| BackendError::Timeout {
            addr,
            secs: target.connect_timeout.as_secs_f64(),
        })?
}

async fn login(
    target: &Target,
    creds: &Credentials,
    addr: &str,
) -> Result<(Box<ServerConn>, Vec<(String, String)>), BackendError> {
    let socket = target.open().await.map_err(|source| BackendError::Connect {
        addr: addr.to_owned(),
        source,
    })?;
    let stream = socket.into_stream(target.tls.as_ref(), &target.host, addr).await?;
    let mut conn = Login {
        stream,
        buf: BytesMut::with_capacity(8192),
        addr: addr.to_owned(),
    };

    let mut out = BytesMut::new();
    let params = [("user", creds.user.as_str()), ("database", target.database.as_str())];
    frontend::startup_message(params.iter().copied(), &mut out).map_err(|e| conn.io(e))?;
    conn.send(&mut out).await?;

    let mut scram: Option<Sasl<'_>> = None;
    let mut reported = Vec::new();
    let (mut process_id, mut secret_key) = (0, 0);
    loop {
        match conn.read().await? {
            Message::AuthenticationOk => {}
            Message::AuthenticationCleartextPassword => {
                let password = conn.plain_password(creds)?;
                frontend::password_message(password.as_bytes(), &mut out).map_err(|e| conn.io(e))?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let hashed = match &creds.password {
                    Some(Secret::Plain(p)) => {
                        postgres_protocol::authentication::md5_hash(creds.user.as_bytes(), p.as_bytes(), body.salt())
                    }
                    Some(Secret::Md5(inner)) => md5_from_inner(inner, body.salt()),
                    _ => return Err(conn.no_password(creds)),
                };
                frontend::password_message(hashed.as_bytes(), &mut out).map_err(|e| conn.io(e))?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationSasl(body) => {
                let mut mechanisms = body.mechanisms();
                let mut offered = false;
                while let Some(m) = mechanisms.next().map_err(|e| conn.io(e))? {
                    offered |= m == SCRAM_SHA_256;
                }
                if !offered {
                    return Err(conn.unsupported("SASL without SCRAM-SHA-256"));
                }
                let client = match (&creds.password, creds.client_key) {
                    (Some(Secret::Plain(p)), _) => {
                        Sasl::Password(ScramSha256::new(p.as_bytes(), ChannelBinding::unsupported()))
                    }
                    (Some(Secret::Scram(secret)), Some(key)) => {
                        Sasl::Key(super::scram_key::KeyClient::new(secret, key))
                    }
                    _ => return Err(conn.no_password(creds)),
                };
                let first = match &client {
                    Sasl::Password(c) => c.message().to_vec(),
                    Sasl::Key(c) => c.first(),
                };
                frontend::sasl_initial_response(SCRAM_SHA_256, &first, &mut out).map_err(|e| conn.io(e))?;
                conn.send(&mut out).await?;
                scram = Some(client);
            }
            Message::AuthenticationSaslContinue(body) => {
                let reply = match scram.as_mut() {
                    Some(Sasl::Password(c)) => {
                        c.update(body.data()).map_err(|e| conn.protocol(&e.to_string()))?;
                        c.message().to_vec()
                    }
                    Some(Sasl::Key(c)) => match c.respond(body.data()).map_err(|e| conn.protocol(&e))? {
                        Some(reply) => reply,
                        None => {
                            return Err(BackendError::SecretMismatch {
                                addr: conn.addr.clone(),
                                user: creds.user.clone(),
                            })
                        }
                    },
                    None => return Err(conn.protocol("unexpected SASL continue")),
                };
                frontend::sasl_response(&reply, &mut out).map_err(|e| conn.io(e))?;
                conn.send(&mut out).await?;
            }
            Message::AuthenticationSaslFinal(body) => match scram.as_mut() {
                Some(Sasl::Password(c)) => c.finish(body.data()).map_err(|e| conn.protocol(&e.to_string()))?,
                Some(Sasl::Key(c)) => c.verify(body.data()).map_err(|e| conn.protocol(&e))?,
                None => return Err(conn.protocol("unexpected SASL final")),
            },
            Message::ParameterStatus(body) => {
                let name = body.name().map_err(|e| conn.io(e))?;
                let value = body.value().map_err(|e| conn.io(e))?;
                reported.push((name.to_owned(), value.to_owned()));
            }
            Message::BackendKeyData(body) => {
                process_id = body.process_id();
                secret_key = body.secret_key();
            }
            Message::NoticeResponse(_) => {}
            Message::ReadyForQuery(_) => break,
            Message::AuthenticationGss | Message::AuthenticationSspi | Message::AuthenticationKerberosV5 => {
                return Err(conn.unsupported("GSSAPI/SSPI/Kerberos"));
            }
            _ => return Err(conn.protocol("unexpected message during login")),
        }
    }
    let now = crate::stats::now_us();
    // Boxed: pools and leases move it at every check-out and check-in.
    let server = Box::new(ServerConn {
        stream: conn.stream,
        buf: conn.buf,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        addr: conn.addr,
        process_id,
        secret_key,
        created_us: now,
        idle_since_us: now,
        settings: Settings::default(),
        prepared: Default::default(),
        generation: 0,
        worker: crate::worker::current(),
        listening: false,
        capture: Vec::new(),
    });
    Ok((server, reported))
}

/// SSLRequest, then exactly one byte of answer: `S` starts the handshake, `N` goes on in plain
/// text where server_tls_mode = prefer. Nothing beyond that byte is read before the handshake,
/// so a man in the middle cannot slip plain-text bytes in ahead of it (CVE-2021-23222).
async fn start_tls(mut tcp: TcpStream, tls: &ServerTls, host: &str, addr: &str) -> Result<Stream, BackendError> {
    let io = |source| BackendError::Io {
        addr: addr.to_owned(),
        source,
    };
    tcp.write_all(&SSL_REQUEST).await.map_err(io)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(io)?;
    let tls_error = |what: String| BackendError::Tls {
        addr: addr.to_owned(),
        mode: tls.mode,
        what,
    };
    match answer[0] {
        b'S' => {
            let name = server_name(host).map_err(tls_error)?;
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            match connector.connect(name, tcp).await {
                Ok(stream) => Ok(Stream::ServerTls(Counted::new(Box::new(stream)))),
                Err(e) => Err(tls_error(e.to_string())),
            }
        }
        b'N' if tls.mode == ServerTlsMode::Prefer => plain(tcp, addr),
        b'N' => Err(BackendError::NoTls {
            addr: addr.to_owned(),
            mode: tls.mode,
        }),
        other => Err(BackendError::Protocol {
            addr: addr.to_owned(),
            what: format!("answered the SSLRequest with {:?} instead of S or N", other as char),
        }),
    }
}

/// Length 8, then the SSLRequest code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

/// "md5" + hex(md5(hex(inner) + salt)), for an md5 secret stored as md5(password + user).
fn md5_from_inner(inner: &[u8; 16], salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let mut hasher = Md5::new();
    hasher.update(hex(inner).as_bytes());
    hasher.update(salt);
    format!("md5{}", hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Login {
    stream: Stream,
    buf: BytesMut,
    addr: String,
}

impl Login {
    async fn send(&mut self, out: &mut BytesMut) -> Result<(), BackendError> {
        let mut result = self.stream.write_all(out).await;
        if result.is_ok() {
            result = self.stream.flush().await;
        }
        out.clear();
        result.map_err(|e| self.io(e))
    }

    async fn read(&mut self) -> Result<Message, BackendError> {
        loop {
            let header = peek_header(&self.buf, MAX_LOGIN_MESSAGE).map_err(|e| self.protocol(&e.to_string()))?;
            if let Some((b'E', total)) = header {
                if self.buf.len() >= total {
                    let error = Box::new(parse_error(&self.buf[5..total]));
                    return Err(BackendError::Refused {
                        addr: self.addr.clone(),
                        error,
                    });
                }
            }
            if let Some(message) = Message::parse(&mut self.buf).map_err(|e| self.protocol(&e.to_string()))? {
                return Ok(message);
            }
            let n = self.stream.read_buf(&mut self.buf).await.map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    fn plain_password<'c>(&self, creds: &'c Credentials) -> Result<&'c str, BackendError> {
        match &creds.password {
            Some(Secret::Plain(p)) => Ok(p),
            _ => Err(self.no_password(creds)),
        }
    }

    fn no_password(&self, creds: &Credentials) -> BackendError {
        BackendError::NoPassword {
            addr: self.addr.clone(),
            user: creds.user.clone(),
        }
    }

    fn unsupported(&self, method: &str) -> BackendError {
        BackendError::UnsupportedAuth {
            addr: self.addr.clone(),
            method: method.to_owned(),
        }
    }

    fn protocol(&self, what: &str) -> BackendError {
        BackendError::Protocol {
            addr: self.addr.clone(),
            what: what.to_owned(),
        }
    }

    fn io(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssl_request_code() {
        assert_eq!(SSL_REQUEST[4..], 80_877_103i32.to_be_bytes());
    }

    #[test]
    fn md5_inner_matches_plain() {
        let salt = [1, 2, 3, 4];
        let plain = postgres_protocol::authentication::md5_hash(b"app", b"secret", salt);
        let inner: [u8; 16] = {
            use md5::{Digest, Md5};
            Md5::digest(b"secretapp").into()
        };
        assert_eq!(md5_from_inner(&inner, salt), plain);
    }
}
