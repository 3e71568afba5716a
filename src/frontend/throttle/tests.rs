use super::*;
use crate::config::PoolerConfig;
use std::net::SocketAddr;

const FIVE_PER_10S: Limits = Limits {
    failures: 5,
    window: Duration::from_secs(10),
};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn tcp(addr: &str) -> Peer {
    Peer::Tcp(addr.parse::<SocketAddr>().unwrap())
}

/// Tags that land in one bucket (the bucket is the tag modulo BUCKETS).
fn same_bucket(n: u64) -> u64 {
    7 + n * BUCKETS as u64
}

#[test]
fn the_limit_lets_that_many_failures_through_then_one_per_window_share() {
    let t = Throttle::default();
    let t0 = Instant::now();
    for i in 0..5 {
        assert_eq!(t.check_at(1, FIVE_PER_10S, t0), Verdict::Allowed, "attempt {i}");
        let filled = t.failed_at(1, FIVE_PER_10S, t0);
        assert_eq!(filled, i == 4, "the fifth failure fills the bucket, and only it");
    }
    // Five failures: the sixth would overflow until one has drained (10 s / 5 = 2 s).
    match t.check_at(1, FIVE_PER_10S, t0) {
        Verdict::Throttled { retry_in } => assert!(retry_in > secs(1.9) && retry_in <= secs(2.0), "{retry_in:?}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        t.check_at(1, FIVE_PER_10S, t0 + secs(1.5)),
        Verdict::Throttled { .. }
    ));
    assert_eq!(t.check_at(1, FIVE_PER_10S, t0 + secs(2.01)), Verdict::Allowed);
    // A failure then fills it again: refused for another 2 s.
    t.failed_at(1, FIVE_PER_10S, t0 + secs(2.01));
    assert!(matches!(
        t.check_at(1, FIVE_PER_10S, t0 + secs(3.0)),
        Verdict::Throttled { .. }
    ));
    // After the window, the whole allowance is back.
    let later = t0 + secs(14.1);
    for _ in 0..5 {
        assert_eq!(t.check_at(1, FIVE_PER_10S, later), Verdict::Allowed);
        t.failed_at(1, FIVE_PER_10S, later);
    }
    assert!(matches!(t.check_at(1, FIVE_PER_10S, later), Verdict::Throttled { .. }));
}

#[test]
fn a_burst_of_parallel_failures_is_paid_back() {
    let t = Throttle::default();
    let t0 = Instant::now();
    // 50 guesses that all passed the check before the first refusal landed.
    for _ in 0..50 {
        t.failed_at(1, FIVE_PER_10S, t0);
    }
    // 46 failures must drain (at 0.5 a second) before one more fits.
    match t.check_at(1, FIVE_PER_10S, t0) {
        Verdict::Throttled { retry_in } => assert!(retry_in > secs(91.9) && retry_in <= secs(92.0), "{retry_in:?}"),
        v => panic!("{v:?}"),
    }
    assert!(matches!(
        t.check_at(1, FIVE_PER_10S, t0 + secs(60.0)),
        Verdict::Throttled { .. }
    ));
    assert_eq!(t.check_at(1, FIVE_PER_10S, t0 + secs(92.1)), Verdict::Allowed);
}

#[test]
fn the_right_password_clears_the_record_and_others_are_apart() {
    let t = Throttle::default();
    let t0 = Instant::now();
    for _ in 0..5 {
        t.failed_at(1, FIVE_PER_10S, t0);
        t.failed_at(2, FIVE_PER_10S, t0);
    }
    assert_eq!(t.check_at(3, FIVE_PER_10S, t0), Verdict::Allowed, "never failed");
    t.forget(1);
    assert_eq!(t.check_at(1, FIVE_PER_10S, t0), Verdict::Allowed);
    assert!(matches!(t.check_at(2, FIVE_PER_10S, t0), Verdict::Throttled { .. }));
}

#[test]
fn a_limit_or_window_of_zero_turns_it_off() {
    let t = Throttle::default();
    let t0 = Instant::now();
    for off in [
        Limits {
            failures: 0,
            ..FIVE_PER_10S
        },
        Limits {
            window: Duration::ZERO,
            ..FIVE_PER_10S
        },
    ] {
        for _ in 0..100 {
            t.failed_at(1, off, t0);
        }
        assert_eq!(t.check_at(1, off, t0), Verdict::Allowed);
        assert_eq!(
            t.check_at(1, FIVE_PER_10S, t0),
            Verdict::Allowed,
            "nothing was recorded"
        );
    }
}

#[test]
fn a_flood_of_new_names_replaces_its_own_kind_not_a_record_near_its_limit() {
    let t = Throttle::default();
    let t0 = Instant::now();
    let target = same_bucket(0);
    for _ in 0..5 {
        t.failed_at(target, FIVE_PER_10S, t0);
    }
    // Thousands of other pairs failing once, all in the target's bucket.
    for n in 1..5000 {
        t.failed_at(same_bucket(n), FIVE_PER_10S, t0);
    }
    assert!(matches!(
        t.check_at(target, FIVE_PER_10S, t0),
        Verdict::Throttled { .. }
    ));
    // The table never holds more than its slots: the early flood is forgotten.
    let remembered = (1..5000)
        .filter(|&n| {
            matches!(
                t.check_at(
                    same_bucket(n),
                    Limits {
                        failures: 1,
                        ..FIVE_PER_10S
                    },
                    t0
                ),
                Verdict::Throttled { .. }
            )
        })
        .count();
    assert_eq!(remembered, WAYS - 1);
}

#[test]
fn a_full_bucket_gives_up_its_lowest_level() {
    let t = Throttle::default();
    let t0 = Instant::now();
    for (n, failures) in [(0, 5), (1, 4), (2, 2), (3, 5)] {
        for _ in 0..failures {
            t.failed_at(same_bucket(n), FIVE_PER_10S, t0);
        }
    }
    t.failed_at(same_bucket(4), FIVE_PER_10S, t0);
    let level = |n| {
        t.bucket(same_bucket(n))
            .iter()
            .find(|s| s.tag == same_bucket(n))
            .map(|s| s.level)
    };
    assert_eq!(level(2), None, "the lowest level went");
    assert_eq!(level(1), Some(4.0));
    assert_eq!(level(4), Some(1.0));
}

#[test]
fn sources_are_ipv4_addresses_ipv6_prefixes_and_never_the_unix_socket() {
    let a = source(&tcp("10.0.0.1:5000")).unwrap();
    assert_eq!(source(&tcp("10.0.0.1:6000")), Some(a), "the port does not matter");
    assert_ne!(source(&tcp("10.0.0.2:5000")), Some(a));
    assert_eq!(
        source(&tcp("[::ffff:10.0.0.1]:5000")),
        Some(a),
        "v4-mapped is the v4 address"
    );
    let v6 = source(&tcp("[2001:db8:1:2:aaaa::1]:5000")).unwrap();
    assert_eq!(source(&tcp("[2001:db8:1:2:bbbb::9]:5000")), Some(v6), "one /64");
    assert_ne!(source(&tcp("[2001:db8:1:3::1]:5000")), Some(v6));
    assert_eq!(source(&Peer::Unix), None);
    assert_eq!(source(&Peer::Gone), None);
    let t = Throttle::default();
    assert_ne!(t.tag(&a, "app"), t.tag(&a, "admin"));
    assert_ne!(t.tag(&a, "app"), t.tag(&v6, "app"));
}

fn pooler(limit: u32, window: f64, delay: f64) -> PoolerConfig {
    PoolerConfig {
        auth_failure_limit: limit,
        auth_failure_window: secs(window),
        auth_failure_delay: secs(delay),
        ..PoolerConfig::default()
    }
}

fn wrong() -> PgError {
    PgError::fatal("28P01", "password authentication failed for user \"app\"")
}

#[tokio::test(start_paused = true)]
async fn a_wrong_password_waits_the_delay_and_counts_other_refusals_do_not() {
    let t = Throttle::default();
    let p = pooler(2, 60.0, 0.5);
    let peer = tcp("192.0.2.7:4000");
    let started = tokio::time::Instant::now();
    let e = t.begin(&peer, "app", &p).unwrap().refused(wrong()).await;
    assert_eq!(e.code, "28P01");
    assert_eq!(started.elapsed(), secs(0.5), "auth_failure_delay");
    // Not a password verdict: no delay, no count.
    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        let e = t
            .begin(&peer, "app", &p)
            .unwrap()
            .refused(PgError::fatal("08006", "gone"))
            .await;
        assert_eq!(e.code, "08006");
        let _abandoned = t.begin(&peer, "app", &p).unwrap(); // the client left mid-exchange
    }
    assert_eq!(started.elapsed(), Duration::ZERO);
    t.begin(&peer, "app", &p).unwrap().refused(wrong()).await;
    let e = t.begin(&peer, "app", &p).err().expect("throttled");
    assert_eq!(e.code, "53300");
    assert!(
        e.message.contains("too many failed logins for user \"app\""),
        "{}",
        e.message
    );
    assert!(e.hint.unwrap_or_default().contains("auth_failure_limit (2)"));
    // Another user, another address, the Unix socket: untouched.
    assert!(t.begin(&peer, "other", &p).is_ok());
    assert!(t.begin(&tcp("192.0.2.8:4000"), "app", &p).is_ok());
    for _ in 0..5 {
        t.begin(&Peer::Unix, "app", &p).unwrap().refused(wrong()).await;
    }
    assert!(
        t.begin(&Peer::Unix, "app", &p).is_ok(),
        "the Unix socket is not throttled"
    );
}

#[tokio::test(start_paused = true)]
async fn the_unknown_user_and_the_wrong_password_are_counted_and_delayed_alike() {
    let t = Throttle::default();
    let p = pooler(1, 60.0, 0.25);
    let peer = tcp("192.0.2.7:4000");
    for user in ["app", "ghost"] {
        let started = tokio::time::Instant::now();
        let refusal = PgError::fatal("28P01", format!("password authentication failed for user \"{user}\""));
        t.begin(&peer, user, &p).unwrap().refused(refusal).await;
        assert_eq!(started.elapsed(), secs(0.25));
        assert_eq!(t.begin(&peer, user, &p).err().map(|e| e.code), Some("53300".to_owned()));
    }
}

#[test]
fn a_right_password_after_failures_starts_afresh() {
    let t = Throttle::default();
    let p = pooler(3, 60.0, 0.0);
    let peer = tcp("192.0.2.7:4000");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    for _ in 0..2 {
        rt.block_on(t.begin(&peer, "app", &p).unwrap().refused(wrong()));
    }
    t.begin(&peer, "app", &p).unwrap().passed();
    for _ in 0..3 {
        rt.block_on(t.begin(&peer, "app", &p).unwrap().refused(wrong()));
    }
    assert!(t.begin(&peer, "app", &p).is_err());
}
