//! CancelRequest to a server: a new connection that carries the backend's key and nothing else.

use super::connect::Target;
use crate::config::ServerTlsMode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Asks the server to cancel what the backend `process_id` is running. Best effort: PostgreSQL
/// answers nothing either way. Over TLS when server_tls_mode is require or verify-full (as libpq
/// does for sslmode=require), in plain text otherwise. Bounded by server_connect_timeout.
pub async fn cancel(target: &Target, process_id: i32, secret_key: i32) -> std::io::Result<()> {
    // Its connection is on tokio's reactor.
    let _tokio = crate::stream::tokio_io::Guard::hold();
    let send = send_cancel(target, process_id, secret_key);
    if target.connect_timeout.is_zero() {
        return send.await;
    }
    match tokio::time::timeout(target.connect_timeout, send).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

async fn send_cancel(target: &Target, process_id: i32, secret_key: i32) -> std::io::Result<()> {
    let tls = target.tls.as_ref().filter(|tls| tls.mode != ServerTlsMode::Prefer);
    let mut stream = target
        .open()
        .await?
        .into_stream(tls, &target.host, &target.addr())
        .await
        .map_err(std::io::Error::other)?;
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    packet.extend_from_slice(&process_id.to_be_bytes());
    packet.extend_from_slice(&secret_key.to_be_bytes());
    stream.write_all(&packet).await?;
    stream.shutdown().await?;
    // PostgreSQL closes the connection once it has signalled the backend: wait for that, so
    // the caller knows the cancel has landed. Over TLS, a close without close_notify reads as
    // UnexpectedEof: that is the same close.
    let mut rest = [0u8; 64];
    loop {
        match stream.read(&mut rest).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
