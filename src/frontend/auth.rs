//! Authenticating a client: trust, md5, SCRAM-SHA-256, or passthrough to the server.

use super::conn::ClientConn;
use super::Shared;
use crate::auth::md5::{md5_inner, md5_verify};
use crate::auth::scram::{ScramError, ScramKeys, ScramServer, MECHANISM};
use crate::config::{AuthType, Config, Secret};
use crate::protocol::frame::{read_cstr, read_i32, HEADER_LEN};
use crate::protocol::messages::{self as msg, PgError};
use bytes::BytesMut;
use std::sync::Arc;

/// Authentication messages are small; anything bigger is not one.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Verifies the client. For passthrough, returns the password it gave, which the caller checks
/// by logging in to the server with it.
pub async fn authenticate(
    client: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    user: &str,
) -> Result<Option<String>, PgError> {
    let secret = config.users.get(user).and_then(|u| u.password.as_ref());
    match config.pooler.auth_type {
        AuthType::Trust => Ok(None),
        // Placeholder so this branch builds before the lead's hba work lands: fail closed.
        AuthType::Hba => Err(PgError::fatal(
            "28000",
            "auth_type hba is not implemented in this build",
        )),
        AuthType::Passthrough => {
            if !passthrough_allowed(client) {
                return Err(PgError::fatal(
                    "28000",
                    "auth_type passthrough sends passwords in clear text and is allowed only on loopback or TLS connections",
                )
                .with_hint("connect over 127.0.0.1 or with sslmode=require, or set auth_type = \"scram-sha-256\" in pooler.toml"));
            }
            let password = ask_password(client, msg::AUTH_CLEARTEXT, &[]).await?;
            let password = String::from_utf8(password).map_err(|_| failed(user))?;
            Ok(Some(password))
        }
        AuthType::Md5 => {
            let inner = match secret {
                Some(Secret::Plain(p)) => Some(md5_inner(p, user)),
                Some(Secret::Md5(inner)) => Some(*inner),
                _ => None,
            };
            md5_exchange(client, user, inner).await.map(|_| None)
        }
        AuthType::ScramSha256 => {
            if let Some(Secret::Md5(inner)) = secret {
                // An md5 secret cannot answer SCRAM: fall back to md5, as PgBouncer does.
                return md5_exchange(client, user, Some(*inner)).await.map(|_| None);
            }
            let keys = match secret {
                Some(secret) => shared.keys.get(user, secret).await,
                None => None,
            };
            let known = keys.is_some();
            let keys = keys.unwrap_or_else(|| Arc::new(ScramKeys::decoy(user, &shared.secret)));
            scram_exchange(client, user, keys, known).await.map(|_| None)
        }
    }
}

/// Passthrough asks for the password in clear text: only where nobody can read it on the way.
fn passthrough_allowed(client: &ClientConn) -> bool {
    client.peer().is_loopback() || client.stream.is_tls()
}

/// The single message for every failed login, so that unknown users look like wrong passwords.
fn failed(user: &str) -> PgError {
    PgError::fatal("28P01", format!("password authentication failed for user \"{user}\""))
}

async fn md5_exchange(client: &mut ClientConn, user: &str, inner: Option<[u8; 16]>) -> Result<(), PgError> {
    let salt: [u8; 4] = rand::random();
    let response = ask_password(client, msg::AUTH_MD5, &salt).await?;
    match inner {
        Some(inner) if md5_verify(&inner, salt, &response) => Ok(()),
        _ => Err(failed(user)),
    }
}

/// Sends an authentication request and reads the PasswordMessage answering it (text, no NUL).
async fn ask_password(client: &mut ClientConn, code: i32, data: &[u8]) -> Result<Vec<u8>, PgError> {
    send_auth(client, code, data).await?;
    let frame = read_auth_frame(client).await?;
    let mut pos = HEADER_LEN;
    read_cstr(&frame, &mut pos).map(<[u8]>::to_vec).ok_or_else(malformed)
}

async fn scram_exchange(client: &mut ClientConn, user: &str, keys: Arc<ScramKeys>, known: bool) -> Result<(), PgError> {
    let mut mechanisms = Vec::with_capacity(MECHANISM.len() + 2);
    mechanisms.extend_from_slice(MECHANISM.as_bytes());
    mechanisms.extend_from_slice(b"\0\0");
    send_auth(client, msg::AUTH_SASL, &mechanisms).await?;

    let frame = read_auth_frame(client).await?;
    let mut pos = HEADER_LEN;
    let mechanism = read_cstr(&frame, &mut pos).ok_or_else(malformed)?;
    let mechanism = std::str::from_utf8(mechanism).map_err(|_| malformed())?;
    let len = read_i32(&frame, &mut pos).ok_or_else(malformed)?;
    let data = match usize::try_from(len) {
        Ok(len) => frame.get(pos..pos + len).ok_or_else(malformed)?,
        Err(_) => &[][..],
    };
    let mut scram = ScramServer::new(keys);
    let server_first = scram.client_first(mechanism, data).map_err(|e| scram_error(user, &e))?;
    send_auth(client, msg::AUTH_SASL_CONTINUE, &server_first).await?;

    let frame = read_auth_frame(client).await?;
    let server_final = scram
        .client_final(&frame[HEADER_LEN..])
        .map_err(|e| scram_error(user, &e))?;
    if !known {
        return Err(failed(user));
    }
    send_auth(client, msg::AUTH_SASL_FINAL, &server_final).await
}

fn scram_error(user: &str, e: &ScramError) -> PgError {
    match e {
        ScramError::InvalidProof => failed(user),
        other => PgError::fatal(other.sqlstate(), format!("SCRAM authentication failed: {other}")),
    }
}

async fn send_auth(client: &mut ClientConn, code: i32, data: &[u8]) -> Result<(), PgError> {
    let mut out = BytesMut::new();
    msg::authentication(&mut out, code, data);
    client
        .write(&out)
        .await
        .map_err(|_| PgError::fatal("08006", "client went away during authentication"))
}

async fn read_auth_frame(client: &mut ClientConn) -> Result<BytesMut, PgError> {
    let frame = client.read_frame(MAX_AUTH_MESSAGE).await?;
    if frame.first() != Some(&b'p') {
        return Err(PgError::fatal(
            "08P01",
            "expected a password message during authentication",
        ));
    }
    Ok(frame)
}

fn malformed() -> PgError {
    PgError::fatal("08P01", "malformed authentication message")
}
