# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress of a long run: per asset phase, bytes done of total, rate and ETA.

A flow (backup, verify, restore, copy) opens a ``Progress`` for the run and, per
asset and phase, ``progress.step(asset, phase, total)``; the streaming loops at the
bottom (the seal pipeline, a SQLite copy's steps, streams wrapped by ``counted``)
call ``advance(n)`` for every chunk they move. Nothing here knows Ansible or files: a ``Progress`` hands each
snapshot to its ``emit`` callable (docs/progress.md: the modules write it as a
0600 JSON status file that the action plugins print while the module runs).

A snapshot is emitted when a step starts and ends, and in between whenever
``every_bytes`` more bytes moved or ``every_seconds`` passed since the last one
(tests set ``every_bytes`` and no seconds: what is emitted then depends on bytes
alone, never on timing). ``clock`` is injectable for the same reason.

With no ``Progress`` active, ``advance`` costs one global lookup.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable

FORMAT = "nodekeep.progress/v1"

_active: Progress | None = None


class Progress:
    """One run's progress; ``emit(snapshot)`` receives a plain dict (JSON-ready)."""

    def __init__(
        self,
        operation: str,
        node: str = "",
        assets: int = 0,
        emit: Callable[[dict[str, Any]], None] | None = None,
        every_bytes: int | None = None,
        every_seconds: float | None = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.operation = operation
        self.node = node
        self.assets = assets
        self._emit = emit
        self.every_bytes = every_bytes
        self.every_seconds = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self.asset: str | None = None
        self.phase: str | None = None
        self.index = 0
        self.total: int | None = None
        self.done = 0
        self._began = clock()
        self._step_began = self._began
        self._last_bytes = 0
        self._last_time = self._began
        self.finished: list[dict[str, Any]] = []
        self.emitted = 0

    # -- what the flows call ----------------------------------------------------
    def expect(self, assets: int) -> None:
        """How many assets this run will go through (shown as ``[2/5]``)."""
        self.assets = assets

    @contextlib.contextmanager
    def step(self, asset: str, phase: str, total: int | None = None, index: int | None = None) -> Iterator[Progress]:
        """Track one phase of one asset (``total``: the bytes it will move, None when unknown)."""
        with self._lock:
            self.asset, self.phase, self.total, self.done = asset, phase, total, 0
            if index is not None:
                self.index = index
            self._step_began = self._last_time = self._clock()
            self._last_bytes = 0
        self._send()
        try:
            yield self
        finally:
            final = self.snapshot(final=True)
            self.finished.append(final)
            self._send_snapshot(final)

    def advance(self, count: int) -> None:
        with self._lock:
            self.done += count
            by_bytes = bool(self.every_bytes) and self.done - self._last_bytes >= self.every_bytes
            due = by_bytes or (self.every_seconds is not None and self._clock() - self._last_time >= self.every_seconds)
        if due:
            self._send()

    # -- the snapshot -------------------------------------------------------------
    def snapshot(self, final: bool = False) -> dict[str, Any]:
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._step_began, 0.0)
            rate = self.done / elapsed if elapsed > 0 and self.done else None
            remaining = None
            if self.total is not None and rate:
                remaining = max(self.total - self.done, 0) / rate
            percent = None
            if self.total:
                percent = round(min(100.0, 100.0 * self.done / self.total), 1)
            elif self.total == 0:
                percent = 100.0
            return {
                "format": FORMAT,
                "operation": self.operation,
                "node": self.node,
                "asset": self.asset,
                "asset_index": self.index,
                "assets": self.assets,
                "phase": self.phase,
                "state": "done" if final else "running",
                "done_bytes": self.done,
                "total_bytes": self.total,
                "percent": percent,
                "rate_bytes_per_second": round(rate, 1) if rate else None,
                "eta_seconds": 0.0 if final else (round(remaining, 1) if remaining is not None else None),
                "elapsed_seconds": round(elapsed, 3),
                "run_seconds": round(now - self._began, 3),
                "updated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }

    def _send(self, final: bool = False) -> None:
        self._send_snapshot(self.snapshot(final))

    def _send_snapshot(self, snap: dict[str, Any]) -> None:
        with self._lock:
            self._last_bytes, self._last_time = self.done, self._clock()
            self.emitted += 1
        if self._emit is not None:
            self._emit(snap)


class _Null:
    """What ``current()`` returns with no run active: every call does nothing."""

    @contextlib.contextmanager
    def step(self, asset: str, phase: str, total: int | None = None, index: int | None = None) -> Iterator[_Null]:
        yield self

    def advance(self, count: int) -> None:
        pass

    def expect(self, assets: int) -> None:
        pass


NULL = _Null()


@contextlib.contextmanager
def reporting(progress: Progress | None) -> Iterator[Progress | _Null]:
    """Make ``progress`` the active one while the block runs (a module runs one flow at a time)."""
    global _active
    previous = _active
    _active = progress
    try:
        yield progress if progress is not None else NULL
    finally:
        _active = previous


def current() -> Progress | _Null:
    return _active if _active is not None else NULL


def advance(count: int) -> None:
    """Count ``count`` bytes moved by the active step (the streaming loops call this)."""
    active = _active
    if active is not None and count:
        active.advance(count)


class _Counted:
    """A read-only stream that counts what is read from it into the active step."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        advance(len(data))
        return data


def counted(stream: Any) -> Any:
    """``stream`` as it is with no run active, else wrapped so that its reads count (a copy, a checksum pass)."""
    return stream if _active is None else _Counted(stream)
