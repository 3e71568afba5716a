use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::UNIX_EPOCH;

use proptest::prelude::*;

use super::*;
use crate::protocol::messages::PgError;

const T: Duration = Duration::from_secs(30);

/// 2026-11-23 12:00:03 UTC
fn start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_795_435_203)
}

/// With backoff: failed probes double the wait up to 10 × open_timeout.
fn config(threshold: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: threshold,
        open_timeout: T,
        max_open_timeout: 10 * T,
    }
}

fn breaker_with(threshold: u32, jitter: JitterSource) -> (Breaker, ManualClock) {
    let clock = ManualClock::new(start());
    let b = Breaker::with_clock(
        "127.0.0.1",
        5432,
        Role::Primary,
        &config(threshold),
        Arc::new(clock.clone()),
        jitter,
    );
    (b, clock)
}

/// No jitter: the fraction 0 maps to a factor of 1.
fn breaker(threshold: u32) -> (Breaker, ManualClock) {
    breaker_with(threshold, fixed_jitter(0.0))
}

fn fail(b: &Breaker) {
    b.record_failure(FailureCause::Refused, "");
}

fn open(b: &Breaker, threshold: u32) {
    for _ in 0..threshold {
        fail(b);
    }
    assert_eq!(b.state(), BreakerState::Open);
}

fn probe(b: &Breaker) -> ProbeGuard {
    match b.try_acquire() {
        Admission::Probe(g) => g,
        other => panic!("expected a probe, got {other:?}"),
    }
}

fn rejected(b: &Breaker) -> OpenInfo {
    match b.try_acquire() {
        Admission::Rejected(info) => *info,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn threshold_opens() {
    let (b, _) = breaker(3);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(matches!(b.try_acquire(), Admission::Allowed));
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        b.open_period(),
        Some(T),
        "the first open period is open_timeout, unjittered"
    );
}

#[test]
fn success_resets_count() {
    let (b, _) = breaker(3);
    fail(&b);
    fail(&b);
    b.record_success();
    assert_eq!(b.snapshot().consecutive_failures, 0);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn open_rejects_with_info() {
    let (b, clock) = breaker(2);
    fail(&b);
    clock.advance(Duration::from_secs(1));
    b.record_failure(FailureCause::Timeout, "timed out connecting");
    let opened = clock.now();
    clock.advance(Duration::from_secs(5));
    let info = rejected(&b);
    assert_eq!(
        (info.host.as_str(), info.port, info.role),
        ("127.0.0.1", 5432, Role::Primary)
    );
    assert_eq!(info.opened_at, opened);
    assert_eq!(info.opened_at_wall, start() + Duration::from_secs(1));
    assert_eq!(info.consecutive_failures, 2);
    assert_eq!(info.last_error, "timed out connecting");
    assert_eq!(info.last_cause, Some(FailureCause::Timeout));
    assert_eq!(info.next_probe_at, Some(opened + T));
    assert_eq!(b.open_info(), Some(info));
    // Failures while open are tallied but do not move the probe.
    fail(&b);
    let info = rejected(&b);
    assert_eq!((info.consecutive_failures, info.next_probe_at), (3, Some(opened + T)));
    assert_eq!(
        info.last_error, "connection refused",
        "an empty detail falls back to the cause"
    );
    // A success on some older connection does not close it: only the probe can.
    b.record_success();
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn one_probe_after_open_timeout() {
    let (b, clock) = breaker(1);
    open(&b, 1);
    clock.advance(T - Duration::from_millis(1));
    rejected(&b);
    clock.advance(Duration::from_millis(1));
    let guard = probe(&b);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let info = rejected(&b);
    assert_eq!(info.next_probe_at, None, "a probe is in progress");
    guard.success();
    assert!(matches!(b.try_acquire(), Admission::Allowed));
}

#[test]
fn concurrent_acquire_gives_one_probe() {
    let (b, clock) = breaker(1);
    open(&b, 1);
    clock.advance(T);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                b.try_acquire()
            })
        })
        .collect();
    let results: Vec<Admission> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let probes = results.iter().filter(|a| matches!(a, Admission::Probe(_))).count();
    let rejections = results.iter().filter(|a| matches!(a, Admission::Rejected(_))).count();
    assert_eq!((probes, rejections), (1, 7));
}

#[test]
fn probe_success_closes() {
    let (b, clock) = breaker(2);
    open(&b, 2);
    clock.advance(T);
    probe(&b).success();
    let s = b.snapshot();
    assert_eq!(
        (s.state, s.consecutive_failures, s.opened_at, s.next_probe_at),
        (BreakerState::Closed, 0, None, None)
    );
    // The backoff starts over: the next open is open_timeout again.
    open(&b, 2);
    assert_eq!(b.open_period(), Some(T));
}

#[test]
fn probe_failure_doubles_up_to_ten_times() {
    let (b, clock) = breaker(1);
    open(&b, 1);
    let opened_wall = b.snapshot().opened_at;
    let mut periods = Vec::new();
    for _ in 0..6 {
        let period = b.open_period().unwrap();
        periods.push(period.as_secs());
        clock.advance(period);
        probe(&b).failure(FailureCause::Refused, "still down");
        assert_eq!(b.state(), BreakerState::Open);
    }
    periods.push(b.open_period().unwrap().as_secs());
    assert_eq!(periods, [30, 60, 120, 240, 300, 300, 300]);
    let s = b.snapshot();
    assert_eq!(s.consecutive_failures, 7);
    assert_eq!(s.opened_at, opened_wall, "opened_at is when it first opened");
}

#[test]
fn without_max_open_timeout_every_reopen_is_open_timeout_or_less() {
    let clock = ManualClock::new(start());
    let config = BreakerConfig {
        max_open_timeout: Duration::ZERO,
        ..config(1)
    };
    let b = Breaker::with_clock(
        "127.0.0.1",
        5432,
        Role::Primary,
        &config,
        Arc::new(clock.clone()),
        seeded_jitter(7),
    );
    open(&b, 1);
    for _ in 0..20 {
        let period = b.open_period().unwrap();
        assert!(period <= T && period >= T.mul_f64(1.0 - JITTER), "{period:?}");
        clock.advance(period);
        probe(&b).failure(FailureCause::Refused, "still down");
    }
    assert_eq!(b.snapshot().consecutive_failures, 21);
}

#[test]
fn refusals_are_counted() {
    let (b, _) = breaker(1);
    assert!(matches!(b.try_acquire(), Admission::Allowed));
    open(&b, 1);
    rejected(&b);
    rejected(&b);
    assert_eq!(b.snapshot().refused, 2);
}

#[test]
fn jitter_within_bounds() {
    // Only ever shorter: a server that came back is not tried later than configured.
    for (fraction, factor) in [(0.0, 1.0), (1.0, 0.9), (0.25, 0.975), (-3.0, 1.0), (7.0, 0.9)] {
        let (b, clock) = breaker_with(1, fixed_jitter(fraction));
        open(&b, 1);
        clock.advance(T);
        probe(&b).failure(FailureCause::Refused, "");
        let period = b.open_period().unwrap().as_secs_f64();
        assert!((period - 60.0 * factor).abs() < 1e-6, "fraction {fraction}: {period}");
    }
}

#[test]
fn dropped_probe_counts_as_failure() {
    let (b, clock) = breaker(1);
    open(&b, 1);
    clock.advance(T);
    drop(probe(&b));
    let info = rejected(&b);
    assert_eq!(info.last_cause, Some(FailureCause::ProbeAbandoned));
    assert_eq!(info.consecutive_failures, 2);
    assert_eq!(b.open_period(), Some(2 * T));
    clock.advance(2 * T);
    probe(&b).success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn reset_closes_and_stale_probe_is_harmless() {
    let (b, clock) = breaker(1);
    open(&b, 1);
    b.reset();
    let s = b.snapshot();
    assert_eq!(
        (s.state, s.consecutive_failures, s.last_error),
        (BreakerState::Closed, 0, None)
    );
    open(&b, 1);
    clock.advance(T);
    let guard = probe(&b);
    b.reset();
    drop(guard);
    assert_eq!(b.state(), BreakerState::Closed, "a stale guard dropped changes nothing");
    let guard = {
        open(&b, 1);
        clock.advance(T);
        probe(&b)
    };
    b.reset();
    guard.failure(FailureCause::Refused, "");
    assert_eq!(
        b.state(),
        BreakerState::Open,
        "a stale guard's report is an ordinary failure"
    );
}

#[test]
fn snapshot_columns() {
    let (b, clock) = breaker(2);
    let s = b.snapshot();
    assert_eq!(
        s,
        BreakerSnapshot {
            host: "127.0.0.1".into(),
            port: 5432,
            role: Role::Primary,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            next_probe_at: None,
            last_error: None,
            refused: 0,
        }
    );
    fail(&b);
    b.record_failure(FailureCause::UnexpectedClose, "connection to server lost");
    clock.advance(Duration::from_secs(10));
    let s = b.snapshot();
    assert_eq!(s.state.as_str(), "open");
    assert_eq!(s.consecutive_failures, 2);
    assert_eq!(s.opened_at, Some(start()));
    assert_eq!(s.next_probe_at, Some(start() + T));
    assert_eq!(s.last_error.as_deref(), Some("connection to server lost"));
    clock.advance(T);
    assert_eq!(
        b.snapshot().next_probe_at,
        Some(start() + T),
        "due, in the past, until someone asks"
    );
    let _guard = probe(&b);
    let s = b.snapshot();
    assert_eq!((s.state.as_str(), s.next_probe_at), ("half-open", None));
    assert_eq!(BreakerState::Closed.as_str(), "closed");
    assert_eq!(Role::Replica.as_str(), "replica");
}

#[test]
fn set_config_applies_to_next_failure() {
    let (b, _) = breaker(5);
    fail(&b);
    fail(&b);
    b.set_config(&config(3));
    fail(&b);
    assert_eq!(b.state(), BreakerState::Open);
}

fn io(kind: std::io::ErrorKind) -> std::io::Error {
    std::io::Error::new(kind, "x")
}

fn refused(code: &str) -> BackendError {
    BackendError::Refused {
        addr: "a".into(),
        error: Box::new(PgError::fatal(code, "m")),
    }
}

#[test]
fn classification() {
    use std::io::ErrorKind;
    use FailureCause as C;
    let addr = || "a".to_owned();
    let connect = |kind| BackendError::Connect {
        addr: addr(),
        source: io(kind),
    };
    let cases: Vec<(BackendError, Option<FailureCause>)> = vec![
        (connect(ErrorKind::ConnectionRefused), Some(C::Refused)),
        (connect(ErrorKind::TimedOut), Some(C::Timeout)),
        (connect(ErrorKind::HostUnreachable), Some(C::ConnectFailed)),
        (
            BackendError::Timeout {
                addr: addr(),
                secs: 1.0,
            },
            Some(C::Timeout),
        ),
        (
            BackendError::Io {
                addr: addr(),
                source: io(ErrorKind::UnexpectedEof),
            },
            Some(C::UnexpectedClose),
        ),
        (
            BackendError::Protocol {
                addr: addr(),
                what: "w".into(),
            },
            Some(C::Protocol),
        ),
        (refused("57P01"), Some(C::ServerShutdown("57P01".into()))),
        (refused("57P02"), Some(C::ServerShutdown("57P02".into()))),
        (refused("57P03"), Some(C::ServerShutdown("57P03".into()))),
        (refused("58030"), Some(C::LoginFailed("58030".into()))),
        (refused("XX000"), Some(C::LoginFailed("XX000".into()))),
        (refused("53100"), Some(C::LoginFailed("53100".into()))),
        (refused("08006"), Some(C::LoginFailed("08006".into()))),
        (refused("28P01"), None),
        (refused("28000"), None),
        (refused("3D000"), None),
        (refused("42501"), None),
        (refused("22023"), None),
        (refused("0A000"), None),
        (refused("08P01"), None),
        (refused("53300"), None),
        (
            BackendError::NoPassword {
                addr: addr(),
                user: "u".into(),
            },
            None,
        ),
        (
            BackendError::UnsupportedAuth {
                addr: addr(),
                method: "gss".into(),
            },
            None,
        ),
        (
            BackendError::NoTls {
                addr: addr(),
                mode: crate::config::ServerTlsMode::Require,
            },
            None,
        ),
    ];
    for (error, expected) in cases {
        assert_eq!(FailureCause::of(&error), expected, "{error}");
        assert_eq!(counts(&error), expected.is_some());
    }
    assert_eq!(
        FailureCause::of_session_sqlstate("57P01"),
        Some(C::ServerShutdown("57P01".into()))
    );
    for code in ["40001", "53100", "08006", "XX000", "42P01"] {
        assert_eq!(FailureCause::of_session_sqlstate(code), None, "{code}");
    }
}

#[test]
fn backend_errors_through_breaker_and_probe() {
    let (b, clock) = breaker(2);
    assert!(!b.record_backend_error(&refused("28P01")));
    assert!(b.record_backend_error(&refused("57P03")));
    assert!(b.record_backend_error(&BackendError::Timeout {
        addr: "a".into(),
        secs: 1.0
    }));
    assert_eq!(b.state(), BreakerState::Open);
    clock.advance(T);
    // Bad credentials from the probe: the server answered, so it is up.
    probe(&b).backend_error(&refused("28P01"));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn refusal_message() {
    let (b, clock) = breaker(5);
    for _ in 0..4 {
        fail(&b);
    }
    b.record_failure(FailureCause::Refused, "connection refused");
    clock.advance(Duration::from_millis(27_600));
    let e = rejected(&b).to_pg("app");
    assert!(e.fatal);
    assert_eq!(e.code, "08006");
    assert_eq!(
        e.message,
        "pgmux: circuit breaker open for 127.0.0.1:5432 (primary of \"app\") since 12:00:03 UTC \
         after 5 consecutive failures; last error: connection refused; next probe in 2.4 s"
    );
    let hint = e.hint.unwrap_or_default();
    assert!(
        hint.contains("[breaker] failure_threshold") && hint.contains("open_timeout"),
        "{hint}"
    );
    clock.advance(Duration::from_secs(3));
    assert!(b
        .open_info()
        .unwrap()
        .to_pg("app")
        .message
        .ends_with("next probe due now"));
    let _guard = probe(&b);
    assert!(rejected(&b).to_pg("app").message.ends_with("a probe is in progress"));
}

#[test]
fn refusal_after_shutdown_is_57p03() {
    let clock = ManualClock::new(start());
    let b = Breaker::with_clock(
        "::1",
        5433,
        Role::Replica,
        &config(1),
        Arc::new(clock),
        fixed_jitter(0.5),
    );
    b.record_backend_error(&refused("57P01"));
    let e = rejected(&b).to_pg("db");
    assert_eq!(e.code, "57P03");
    assert!(
        e.message
            .starts_with("pgmux: circuit breaker open for [::1]:5433 (replica of \"db\")"),
        "{}",
        e.message
    );
}

#[test]
fn utc_time() {
    assert_eq!(
        format_utc_time(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 23 + 61)),
        "23:01:01 UTC"
    );
    assert_eq!(format_utc_time(UNIX_EPOCH - Duration::from_secs(5)), "00:00:00 UTC");
}

#[derive(Debug, Clone)]
enum Event {
    Fail,
    Success,
    Acquire,
    ProbeOk(usize),
    ProbeFail(usize),
    ProbeDrop(usize),
    Advance(u64),
    Reset,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => Just(Event::Fail),
        1 => Just(Event::Success),
        3 => Just(Event::Acquire),
        1 => (0..4usize).prop_map(Event::ProbeOk),
        2 => (0..4usize).prop_map(Event::ProbeFail),
        1 => (0..4usize).prop_map(Event::ProbeDrop),
        3 => (0..400_000u64).prop_map(Event::Advance),
        1 => Just(Event::Reset),
    ]
}

/// A deterministic jitter stream from a seed (xorshift).
fn seeded_jitter(seed: u64) -> JitterSource {
    let state = AtomicU64::new(seed | 1);
    Arc::new(move || {
        let mut x = state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

proptest! {
    #[test]
    fn invariants(threshold in 1..4u32, seed in any::<u64>(), events in proptest::collection::vec(event(), 0..80)) {
        let (b, clock) = breaker_with(threshold, seeded_jitter(seed));
        let mut guards: Vec<ProbeGuard> = Vec::new();
        let (low, high) = (T.mul_f64(1.0 - JITTER), 10 * T);
        for e in events {
            let before = b.state();
            match e {
                Event::Fail => fail(&b),
                Event::Success => {
                    b.record_success();
                    if before == BreakerState::Closed {
                        prop_assert_eq!(b.snapshot().consecutive_failures, 0);
                    }
                }
                Event::Acquire => match b.try_acquire() {
                    Admission::Allowed => prop_assert_eq!(before, BreakerState::Closed),
                    Admission::Probe(g) => {
                        prop_assert_eq!(before, BreakerState::Open);
                        prop_assert_eq!(b.state(), BreakerState::HalfOpen);
                        guards.push(g);
                    }
                    Admission::Rejected(info) => {
                        prop_assert_ne!(before, BreakerState::Closed);
                        prop_assert_eq!(info.next_probe_at.is_none(), before == BreakerState::HalfOpen);
                    }
                },
                Event::ProbeOk(i) if i < guards.len() => guards.remove(i).success(),
                Event::ProbeFail(i) if i < guards.len() => guards.remove(i).failure(FailureCause::Refused, ""),
                Event::ProbeDrop(i) if i < guards.len() => drop(guards.remove(i)),
                Event::Advance(ms) => clock.advance(Duration::from_millis(ms)),
                Event::Reset => b.reset(),
                _ => {}
            }
            // Never more than one live probe: guards from before a reset are stale, and only
            // the newest can be live, exactly when the breaker is half-open.
            let live = b.lock().state;
            let live_guards = guards.iter().filter(|g| live == (State::HalfOpen { probe: g.probe })).count();
            prop_assert_eq!(live_guards, usize::from(b.state() == BreakerState::HalfOpen));
            if let Some(period) = b.open_period() {
                prop_assert!(period >= low && period <= high, "open period {:?}", period);
            }
            let s = b.snapshot();
            prop_assert_eq!(s.state == BreakerState::Closed, s.opened_at.is_none());
            if s.state == BreakerState::Closed {
                prop_assert!(s.consecutive_failures < threshold);
            }
        }
    }
}
