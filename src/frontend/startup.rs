//! The startup phase: SSL and GSS encryption requests, cancel requests, the StartupMessage.

use super::conn::{protocol_violation, ClientConn};
use crate::protocol::messages::PgError;
use crate::protocol::startup::{parse_startup, StartupPacket};
use tokio::io::AsyncReadExt;

pub enum Startup {
    Login { minor: u16, params: Vec<(String, String)> },
    Cancel { process_id: i32, secret_key: i32 },
}

/// Reads packets until a StartupMessage or a CancelRequest. Encryption requests get `N` while
/// TLS is off, and the client goes on in plain text, as with PostgreSQL.
pub async fn read_startup(client: &mut ClientConn) -> Result<Startup, PgError> {
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
                client
                    .write(b"N")
                    .await
                    .map_err(|_| PgError::fatal("08006", "client went away"))?;
            }
            StartupPacket::Cancel { process_id, secret_key } => return Ok(Startup::Cancel { process_id, secret_key }),
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
