# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: an incremental SQLite epoch's page map read back (``read_map``, checked for shape and coverage)
and the database rebuilt from it (``rebuild_database``, ``restore_pages``), docs/incremental.md. The capture
side, the map's writer and the asset type are in ``_sqlite_pages``."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import heapq
import json
import os
import queue
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import Staged
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import sha256_file
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import check_object_name

MAP_FORMAT = "nodekeep.sqlite-pages/v1"
#: packs unsealed at once while a database is rebuilt
UNSEAL_WORKERS = 3
#: packs kept in memory, beyond those being unsealed, for their pages written ahead of the file's digest
HOLD_PACKS = 2


def read_map(path: str) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[int, int, int, int]]]:
    """(header, packs, runs) of a plaintext page map, checked for shape; runs are (first, count, pack, offset)."""
    try:
        with open(path, encoding="utf-8") as handle:
            header = json.loads(handle.readline() or "{}")
            if not isinstance(header, dict) or header.get("format") != MAP_FORMAT:
                raise IntegrityError(
                    "the page map %s is not a %s document" % (path, MAP_FORMAT),
                    "restore it with a nodekeep version that knows this format",
                )
            packs: list[dict[str, Any]] = []
            runs: list[tuple[int, int, int, int]] = []
            for line in handle:
                item = json.loads(line)
                if "object" in item:
                    _pieces_name(item["object"])
                    packs.append(
                        {
                            "object": item["object"],
                            "sealed_size": int(item["sealed_size"]),
                            "sealed_sha256": str(item["sealed_sha256"]),
                            "size": int(item["size"]),
                        }
                    )
                else:
                    runs.append((int(item["first"]), int(item["count"]), int(item["pack"]), int(item["offset"])))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError("the page map %s is malformed (%s)" % (path, exc), "restore another epoch or copy")
    _check_runs(header, packs, runs)
    return header, packs, runs


def _pieces_name(name: Any) -> None:
    check_object_name(str(name))


def _check_runs(header: dict[str, Any], packs: list[dict[str, Any]], runs: list[tuple[int, int, int, int]]) -> None:
    """Every page 1..page_count is covered exactly once, every run lies inside its pack."""
    try:
        page_size = int(header["page_size"])
        page_count = int(header["page_count"])
        size = int(header["size"])
    except (KeyError, TypeError, ValueError):
        raise IntegrityError("the page map's header is malformed", "restore another epoch or copy")
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1) or size != page_size * page_count:
        raise IntegrityError("the page map's page size or page count is impossible", "restore another epoch or copy")
    expected = 1
    for first, count, pack, offset in sorted(runs):
        if first != expected or count < 1 or not 0 <= pack < len(packs) or offset < 0 or offset % page_size:
            raise IntegrityError(
                "the page map does not cover pages 1..%d exactly once (at page %d)" % (page_count, first),
                "the map is damaged; restore another epoch or copy",
            )
        if offset + count * page_size > packs[pack]["size"]:
            raise IntegrityError(
                "the page map reads past the end of pack %d (pages %d..%d)" % (pack, first, first + count - 1),
                "the map is damaged; restore another epoch or copy",
            )
        expected = first + count
    if expected != page_count + 1:
        raise IntegrityError(
            "the page map covers %d of %d pages" % (expected - 1, page_count), "restore another epoch or copy"
        )


class _FileOrderDigest:
    """The SHA-256 of a database rebuilt out of order, taken in file order.

    A run written where the digest stands is hashed from its unsealed pack in memory. A run written
    ahead of it waits: its pack stays in memory for it while the packs held stay under ``hold_bytes``,
    otherwise only its place is kept and it is read back from the file once the digest reaches it.
    Packs are unsealed in the order of their first page, so a full epoch is hashed without reading
    anything back and an incremental one reads back at most what its held packs could not keep.
    """

    def __init__(self, reader: int, page_size: int, hold_bytes: int) -> None:
        self.reader = reader
        self.page_size = page_size
        self.digest = hashlib.sha256()
        self.next = 1  # the first page not hashed yet
        # (first, count, pack buffer or None, offset) of runs written past ``next``: a heap
        self.ahead: list[tuple[int, int, Any, int]] = []
        self.hold_bytes = hold_bytes
        self.held: dict[int, int] = {}  # id(buffer) -> runs still waiting in it
        self.held_bytes = 0
        self.read_back = 0

    def pack(self, buffer, runs: list[tuple[int, int, int]]) -> None:
        """Hash (or hold, or mark for reading back) the runs (first, count, offset) of one written pack."""
        size = self.page_size
        keep = False
        for first, count, offset in runs:
            if first == self.next:
                self.digest.update(memoryview(buffer)[offset : offset + count * size])
                self.next += count
                self._catch_up()
                continue
            if not keep and id(buffer) not in self.held and self.held_bytes + len(buffer) <= self.hold_bytes:
                keep = True
                self.held[id(buffer)] = 0
                self.held_bytes += len(buffer)
            if keep:
                self.held[id(buffer)] += 1
            heapq.heappush(self.ahead, (first, count, buffer if keep else None, offset))

    def _catch_up(self) -> None:
        size = self.page_size
        while self.ahead and self.ahead[0][0] == self.next:
            first, count, buffer, offset = heapq.heappop(self.ahead)
            if buffer is not None:
                self.digest.update(memoryview(buffer)[offset : offset + count * size])
                self.held[id(buffer)] -= 1
                if not self.held[id(buffer)]:
                    del self.held[id(buffer)]
                    self.held_bytes -= len(buffer)
            else:
                position, end = (first - 1) * size, (first - 1 + count) * size
                while position < end:
                    chunk = os.pread(self.reader, min(4 << 20, end - position), position)
                    if not chunk:
                        raise RestoreError("the rebuilt database is shorter than its page map", "retry the restore")
                    self.digest.update(chunk)
                    position += len(chunk)
                    self.read_back += len(chunk)
            self.next += count

    def hexdigest(self, page_count: int) -> str | None:
        """The whole file's SHA-256 once every page is hashed, else None."""
        self._catch_up()
        return self.digest.hexdigest() if self.next == page_count + 1 and not self.ahead else None


class _DigestThread(threading.Thread):
    """Feeds a ``_FileOrderDigest`` beside the writer: the pack just written is hashed while the next one is
    written (SHA-256 and ``pwrite`` both release the GIL). One pack waits at most; an error of the digest (a
    short read back) is raised in the writer's thread by ``feed`` or ``finish``."""

    def __init__(self, digest: _FileOrderDigest) -> None:
        super().__init__(name="nodekeep-rebuild-digest", daemon=True)
        self.digest = digest
        self.packs: queue.Queue = queue.Queue(maxsize=1)
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.packs.get()
            if item is None:
                return
            if self.error is None:  # after an error: drain, so the writer never blocks
                try:
                    self.digest.pack(*item)
                except BaseException as exc:  # noqa: BLE001 - raised in the writer's thread
                    self.error = exc

    def feed(self, buffer, runs: list[tuple[int, int, int]]) -> None:
        if self.error is not None:
            raise self.error
        self.packs.put((buffer, runs))

    def finish(self) -> None:
        """Wait for every pack fed; raise the digest's error, if any."""
        if self.is_alive():
            self.packs.put(None)
            self.join()
        if self.error is not None:
            raise self.error


def _write_runs(fd: int, page_size: int, by_pack, number: int, future: Future, packs, digest: _DigestThread) -> int:
    """Write every run of pack ``number`` (its plaintext from ``future``) at its place, in file order, and feed
    the file's digest; the pack's sealed size."""
    buffer = future.result()
    with memoryview(buffer) as view:
        for first, count, offset in by_pack[number]:
            part = view[offset : offset + count * page_size]
            written = os.pwrite(fd, part, (first - 1) * page_size)
            if written != len(part):
                raise RestoreError("a short write while rebuilding the database", "check the free space and retry")
    digest.feed(buffer, by_pack[number])
    return packs[number]["sealed_size"]


def rebuild_database(map_path: str, fd: int, path: str, repository, node: str, identities: list) -> dict[str, Any]:
    """Write the database a (checked) page map describes into the open, empty file ``fd`` (at ``path``);
    prove its SHA-256 (taken in file order as it is written, ``_FileOrderDigest``)."""
    header, packs, runs = read_map(map_path)
    page_size = int(header["page_size"])
    size = int(header["size"])
    os.ftruncate(fd, size)
    by_pack: dict[int, list[tuple[int, int, int]]] = {}
    for first, count, pack, offset in sorted(runs):
        by_pack.setdefault(pack, []).append((first, count, offset))
    del runs
    read_bytes = 0
    # by_pack's keys come in the order of each pack's first page (runs were sorted)
    wanted = list(by_pack)
    workers = max(1, min(UNSEAL_WORKERS, len(wanted)))

    def unseal(pack: dict[str, Any]) -> bytearray:
        facts = (pack["sealed_size"], pack["sealed_sha256"])
        return _pieces.read_piece(repository, node, pack["object"], facts, pack["size"], identities)

    reader = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if (os.fstat(reader).st_dev, os.fstat(reader).st_ino) != (os.fstat(fd).st_dev, os.fstat(fd).st_ino):
            raise RestoreError(
                "the staged file %s was replaced during the restore" % path, "restore into a private directory"
            )
        digest = _FileOrderDigest(reader, page_size, HOLD_PACKS * _pieces.PACK_SIZE)
        # Packs are unsealed (age, zstd, their checks) by a few threads while this one writes the finished ones
        # and the digest thread hashes the written ones; at most workers + 3 packs are in memory (plus those
        # the digest holds).
        hasher = _DigestThread(digest)
        hasher.start()
        pending: deque[tuple[int, Future]] = deque()
        try:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nodekeep-unseal") as pool:
                try:
                    for number in wanted:
                        pending.append((number, pool.submit(unseal, packs[number])))
                        if len(pending) > workers:
                            read_bytes += _write_runs(fd, page_size, by_pack, *pending.popleft(), packs, hasher)
                    while pending:
                        read_bytes += _write_runs(fd, page_size, by_pack, *pending.popleft(), packs, hasher)
                finally:
                    for _number, future in pending:
                        future.cancel()
        finally:
            hasher.finish()
        found = digest.hexdigest(int(header["page_count"]))
    finally:
        os.close(reader)
    if found != header["sha256"]:
        raise IntegrityError(
            "the rebuilt database does not match the SHA-256 of its page map",
            "do not trust this copy; restore another epoch or copy",
        )
    return {
        "pages": int(header["page_count"]),
        "packs_read": len(wanted),
        "read_bytes": read_bytes,
        "read_back_bytes": digest.read_back,
        "size": size,
        "sha256": header["sha256"],
    }


@contextlib.contextmanager
def restore_pages(staged, artifact, context):
    """Turn a staged database file into a pieces restore: the unsealed page map goes to a private file;
    ``complete`` checks it against the manifest, rebuilds the database into the staged file, then
    completes the staged file itself (its owner and mode)."""
    if context is None or context.identities is None or context.repository is None:
        raise RestoreError(
            "SQLite pieces epochs are restored through the engine (repository, identities and manifest)",
            "use epoch_restore / restore_epoch",
        )
    directory = context.scratch or os.path.dirname(staged.path)
    map_path = os.path.join(directory, ".%s.pages" % os.path.basename(staged.path))
    try:
        fd = os.open(map_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise describe_os_error(exc, "creating the page map's scratch file", map_path)
    # unseal's limit (the manifest's content_size) bounds what is written here
    handle = os.fdopen(fd, "wb", buffering=1 << 20)

    def complete() -> dict[str, Any]:
        handle.close()
        # The map decides which pieces are read: check it against the signed manifest first.
        if sha256_file(map_path) != (artifact.content_size, artifact.content_sha256):
            raise IntegrityError(
                "the page map of %s does not match the manifest's content checksum" % artifact.name,
                "do not trust this copy; restore another epoch or copy",
            )
        rebuilt = rebuild_database(
            map_path, staged.stream.fileno(), staged.path, context.repository, context.node, context.identities
        )
        facts = dict(staged.complete() or {})
        facts["rebuilt"] = rebuilt
        return facts

    try:
        yield Staged(staged.path, handle, complete=complete)
    finally:
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(OSError):
            os.unlink(map_path)
