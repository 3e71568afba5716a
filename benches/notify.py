"""LISTEN/NOTIFY through pgmux against PostgreSQL directly (run by benches/notify.sh).

latency: one listening connection and one notifying connection; each round sends NOTIFY
(autocommit: the call returns once the NOTIFY committed) and waits for the notification; the
time from the NOTIFY's sending, and from its commit answer's arrival, to the notification's
arrival, median and 99th percentile.
cost: LISTENERS connections listen on one channel and one transaction sends NOTIFIES
notifications (in batches); the pooler's CPU time (all its threads, /proc schedstat) over the
run, per notification delivered to a client.

usage: notify.py DIRECT_DSN PGMUX_DSN PGMUX_PID
"""

import os
import statistics
import sys
import threading
import time

import psycopg

ROUNDS = 2000
LISTENERS = 10
NOTIFIES = 50000
BATCHES = 25


def latency(dsn):
    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(dsn, autocommit=True) as sender:
        listener.execute("LISTEN bench_latency")
        from_send, from_commit = [], []
        for i in range(ROUNDS):
            sent = time.perf_counter_ns()
            sender.execute(f"NOTIFY bench_latency, '{i}'")
            committed = time.perf_counter_ns()
            got = next(listener.notifies(timeout=10, stop_after=1), None)
            arrived = time.perf_counter_ns()
            if got is None or got.payload != str(i):
                sys.exit(f"notify.py: round {i}: got {got!r}")
            from_send.append((arrived - sent) / 1000)
            from_commit.append((arrived - committed) / 1000)
        return [(statistics.median(t), sorted(t)[int(len(t) * 0.99)]) for t in (from_send, from_commit)]


def cpu_seconds(pid):
    """CPU time of every thread of `pid`, from schedstat (nanoseconds; /proc/PID/stat counts 10 ms ticks)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


def cost(dsn, pid):
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(LISTENERS)]
    for c in conns:
        c.execute("LISTEN bench_cost")
    counts = [0] * LISTENERS

    def drain(i):
        for _ in conns[i].notifies(timeout=30, stop_after=NOTIFIES):
            counts[i] += 1

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(LISTENERS)]
    before = cpu_seconds(pid)
    for t in threads:
        t.start()
    with psycopg.connect(dsn, autocommit=True) as sender:
        # In batches, each read by every client before the next: a client's queue never fills.
        for b in range(BATCHES):
            sender.execute(f"SELECT pg_notify('bench_cost', i::text) FROM generate_series(1, {NOTIFIES // BATCHES}) i")
            deadline = time.monotonic() + 30
            while min(counts) < (b + 1) * (NOTIFIES // BATCHES) and time.monotonic() < deadline:
                time.sleep(0.001)
    for t in threads:
        t.join()
    after = cpu_seconds(pid)
    for c in conns:
        c.close()
    delivered = sum(counts)
    if delivered != LISTENERS * NOTIFIES:
        sys.exit(f"notify.py: {delivered} of {LISTENERS * NOTIFIES} notifications delivered")
    return (after - before) * 1e6 / delivered


def main():
    direct, pgmux, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for name, dsn in (("direct", direct), ("pgmux", pgmux)):
        (s50, s99), (c50, c99) = latency(dsn)
        print(
            f"{name}, {ROUNDS} rounds: NOTIFY sent to client notified median {s50:.0f} us, p99 {s99:.0f} us; "
            f"from the NOTIFY's commit answer: median {c50:.0f} us, p99 {c99:.0f} us"
        )
    us = cost(pgmux, pid)
    print(f"pgmux: {LISTENERS} clients x {NOTIFIES} notifications: {us:.2f} us of pgmux CPU per notification delivered")


if __name__ == "__main__":
    main()
