"""process/gctune.py: the timed collections, and the C heap's free pages given back."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from pier.process import gctune

# In a fresh interpreter: 100 MB of C-heap blocks (bytes past pymalloc's 512), every 50th kept
# so that the heap's top cannot shrink, the rest freed; the process's RSS before and after.
FRAGMENTED = """
import sys
from pier.process import gctune
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
blocks = [bytes(1000) + bytes([i % 256]) for i in range(100_000)]
kept = blocks[::50]
del blocks
before = rss()
gctune.trim()
print(before, rss())
"""


@pytest.mark.skipif(gctune.MALLOC_TRIM is None, reason="not glibc: nothing to trim with")
def test_trim_gives_the_freed_heap_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True
    ).stdout
    before, after = map(int, out.split())
    assert before - after >= 50, (before, after)  # MB: most of the 98 MB freed


def test_the_timer_trims_every_trim_every_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(gctune, "MALLOC_TRIM", calls.append)
    monkeypatch.setattr(gctune, "TRIM_EVERY", 3)

    async def main() -> None:
        task = asyncio.create_task(gctune._collect(0))
        for _ in range(200):
            await asyncio.sleep(0)
            if len(calls) >= 2:
                break
        task.cancel()

    asyncio.run(main())
    assert calls[:2] == [0, 0]
