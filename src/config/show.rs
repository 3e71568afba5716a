//! Values as SHOW CONFIG prints them: durations in seconds, lists comma-separated, secrets
//! hidden.

use super::*;

pub trait Show {
    fn show(&self) -> String;
}

macro_rules! by_display {
    ($($t:ty),+) => { $(impl Show for $t { fn show(&self) -> String { self.to_string() } })+ };
}
by_display!(
    String,
    u16,
    u32,
    u64,
    bool,
    PoolMode,
    AuthType,
    TlsMode,
    ServerTlsMode,
    LoadBalancing
);

impl Show for Duration {
    fn show(&self) -> String {
        self.as_secs_f64().to_string()
    }
}

impl Show for Vec<String> {
    fn show(&self) -> String {
        self.join(",")
    }
}

impl Show for Vec<(String, u16)> {
    fn show(&self) -> String {
        let addrs: Vec<String> = self.iter().map(|(h, p)| format!("{h}:{p}")).collect();
        addrs.join(",")
    }
}

impl Show for Secret {
    fn show(&self) -> String {
        "********".into()
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        self.as_ref().map(Show::show).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_set() {
        let c = Config::default();
        let e = c.pooler.entries();
        assert!(e.contains(&("default_pool_size", "20".into())));
        assert!(e.contains(&("query_wait_timeout", "120".into())));
        let c2 = c.with_pooler_key("default_pool_size", "7").unwrap();
        assert_eq!(c2.pooler.default_pool_size, 7);
        let c3 = c.with_pooler_key("pool_mode", "session").unwrap();
        assert_eq!(c3.pooler.pool_mode, PoolMode::Session);
        let c4 = c.with_pooler_key("server_reset_query", "'DISCARD ALL'").unwrap();
        assert_eq!(c4.pooler.server_reset_query, "DISCARD ALL");
        assert!(c.with_pooler_key("default_pool_size", "0").is_err());
        assert!(c.with_pooler_key("no_such_key", "1").is_err());
        assert!(
            c.with_pooler_key("min_pool_size", "50").is_err(),
            "larger than default_pool_size"
        );
    }
}
