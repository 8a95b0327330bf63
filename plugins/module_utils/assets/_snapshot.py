# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private base of the zfs and btrfs asset types (incremental chains of snapshot streams)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RestoreError,
    check_range,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, Artifact, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    DEFAULT_PREFIX,
    Snap,
    check_prefix,
    compare_counts,
    compare_trees,
    snapshot_name,
    tree_stats,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.volumes import prune_snapshots


def _previous_artifact(context, asset_name: str) -> tuple[str, Artifact] | None:
    """The newest complete epoch before this one holding an artifact named ``asset_name``.

    The manifest is read without its signature (the node signs its own): what is taken
    from it (the base link's checksums) is re-recorded in this epoch's signed manifest and
    checked against the artifacts at restore, so a forged manifest cannot pass a restore.
    """
    if context is None or context.repository is None:
        return None
    repository = context.repository
    for epoch in reversed(repository.complete_epochs(context.node)):
        if epoch >= context.epoch:
            continue
        try:
            manifest = Manifest.from_bytes(
                repository.get_bytes(context.node, epoch, MANIFEST_NAME), context.node, epoch
            )
            return epoch, manifest.artifact(asset_name)
        except NodekeepError:
            continue
    return None


def _link(epoch: str, artifact: Artifact) -> dict[str, Any]:
    snap = artifact.source.get("snapshot") or {}
    return {
        "epoch": epoch,
        "file": artifact.file,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "content_size": artifact.content_size,
        "content_sha256": artifact.content_sha256,
        "snapshot": snap.get("name"),
        "guid": snap.get("guid") or snap.get("uuid"),
    }


# --------------------------------------------------------------------------
# the asset types
# --------------------------------------------------------------------------


class SnapshotAssetType(_assets.AssetType):
    """A dataset or subvolume sent as a snapshot stream: full, or incremental from the last one shipped."""

    name = "snapshot"
    extension = ".stream"
    # zfs/btrfs receive and mount at the target path themselves: it is walked for links just before
    pinned_restore = False

    options: ClassVar[dict[str, Any]] = {
        "prefix": DEFAULT_PREFIX,
        "full_every": 7,
        "count_files": True,
        "local_retention": {"keep_last": 2},
    }

    def backend(self):
        raise NotImplementedError

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        check_prefix(str(normalized["prefix"]))
        if normalized.get("snapshot"):
            raise CaptureError(
                "asset %s: a %s asset snapshots itself; snapshot: is for sqlite, rocksdb and files assets"
                % (normalized["name"], self.name),
                "remove snapshot: from it",
            )
        try:
            normalized["full_every"] = check_range(normalized["full_every"], "full_every", 0, 10000)
        except NodekeepError as exc:
            raise CaptureError("asset %s: %s" % (normalized["name"], exc.problem), exc.remedy)
        if normalized["local_retention"]:
            try:
                RetentionPolicy.from_options(dict(normalized["local_retention"]))
            except (NodekeepError, TypeError) as exc:
                raise CaptureError(
                    "asset %s: local_retention is not a valid policy (%s)" % (normalized["name"], exc),
                    "give keep_last/keep_hourly/keep_daily/keep_weekly/keep_monthly counts",
                )
        return normalized

    # ---- what differs between backends -----------------------------------

    def resolve(self, fs, asset: dict[str, Any]) -> str:
        raise NotImplementedError

    def list_snaps(self, fs, volume: str, asset: dict[str, Any]) -> list[Snap]:
        raise NotImplementedError

    def find_snap(self, fs, volume: str, name: str, asset: dict[str, Any]) -> Snap | None:
        raise NotImplementedError

    def make_snap(self, fs, volume: str, name: str, asset: dict[str, Any]) -> Snap:
        raise NotImplementedError

    # ---- capture ---------------------------------------------------------

    def _choose_base(self, fs, volume: str, asset: dict[str, Any], context) -> tuple[Any, list, str]:
        """(base snapshot or None, chain of earlier links, reason)."""
        previous = _previous_artifact(context, asset["name"])
        if previous is None:
            return None, [], "no earlier epoch holds this asset"
        epoch, artifact = previous
        if artifact.asset_type != self.name:
            return None, [], "the earlier artifact is of type %s" % artifact.asset_type
        source = artifact.source
        snap_facts = source.get("snapshot") or {}
        if snap_facts.get("volume") != volume:
            return None, [], "the earlier artifact came from %s" % snap_facts.get("volume")
        chain = list(source.get("chain") or []) + [_link(epoch, artifact)]
        if asset["full_every"] and len(chain) >= int(asset["full_every"]):
            return None, [], "full_every %d: the chain has %d links" % (asset["full_every"], len(chain))
        if bool(source.get("recursive")) != bool(asset.get("recursive")):
            return None, [], "recursive changed since the last send"
        wanted = snap_facts.get("guid") or snap_facts.get("uuid")
        base = self.find_snap(fs, volume, str(snap_facts.get("name")), asset)
        if base is not None and wanted and base.guid == str(wanted):
            return base, chain, "incremental from %s (epoch %s)" % (base.ident, epoch)
        if fs.kind == "zfs" and not asset.get("recursive"):
            guid = fs.bookmark_guid(volume, str(snap_facts.get("name")))
            if guid and guid == str(wanted):
                mark = "%s#%s" % (volume, snap_facts.get("name"))
                return mark, chain, "incremental from the bookmark %s (epoch %s)" % (mark, epoch)
        if base is None:
            return None, [], "the last shipped snapshot %s@%s is gone locally" % (volume, snap_facts.get("name"))
        return None, [], "the local snapshot %s has another guid than the one shipped" % base.ident

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        fs = self.backend()
        volume = self.resolve(fs, asset)
        epoch = context.epoch if context is not None else epoch_name()
        fs.clean_stale_sends(volume)
        base, chain, reason = self._choose_base(fs, volume, asset, context)
        snap = self.make_snap(fs, volume, snapshot_name(asset["prefix"], epoch), asset)
        recursive = bool(asset.get("recursive"))
        facts: dict[str, Any] = {
            "snapshot": snap.facts(),
            "send": "incremental" if base is not None else "full",
            "send_reason": reason,
            "recursive": recursive,
            "features": dict(fs.features),
        }
        if fs.kind == "btrfs":
            facts["snapshot_dir"] = Btrfs.snapshot_dir(volume, asset)
        if base is not None:
            base_name = base.name if isinstance(base, Snap) else base.split("#", 1)[1]
            facts["base"] = {"name": base_name, "guid": chain[-1].get("guid"), "epoch": chain[-1].get("epoch")}
            facts["chain"] = chain
        shipped = False
        try:
            if asset.get("count_files"):
                with fs.view(snap, scratch_dir) as view:
                    facts["tree"] = tree_stats(view)
            with fs.send(snap, base, recursive=recursive) as (stream, finish):
                yield _assets.Captured(stream, facts, finish=lambda: finish() or {})
            shipped = True
        finally:
            if not shipped:
                with contextlib.suppress(NodekeepError):
                    fs.destroy(snap, recursive=recursive)
        if fs.kind == "zfs" and not recursive:
            with contextlib.suppress(NodekeepError):
                fs.bookmark(snap)
        if asset.get("local_retention"):
            protect = {snap.name} | ({base.name} if isinstance(base, Snap) else set())
            with contextlib.suppress(NodekeepError):
                self.prune(fs, volume, asset, RetentionPolicy.from_options(dict(asset["local_retention"])), protect)

    def prune(self, fs, volume, asset, policy, protect) -> dict[str, Any]:
        return prune_snapshots(fs, volume, policy, asset["prefix"], protect, recursive=bool(asset.get("recursive")))

    # ---- restore ---------------------------------------------------------

    def _links(self, artifact: Artifact, context) -> list[dict[str, Any]]:
        links = list(artifact.source.get("chain") or [])
        if links and (context is None or context.repository is None):
            raise RestoreError(
                "artifact %s is an incremental send: its chain needs the repository" % artifact.name,
                "restore it with epoch_restore from the repository",
            )
        present_cache: dict[str, dict[str, int]] = {}
        for link in links:
            epoch = str(link.get("epoch"))
            if epoch not in present_cache:
                present_cache[epoch] = context.repository.files(context.node, epoch)
            if link.get("file") not in present_cache[epoch]:
                raise RestoreError(
                    "artifact %s is an incremental send and needs %s of epoch %s, which is gone from %s"
                    % (artifact.name, link.get("file"), epoch, context.repository.location),
                    "restore an epoch whose chain is complete (the full send is in epoch %s), or a copy that "
                    "still holds it; keep chains whole (retention of snapshot epochs, full_every)"
                    % links[0].get("epoch"),
                )
        return links

    def _feed_link(self, context, link: dict[str, Any], sink, what: str) -> None:
        """Unseal one earlier link of the chain into ``sink``, checked against the newest manifest's record."""
        with context.repository.open_read(context.node, link["epoch"], link["file"]) as stream:
            result = unseal(stream, sink, context.identities or [], sink_name=what, limit=int(link["content_size"]))
        problems = []
        if result.sealed.size != int(link["size"]) or result.sealed.sha256 != link["sha256"]:
            problems.append("sealed checksum")
        # A send stream carries the files' data: no unkeyed hash of it is recorded since this version (the link's
        # sealed SHA-256, signed in the newest manifest, pins the bytes and age authenticates them). Links of
        # older chains record one: still compared.
        plain = link.get("content_sha256")
        if result.content.size != int(link["content_size"]) or (plain is not None and result.content.sha256 != plain):
            problems.append("content checksum")
        if problems:
            raise IntegrityError(
                "the chain link %s of epoch %s does not match the manifest (%s)"
                % (link["file"], link["epoch"], ", ".join(problems)),
                "do not trust this chain; restore another epoch or copy",
            )

    _staged: ClassVar[dict[str, dict[str, Any]]] = {}

    def deep_check(self, path: str, artifact: Artifact, check: str = "integrity") -> dict[str, Any]:
        """The restored tree equals the snapshot it came from, file by file (or its recorded counts)."""
        staged = self._staged.get(path, {})
        source = artifact.source.get("snapshot") or {}
        checks: dict[str, Any] = {key: staged[key] for key in ("dataset", "subvolume") if staged.get(key)}
        received = staged.get("received")
        wanted = source.get("guid") or source.get("uuid")
        if received is not None and wanted and str(received) != str(wanted):
            raise IntegrityError(
                "the received snapshot's id %s is not the one shipped (%s)" % (received, wanted),
                "the stream is not the one the manifest describes",
            )
        if received is not None:
            checks["snapshot_id"] = "ok"
        fs = self.backend()
        snap = None
        with contextlib.suppress(NodekeepError):
            snap = self.find_snap(fs, str(source.get("volume")), str(source.get("name")), artifact.source)
        if snap is not None and wanted and snap.guid == str(wanted):
            with fs.view(snap, staged.get("scratch")) as view:
                checks["compared"] = "snapshot %s" % snap.ident
                checks["tree"] = compare_trees(view, path)
        elif artifact.source.get("tree"):
            checks["compared"] = "manifest counts (the snapshot is gone locally)"
            checks["tree"] = compare_counts(path, artifact.source["tree"])
        else:
            checks["compared"] = "nothing (no snapshot left and no counts recorded)"
        return checks
