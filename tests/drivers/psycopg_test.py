"""psycopg 3 through pgmux: every statement prepared on the server from its first execution
(prepare_threshold=0), pipeline mode, several connections at once.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE); writes
to the empty table drv(client int, seq int, v text). DRIVER_CLIENTS and DRIVER_ROUNDS size
the run. Exits non-zero naming the first mismatch or error.
"""

import os
import sys
import threading
import time

try:
    import psycopg
    from psycopg import errors
except ImportError as e:
    sys.exit(f"psycopg_test: {e}: run scripts/drivers-setup.sh and use target/drivers/venv/bin/python")

CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "20"))
ROUNDS = int(os.environ.get("DRIVER_ROUNDS", "20"))


class Mismatch(Exception):
    pass


def check(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def expect_error(what, exc_type, fn):
    try:
        fn()
    except exc_type:
        return
    except Exception as e:  # noqa: BLE001 - reported as the mismatch it is
        raise Mismatch(f"{what}: want {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise Mismatch(f"{what}: want {exc_type.__name__}, got success")


def client(i):
    conn = psycopg.connect("sslmode=disable connect_timeout=10", prepare_threshold=0, autocommit=True)
    with conn:
        # The first statement prepared on each connection, so psycopg names it _pg3_0
        # everywhere, with different SQL (and result type) on odd and even clients.
        if i % 2 == 0:
            calc_sql, calc = f"SELECT %s::int * 1000 + {i}", (lambda n: n * 1000 + i)
        else:
            calc_sql, calc = f"SELECT %s::text || ':{i}'", (lambda n: f"{n}:{i}")
        insert = "INSERT INTO drv (client, seq, v) VALUES (%s, %s, %s)"
        count = "SELECT count(*), coalesce(sum(seq), 0) FROM drv WHERE client = %s"
        divide = "SELECT 10 / %s::int"

        def one(sql, params):
            return conn.execute(sql, params).fetchone()

        for r in range(ROUNDS):
            tag = f"client {i} round {r}"
            check(f"{tag}: calc", one(calc_sql, (r,))[0], calc(r))
            conn.execute(insert, (i, r, f"c{i}r{r}"))
            want = (r + 1, r * (r + 1) // 2)
            check(f"{tag}: count", one(count, (i,)), want)

            # Pipeline: several prepared statements before one Sync.
            with conn.pipeline():
                c1 = conn.execute(calc_sql, (r + 1,))
                c2 = conn.execute(count, (i,))
                c3 = conn.execute(calc_sql, (r + 2,))
                c4 = conn.execute(divide, (5,))
            check(f"{tag}: pipelined calc", c1.fetchone()[0], calc(r + 1))
            check(f"{tag}: pipelined count", c2.fetchone(), want)
            check(f"{tag}: pipelined calc 2", c3.fetchone()[0], calc(r + 2))
            check(f"{tag}: pipelined divide", c4.fetchone()[0], 2)

            if r % 4 == 1:
                with conn.transaction(force_rollback=True):
                    conn.execute(insert, (i, 1000 + r, "rolled back"))
                    check(f"{tag}: count inside the transaction", one(count, (i,)), (want[0] + 1, want[1] + 1000 + r))
                check(f"{tag}: count after rollback", one(count, (i,)), want)

            if r % 4 == 3:
                conn.execute("BEGIN")
                conn.execute(insert, (i, 2000 + r, "lost"))
                expect_error(f"{tag}: 10 / 0", errors.DivisionByZero, lambda: one(divide, (0,)))
                expect_error(f"{tag}: after the error", errors.InFailedSqlTransaction, lambda: one(calc_sql, (r,)))
                conn.execute("ROLLBACK")
                check(f"{tag}: calc after the failed transaction", one(calc_sql, (r,))[0], calc(r))
                check(f"{tag}: count after the failed transaction", one(count, (i,)), want)


def main():
    failures = []
    lock = threading.Lock()

    def run(i):
        try:
            client(i)
        except Exception as e:  # noqa: BLE001 - every client's failure is reported
            with lock:
                failures.append((i, f"client {i}: {type(e).__name__}: {e}"))

    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if failures:
        print(f"psycopg_test: {len(failures)} of {CLIENTS} clients failed:", file=sys.stderr)
        for _, f in sorted(failures):
            print(f"  {f}", file=sys.stderr)
        sys.exit(1)
    print(f"psycopg_test: psycopg {psycopg.__version__}, {CLIENTS} clients x {ROUNDS} rounds ok in {elapsed:.1f} s")


if __name__ == "__main__":
    main()
