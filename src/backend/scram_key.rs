//! SCRAM-SHA-256 to a server without the password: with the ClientKey a client revealed while
//! it authenticated to pgmux against the same stored secret (SCRAM pass-through, as PgBouncer
//! does). The proof is ClientKey XOR HMAC(StoredKey, AuthMessage), which needs the server to
//! use the salt and iteration count of the secret pgmux holds: it does when that secret is the
//! server's own (copied from pg_authid, or read with auth_query).

use crate::config::ScramSecret;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sha2::Sha256;

/// One exchange: `first`, then `respond` to the server-first-message, then `verify` the
/// server-final-message.
pub struct KeyClient<'a> {
    secret: &'a ScramSecret,
    client_key: [u8; 32],
    client_first_bare: String,
    nonce: String,
    auth_message: Option<String>,
}

impl<'a> KeyClient<'a> {
    pub fn new(secret: &'a ScramSecret, client_key: [u8; 32]) -> KeyClient<'a> {
        let mut raw = [0u8; 18];
        rand::rng().fill_bytes(&mut raw);
        let nonce = STANDARD.encode(raw);
        KeyClient {
            secret,
            client_key,
            // The user name is the startup packet's; PostgreSQL ignores this one.
            client_first_bare: format!("n=,r={nonce}"),
            nonce,
            auth_message: None,
        }
    }

    /// The client-first-message (no channel binding).
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final-message answering `server_first`; None when the server's salt or
    /// iteration count are not the secret's (the key cannot answer it).
    pub fn respond(&mut self, server_first: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "server-first-message is not UTF-8")?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for part in text.split(',') {
            match part.split_once('=') {
                Some(("r", v)) => nonce = Some(v),
                Some(("s", v)) => salt = Some(STANDARD.decode(v).map_err(|_| "invalid salt")?),
                Some(("i", v)) => iterations = Some(v.parse::<u32>().map_err(|_| "invalid iteration count")?),
                _ => {}
            }
        }
        let nonce = nonce.filter(|n| n.starts_with(&self.nonce) && n.len() > self.nonce.len());
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err("malformed server-first-message".into());
        };
        if salt != self.secret.salt || iterations != self.secret.iterations {
            return Ok(None);
        }
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac(&self.secret.stored_key, auth_message.as_bytes())?;
        let mut proof = self.client_key;
        for (p, s) in proof.iter_mut().zip(signature) {
            *p ^= s;
        }
        self.auth_message = Some(auth_message);
        Ok(Some(
            format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes(),
        ))
    }

    /// Checks the server's signature: it knows the secret too.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(server_final).map_err(|_| "server-final-message is not UTF-8")?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(format!("the server refused the SCRAM proof: {error}"));
        }
        let given = text
            .strip_prefix("v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or("malformed server-final-message")?;
        let auth_message = self
            .auth_message
            .as_deref()
            .ok_or("server-final-message before the proof")?;
        let expected = hmac(&self.secret.server_key, auth_message.as_bytes())?;
        if crate::auth::ct_eq(&given, &expected) {
            Ok(())
        } else {
            Err("the server's SCRAM signature is wrong".into())
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Result<[u8; 32], String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scram::{ScramKeys, ScramServer};
    use std::sync::Arc;

    /// ClientKey of a password, as a client computes it.
    fn client_key(password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let salted = pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password.as_bytes(), salt, iterations);
        hmac(&salted, b"Client Key").unwrap()
    }

    #[test]
    fn a_client_key_logs_in_where_the_password_would() {
        let salt = b"0123456789abcdef".to_vec();
        let keys = ScramKeys::derive("pencil", &salt, 4096);
        let secret = ScramSecret {
            iterations: 4096,
            salt: salt.clone(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        };
        // pgmux's own SCRAM server stands in for PostgreSQL: it checks the proof the same way.
        let mut server = ScramServer::new(Arc::new(keys));
        let mut client = KeyClient::new(&secret, client_key("pencil", &salt, 4096));
        let server_first = server.client_first("SCRAM-SHA-256", &client.first()).unwrap();
        let client_final = client.respond(&server_first).unwrap().unwrap();
        let server_final = server.client_final(&client_final).unwrap();
        client.verify(&server_final).unwrap();

        // A wrong key is refused by the server.
        let mut server = ScramServer::new(Arc::new(ScramKeys::derive("pencil", &salt, 4096)));
        let mut client = KeyClient::new(&secret, client_key("paper", &salt, 4096));
        let server_first = server.client_first("SCRAM-SHA-256", &client.first()).unwrap();
        let client_final = client.respond(&server_first).unwrap().unwrap();
        assert!(server.client_final(&client_final).is_err());
    }

    #[test]
    fn another_salt_or_a_forged_signature_is_refused() {
        let keys = ScramKeys::derive("pencil", b"saltsaltsaltsalt", 4096);
        let secret = ScramSecret {
            iterations: 4096,
            salt: b"othersaltothersa".to_vec(),
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        };
        let mut server = ScramServer::new(Arc::new(keys));
        let mut client = KeyClient::new(&secret, [7; 32]);
        let server_first = server.client_first("SCRAM-SHA-256", &client.first()).unwrap();
        assert_eq!(client.respond(&server_first), Ok(None), "another salt");
        assert!(client.verify(b"v=AAAA").is_err());
        assert!(client.respond(b"r=x,s=%%,i=1").is_err());
        assert!(client.verify(b"e=invalid-proof").unwrap_err().contains("invalid-proof"));
    }
}
