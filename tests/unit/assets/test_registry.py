"""assets/registry.py: the one mapping from an asset type's name to its implementation, and asset validation."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import registry
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import AssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError


def test_every_documented_type_is_registered_under_its_own_name():
    assert set(registry.ASSET_TYPES) == {"sqlite", "rocksdb", "zfs", "btrfs", "files", "secret", "config", "postgres"}
    for name, kind in registry.ASSET_TYPES.items():
        assert isinstance(kind, AssetType) and kind.name == name
        assert registry.asset_type(name) is kind


def test_an_unknown_type_lists_the_known_ones():
    with pytest.raises(CaptureError, match="unknown asset type 'mysql': use one of: btrfs, config, files"):
        registry.asset_type("mysql")


class TestNormalize:
    def test_a_valid_list(self, tmp_path):
        db = tmp_path / "a.db"
        db.write_bytes(b"")
        assets = registry.normalize_assets([{"name": "chain", "type": "sqlite", "path": str(db)}])
        assert [(a["name"], a["type"], a["path"]) for a in assets] == [("chain", "sqlite", str(db))]

    def test_empty(self):
        with pytest.raises(CaptureError, match="no assets were given: list this node's data in nodekeep_assets"):
            registry.normalize_assets([])

    @pytest.mark.parametrize(
        ("entry", "words"),
        [
            ("chain.db", "entry #1 is not a mapping"),
            ({"type": "sqlite", "path": "/x"}, "entry #1 has no name"),
            ({"name": "a", "path": "/x"}, "entry #1 has no type"),
            ({"name": "a", "type": "files"}, "entry #1 has no path"),
        ],
    )
    def test_incomplete_entries(self, entry, words):
        with pytest.raises(CaptureError, match=words):
            registry.normalize_assets([entry])

    def test_names_are_unique(self, tmp_path):
        entry = {"name": "same", "type": "files", "path": str(tmp_path)}
        with pytest.raises(CaptureError, match="two assets are named same"):
            registry.normalize_assets([entry, dict(entry)])
