# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite's write-ahead log, read from outside: the WAL file, its wal-index (``-shm``) header, frames.

Nothing here takes a lock or opens the database with SQLite: the replication
service reads the application's files with plain ``pread`` and never writes
them, so it can neither block nor corrupt the application. What makes raw
reads safe is the wal-index header: SQLite publishes ``mxFrame`` (the last
committed frame) there only after the frames are written, and a WAL reset
publishes new salts there *before* any frame of the new generation is written.
So frames ``<= mxFrame`` read between two reads of the same header (same
salts) are complete, committed and unchanged (see ``read_committed``).

Formats (https://www.sqlite.org/fileformat2.html#walformat): the WAL header is
32 bytes (magic, version, page size, checkpoint sequence, salt-1, salt-2,
checksum-1, checksum-2, big-endian), each frame a 24-byte header (page number,
database size in pages for a commit frame else 0, the two salts, the two
cumulative checksums) and one page.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
import struct
import sys
from dataclasses import dataclass

WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
SHM_HEADER_SIZE = 48
WAL_MAGIC = (0x377F0682, 0x377F0683)
MASK = 0xFFFFFFFF


def checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes) continuing from ``(s0, s1)``."""
    words = struct.unpack("%s%dI" % (">" if big_endian else "<", len(data) // 4), data)
    for index in range(0, len(words), 2):
        s0 = (s0 + words[index] + s1) & MASK
        s1 = (s1 + words[index + 1] + s0) & MASK
    return s0, s1


def page_size_of(value: int) -> int:
    return 65536 if value == 1 else value


@dataclass(frozen=True)
class WalHeader:
    big_endian: bool
    page_size: int
    checkpoint_seq: int
    salt: bytes
    cksum: tuple[int, int]


def parse_wal_header(data: bytes) -> WalHeader | None:
    """The header of a WAL file, or None when it is absent, short or its checksum is wrong."""
    if len(data) < WAL_HEADER_SIZE:
        return None
    magic, _version, page_size, seq, _s1, _s2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER_SIZE])
    if magic not in WAL_MAGIC:
        return None
    big_endian = bool(magic & 1)
    if checksum(data[:24], 0, 0, big_endian) != (c1, c2):
        return None
    return WalHeader(big_endian, page_size_of(page_size), seq, bytes(data[16:24]), (c1, c2))


@dataclass(frozen=True)
class IndexHeader:
    """The wal-index header SQLite keeps in ``-shm``: where the committed log ends."""

    change: int
    big_endian: bool
    page_size: int
    mx_frame: int
    n_page: int
    frame_cksum: tuple[int, int]
    salt: bytes


def read_index_header(shm_path: str, attempts: int = 50) -> IndexHeader | None:
    """The wal-index header, read without locks (two equal copies and a valid checksum), or None.

    None when there is no ``-shm`` (no connection has the database open) or it is not
    initialised. SQLite writes the second copy first and the first copy last, and
    readers compare them, as here: a header torn by a concurrent commit is retried.
    """
    try:
        fd = os.open(shm_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        return read_index_header_fd(fd, attempts)
    finally:
        os.close(fd)


def read_index_header_fd(fd: int, attempts: int = 50) -> IndexHeader | None:
    """As ``read_index_header`` from an open ``-shm``. A process that also has the database open with
    SQLite must keep this fd open: closing any fd of a file drops the process's POSIX locks on it,
    SQLite's read locks included."""
    for _attempt in range(attempts):
        data = os.pread(fd, 2 * SHM_HEADER_SIZE, 0)
        if len(data) < 2 * SHM_HEADER_SIZE:
            return None
        first, second = data[:SHM_HEADER_SIZE], data[SHM_HEADER_SIZE:]
        if first != second:
            continue
        order = "<" if sys.byteorder == "little" else ">"
        (_version, _unused, change, is_init, big_end, size, mx_frame, n_page, fc1, fc2) = struct.unpack(
            order + "3IBBH4I", first[:32]
        )
        if not is_init:
            return None
        h1, h2 = struct.unpack(order + "2I", first[40:48])
        if checksum(first[:40], 0, 0, sys.byteorder == "big") != (h1, h2):
            continue
        return IndexHeader(change, bool(big_end), page_size_of(size), mx_frame, n_page, (fc1, fc2), first[32:40])
    return None


def read_backfill_fd(fd: int) -> int | None:
    """``nBackfill`` of the wal-index (how many frames a checkpoint has copied into the database), read
    without locks from an open ``-shm``; None when the file is too short. Once it reaches ``mxFrame`` the
    next writer restarts the log (unless a reader holds a read mark above 0)."""
    data = os.pread(fd, 4, 2 * SHM_HEADER_SIZE)
    if len(data) < 4:
        return None
    return int.from_bytes(data, sys.byteorder)


def frame_offset(index: int, page_size: int) -> int:
    """Byte offset of frame ``index`` (1-based) in the WAL file."""
    return WAL_HEADER_SIZE + (index - 1) * (FRAME_HEADER_SIZE + page_size)


@dataclass(frozen=True)
class Frame:
    pgno: int
    db_size: int  # pages after the commit for a commit frame, else 0
    salt: bytes
    cksum: tuple[int, int]


def parse_frame_header(data: bytes) -> Frame:
    pgno, db_size = struct.unpack(">2I", data[:8])
    c1, c2 = struct.unpack(">2I", data[16:24])
    return Frame(pgno, db_size, bytes(data[8:16]), (c1, c2))


def iter_frames(data: bytes, page_size: int):
    """(offset, Frame) of each frame in a run of frames."""
    step = FRAME_HEADER_SIZE + page_size
    for offset in range(0, len(data) - step + 1, step):
        yield offset, parse_frame_header(data[offset : offset + FRAME_HEADER_SIZE])


def read_frames(wal_fd: int, page_size: int, first: int, last: int, salt: bytes) -> bytes | None:
    """Frames ``first..last`` (1-based, inclusive) as they are in the file; None when one is missing
    or carries other salts (the log was reset under the read)."""
    if last < first:
        return b""
    step = FRAME_HEADER_SIZE + page_size
    length = (last - first + 1) * step
    start = frame_offset(first, page_size)
    chunks = []
    got = 0
    while got < length:
        chunk = os.pread(wal_fd, min(length - got, 8 << 20), start + got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    data = b"".join(chunks)
    for offset in range(0, length, step):
        if data[offset + 8 : offset + 16] != salt:
            return None
    return data


def scan_valid(wal_fd: int, page_size: int, first: int, salt: bytes, cksum: tuple[int, int], big_endian: bool):
    """SQLite's own recovery rule from frame ``first`` on: frames whose salts match and whose cumulative
    checksum continues from ``cksum``. Returns (frames bytes through the last commit frame, number of
    those frames, the checksum after them, why the scan stopped: ``eof``, ``partial`` or ``invalid``)."""
    step = FRAME_HEADER_SIZE + page_size
    index = first
    good = []
    committed_len = 0
    committed_cksum = cksum
    running = cksum
    while True:
        data = os.pread(wal_fd, step, frame_offset(index, page_size))
        if len(data) < step:
            # A clean end of file is where SQLite stopped appending; a partial frame there means the
            # file was cut (journal_size_limit truncates to a byte size, not to a frame boundary).
            stop = "eof" if not data else "partial"
            break
        frame = parse_frame_header(data)
        if frame.salt != salt or frame.pgno == 0:
            stop = "invalid"
            break
        running = checksum(data[:8] + data[FRAME_HEADER_SIZE:], running[0], running[1], big_endian)
        if running != frame.cksum:
            stop = "invalid"
            break
        good.append(data)
        if frame.db_size:
            committed_len = len(good)
            committed_cksum = running
        index += 1
    return b"".join(good[:committed_len]), committed_len, committed_cksum, stop


def is_wal_database(path: str) -> bool:
    """True when the database file's header says WAL (file format read/write versions 2)."""
    with open(path, "rb") as handle:
        head = handle.read(100)
    return len(head) >= 20 and head[:16] == b"SQLite format 3\x00" and head[18] == 2 and head[19] == 2


def apply_frames(fd: int, data: bytes, page_size: int, upto: int | None = None) -> int | None:
    """Write the pages of the first ``upto`` frames (all when None) of ``data`` into the database open
    as ``fd``; returns the database size in pages of the last commit frame applied (None if none)."""
    step = FRAME_HEADER_SIZE + page_size
    count = len(data) // step if upto is None else upto
    size = None
    for number in range(count):
        offset = number * step
        frame = parse_frame_header(data[offset : offset + FRAME_HEADER_SIZE])
        os.pwrite(fd, data[offset + FRAME_HEADER_SIZE : offset + step], (frame.pgno - 1) * page_size)
        if frame.db_size:
            size = frame.db_size
    return size
