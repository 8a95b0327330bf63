# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The asset registry: asset type name -> asset type, a plain mapping built from plain imports.

This module and ``storage.opener`` are the only places that name concrete implementations: the
backup, verify, restore, copy and prune flows look an asset type up here by the ``type`` an
inventory (or a signed manifest) names. A new asset type is one file in ``assets/`` and one line
below.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets._rocksdb_pieces import IncrementalRocksdbAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._sqlite_pages import IncrementalSqliteAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import AssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.btrfs import BtrfsAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.config import ConfigAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.files import FilesAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.postgres import PostgresAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.secret import SecretAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.zfs import ZfsAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

ASSET_TYPES: dict[str, AssetType] = {
    kind.name: kind
    for kind in (
        IncrementalSqliteAssetType(),  # sqlite, with its incremental layout (docs/incremental.md)
        IncrementalRocksdbAssetType(),  # rocksdb, with its incremental layout (docs/incremental.md)
        ZfsAssetType(),
        BtrfsAssetType(),
        FilesAssetType(),
        SecretAssetType(),
        ConfigAssetType(),
        PostgresAssetType(),
    )
}


def asset_type(name: str) -> AssetType:
    try:
        return ASSET_TYPES[name]
    except KeyError:
        raise CaptureError("unknown asset type %r" % (name,), "use one of: %s" % ", ".join(sorted(ASSET_TYPES)))


def normalize_assets(assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate an inventory's ``nodekeep_assets`` list; names must be unique."""
    if not assets:
        raise CaptureError("no assets were given", "list this node's data in nodekeep_assets")
    normalized = []
    seen = set()
    for index, asset in enumerate(assets):
        if not isinstance(asset, dict):
            raise CaptureError("nodekeep_assets entry #%d is not a mapping" % (index + 1), "give name, type and path")
        for key in ("name", "type", "path"):
            # a zfs asset may name its dataset instead of its path (the mountpoint is read then)
            if not asset.get(key) and not (key == "path" and asset.get("type") == "zfs" and asset.get("dataset")):
                raise CaptureError(
                    "nodekeep_assets entry #%d has no %s" % (index + 1, key), "give name, type and path for every asset"
                )
        item = asset_type(str(asset["type"])).normalize(asset)
        if item["name"] in seen:
            raise CaptureError("two assets are named %s" % item["name"], "asset names must be unique per node")
        seen.add(item["name"])
        normalized.append(item)
    return normalized
