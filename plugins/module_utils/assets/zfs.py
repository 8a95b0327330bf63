# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``zfs`` asset type: a dataset's snapshot stream, incremental on the previous epoch."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import os
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._snapshot import SnapshotAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    RESTORE_PARENT,
    snapshot_command,
    snapshot_process,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs


class ZfsAssetType(SnapshotAssetType):
    """A ZFS dataset: ``path`` is its mountpoint (``dataset`` may name it); ``recursive`` sends its children too."""

    name = "zfs"
    extension = ".zfs"
    content_format = "zfs-send"
    options: ClassVar[dict[str, Any]] = dict(SnapshotAssetType.options, dataset=None, recursive=False)

    def backend(self):
        return Zfs()

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        if not asset.get("path") and asset.get("dataset"):
            # docs/snapshots.md: path is the dataset's mountpoint, "or set dataset: tank/animica"
            dataset = str(asset["dataset"])
            fs = self.backend()
            if not fs.exists(dataset):
                raise CaptureError(
                    "asset %s: the ZFS dataset %s does not exist" % (asset.get("name"), dataset),
                    "check the dataset name (zfs list)",
                )
            mountpoint = fs.mountpoint(dataset)
            if not os.path.isabs(mountpoint):
                raise CaptureError(
                    "asset %s: the ZFS dataset %s is not mounted (mountpoint %s)"
                    % (asset.get("name"), dataset, mountpoint),
                    "mount it (zfs mount %s) or give path" % dataset,
                )
            asset = dict(asset, path=mountpoint)
        return super().normalize(asset)

    def resolve(self, fs, asset: dict[str, Any]) -> str:
        if asset.get("dataset"):
            if not fs.exists(str(asset["dataset"])):
                raise CaptureError(
                    "asset %s: the ZFS dataset %s does not exist" % (asset["name"], asset["dataset"]),
                    "check the dataset name (zfs list)",
                )
            return str(asset["dataset"])
        dataset = fs.volume_for(asset["path"])
        if not dataset:
            raise CaptureError(
                "asset %s: no ZFS dataset is mounted at %s" % (asset["name"], asset["path"]),
                "give path the dataset's mountpoint, or set dataset: pool/name",
            )
        return dataset

    def list_snaps(self, fs, volume, asset):
        return fs.snapshots(volume)

    def find_snap(self, fs, volume, name, asset):
        return fs.snapshot(volume, name)

    def make_snap(self, fs, volume, name, asset):
        return fs.create(volume, name, recursive=bool(asset.get("recursive")))

    def _staging_dataset(self, fs, target: str, artifact: Artifact) -> str:
        holder = fs.dataset_holding(os.path.dirname(target))
        source = str((artifact.source.get("snapshot") or {}).get("volume") or "")
        pool = (holder[0] if holder else source).split("/", 1)[0]
        if not pool or not fs.exists(pool):
            raise RestoreError(
                "no ZFS pool to receive %s into (the staging path is not on ZFS and pool %s is absent)"
                % (artifact.name, pool or "?"),
                "restore onto a host with a ZFS pool: the staging root on a dataset, or the source pool imported",
            )
        leaf = source.rsplit("/", 1)[-1] or artifact.name
        digest = hashlib.sha256(target.encode("utf-8")).hexdigest()[:8]
        return "%s/%s/%s-%s" % (pool, RESTORE_PARENT, leaf, digest)

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        artifact = getattr(context, "artifact", None)
        if artifact is None:
            raise RestoreError("a zfs artifact is restored through epoch_restore", "use epoch_restore")
        fs = self.backend()
        verifying = getattr(context, "scratch", None) is not None
        links = self._links(artifact, context)
        if os.path.lexists(target):
            if not (os.path.isdir(target) and not os.path.islink(target) and not os.listdir(target)):
                raise RestoreError(
                    "the restore target %s already exists" % target,
                    "restore into an empty staging path; a received dataset is never mounted over existing data",
                )
            os.rmdir(target)
        staging = self._staging_dataset(fs, target, artifact)
        parent = staging.rsplit("/", 1)[0]
        if not fs.exists(parent):
            snapshot_command(["zfs", "create", "-o", "mountpoint=none", parent], "creating %s" % parent)
        if fs.exists(staging):
            if not force:
                raise RestoreError(
                    "the staging dataset %s already exists (an earlier restore to %s)" % (staging, target),
                    "destroy it (zfs destroy -r %s) or set nodekeep_restore_force: true" % staging,
                )
            fs.destroy_dataset(staging, recursive=True)
        recursive = bool(artifact.source.get("recursive"))
        done = False
        state: dict[str, Any] = {"scratch": getattr(context, "scratch", None)}
        try:
            for link in links:
                receiver = snapshot_process(
                    fs.receive_argv(staging, True, recursive), "zfs receive into %s" % staging, stdin=PIPE
                )
                try:
                    self._feed_link(context, link, receiver.proc.stdin, staging)
                    receiver.finish()
                except BrokenPipeError:
                    receiver.finish()
                    raise
                finally:
                    receiver.close()
            receiver = snapshot_process(
                fs.receive_argv(staging, bool(links), recursive), "zfs receive into %s" % staging, stdin=PIPE
            )

            def complete() -> dict[str, Any]:
                receiver.finish()
                name = str((artifact.source.get("snapshot") or {}).get("name"))
                received = fs.snapshot(staging, name)
                state["received"] = received.guid if received else None
                snapshot_command(["zfs", "set", "mountpoint=%s" % target, staging], "mounting %s" % staging)
                if fs.property(staging, "mounted")[0] != "yes":
                    snapshot_command(["zfs", "mount", staging], "mounting %s" % staging)
                state["dataset"] = staging
                self._staged[target] = state
                return {"dataset": staging, "snapshot": "%s@%s" % (staging, name)}

            try:
                yield _assets.Staged(target, receiver.proc.stdin, complete=complete)
            finally:
                receiver.close()
            done = not verifying
        finally:
            self._staged.pop(target, None)
            if not done and fs.exists(staging):
                fs.destroy_dataset(staging, recursive=True, check=False)
                with contextlib.suppress(OSError):
                    os.rmdir(target)
