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
