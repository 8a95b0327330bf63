"""core/wal.py: a live SQLite WAL read from outside (no lock, no SQLite): headers, the committed frames
by SQLite's own recovery rule, and those frames applied to the database file give the committed state."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import wal


@pytest.fixture
def live(tmp_path):
    """A WAL database with 3 committed transactions still in its log (no checkpoint), held open."""
    path = tmp_path / "live.db"
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    base = tmp_path / "base.db"
    shutil.copyfile(path, base)  # the database file before the log's frames
    for start in (0, 100, 200):
        db.execute("BEGIN")
        db.executemany("INSERT INTO t VALUES (?, ?)", ((i, os.urandom(300)) for i in range(start, start + 100)))
        db.execute("COMMIT")
    yield path, base, db
    db.close()


def wal_state(path):
    header = wal.parse_wal_header((path.parent / (path.name + "-wal")).read_bytes()[: wal.WAL_HEADER_SIZE])
    index = wal.read_index_header(str(path) + "-shm")
    return header, index


def test_headers_agree_with_sqlite(live):
    path, _base, db = live
    header, index = wal_state(path)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    assert header is not None and header.page_size == page_size == index.page_size
    assert index.salt == header.salt and index.mx_frame > 0
    assert wal.is_wal_database(str(path))


def test_committed_frames_rebuild_the_committed_state(live, tmp_path):
    path, base, _db = live
    header, index = wal_state(path)
    fd = os.open(str(path) + "-wal", os.O_RDONLY)
    try:
        frames, count, cksum, stop = wal.scan_valid(
            fd, header.page_size, 1, header.salt, header.cksum, header.big_endian
        )
        assert (count, stop) == (index.mx_frame, "eof") and cksum == index.frame_cksum
        assert wal.read_frames(fd, header.page_size, 1, count, header.salt) == frames
        assert wal.read_frames(fd, header.page_size, 1, count, b"\0" * 8) is None  # other salts: a reset log
    finally:
        os.close(fd)
    copy = tmp_path / "copy.db"
    shutil.copyfile(base, copy)
    out = os.open(str(copy), os.O_RDWR)
    try:
        pages = wal.apply_frames(out, frames, header.page_size)
        os.ftruncate(out, pages * header.page_size)
    finally:
        os.close(out)
    check = sqlite3.connect("file:%s?immutable=1" % copy, uri=True)
    try:
        assert check.execute("SELECT count(*) FROM t").fetchone()[0] == 300
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        check.close()


def test_a_damaged_frame_ends_the_valid_log(live, tmp_path):
    path, _base, _db = live
    header, index = wal_state(path)
    data = bytearray((path.parent / (path.name + "-wal")).read_bytes())
    middle = wal.frame_offset(index.mx_frame // 2 + 1, header.page_size) + wal.FRAME_HEADER_SIZE + 100
    data[middle] ^= 0xFF
    damaged = tmp_path / "damaged-wal"
    damaged.write_bytes(bytes(data))
    fd = os.open(str(damaged), os.O_RDONLY)
    try:
        _frames, count, _cksum, stop = wal.scan_valid(
            fd, header.page_size, 1, header.salt, header.cksum, header.big_endian
        )
    finally:
        os.close(fd)
    assert stop == "invalid" and count < index.mx_frame


def test_a_bad_header_is_none():
    assert wal.parse_wal_header(b"") is None
    assert wal.parse_wal_header(b"\0" * wal.WAL_HEADER_SIZE) is None
    assert wal.page_size_of(1) == 65536 and wal.page_size_of(4096) == 4096


def test_backfill_is_what_the_last_checkpoint_copied(live):
    """nBackfill read from -shm is the number of frames SQLite's own checkpoint reports copied: 0 before any,
    the whole log after a complete one (the next writer then restarts the log)."""
    path, _base, db = live
    with open(str(path) + "-shm", "rb") as shm:
        assert wal.read_backfill_fd(shm.fileno()) == 0
        busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and copied == frames > 0
        assert wal.read_backfill_fd(shm.fileno()) == copied == wal.read_index_header(str(path) + "-shm").mx_frame
    empty = path.parent / "short-shm"
    empty.write_bytes(b"\0" * 50)
    with open(empty, "rb") as handle:
        assert wal.read_backfill_fd(handle.fileno()) is None
