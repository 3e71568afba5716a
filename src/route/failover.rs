//! Following a failover: pgmux never promotes a server, but when the configured primary is
//! unreachable and a listed replica has left recovery, that server takes the writes. Split
//! brain: when the old primary comes back still a primary, the one on the higher timeline keeps
//! the writes and the other is fenced off (and reported on every check until an operator acts).

use super::replicas::{Replicas, NO_FAILOVER};
use crate::backend::Target;
use std::sync::atomic::Ordering;

/// The monitor's verdict after a round: which server takes the writes. `primary_timeline` is
/// None when the configured primary could not be read as a primary (down, or in recovery).
pub fn decide(set: &Replicas, primary: &Target, primary_timeline: Option<u32>) {
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
    let target = match (primary_timeline, promoted) {
        (_, None) => NO_FAILOVER,
        (None, Some((i, _))) => i,
        (Some(tp), Some((i, tr))) if tr > tp => i,
        (Some(_), Some(_)) => NO_FAILOVER,
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
        decide(&set, &primary, Some(1));
        assert_eq!(target(), NO_FAILOVER);
        // The primary is down and nobody was promoted: nothing to follow.
        decide(&set, &primary, None);
        assert_eq!(target(), NO_FAILOVER);
        set.list[1].timeline.store(2, Ordering::Relaxed);
        decide(&set, &primary, None);
        assert_eq!(target(), 1, "the promoted replica takes the writes");
        // The old primary is back, still a primary, on the lower timeline: fenced.
        decide(&set, &primary, Some(1));
        assert_eq!(target(), 1);
        // A replica promoted on a lower timeline than the primary is the odd one out.
        set.list[1].timeline.store(0, Ordering::Relaxed);
        set.list[0].timeline.store(1, Ordering::Relaxed);
        decide(&set, &primary, Some(3));
        assert_eq!(target(), NO_FAILOVER);
    }
}
