# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``btrfs`` asset type: a subvolume's snapshot stream, incremental on the previous epoch."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import tempfile
import uuid
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._snapshot import SnapshotAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    mount_of,
    snapshot_command,
    snapshot_process,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.volumes import prune_snapshots


class BtrfsAssetType(SnapshotAssetType):
    """A btrfs subvolume (``path``); snapshots go to ``snapshot_dir`` (default: ``.nodekeep-snapshots`` beside it)."""

    name = "btrfs"
    extension = ".btrfs"
    content_format = "btrfs-send"
    options: ClassVar[dict[str, Any]] = dict(SnapshotAssetType.options, snapshot_dir=None)

    def backend(self):
        return Btrfs()

    def resolve(self, fs, asset: dict[str, Any]) -> str:
        volume = fs.volume_for(asset["path"])
        if not volume:
            raise CaptureError(
                "asset %s: %s is not a btrfs subvolume" % (asset["name"], asset["path"]),
                "give path a btrfs subvolume (btrfs subvolume create), or use a files asset",
            )
        return volume

    def list_snaps(self, fs, volume, asset):
        return fs.snapshots(volume, Btrfs.snapshot_dir(volume, asset))

    def find_snap(self, fs, volume, name, asset):
        return fs.snapshot(volume, name, Btrfs.snapshot_dir(volume, asset))

    def make_snap(self, fs, volume, name, asset):
        return fs.create(volume, name, snapshot_dir=Btrfs.snapshot_dir(volume, asset))

    def prune(self, fs, volume, asset, policy, protect) -> dict[str, Any]:
        return prune_snapshots(
            fs, volume, policy, asset["prefix"], protect, snapshot_dir=Btrfs.snapshot_dir(volume, asset)
        )

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        artifact = getattr(context, "artifact", None)
        if artifact is None:
            raise RestoreError("a btrfs artifact is restored through epoch_restore", "use epoch_restore")
        fs = self.backend()
        verifying = getattr(context, "scratch", None) is not None
        links = self._links(artifact, context)
        if os.path.lexists(target):
            raise RestoreError(
                "the restore target %s already exists" % target,
                "restore into an empty staging path; nothing was overwritten",
            )
        parent = os.path.dirname(target)
        source = artifact.source.get("snapshot") or {}
        if mount_of(parent)["fstype"] != "btrfs":
            if not verifying:
                raise RestoreError(
                    "the staging path %s is not on btrfs: a btrfs stream can only be received into btrfs" % parent,
                    "restore into a staging root on a btrfs filesystem",
                )
            parent = os.path.dirname(str(source.get("path") or ""))
            if not parent or mount_of(parent)["fstype"] != "btrfs":
                raise RestoreError(
                    "no btrfs filesystem to receive %s into for the check" % artifact.name,
                    "deep-check it on the node that made it, or restore it into a btrfs staging root",
                )
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, "creating the restore directory", parent)
        incoming = tempfile.mkdtemp(prefix=".nodekeep-receive-", dir=parent)
        placed = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(target), uuid.uuid4().hex[:8]))
        state: dict[str, Any] = {"scratch": getattr(context, "scratch", None)}
        done = False
        try:
            for link in links:
                receiver = snapshot_process(["btrfs", "receive", "-e", incoming], "btrfs receive", stdin=PIPE)
                try:
                    self._feed_link(context, link, receiver.proc.stdin, incoming)
                    receiver.finish()
                finally:
                    receiver.close()
            receiver = snapshot_process(["btrfs", "receive", "-e", incoming], "btrfs receive", stdin=PIPE)

            def complete() -> dict[str, Any]:
                receiver.finish()
                leaf = os.path.basename(str(source.get("path") or ""))
                received = os.path.join(incoming, leaf)
                info = fs.show(received) or {}
                state["received"] = info.get("received uuid")
                snapshot_command(
                    ["btrfs", "subvolume", "snapshot", received, placed], "making the restored subvolume writable"
                )
                state["subvolume"] = target
                self._staged[placed] = state
                return {"subvolume": target}

            try:
                yield _assets.Staged(placed, receiver.proc.stdin, complete=complete)
            finally:
                receiver.close()
            if not verifying:
                try:
                    os.rename(placed, target)
                except OSError as exc:
                    raise describe_os_error(exc, "placing the restored subvolume", target)
            done = True
        finally:
            self._staged.pop(placed, None)
            if os.path.isdir(incoming):
                for entry in os.listdir(incoming):
                    fs.delete_subvolume(os.path.join(incoming, entry))
                with contextlib.suppress(OSError):
                    os.rmdir(incoming)
            if (not done or verifying) and os.path.isdir(placed):
                fs.delete_subvolume(placed)
