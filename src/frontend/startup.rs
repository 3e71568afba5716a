//! The startup phase: SSL and GSS encryption requests, cancel requests, the StartupMessage.

use super::conn::{protocol_violation, ClientConn};
use crate::config::TlsMode;
use crate::protocol::messages::PgError;
use crate::protocol::startup::{parse_startup, StartupPacket};
use tokio::io::AsyncReadExt;

pub enum Startup {
    Login {
        minor: u16,
        params: Vec<(String, String)>,
    },
    Cancel {
        process_id: i32,
        secret_key: i32,
    },
    /// The client asked for TLS and was answered `S`: the handshake comes next, then this is
    /// called again on the encrypted connection.
    Tls,
}

/// Reads packets until a StartupMessage, a CancelRequest or an SSLRequest that TLS answers.
/// GSS encryption requests get `N`, and so do SSL requests when tls_mode = disable; the client
/// goes on in plain text, as with PostgreSQL.
pub async fn read_startup(client: &mut ClientConn, tls_mode: TlsMode) -> Result<Startup, PgError> {
    // libpq sends at most a GSSENCRequest then an SSLRequest; more is a client going round.
    let mut encryption_requests = 0;
    loop {
        let parsed = parse_startup(&client.buf).map_err(|e| protocol_violation(&e))?;
        let Some((packet, len)) = parsed else {
            match client.stream.read_buf(&mut client.buf).await {
                Ok(0) | Err(_) => return Err(PgError::fatal("08006", "client closed the connection during startup")),
                Ok(_) => continue,
            }
        };
        client.consume(len);
        match packet {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                encryption_requests += 1;
                if encryption_requests > 2 {
                    return Err(PgError::fatal(
                        "08P01",
                        "too many encryption requests before the startup message",
                    ));
                }
                if client.stream.is_tls() {
                    return Err(PgError::fatal(
                        "08P01",
                        "encryption request on a connection that is already encrypted",
                    ));
                }
                let tls = packet == StartupPacket::SslRequest && tls_mode != TlsMode::Disable;
                client
                    .write(if tls { b"S" } else { b"N" })
                    .await
                    .map_err(|_| PgError::fatal("08006", "client went away"))?;
                if tls {
                    // Bytes that came with the SSLRequest were sent in plain text before the
                    // client could know the answer: never let them pass as encrypted ones
                    // (CVE-2021-23214).
                    if !client.buf.is_empty() {
                        return Err(PgError::fatal("08P01", "received unencrypted data after SSL request")
                            .with_detail("This could be either a client-software bug or evidence of an attempted man-in-the-middle attack."));
                    }
                    return Ok(Startup::Tls);
                }
            }
            StartupPacket::Cancel { process_id, secret_key } => return Ok(Startup::Cancel { process_id, secret_key }),
            StartupPacket::Startup { .. } if tls_mode == TlsMode::Require && !client.stream.is_tls() => {
                return Err(PgError::fatal("28000", "TLS required (tls_mode = require)")
                    .with_hint("connect with sslmode=require (or verify-ca, verify-full)"));
            }
            StartupPacket::Startup { minor, params } => return Ok(Startup::Login { minor, params }),
            StartupPacket::Unsupported { major, minor } => {
                return Err(PgError::fatal(
                    "0A000",
                    format!("unsupported frontend protocol {major}.{minor}: pgmux supports protocol 3.0"),
                ))
            }
        }
    }
}
