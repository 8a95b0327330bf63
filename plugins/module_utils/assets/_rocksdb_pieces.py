# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Incremental RocksDB epochs on the node's piece store (docs/incremental.md).

With ``incremental: true`` the verified copy is stored as a files tree of pieces, by the ``files``
asset type's own capture (one mechanism): SST and blob files once each, known by name, size, mtime
and inode on later epochs (a hard-linked checkpoint changes their ctime, never their content), so an
epoch reads and stores only new SST files and the small mutable ones (MANIFEST, OPTIONS, CURRENT,
WAL). The artifact is the sealed files index; restore rebuilds the directory with the files type and
runs the RocksDB deep check.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import rocksdb as _rocksdb
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.files import FilesAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

LAYOUT = "pieces"


class IncrementalRocksdbAssetType(_rocksdb.RocksdbAssetType):
    """The ``rocksdb`` asset type; with ``incremental: true`` its epochs are files on the node's piece store.

    Registered as ``rocksdb`` (assets.registry): the tar layout is the base class's, unchanged.
    """

    options: ClassVar[dict[str, Any]] = dict(_rocksdb.RocksdbAssetType.options, incremental=False, state_dir=None)
    #: files RocksDB never rewrites in place (their numbers are never reused)
    IMMUTABLE = ("*.sst", "*.blob")
    files = FilesAssetType()

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        if not isinstance(normalized.get("incremental"), bool):
            raise CaptureError(
                "asset %s: incremental must be true or false, not %r" % (normalized["name"], normalized["incremental"]),
                "set the asset's incremental in nodekeep_assets to a boolean",
            )
        if normalized.get("state_dir") is not None and not os.path.isabs(str(normalized["state_dir"])):
            raise CaptureError(
                "asset %s: state_dir %r is not absolute" % (normalized["name"], normalized["state_dir"]),
                "give an absolute directory such as /var/lib/nodekeep/files (the node's piece key lives there)",
            )
        return normalized

    @staticmethod
    def uses_pieces(artifact) -> bool:
        return artifact.source.get("layout") == LAYOUT

    def artifact_file(self, asset: dict[str, Any]) -> str:
        if asset.get("incremental"):
            return "%s.index.jsonl.zst.age" % asset["name"]
        return super().artifact_file(asset)

    def artifact_format_for(self, asset: dict[str, Any]) -> str:
        return "rocksdb+files-index+zstd+age" if asset.get("incremental") else self.artifact_format

    @contextlib.contextmanager
    def capture_copy(self, copy: str, asset: dict[str, Any], scratch_dir: str, context, facts: dict[str, Any]):
        if not asset.get("incremental"):
            with super().capture_copy(copy, asset, scratch_dir, context, facts) as captured:
                yield captured
            return
        tree = dict(
            asset,
            include=[],
            exclude=[],
            sample=0,
            immutable=list(self.IMMUTABLE),
            state_dir=asset.get("state_dir") or None,
        )
        with self.files.capture_root(copy, self.files.normalize(tree), scratch_dir, context, facts) as captured:
            captured.facts["layout"] = LAYOUT  # a files index of the copy, on the piece store
            yield captured

    def restore_tree(self, target: str, force: bool = False, context=None):
        artifact = getattr(context, "artifact", None)
        if artifact is not None and self.uses_pieces(artifact):
            return self.files.restore_into(target, force, context)
        return super().restore_tree(target, force, context)

    def extra_files(self, artifact) -> list[dict[str, Any]]:
        return self.files.extra_files(artifact) if self.uses_pieces(artifact) else []

    def object_references(self, repository, node: str, epoch: str, artifact) -> dict[str, Any]:
        return self.files.object_references(repository, node, epoch, artifact) if self.uses_pieces(artifact) else {}

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        return self.files.verify_extra(artifact, context, deep) if self.uses_pieces(artifact) else {}
