"""Pure logic of the rocksdb asset type: options, methods, facts (the DB directory and its LOCK: test_rocksdb_db.py)."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import rocksdb
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import ASSET_TYPES, asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError


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


def test_compare_facts():
    expected = {"column_families": ["default", "a"], "sequence": 10, "keys": {"default": 3, "a": 1}}
    assert rocksdb.compare_facts(expected, dict(expected, column_families=["a", "default"])) == []
    problems = rocksdb.compare_facts(expected, {"column_families": ["default"], "sequence": 9, "keys": {"default": 3}})
    assert len(problems) == 3
    assert rocksdb.compare_facts(expected, {"column_families": ["default", "a"]}) == []  # nothing counted: no claim
