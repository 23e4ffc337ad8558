"""The output's bookkeeping, read by the event loop while the store's thread writes."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.output import Output


@pytest.fixture
def fast_thread_switches() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("fast_thread_switches")
def test_mark_is_never_torn_while_another_thread_writes(tmp_path: Path) -> None:
    # The engine takes a mark on the loop thread (a loader batch) while the store's thread
    # appends a commit's lines. A mark whose byte count is newer than its seq makes a
    # resume keep those lines and append them again from the database: duplicates.
    out = Output(str(tmp_path / "out.jsonl"))
    out.open(0, 0)
    line = b'{"url": "x"}\n'
    torn: list[dict[str, str]] = []

    def write() -> None:
        for seq in range(1, 60_001):
            out.write([(seq, line)])

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        mark = out.mark()
        if int(mark["out_bytes"]) != len(line) * int(mark["out_seq"]):
            torn.append(mark)
    writer.join()
    out.close()
    assert torn == []
    assert out.mark() == {"out_seq": "60000", "out_bytes": str(60_000 * len(line))}


def test_record_times_are_iso_utc_with_milliseconds() -> None:
    import re
    from datetime import UTC, datetime

    from shoal.records import utc_now_iso

    for _ in range(3):
        before = datetime.now(UTC)
        stamp = utc_now_iso()
        after = datetime.now(UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= parsed <= after
