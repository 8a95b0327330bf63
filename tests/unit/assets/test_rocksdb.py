"""Pure logic of the rocksdb asset type: options, recognising a DB directory, LOCK probing, facts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _rocksdb_db, rocksdb
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import ASSET_TYPES, asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError


def fake_db(path, manifest="MANIFEST-000005"):
    path.mkdir(parents=True)
    (path / "CURRENT").write_text(manifest + "\n")
    (path / manifest).write_bytes(b"\0" * 10)
    (path / "LOCK").write_bytes(b"")
    (path / "000007.sst").write_bytes(b"sst" * 100)
    (path / "000008.log").write_bytes(b"wal")
    (path / "OPTIONS-000009").write_text(
        "[Version]\n  rocksdb_version=7.8.3\n  options_file_version=1.1\n"
        '[TableOptions/BlockBasedTable "default"]\n  format_version=5\n'
    )
    (path / "OPTIONS-000004").write_text("[Version]\n  rocksdb_version=6.0.0\n")
    return path


def test_registered():
    assert "rocksdb" in ASSET_TYPES
    kind = asset_type("rocksdb")
    assert isinstance(kind, rocksdb.RocksdbAssetType)
    assert kind.artifact_file({"name": "chain"}) == "chain.tar.zst.age"


@pytest.mark.parametrize(
    ("options", "method"),
    [
        ({"checkpoint_command": "app ckpt {dest}"}, "checkpoint_command"),
        ({"service": "chain"}, "stop"),
        ({"stop_command": ["a"], "start_command": ["b"]}, "stop"),
        ({"snapshot": "btrfs"}, "snapshot"),
        ({"method": "offline", "service": "chain"}, "offline"),
    ],
)
def test_method_is_inferred_or_explicit(options, method):
    assert rocksdb.infer_method(options) == method


def test_normalize_checks_options():
    kind = asset_type("rocksdb")
    base = {"name": "db", "type": "rocksdb", "path": "/var/lib/db"}
    normalized = kind.normalize(dict(base, checkpoint_command="app 'check point' --out {dest}"))
    assert normalized["checkpoint_command"] == ["app", "check point", "--out", "{dest}"]
    assert normalized["count_keys"] is False and normalized["stop_timeout"] == 120
    problems = [
        ({}, "no RocksDB method"),
        ({"method": "rsync"}, "method must be one of"),
        ({"method": "checkpoint_command"}, "needs checkpoint_command"),
        ({"checkpoint_command": "app ckpt /tmp/x"}, "{dest}"),
        ({"checkpoint_command": "app 'unclosed {dest}"}, "cannot be parsed"),
        ({"method": "stop"}, "needs service"),
        ({"method": "stop", "stop_command": "x"}, "go together"),
        ({"method": "offline", "copy_dir": "relative"}, "absolute"),
        ({"method": "offline", "copy_dir": "/var/lib/db/sub"}, "inside the database"),
        ({"method": "offline", "verify": "maybe"}, "verify must be"),
        ({"method": "offline", "stop_timeout": 0}, "stop_timeout 0 is out of range: give 1 to 86400 seconds"),
        ({"method": "stop", "service": "x", "snapshot": "/srv"}, "goes with method snapshot"),
    ]
    for extra, needle in problems:
        with pytest.raises(CaptureError, match=None) as caught:
            kind.normalize(dict(base, **extra))
        assert needle in caught.value.message, (extra, caught.value.message)


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


def test_compare_facts():
    expected = {"column_families": ["default", "a"], "sequence": 10, "keys": {"default": 3, "a": 1}}
    assert rocksdb.compare_facts(expected, dict(expected, column_families=["a", "default"])) == []
    problems = rocksdb.compare_facts(expected, {"column_families": ["default"], "sequence": 9, "keys": {"default": 3}})
    assert len(problems) == 3
    assert rocksdb.compare_facts(expected, {"column_families": ["default", "a"]}) == []  # nothing counted: no claim


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
