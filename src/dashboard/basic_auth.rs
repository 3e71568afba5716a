//! `[metrics] auth_users`: HTTP basic auth on the metrics listener, checked against those
//! users' passwords in [users] (or auth_file) with the console's own check. The page asks for
//! five endpoints a second; a SCRAM secret costs its iteration count of HMACs per check, so
//! recent successes are remembered (a salted hash of the credentials, never the password).

use crate::config::{Config, Secret};
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// Successes remembered; the oldest makes room.
const REMEMBER: usize = 16;

#[derive(Default)]
pub struct Logins {
    /// (hash of user and password, the secret it matched).
    ok: Mutex<Vec<([u8; 32], Secret)>>,
}

/// The user and password of an `Authorization: Basic ...` value.
pub fn credentials(header: &[u8]) -> Option<(String, String)> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

impl Logins {
    /// Whether the request may pass: always when auth_users is empty, else when `header`
    /// names one of them with their password.
    pub async fn allowed(&self, config: &Config, process_secret: &[u8; 32], header: Option<&[u8]>) -> bool {
        let users = &config.metrics.auth_users;
        if users.is_empty() {
            return true;
        }
        let Some((user, password)) = header.and_then(credentials) else {
            return false;
        };
        if !users.contains(&user) {
            return false;
        }
        let Some(secret) = config.users.get(&user).and_then(|u| u.password.as_ref()) else {
            return false;
        };
        let key: [u8; 32] = Sha256::new()
            .chain_update(process_secret)
            .chain_update(user.as_bytes())
            .chain_update([0])
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        if self.remembered(&key, secret) {
            return true;
        }
        if !crate::auth::password_matches(secret, &user, &password).await {
            return false;
        }
        let mut ok = self.ok.lock().unwrap_or_else(|e| e.into_inner());
        if ok.len() >= REMEMBER {
            ok.remove(0);
        }
        ok.push((key, secret.clone()));
        true
    }

    /// Remembered with the same secret (a reload that changes the password forgets it).
    fn remembered(&self, key: &[u8; 32], secret: &Secret) -> bool {
        let ok = self.ok.lock().unwrap_or_else(|e| e.into_inner());
        ok.iter().any(|(k, s)| crate::auth::ct_eq(k, key) && s == secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(text: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(text)).into_bytes()
    }

    #[test]
    fn credentials_are_read_or_refused() {
        assert_eq!(
            credentials(&basic("ops:s3:cret")),
            Some(("ops".into(), "s3:cret".into()))
        );
        assert_eq!(credentials(b"basic b3BzOng="), Some(("ops".into(), "x".into())));
        for bad in [
            &b"Bearer abc"[..],
            b"Basic",
            b"Basic !!!",
            b"Basic b3Bz",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(credentials(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn only_auth_users_with_their_password() {
        let config = Config::parse(
            "[metrics]\nauth_users = [\"ops\", \"ghost\"]\n[users.ops]\npassword = \"pw\"\n\
             [users.app]\npassword = \"app\"\n",
            "t.toml",
        )
        .unwrap();
        let logins = Logins::default();
        let secret = [7; 32];
        assert!(logins.allowed(&config, &secret, Some(&basic("ops:pw"))).await);
        assert!(
            logins.allowed(&config, &secret, Some(&basic("ops:pw"))).await,
            "remembered"
        );
        for refused in ["ops:PW", "ops:", "app:app", "ghost:", "nobody:pw"] {
            assert!(
                !logins.allowed(&config, &secret, Some(&basic(refused))).await,
                "{refused}"
            );
        }
        assert!(!logins.allowed(&config, &secret, None).await);
        // The password changed by a reload: the remembered success no longer counts.
        let changed = Config::parse(
            "[metrics]\nauth_users = [\"ops\"]\n[users.ops]\npassword = \"new\"\n",
            "t.toml",
        )
        .unwrap();
        assert!(!logins.allowed(&changed, &secret, Some(&basic("ops:pw"))).await);
        assert!(logins.allowed(&changed, &secret, Some(&basic("ops:new"))).await);
        assert!(
            logins.allowed(&Config::default(), &secret, None).await,
            "no auth_users: open"
        );
    }
}
