"""The page thread: results come back to the loop in order, errors where they are awaited,
and a cancelled waiter or a closed loop never breaks the thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shoal.engine.offload import Offload, PageThread


def _boom(x: int) -> int:
    raise ValueError(f"bad {x}")


async def test_results_and_errors_come_back_to_their_callers() -> None:
    pt = PageThread(asyncio.get_running_loop())
    try:
        futs = [pt.submit(lambda x: x * 2, i) for i in range(200)]  # more than one batch
        bad = pt.submit(_boom, 7)
        assert await asyncio.gather(*futs) == [i * 2 for i in range(200)]
        with pytest.raises(ValueError, match="bad 7"):
            await bad
    finally:
        pt.close()


async def test_a_cancelled_waiter_does_not_disturb_the_others() -> None:
    pt = PageThread(asyncio.get_running_loop())
    try:
        slow = pt.submit(time.sleep, 0.2)
        after = pt.submit(lambda: "after")
        waiter = asyncio.ensure_future(slow)
        await asyncio.sleep(0.01)
        waiter.cancel()
        assert await after == "after"
    finally:
        pt.close()


def test_the_thread_ends_quietly_when_its_loop_is_closed() -> None:
    errors: list[BaseException] = []
    hook = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        loop = asyncio.new_event_loop()
        pt = PageThread(loop)
        pt.submit(time.sleep, 0.1)  # still running when the loop is closed
        loop.close()
        pt.close()
        pt._thread.join(2)
        assert not pt._thread.is_alive()
    finally:
        threading.excepthook = hook
    assert errors == []


async def test_hash_and_parse_of_a_page() -> None:
    off = Offload()
    try:
        body = b"<title> A  page </title><a href=/x>x</a><a>no href</a>"
        digest, page = await off.page(body, None, parse=True, want_links=True)
        assert len(digest) == 64
        assert page is not None and page.title == "A page" and page.links == 1
        assert page.hrefs == ["/x"]
        digest2, none = await off.page(b"\x00binary", None, parse=False)
        assert none is None and digest2 != digest
    finally:
        off.close()
