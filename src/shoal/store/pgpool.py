"""Opening an asyncpg pool: the one way the state and the service databases connect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from shoal.errors import StoreError

# What the driver raises when the server, the network or the connection fails.
DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def open_pool(dsn: str, *, max_size: int, what: str,
                    setup: Callable[[Any], Awaitable[None]] | None = None,
                    errors: tuple[type[BaseException], ...] = DB_ERRORS) -> Any:
    """A pool of 1 to ``max_size`` connections to ``dsn`` (an ``asyncpg.Pool``), on one of
    which ``setup`` has run (to create or migrate a schema); closed again if that fails.

    Raises:
        StoreError: ``cannot connect to <what>`` when the pool cannot be made, ``cannot use
            <what>`` when ``setup`` fails, for the exceptions in ``errors``.
    """
    try:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=max_size)
    except errors as exc:
        raise StoreError(f"cannot connect to {what}: {exc}") from exc
    if setup is None:
        return pool
    try:
        async with pool.acquire() as conn:
            await setup(conn)
    except errors as exc:
        await pool.close()
        raise StoreError(f"cannot use {what}: {exc}") from exc
    except BaseException:
        await pool.close()
        raise
    return pool
