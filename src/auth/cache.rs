//! SCRAM keys per user, derived once. Deriving costs thousands of HMAC rounds (milliseconds);
//! a login that finds its keys here costs microseconds, which is what connection storms need.

use super::scram::{ScramKeys, DEFAULT_ITERATIONS};
use crate::config::Secret;
use dashmap::DashMap;
use std::sync::Arc;

#[derive(Default)]
pub struct KeyCache {
    keys: DashMap<String, (Secret, Arc<ScramKeys>)>,
}

impl KeyCache {
    /// Keys for a user's configured secret, or None when SCRAM cannot verify it (an md5 secret).
    pub async fn get(&self, user: &str, secret: &Secret) -> Option<Arc<ScramKeys>> {
        if let Some(entry) = self.keys.get(user) {
            if &entry.0 == secret {
                return Some(entry.1.clone());
            }
        }
        let keys = match secret {
            Secret::Plain(password) => {
                let (user, password) = (user.to_owned(), password.clone());
                let derive = move || {
                    let salt = ScramKeys::stable_salt(&user, &password);
                    ScramKeys::derive(&password, &salt, DEFAULT_ITERATIONS)
                };
                tokio::task::spawn_blocking(derive).await.ok()?
            }
            Secret::Scram(s) => ScramKeys {
                iterations: s.iterations,
                salt: s.salt.clone(),
                stored_key: s.stored_key,
                server_key: s.server_key,
            },
            Secret::Md5(_) => return None,
        };
        let keys = Arc::new(keys);
        self.keys.insert(user.to_owned(), (secret.clone(), keys.clone()));
        Some(keys)
    }
}
