"""assets/_rocksdb_db.py: what is a RocksDB directory, its newest OPTIONS, who holds its LOCK (a real process,
named) and that a closed DB is kept closed while it is copied, the copy linking only immutable files, and
commands given as a string or a list."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tree_helpers import fake_db

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _rocksdb_db
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError


def test_db_problem(tmp_path):
    db = fake_db(tmp_path / "db")
    assert _rocksdb_db.db_problem(str(db)) is None
    assert "does not exist" in _rocksdb_db.db_problem(str(tmp_path / "nope"))
    assert "not a directory" in _rocksdb_db.db_problem(str(db / "CURRENT"))
    assert "no CURRENT" in _rocksdb_db.db_problem(str(tmp_path))
    (db / "CURRENT").write_text("garbage\n")
    assert "not a MANIFEST" in _rocksdb_db.db_problem(str(db))
    (db / "CURRENT").write_text("MANIFEST-000099\n")
    assert "missing" in _rocksdb_db.db_problem(str(db))


def test_options_facts_reads_the_newest_options_file(tmp_path):
    db = fake_db(tmp_path / "db")
    assert _rocksdb_db.options_facts(str(db)) == {"rocksdb_version": "7.8.3", "format_version": 5}
    assert _rocksdb_db.options_facts(str(tmp_path)) == {}


_LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_holder_names_the_process_and_hold_closed_refuses(tmp_path):
    db = fake_db(tmp_path / "db")
    assert _rocksdb_db.lock_holder(str(db)) is None
    proc = subprocess.Popen(
        [sys.executable, "-c", _LOCKER, str(db / "LOCK")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout.readline().strip() == b"locked"
        holder = _rocksdb_db.lock_holder(str(db))
        assert holder["pid"] == proc.pid and "_LOCKER" not in holder["process"] and "lockf" in holder["process"]
        with pytest.raises(CaptureError, match="process %d" % proc.pid), _rocksdb_db.hold_closed(str(db)):
            pass
    finally:
        proc.stdin.close()
        proc.wait()
    with _rocksdb_db.hold_closed(str(db)):
        # while held, the owner cannot take its exclusive lock: it cannot open the DB mid-copy
        out = subprocess.run(
            [sys.executable, "-c", _LOCKER, str(db / "LOCK")],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        assert out.returncode != 0 and b"Resource temporarily unavailable" in out.stderr
    assert _rocksdb_db.lock_holder(str(db)) is None


def test_copy_links_only_immutable_files(tmp_path):
    db = fake_db(tmp_path / "db")
    stats = _rocksdb_db.copy_db_tree(str(db), str(tmp_path / "copy"))
    assert stats["files"] == 7 and stats["linked"] == 1
    assert os.path.samefile(db / "000007.sst", tmp_path / "copy" / "000007.sst")
    assert not os.path.samefile(db / "000008.log", tmp_path / "copy" / "000008.log")
    assert (tmp_path / "copy" / "LOCK").read_bytes() == b""
    with pytest.raises(FileExistsError):
        _rocksdb_db.copy_db_tree(str(db), str(tmp_path / "copy"))


def test_command_argv():
    assert _rocksdb_db.command_argv(["a", 1], "x") == ["a", "1"]
    assert _rocksdb_db.command_argv("a 'b c'", "x") == ["a", "b c"]
    for bad in ("", [], None, "  "):
        with pytest.raises(CaptureError, match="is empty"):
            _rocksdb_db.command_argv(bad, "stop_command")
