//! CancelRequest to a server: a new connection that carries the backend's key and nothing else.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// Asks the server to cancel what the backend `process_id` is running. Best effort: PostgreSQL
/// answers nothing either way.
pub async fn cancel(host: &str, port: u16, process_id: i32, secret_key: i32) -> std::io::Result<()> {
    let mut stream = TcpStream::connect((host, port)).await?;
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    packet.extend_from_slice(&process_id.to_be_bytes());
    packet.extend_from_slice(&secret_key.to_be_bytes());
    stream.write_all(&packet).await?;
    stream.shutdown().await
}
