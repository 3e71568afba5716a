//! Following a failover: pgmux never promotes a server, but when the configured primary is
//! unreachable and a listed replica has left recovery, that server takes the writes. Split
//! brain: when the old primary comes back still a primary, the one on the higher timeline keeps
//! the writes and the other is fenced off (and reported on every check until an operator acts).

use super::replicas::{Replicas, NO_FAILOVER};
use crate::backend::Target;
use std::sync::atomic::Ordering;

// A method of the set, so that `replicas` calls it without importing this file.
impl Replicas {
    /// The monitor's verdict after a round: which server takes the writes. `primary_timeline`
    /// is None when the configured primary could not be read as a primary (down, or in
    /// recovery). A replica promoted while the primary is fine changes nothing but its
    /// exclusion from reads.
    pub fn decide_writes(&self, primary: &Target, primary_timeline: Option<u32>) {
        let set = self;
        // The promoted replica on the highest timeline.
        let promoted = set
            .list
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let timeline = r.timeline.load(Ordering::Acquire);
                (timeline > 0).then_some((i, timeline))
            })
            .max_by_key(|&(_, timeline)| timeline);
        let current = set.write_target.load(Ordering::Acquire);
        let timeline_of = |i: usize| set.list.get(i).map_or(0, |r| r.timeline.load(Ordering::Acquire));
        let target = match (current, primary_timeline, promoted) {
            // The primary is fine: a promoted replica is only excluded from reads.
            (NO_FAILOVER, Some(_), _) | (NO_FAILOVER, None, None) => NO_FAILOVER,
            // The primary cannot be read as one and a replica was promoted: follow it.
            (NO_FAILOVER, None, Some((i, _))) => i,
            // Followed already: the old primary back on a higher timeline (rebuilt) takes over
            // again; a server promoted since on a higher timeline takes over; otherwise stay (a
            // stale old primary is fenced even if the followed server is down for a while).
            (i, Some(tp), _) if tp > timeline_of(i) && timeline_of(i) > 0 => NO_FAILOVER,
            (i, _, Some((j, tj))) if j != i && tj > timeline_of(i) => j,
            (i, _, _) => i,
        };
        let primary_addr = format!("{}:{}", primary.host, primary.port);
        let split_brain = primary_timeline.is_some() && promoted.is_some();
        let news = set.split_brain.swap(split_brain, Ordering::AcqRel) != split_brain;
        if let (Some(tp), Some((i, tr)), true) = (primary_timeline, promoted, news) {
            if let Some(r) = set.list.get(i) {
                let (winner, loser) = if target == NO_FAILOVER {
                    (primary_addr.clone(), format!("{}:{}", r.host, r.port))
                } else {
                    (format!("{}:{}", r.host, r.port), primary_addr.clone())
                };
                tracing::error!(database = %set.database, writes = %winner, fenced = %loser,
                primary_timeline = tp, promoted_timeline = tr,
                "SPLIT BRAIN: two listed servers claim to be primary; writes go to the higher timeline only");
            }
        }
        if target == current {
            return;
        }
        set.write_target.store(target, Ordering::Release);
        match set.list.get(target) {
            Some(r) => {
                tracing::error!(database = %set.database, primary = %primary_addr, new_primary = %format!("{}:{}", r.host, r.port),
                "FAILOVER FOLLOWED: the primary is unreachable and a replica was promoted: writes go to it");
                if let Ok(mut report) = r.report.lock() {
                    report.excluded_reason = "promoted: takes the writes".into();
                }
            }
            None => {
                tracing::warn!(database = %set.database, primary = %primary_addr, "writes go to the configured primary again")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseConfig;

    #[test]
    fn writes_follow_the_highest_timeline() {
        let db = DatabaseConfig {
            replicas: vec![("127.0.0.1".into(), 5001), ("127.0.0.1".into(), 5002)],
            ..DatabaseConfig::default()
        };
        let set = Replicas::new("db", &db);
        let primary = Target {
            host: "127.0.0.1".into(),
            port: 5000,
            database: "db".into(),
            connect_timeout: std::time::Duration::from_secs(1),
            tls: None,
        };
        let target = || set.write_target.load(Ordering::Relaxed);
        set.decide_writes(&primary, Some(1));
        assert_eq!(target(), NO_FAILOVER);
        // The primary is down and nobody was promoted: nothing to follow.
        set.decide_writes(&primary, None);
        assert_eq!(target(), NO_FAILOVER);
        // A replica promoted while the primary is fine: no failover (it is only excluded).
        set.list[1].timeline.store(2, Ordering::Relaxed);
        set.decide_writes(&primary, Some(1));
        assert_eq!(target(), NO_FAILOVER);
        // The primary goes away: the promoted replica takes the writes.
        set.decide_writes(&primary, None);
        assert_eq!(target(), 1, "the promoted replica takes the writes");
        // The old primary is back, still a primary, on the lower timeline: fenced.
        set.decide_writes(&primary, Some(1));
        assert_eq!(target(), 1);
        // The followed server is down for a while: the stale old primary stays fenced.
        set.list[1].timeline.store(0, Ordering::Relaxed);
        set.decide_writes(&primary, Some(1));
        assert_eq!(target(), 1);
        // The old primary rebuilt on a higher timeline takes over again.
        set.list[1].timeline.store(2, Ordering::Relaxed);
        set.decide_writes(&primary, Some(3));
        assert_eq!(target(), NO_FAILOVER);
    }
}
