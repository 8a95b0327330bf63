"""Live progress: snapshots by bytes (never by time), rate and ETA from an injected clock."""

from __future__ import annotations

import io

from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import stream_digest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import progress_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_snapshots_by_bytes_carry_phase_done_total_rate_and_eta():
    clock, seen = Clock(), []
    tracker = progress.Progress(
        "backup", node="n1", emit=seen.append, every_bytes=1000, every_seconds=None, clock=clock
    )
    tracker.expect(2)
    with progress.reporting(tracker), tracker.step("db", "seal", total=4000, index=1):
        for _second in range(4):
            clock.now += 1.0
            progress.advance(1000)
    # start, one per 1000 bytes, the end
    assert [s["state"] for s in seen] == ["running"] * 5 + ["done"]
    middle = seen[2]
    assert (middle["asset"], middle["phase"], middle["done_bytes"], middle["total_bytes"]) == ("db", "seal", 2000, 4000)
    assert middle["rate_bytes_per_second"] == 1000.0 and middle["eta_seconds"] == 2.0 and middle["percent"] == 50.0
    assert seen[-1]["done_bytes"] == 4000 and seen[-1]["eta_seconds"] == 0.0
    line = progress_line(middle)
    assert line == "n1 backup [1/2] db seal: 1.95 KiB of 3.91 KiB (50.0%), 1000 B/s, ETA 2.0 s"
    assert tracker.finished == [seen[-1]] and seen[-1]["elapsed_seconds"] == 4.0


def test_small_steps_below_the_interval_emit_only_start_and_end():
    seen = []
    tracker = progress.Progress("verify", emit=seen.append, every_bytes=1 << 20, every_seconds=None)
    with progress.reporting(tracker), tracker.step("cfg", "verify", total=10):
        stream_digest(progress.counted(io.BytesIO(b"x" * 10)))  # a copy or checksum pass counts its reads
    assert [s["state"] for s in seen] == ["running", "done"]
    assert seen[-1]["done_bytes"] == 10 and seen[-1]["percent"] == 100.0


def test_without_an_active_run_nothing_is_counted():
    assert progress.current() is progress.NULL
    progress.advance(123)  # no error, nothing kept
    with progress.current().step("a", "b", 1):
        pass
