//! Authenticating a client: trust, md5, SCRAM-SHA-256, passthrough to the server, or the
//! method a rule of `auth_hba_file` names.

use super::conn::ClientConn;
use super::Shared;
use crate::auth::md5::{md5_inner, md5_verify};
use crate::auth::scram::{ScramError, ScramKeys, ScramServer, MECHANISM};
use crate::backend::BackendError;
use crate::config::hba::{self, Method};
use crate::config::{AuthType, Config, Secret};
use crate::protocol::frame::{read_cstr, read_i32, HEADER_LEN};
use crate::protocol::messages::{self as msg, PgError};
use bytes::BytesMut;
use std::sync::Arc;

/// Authentication messages are small; anything bigger is not one.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// What a client proved, beyond who it is, that pgmux can use to log in to a server.
pub enum Proof {
    Nothing,
    /// Passthrough: the password it gave, which the caller checks by a server login.
    Password(String),
    /// SCRAM against a stored SCRAM secret: the ClientKey the exchange revealed, which logs in
    /// to a server that holds the same secret (SCRAM pass-through).
    ClientKey([u8; 32]),
    /// The secret came from auth_query: the pool logs in with it (and the ClientKey, if any).
    Looked {
        secret: Secret,
        client_key: Option<[u8; 32]>,
    },
}

/// Verifies the client.
pub async fn authenticate(
    client: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    user: &str,
    database: &str,
) -> Result<Proof, PgError> {
    let configured = config.users.get(user).and_then(|u| u.password.as_ref());
    let looked = match (configured, config.pooler.auth_type) {
        (None, AuthType::ScramSha256 | AuthType::Md5 | AuthType::Hba) => {
            super::auth_query::lookup(shared, config, database, user).await?
        }
        _ => None,
    };
    let secret = configured.or(looked.as_ref());
    let proof = verify(client, shared, config, user, database, secret).await?;
    Ok(match (looked, proof) {
        (Some(secret), Proof::ClientKey(key)) => Proof::Looked {
            secret,
            client_key: Some(key),
        },
        (Some(secret), _) => Proof::Looked {
            secret,
            client_key: None,
        },
        (None, proof) => proof,
    })
}

/// The exchange auth_type (or the hba rule) asks for, against `secret`.
async fn verify(
    client: &mut ClientConn,
    shared: &Shared,
    config: &Config,
    user: &str,
    database: &str,
    secret: Option<&Secret>,
) -> Result<Proof, PgError> {
    match config.pooler.auth_type {
        AuthType::Hba => {
            let method = hba_method(client, config, user, database)?;
            by_method(client, shared, user, secret, method).await
        }
        AuthType::Trust => Ok(Proof::Nothing),
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
            Ok(Proof::Password(password))
        }
        // A SCRAM secret cannot answer md5: SCRAM runs instead, as in PgBouncer and PostgreSQL.
        AuthType::Md5 if matches!(secret, Some(Secret::Scram(_))) => scram(client, shared, user, secret).await,
        AuthType::Md5 => md5_exchange(client, user, md5_of(secret, user))
            .await
            .map(|_| Proof::Nothing),
        AuthType::ScramSha256 => scram(client, shared, user, secret).await,
    }
}

/// The method the first matching `auth_hba_file` rule gives; PostgreSQL's 28000 refusals for
/// no rule and for a `reject` rule.
fn hba_method(client: &ClientConn, config: &Config, user: &str, database: &str) -> Result<Method, PgError> {
    let addr = match &client.stream {
        crate::stream::Stream::Unix(_) => None,
        _ => Some(
            client
                .peer()
                .ip()
                .ok_or_else(|| PgError::fatal("08006", "client went away during login"))?,
        ),
    };
    let who = hba::Client {
        addr,
        tls: client.stream.is_tls(),
        database,
        user,
    };
    // Group membership (+role) is not looked up: such a rule matches only the role itself.
    let decision = match &config.hba {
        Some(rules) => rules.decide(&who, &|_, _| false),
        None => hba::Decision::NoEntry,
    };
    match decision {
        hba::Decision::NoEntry => Err(PgError::fatal("28000", hba::no_entry_message(&who))),
        hba::Decision::Method(Method::Reject, _) => Err(PgError::fatal("28000", hba::rejected_message(&who))),
        hba::Decision::Method(method, _) => Ok(method),
    }
}

/// Authenticates with one method of `auth_hba_file`, as PostgreSQL does: `md5` with a SCRAM
/// secret runs SCRAM; `scram-sha-256` with an md5 secret falls back to md5 (as the plain
/// auth_type does, and PgBouncer); `password` takes the clear text and checks it against any
/// kind of secret.
async fn by_method(
    client: &mut ClientConn,
    shared: &Shared,
    user: &str,
    secret: Option<&Secret>,
    method: Method,
) -> Result<Proof, PgError> {
    match (method, secret) {
        (Method::Trust, _) => Ok(Proof::Nothing),
        (Method::Md5, Some(Secret::Scram(_))) | (Method::ScramSha256, _) => scram(client, shared, user, secret).await,
        (Method::Md5, _) => md5_exchange(client, user, md5_of(secret, user))
            .await
            .map(|_| Proof::Nothing),
        (Method::Password, _) => {
            let given = ask_password(client, msg::AUTH_CLEARTEXT, &[]).await?;
            let given = String::from_utf8(given).map_err(|_| failed(user))?;
            match secret {
                Some(secret) if crate::auth::password_matches(secret, user, &given).await => Ok(Proof::Nothing),
                _ => Err(failed(user)),
            }
        }
        (Method::Cert, _) => Err(PgError::fatal(
            "28000",
            format!(
                "certificate authentication failed for user \"{user}\": pgmux does not ask clients for certificates"
            ),
        )
        .with_hint("use scram-sha-256 for this rule of auth_hba_file")),
        (Method::Reject, _) => Err(failed(user)),
    }
}

fn md5_of(secret: Option<&Secret>, user: &str) -> Option<[u8; 16]> {
    match secret {
        Some(Secret::Plain(p)) => Some(md5_inner(p, user)),
        Some(Secret::Md5(inner)) => Some(*inner),
        _ => None,
    }
}

/// SCRAM against the user's secret (a decoy for an unknown user, so it fails like a wrong
/// password); an md5 secret cannot answer SCRAM, so md5 runs instead. Against a stored SCRAM
/// secret, the ClientKey the client revealed comes back.
async fn scram(
    client: &mut ClientConn,
    shared: &Shared,
    user: &str,
    secret: Option<&Secret>,
) -> Result<Proof, PgError> {
    if let Some(Secret::Md5(inner)) = secret {
        return md5_exchange(client, user, Some(*inner)).await.map(|_| Proof::Nothing);
    }
    let keys = match secret {
        Some(secret) => shared.keys.get(user, secret).await,
        None => None,
    };
    let known = keys.is_some();
    let keys = keys.unwrap_or_else(|| Arc::new(ScramKeys::decoy(user, &shared.secret)));
    let client_key = scram_exchange(client, user, keys, known).await?;
    Ok(match (secret, client_key) {
        (Some(Secret::Scram(_)), Some(key)) => Proof::ClientKey(key),
        _ => Proof::Nothing,
    })
}

/// Passthrough asks for the password in clear text: only where nobody can read it on the way
/// (loopback, the Unix socket, TLS).
fn passthrough_allowed(client: &ClientConn) -> bool {
    client.peer().is_local() || client.stream.is_tls()
}

/// The single message for every failed login, so that unknown users look like wrong passwords.
fn failed(user: &str) -> PgError {
    PgError::fatal("28P01", format!("password authentication failed for user \"{user}\""))
}

/// A server error met while checking the password of a client that has proved nothing yet:
/// PostgreSQL's own refusal is passed on (a direct client would see it too); pgmux's (server
/// addresses, timeouts, TLS) goes to the log only.
pub fn unverified(user: &str, e: &BackendError) -> PgError {
    if let BackendError::Refused { error, .. } = e {
        return (**error).clone();
    }
    tracing::warn!(user, error = %e, "could not check a password with the server");
    PgError::fatal(
        "08006",
        format!("pgmux could not check the password of user \"{user}\" with the server"),
    )
    .with_hint("the pgmux log says why")
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

/// The exchange; the ClientKey the client's proof revealed.
async fn scram_exchange(
    client: &mut ClientConn,
    user: &str,
    keys: Arc<ScramKeys>,
    known: bool,
) -> Result<Option<[u8; 32]>, PgError> {
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
    send_auth(client, msg::AUTH_SASL_FINAL, &server_final).await?;
    Ok(scram.client_key())
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
