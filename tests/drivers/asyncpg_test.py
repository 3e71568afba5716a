"""asyncpg through pgmux: its default statement cache (every query a named prepared statement,
__asyncpg_stmt_N__ with N counted per process), explicit prepare, executemany, many concurrent
tasks each with its own connection.

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
PGSSLMODE); writes to the empty table drv(client int, seq int, v text). DRIVER_CLIENTS and
DRIVER_ROUNDS size the run. Exits non-zero naming the first mismatch or error.
"""

import asyncio
import os
import sys
import time

try:
    import asyncpg
except ImportError as e:
    sys.exit(f"asyncpg_test: {e}: run scripts/drivers-setup.sh and use target/drivers/venv/bin/python")

CLIENTS = int(os.environ.get("DRIVER_CLIENTS", "50"))
ROUNDS = int(os.environ.get("DRIVER_ROUNDS", "10"))


class Mismatch(Exception):
    pass


def check(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


async def expect_error(what, exc_type, coro):
    try:
        await coro
    except exc_type:
        return
    except Exception as e:  # noqa: BLE001 - reported as the mismatch it is
        raise Mismatch(f"{what}: want {exc_type.__name__}, got {type(e).__name__}: {e}") from e
    raise Mismatch(f"{what}: want {exc_type.__name__}, got success")


class Rollback(Exception):
    pass


async def client(i):
    conn = await asyncpg.connect(timeout=10)
    try:
        # Different SQL (and result type) on odd and even clients.
        if i % 2 == 0:
            calc_sql, calc, arg = f"SELECT $1::int * 1000 + {i}", (lambda n: n * 1000 + i), (lambda n: n)
        else:
            calc_sql, calc, arg = f"SELECT $1::text || ':{i}'", (lambda n: f"{n}:{i}"), str
        insert = "INSERT INTO drv (client, seq, v) VALUES ($1, $2, $3)"
        count = "SELECT count(*), coalesce(sum(seq), 0) FROM drv WHERE client = $1"
        check(f"client {i}: first calc", await conn.fetchval(calc_sql, arg(-1)), calc(-1))
        divide = await conn.prepare("SELECT 10 / $1::int")

        async def counted():
            return tuple(await conn.fetchrow(count, i))

        for r in range(ROUNDS):
            tag = f"client {i} round {r}"
            check(f"{tag}: calc", await conn.fetchval(calc_sql, arg(r)), calc(r))
            await conn.execute(insert, i, r, f"c{i}r{r}")
            want = (r + 1, r * (r + 1) // 2)
            check(f"{tag}: count", await counted(), want)
            check(f"{tag}: divide", await divide.fetchval(5), 2)

            if r % 4 == 1:
                try:
                    async with conn.transaction():
                        rows = [(i, 1000 + r, "rolled back"), (i, 1100 + r, "rolled back")]
                        await conn.executemany(insert, rows)
                        check(f"{tag}: count inside the transaction", await counted(), (want[0] + 2, want[1] + 2100 + 2 * r))
                        raise Rollback()
                except Rollback:
                    pass
                check(f"{tag}: count after rollback", await counted(), want)

            if r % 4 == 3:
                tr = conn.transaction()
                await tr.start()
                await conn.execute(insert, i, 2000 + r, "lost")
                await expect_error(f"{tag}: 10 / 0", asyncpg.DivisionByZeroError, divide.fetchval(0))
                await expect_error(
                    f"{tag}: after the error", asyncpg.InFailedSQLTransactionError, conn.fetchval(calc_sql, arg(r))
                )
                await tr.rollback()
                check(f"{tag}: calc after the failed transaction", await conn.fetchval(calc_sql, arg(r)), calc(r))
                check(f"{tag}: count after the failed transaction", await counted(), want)
    finally:
        await conn.close(timeout=10)


async def main():
    t0 = time.monotonic()
    results = await asyncio.gather(*(client(i) for i in range(CLIENTS)), return_exceptions=True)
    elapsed = time.monotonic() - t0
    # asyncpg adds a multi-line hint about pgbouncer to some errors: the first line says it.
    failures = [
        f"client {i}: {type(e).__name__}: {str(e).splitlines()[0]}" for i, e in enumerate(results) if e is not None
    ]
    if failures:
        print(f"asyncpg_test: {len(failures)} of {CLIENTS} clients failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        sys.exit(1)
    print(f"asyncpg_test: asyncpg {asyncpg.__version__}, {CLIENTS} tasks x {ROUNDS} rounds ok in {elapsed:.1f} s")


if __name__ == "__main__":
    asyncio.run(main())
