"""The pools pgflow builds heal at once when their connections broke (SPEC §13 "Connections heal")."""

from __future__ import annotations

import asyncio
import time

import pytest

from pgflow.postgres.pools import IDLE_BEFORE_CHECK, make_async_pool, make_pool
from procs.common import eventually, execute

pytestmark = pytest.mark.postgres


def test_a_pool_whose_idle_connections_all_broke_serves_the_next_caller_at_once(pg_dsn: str) -> None:
    """After every pooled connection broke (a restart), the next caller gets a fresh one without waiting."""
    pool = make_pool(pg_dsn, max_size=6, name="pgflow-test-broken")
    try:
        held = [pool.getconn() for _ in range(6)]  # the pool grows to hold six connections
        pids = [conn.info.backend_pid for conn in held]
        for conn in held:
            pool.putconn(conn)
        eventually(lambda: pool.get_stats()["pool_available"] == 6)
        execute(pg_dsn, "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        time.sleep(IDLE_BEFORE_CHECK + 0.2)  # idle long enough to be checked before use

        began = time.monotonic()
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        took = time.monotonic() - began
        # psycopg_pool waits 0, 1, 2, 4, 8, 16 s after each failed check within one getconn: meeting the
        # six broken connections one by one ended in PoolTimeout after 30 s; one failed check drains them all
        assert took < 1.0, f"the first call after the connections broke took {took:.2f} s"
    finally:
        pool.close()


def test_a_pool_hands_out_its_most_recently_used_idle_connection(pg_dsn: str) -> None:
    """Idle connections go out hottest first (their statements prepared and planned), so one caller at a
    time keeps using one connection rather than cycling through all of them."""
    pool = make_pool(pg_dsn, max_size=4, name="pgflow-test-hottest")
    try:
        held = [pool.getconn() for _ in range(4)]
        for conn in held:  # returned oldest to newest: held[3] is the most recently used
            pool.putconn(conn)
        eventually(lambda: pool.get_stats()["pool_available"] == 4)
        pids = []
        for _ in range(5):
            with pool.connection() as conn:
                pids.append(conn.info.backend_pid)
        assert pids == [held[3].info.backend_pid] * 5
    finally:
        pool.close()


def test_an_asyncio_pool_hands_out_its_most_recently_used_idle_connection(pg_dsn: str) -> None:
    async def main() -> list[int]:
        pool = await make_async_pool(pg_dsn, max_size=3, name="pgflow-test-hottest-async")
        try:
            held = [await pool.getconn() for _ in range(3)]
            for conn in held:
                await pool.putconn(conn)
            pids = []
            for _ in range(4):
                async with pool.connection() as conn:
                    pids.append(conn.info.backend_pid)
            return [held[2].info.backend_pid, *pids]
        finally:
            await pool.close()

    hottest, *pids = asyncio.run(main())
    assert pids == [hottest] * 4
