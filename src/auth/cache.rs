//! SCRAM keys per user, derived once. Deriving costs thousands of HMAC rounds (milliseconds);
//! a login that finds its keys here costs microseconds, which is what connection storms need.

use super::scram::{ScramKeys, DEFAULT_ITERATIONS};
use crate::config::Secret;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;

#[derive(Default)]
pub struct KeyCache {
    keys: DashMap<String, Arc<Entry>>,
}

struct Entry {
    secret: Secret,
    /// Filled once; logins arriving while it is derived wait for that one derivation.
    keys: OnceCell<Arc<ScramKeys>>,
}

impl KeyCache {
    /// Keys for a user's configured secret, or None when SCRAM cannot verify it (an md5 secret).
    pub async fn get(&self, user: &str, secret: &Secret) -> Option<Arc<ScramKeys>> {
        let entry = self.entry(user, secret);
        let keys = entry
            .keys
            .get_or_try_init(|| async {
                let keys = match secret.clone() {
                    Secret::Plain(password) => {
                        let user = user.to_owned();
                        let derive = move || {
                            let salt = ScramKeys::stable_salt(&user, &password);
                            ScramKeys::derive(&password, &salt, DEFAULT_ITERATIONS)
                        };
                        tokio::task::spawn_blocking(derive).await.map_err(|_| ())?
                    }
                    Secret::Scram(s) => ScramKeys {
                        iterations: s.iterations,
                        salt: s.salt,
                        stored_key: s.stored_key,
                        server_key: s.server_key,
                    },
                    Secret::Md5(_) => return Err(()),
                };
                Ok::<_, ()>(Arc::new(keys))
            })
            .await
            .ok()?;
        Some(keys.clone())
    }

    /// The entry for this user and secret; a changed secret (after a reload) starts a new one.
    fn entry(&self, user: &str, secret: &Secret) -> Arc<Entry> {
        if let Some(entry) = self.keys.get(user) {
            if &entry.secret == secret {
                return entry.clone();
            }
        }
        let fresh = Arc::new(Entry {
            secret: secret.clone(),
            keys: OnceCell::new(),
        });
        let mut slot = self.keys.entry(user.to_owned()).or_insert_with(|| fresh.clone());
        if &slot.secret != secret {
            *slot = fresh;
        }
        slot.clone()
    }
}
