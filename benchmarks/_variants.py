# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch prototypes of proposed engine changes, applied in ONE benchmark child process.

Nothing here touches the engine files: ``apply(variant)`` patches the imported
engine modules of the current process only, so that benchmarks/_engine.py can
time ``epoch.backup_epoch`` / ``epoch.restore_epoch`` exactly as the modules
call them, with one change at a time. The changes proposed to the engine (see
benchmarks/README.md, "Profile") are written out as code in
/tmp/nodekeep-requests.md; these prototypes are what was measured.

Variant keys (all optional):

- ``fast_copy``: the scratch copy is written with ``journal_mode=OFF`` and
  ``synchronous=OFF`` on the destination connection and not fsynced (it is
  transient plaintext, deleted after sealing; a crash leaves only a temp file).
- ``concurrent_check``: the integrity check of the finished copy runs in a
  thread while the seal pipeline streams the same copy; the artifact is only
  accepted when the check passed (``Captured.finish`` joins and raises).
- ``gate_commit``: with ``concurrent_check``, the artifact is committed (its
  repository write linked into place) only after the check passed, as
  proposed for epoch.backup_epoch (``captured.finish()`` inside the
  ``open_write`` block); without it the check is joined after the commit, and a
  failure then removes the unsigned epoch.
- ``smooth_writeback_mib``: the repository's artifact writer starts the
  write-back of every N MiB it wrote (``posix_fadvise(DONTNEED)`` on the range
  just written) instead of leaving the whole artifact to the final fsync: no
  burst of hundreds of MiB that stalls the node's own commits, and the backup's
  pages leave the page cache instead of evicting the node's.
- ``check_cache_kib``: page cache of the check connection (SQLite default 2000).
- ``threads``: zstd worker threads of the seal (engine default -1: one per core).
- ``pipe_size`` / ``chunk_size``: the seal's os.pipe size and read size.
- ``restore_fsync_concurrent``: on restore, fsync the staged file in a thread
  while the integrity check reads it, instead of after it.
- ``check_mmap_mib``: the check connections (backup and restore) read the
  private copy through ``PRAGMA mmap_size`` instead of read() calls. Fast, but
  the mapped file pages count in the process's RSS (they are page cache, not
  anonymous memory).
- ``nice_seal``: run seal() in a thread that first lowers its own scheduling
  priority (per-thread nice on Linux); the threads it starts (the age worker,
  libzstd's workers) inherit it, so the integrity check, which is the critical
  path, keeps a whole core.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import uuid
from typing import Any

import apsw

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import registry
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite as _sqlite_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite_db as sqlite_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError

# ---------------------------------------------------------------------------
# the copy: no journal, no per-step fsync, no final fsync of a transient file
# ---------------------------------------------------------------------------


def copy_database_fast(src: str, dest: str, busy_timeout_ms: int, pages_per_step: int) -> sqlite_utils.SqliteFacts:
    """sqlite.copy_database with a non-durable destination and no check (the checker runs later)."""
    sqlite_utils.check_is_database(src)
    directory = os.path.dirname(os.path.abspath(dest))
    temp = os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(dest), uuid.uuid4().hex[:8]))
    started = time.monotonic()
    try:
        source = apsw.Connection(src, flags=apsw.SQLITE_OPEN_READONLY)
        try:
            source.set_busy_timeout(int(busy_timeout_ms))
            snapshot_at = time.time()
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_schema").fetchone()
            destination = apsw.Connection(temp)
            try:
                # The temp file is private until linked: a crash leaves garbage, never a half copy in place.
                destination.execute("PRAGMA journal_mode=OFF").fetchall()
                destination.execute("PRAGMA synchronous=OFF")
                with destination.backup("main", source, "main") as backup:
                    while not backup.done:
                        backup.step(pages_per_step)
            finally:
                destination.close()
        finally:
            with contextlib.suppress(apsw.Error):
                source.execute("ROLLBACK")
            source.close()
        copy_seconds = time.monotonic() - started
        facts = sqlite_utils.database_facts(temp)
        os.link(temp, dest)
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(temp + suffix)
    return sqlite_utils.SqliteFacts(
        page_count=facts["page_count"],
        page_size=facts["page_size"],
        journal_mode=facts["journal_mode"],
        integrity="pending",
        sqlite_version=apsw.sqlite_lib_version(),
        snapshot_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot_at)),
        copy_seconds=round(copy_seconds, 3),
        check_seconds=0.0,
    )


# ---------------------------------------------------------------------------
# the check, in a thread that can be interrupted
# ---------------------------------------------------------------------------


class CheckThread(threading.Thread):
    """PRAGMA integrity_check/quick_check of a private copy; apsw releases the GIL while SQLite works."""

    def __init__(self, path: str, check: str, cache_kib: int | None = None) -> None:
        super().__init__(name="nodekeep-sqlite-check", daemon=True)
        self.path = path
        self.check = check
        self.cache_kib = cache_kib
        self.result: str | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._connection = None

    def run(self) -> None:
        began = time.monotonic()
        try:
            if self.check == "none":
                self.result = "skipped"
                return
            pragma = "integrity_check" if self.check == "integrity" else "quick_check"
            self._connection = sqlite_utils._open_private(self.path)
            try:
                if self.cache_kib:
                    self._connection.execute("PRAGMA cache_size=-%d" % int(self.cache_kib))
                rows = [str(r[0]) for r in self._connection.execute("PRAGMA %s" % pragma)]
            finally:
                self._connection.close()
            if rows != ["ok"]:
                raise IntegrityError("%s of %s failed: %s" % (pragma, self.path, "; ".join(rows[:5])))
            self.result = "ok"
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self.error = exc
        finally:
            self.seconds = time.monotonic() - began

    def cancel(self) -> None:
        connection = self._connection
        if connection is not None and self.is_alive():
            with contextlib.suppress(Exception):
                connection.interrupt()
        if self.ident is not None:
            self.join()

    def finish(self) -> dict[str, Any]:
        if self.ident is not None:
            self.join()
        if self.error is not None:
            raise self.error
        return {"integrity": self.result, "check_seconds": round(self.seconds, 3)}


# Checks that must pass before the artifact being written is committed (gate_commit).
_PENDING: list = []


def _gated_open_write(original):
    @contextlib.contextmanager
    def open_write(self, node: str, epoch_name: str, name: str):
        with original(self, node, epoch_name, name) as sink:
            yield sink
            while _PENDING:
                _PENDING.pop()()  # raises when the check failed: the write is then not committed

    return open_write


class ProposedSqliteAssetType(_sqlite_mod.SqliteAssetType):
    """SqliteAssetType.capture with the proposed copy and/or the concurrent check."""

    def __init__(self, fast_copy: bool, concurrent_check: bool, cache_kib: int | None, gate: bool = False) -> None:
        self.fast_copy = fast_copy
        self.concurrent_check = concurrent_check
        self.cache_kib = cache_kib
        self.gate = gate

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        copy = os.path.join(scratch_dir, "%s.%s.sqlite" % (asset["name"], uuid.uuid4().hex[:8]))
        checker = None
        try:
            if self.fast_copy:
                facts = copy_database_fast(
                    asset["path"], copy, int(asset["busy_timeout"]), int(asset["pages_per_step"])
                )
            else:
                facts = sqlite_utils.copy_database(
                    asset["path"],
                    copy,
                    busy_timeout_ms=int(asset["busy_timeout"]),
                    pages_per_step=int(asset["pages_per_step"]),
                    check="none",
                )
            checker = CheckThread(copy, asset["check"], self.cache_kib)
            finish = None
            if self.concurrent_check:
                checker.start()
                finish = checker.finish
                if self.gate:
                    _PENDING.append(checker.finish)
            else:
                checker.run()
                found = checker.finish()
                facts.integrity, facts.check_seconds = found["integrity"], found["check_seconds"]
                checker = None
            with open(copy, "rb") as stream:
                yield assets.Captured(stream, facts.as_dict(), finish=finish)
        finally:
            if checker is not None:
                checker.cancel()  # on the error path: stop a check nobody will read
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)


# ---------------------------------------------------------------------------
# restore: fsync the staged file while the check reads it
# ---------------------------------------------------------------------------


def _deep_check_with_fsync(original, self, path, artifact, check="integrity"):
    def flush() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    syncer = threading.Thread(target=flush, name="nodekeep-fsync", daemon=True)
    syncer.start()
    try:
        return original(self, path, artifact, check)
    finally:
        syncer.join()


def _niced(function, nice: int):
    """Run ``function`` in a new thread whose priority (and its children's) is lowered by ``nice``."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                with contextlib.suppress(OSError, AttributeError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
                outcome["value"] = function(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=target, name="nodekeep-seal", daemon=True)
        worker.start()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return wrapper


class _SmoothWriter:
    """A sink wrapper that starts write-back of each ``every`` bytes as soon as they are written."""

    def __init__(self, sink, every: int) -> None:
        self._sink = sink
        self._every = every
        self._written = 0
        self._flushed_to = 0

    def write(self, data) -> int:
        count = self._sink.write(data)
        self._written += len(data)
        if self._written - self._flushed_to >= self._every:
            self._sink.flush()
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(
                    self._sink.fileno(), self._flushed_to, self._written - self._flushed_to, os.POSIX_FADV_DONTNEED
                )
            self._flushed_to = self._written
        return count

    def __getattr__(self, name: str):
        return getattr(self._sink, name)


def _smooth_open_write(original, every: int):
    @contextlib.contextmanager
    def open_write(self, node: str, epoch_name: str, name: str):
        with original(self, node, epoch_name, name) as sink:
            yield _SmoothWriter(sink, every)

    return open_write


def apply(variant: dict[str, Any] | None) -> None:
    """Patch this process's engine with the given variant (see the module docstring)."""
    variant = dict(variant or {})
    if "pipe_size" in variant:
        seal.PIPE_SIZE = int(variant["pipe_size"])
    if "chunk_size" in variant:
        seal.CHUNK_SIZE = int(variant["chunk_size"])
        seal._read_chunks.__defaults__ = (int(variant["chunk_size"]),)
    if "threads" in variant:
        epoch.seal = functools.partial(seal.seal, threads=int(variant["threads"]))
    if variant.get("nice_seal"):
        epoch.seal = _niced(epoch.seal, int(variant["nice_seal"]))
    if variant.get("fast_copy") or variant.get("concurrent_check") or variant.get("check_cache_kib"):
        proposed = ProposedSqliteAssetType(
            bool(variant.get("fast_copy")),
            bool(variant.get("concurrent_check")),
            variant.get("check_cache_kib"),
            bool(variant.get("gate_commit")),
        )
        registry.ASSET_TYPES["sqlite"] = proposed
    if variant.get("gate_commit"):
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage import repository

        repository.LocalRepository.open_write = _gated_open_write(repository.LocalRepository.open_write)
    if variant.get("smooth_writeback_mib"):
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage import repository as repository_module

        repository_module.LocalRepository.open_write = _smooth_open_write(
            repository_module.LocalRepository.open_write, int(variant["smooth_writeback_mib"]) << 20
        )
    if variant.get("check_mmap_mib"):
        original_open = sqlite_utils._open_private
        size = int(variant["check_mmap_mib"]) << 20

        def open_mapped(path: str):
            connection = original_open(path)
            connection.execute("PRAGMA mmap_size=%d" % size).fetchall()
            return connection

        sqlite_utils._open_private = open_mapped
    if variant.get("restore_fsync_concurrent"):
        kind = registry.ASSET_TYPES["sqlite"]
        original = type(kind).deep_check
        kind.deep_check = functools.partial(_deep_check_with_fsync, original, kind)
