# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: what the files capture walk reads and keeps: one read of a file (``_Content``, ``_read_fd``),
the racy-read window, the index line encoder, whether a cached entry still describes a file, and the compact
map of packed contents (``PackedContents``)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import array
import contextlib
import io
import json
import os
from collections.abc import Iterator
from typing import Any


def _racy_window_ns() -> int:
    """How recent a file's ctime must be for its read to be checked by a second read ("racy", as git says).

    A ``write()`` sets the file's times before its bytes land, and a store through a shared
    mapping sets them only when a clean page is first dirtied; such a page is written back (and
    made clean, so the next store sets the times again) within the kernel's dirty expiry plus its
    writeback interval. A file whose ctime is older than that, plus a second for the coarse
    clock, has no write under way that a stable ``fstat`` before and after the read would miss.
    """
    total = 0
    for name, default in (("dirty_expire_centisecs", 3000), ("dirty_writeback_centisecs", 500)):
        try:
            with open("/proc/sys/vm/" + name) as handle:
                value = int(handle.read().strip() or default)
        except (OSError, ValueError):
            value = default
        total += max(0, value) or default
    return (total * 10 + 1000) * 10**6


#: files whose ctime is at most this old when they are read are read twice (the torn-read check)
RACY_NS = _racy_window_ns()


def _read_fd(fd: int, size: int) -> bytes:
    """The content of ``fd`` from its offset for a file of ``size`` bytes (its stat): one ``read`` of one
    byte more than that (a longer result shows the file grew); more reads only while the kernel returns
    less than ``size`` and not yet the end (the caller's ``fstat`` after the read checks the size)."""
    data = os.read(fd, size + 1)
    if len(data) < size:
        parts = [data]
        got = len(data)
        while got < size:
            more = os.read(fd, size + 1 - got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _make_encoder():
    """One JSON encoder for index lines (sorted keys, compact): json's C encoder made once, not per line."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    iterencode = make(None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)

    def encode(entry: dict[str, Any]) -> str:
        return "".join(iterencode(entry, 0))

    return encode


#: an index entry as its line (without the newline), as ``json.dumps(entry, sort_keys=True, separators=(",", ":"))``
encode_entry = _make_encoder()


class _Changed(Exception):
    """The file's content changed between hashing and sealing: read it again."""


class _BytesSource:
    """A read-only source for the seal pipeline (no ``readinto``: it would allocate a 4 MiB buffer per object)."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class _Content:
    """One read of a file: its SHA-256, size and stat, and how to read the same bytes again."""

    def __init__(
        self,
        sha256: str,
        size: int,
        info: os.stat_result,
        data: bytes | None = None,
        path: str | None = None,
        changed: bool = False,
    ) -> None:
        self.sha256 = sha256
        self.size = size
        self.info = info
        self.data = data
        self.path = path
        self.changed = changed
        #: holes and inode flags, found on the descriptor of the first read
        self.segments: list[list[int]] | None = None
        self.flags = ""
        #: extended attributes read on that descriptor too (None: not read yet)
        self.xattrs: dict[str, bytes] | None = None

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        if self.data is not None:
            yield _BytesSource(self.data)
            return
        fd = os.open(str(self.path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as handle:
            yield handle


def stat_stable(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )


def _unchanged(cached: dict[str, Any] | None, info: os.stat_result, immutable: bool = False) -> bool:
    """Whether a file is the one the cached entry describes (size, mtime, ctime, inode).

    ``immutable``: a file its application never rewrites in place (RocksDB's SST and blob files,
    whose names are never reused): the ctime is not compared, since making a hard-linked checkpoint
    changes it without touching the content.
    """
    return bool(
        cached
        and cached.get("type") == "file"
        and not cached.get("changed")
        and cached.get("size") == info.st_size
        and cached.get("mtime_ns") == info.st_mtime_ns
        and (immutable or cached.get("ctime_ns") == info.st_ctime_ns)
        and cached.get("ino") == info.st_ino
    )


#: what an unchanged file's entry takes from the cached one (its content and its ctime-guarded attributes)
_KEPT = ("size", "sha256", "object", "sealed_size", "sealed_sha256", "xattrs", "sparse", "not_kept")


#: the keys of a cached file entry whose line is written again as it is when the file is unchanged
_VERBATIM = frozenset(("path", "type", "mode", "uid", "gid", "mtime_ns", "ino", "ctime_ns", "offset", *_KEPT))


#: the keys of a cached directory entry whose line is written again as it is when the directory is unchanged
_DIR_VERBATIM = frozenset(("path", "type", "mode", "uid", "gid", "mtime_ns", "ino", "ctime_ns", "xattrs"))


class PackedContents:
    """Where packed contents are: content SHA-256 -> (pack, offset, sealed size, sealed SHA-256), compact.

    What a backup keeps per packed file it may find again (a moved or copied small file is not stored
    twice): the 32-byte digest, the pack's number and the offset in flat arrays, and a slot in an
    open-addressing table of 4-byte record numbers (at most half full), about 56-72 bytes per content
    instead of a dict entry, a key string and a tuple (about 250); each pack's name and sealed facts are
    kept once.
    """

    def __init__(self) -> None:
        self.digests = bytearray()
        self.pack_of = array.array("I")
        self.offsets = array.array("Q")
        self.packs: list[tuple[str, int, str]] = []
        self.pack_number: dict[tuple[str, int, str], int] = {}
        self.table = array.array("i", [-1]) * 1024
        self.mask = 1023

    def __len__(self) -> int:
        return len(self.offsets)

    def _slot(self, digest: bytes) -> int:
        """The slot holding ``digest``, or the free slot where it goes."""
        table, digests, mask = self.table, self.digests, self.mask
        slot = hash(digest) & mask  # bytes hash in C (per process), cached on the digest object
        while True:
            record = table[slot]
            if record < 0 or digests[record * 32 : record * 32 + 32] == digest:
                return slot
            slot = (slot + 1) & mask

    def get(self, sha256: str) -> tuple[str, int, int, str] | None:
        record = self.table[self._slot(bytes.fromhex(sha256))]
        if record < 0:
            return None
        name, sealed_size, sealed_sha256 = self.packs[self.pack_of[record]]
        return name, self.offsets[record], sealed_size, sealed_sha256

    def put(self, sha256: str, place: tuple[str, int, int, str]) -> None:
        """Record where a content is (the first record of a content is kept)."""
        digest = bytes.fromhex(sha256)
        name, offset, sealed_size, sealed_sha256 = place
        slot = self._slot(digest)
        if self.table[slot] >= 0:
            return
        facts = (name, int(sealed_size), sealed_sha256)
        number = self.pack_number.get(facts)
        if number is None:
            number = self.pack_number[facts] = len(self.packs)
            self.packs.append(facts)
        record = len(self.offsets)
        self.digests += digest
        self.pack_of.append(number)
        self.offsets.append(int(offset))
        self.table[slot] = record
        if 2 * (record + 1) > self.mask:
            self._grow()

    def _grow(self) -> None:
        size = 2 * (self.mask + 1)
        table, mask, digests = array.array("i", [-1]) * size, size - 1, self.digests
        for record in range(len(self.offsets)):
            slot = hash(bytes(digests[record * 32 : record * 32 + 32])) & mask
            while table[slot] >= 0:
                slot = (slot + 1) & mask
            table[slot] = record
        self.table, self.mask = table, mask

    def memory(self) -> int:
        """Bytes held by the records and the table (not the pack names)."""
        return (
            len(self.digests) + self.pack_of.itemsize * len(self.pack_of) + 8 * len(self.offsets) + 4 * len(self.table)
        )
