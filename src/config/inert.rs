//! Keys this build accepts but does not act on yet, so an operator who sets one hears so at
//! startup instead of trusting a setting that does nothing.

use super::{BreakerConfig, Config, DatabaseConfig};

impl Config {
    /// Keys set to something other than their default that this build ignores.
    pub fn inert_settings(&self) -> Vec<String> {
        let p = &self.pooler;
        let mut keys = Vec::new();
        let mut check = |changed: bool, key: &str| {
            if changed {
                keys.push(key.to_owned());
            }
        };
        check(!p.admin_users.is_empty(), "pooler.admin_users");
        check(!p.stats_users.is_empty(), "pooler.stats_users");
        check(self.breaker != BreakerConfig::default(), "breaker");
        let dd = DatabaseConfig::default();
        for (name, db) in &self.databases {
            check(
                !db.replicas.is_empty() || db.read_write_split != dd.read_write_split,
                &format!("databases.{name}.replicas"),
            );
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_not_reported() {
        assert!(Config::default().inert_settings().is_empty());
        assert!(Config::embedded_default().inert_settings().is_empty());
        let config = Config::parse(
            "[pooler]\nadmin_users = [\"a\"]\ntls_mode = \"disable\"\n[metrics]\nlisten = \"0.0.0.0:9999\"\n[breaker]\nfailure_threshold = 3\n",
            "t",
        )
        .unwrap();
        assert_eq!(config.inert_settings(), vec!["pooler.admin_users", "breaker"]);
    }
}
