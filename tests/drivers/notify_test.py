"""LISTEN/NOTIFY through pgmux with the drivers' own APIs: psycopg 3's Connection.notifies()
and asyncpg's add_listener/remove_listener. The listening connection runs other statements
between the notifications (in transaction mode, on servers it shares with the notifier).

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE,
PGSSLMODE). Exits non-zero naming the first mismatch or error.
"""

import asyncio
import sys

try:
    import asyncpg
    import psycopg
except ImportError as e:
    sys.exit(f"notify_test: {e}: run scripts/drivers-setup.sh and use target/drivers/venv/bin/python")

WAIT = 15


def check(what, got, want):
    if got != want:
        sys.exit(f"notify_test: {what}: got {got!r}, want {want!r}")


def psycopg_notifies():
    with psycopg.connect("connect_timeout=10", autocommit=True) as listener, psycopg.connect(
        "connect_timeout=10", autocommit=True
    ) as notifier:
        listener.execute("LISTEN psy_chan")
        check("psycopg: a statement between", listener.execute("SELECT 41 + 1").fetchone()[0], 42)
        notifier.execute("NOTIFY psy_chan, 'one'")
        notifier.execute("SELECT pg_notify('psy_chan', %s)", ("two",))
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=WAIT, stop_after=2)]
        check("psycopg notifies()", got, [("psy_chan", "one"), ("psy_chan", "two")])
        listener.execute("UNLISTEN psy_chan")
        listener.execute("LISTEN psy_other")
        notifier.execute("NOTIFY psy_chan, 'unheard'")
        notifier.execute("NOTIFY psy_other, 'three'")
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=WAIT, stop_after=1)]
        check("psycopg after UNLISTEN", got, [("psy_other", "three")])


async def asyncpg_listener():
    listener = await asyncpg.connect(timeout=10)
    notifier = await asyncpg.connect(timeout=10)
    heard = asyncio.Queue()
    try:
        def on_notify(_conn, _pid, channel, payload):
            heard.put_nowait((channel, payload))

        await listener.add_listener("apg_chan", on_notify)
        check("asyncpg: a statement between", await listener.fetchval("SELECT $1::int * 2", 21), 42)
        await notifier.execute("NOTIFY apg_chan, 'a1'")
        check("asyncpg add_listener", await asyncio.wait_for(heard.get(), WAIT), ("apg_chan", "a1"))
        await listener.remove_listener("apg_chan", on_notify)
        await listener.add_listener("apg_other", on_notify)
        await notifier.execute("NOTIFY apg_chan, 'unheard'")
        await notifier.execute("NOTIFY apg_other, 'a2'")
        check("asyncpg after remove_listener", await asyncio.wait_for(heard.get(), WAIT), ("apg_other", "a2"))
    finally:
        await listener.close()
        await notifier.close()


def main():
    psycopg_notifies()
    asyncio.run(asyncpg_listener())
    print("notify_test: psycopg notifies() and asyncpg add_listener: ok")


if __name__ == "__main__":
    main()
