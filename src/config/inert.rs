//! Keys this build accepts but does not act on yet, so an operator who sets one hears so at
//! startup instead of trusting a setting that does nothing.

use super::Config;

impl Config {
    /// Keys set to something other than their default that this build ignores, each with
    /// what to do instead: none at present; kept so the next inert key has a home.
    pub fn inert_settings(&self) -> Vec<String> {
        Vec::new()
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
        assert!(config.inert_settings().is_empty());
    }
}
