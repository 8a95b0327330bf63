# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Volumes: finding the backend of a path, pruning, consistency groups, cutover, send/receive
to sealed files.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name, epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import seal, unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy, plan
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    DEFAULT_PREFIX,
    GROUP_INFIX,
    STALE_AFTER,
    Snap,
    SnapshotError,
    check_prefix,
    group_name,
    mount_of,
    name_epoch,
    snapshot_command,
    snapshot_process,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.btrfs import Btrfs
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.zfs import Zfs


def backend(kind: str):
    if kind == "zfs":
        return Zfs()
    if kind == "btrfs":
        return Btrfs()
    raise SnapshotError("unknown snapshot backend %r" % (kind,), "use zfs or btrfs")


def detect_volume(path: str) -> tuple[Any, str]:
    """(backend, volume) for a ZFS dataset mountpoint or a btrfs subvolume path."""
    path = os.path.normpath(path)
    info = mount_of(path)
    if info["fstype"] == "btrfs":
        fs = Btrfs()
        volume = fs.volume_for(path)
        if volume:
            return fs, volume
        raise SnapshotError(
            "%s is on btrfs but is not a subvolume" % path,
            "give snapshot: the path of a btrfs subvolume (btrfs subvolume create), or a ZFS dataset's mountpoint",
        )
    if info["fstype"] == "zfs" or info["fstype"].startswith("fuse"):
        with contextlib.suppress(SnapshotError):
            fs = Zfs()
            dataset = fs.volume_for(path)
            if dataset:
                return fs, dataset
    raise SnapshotError(
        "%s is neither a ZFS dataset's mountpoint nor a btrfs subvolume (it is on %s)" % (path, info["fstype"] or "?"),
        "give snapshot: the mountpoint of the dataset or the subvolume holding the assets",
    )


# --------------------------------------------------------------------------
# retention of local snapshots
# --------------------------------------------------------------------------


def prune_snapshots(
    fs,
    volume: str,
    policy: RetentionPolicy,
    prefix: str = DEFAULT_PREFIX,
    protect: set[str] | None = None,
    dry_run: bool = False,
    recursive: bool = False,
    dependents: bool = False,
    snapshot_dir: str | None = None,
) -> dict[str, Any]:
    """Apply ``policy`` (the epochs' retention rules) to the snapshots named ``<prefix>-<EPOCH>``.

    Snapshots of other names are never touched; a held snapshot or one in ``protect`` is
    kept and reported; ``destroy -R`` (dependent clones) only with ``dependents``.
    """
    check_prefix(prefix)
    protect = set(protect or ())
    if fs.kind == "zfs":
        snaps = fs.snapshots(volume)
    else:
        snaps = fs.snapshots(volume, snapshot_dir)
    ours = {}
    for snap in snaps:
        epoch = name_epoch(prefix, snap.name)
        if epoch is not None:
            ours[epoch] = snap
    result: dict[str, Any] = {
        "volume": volume,
        "policy": policy.describe(),
        "kept": [],
        "destroyed": [],
        "held": [],
        "errors": [],
        "dry_run": bool(dry_run),
    }
    for decision in plan(ours, policy):
        snap = ours[decision.epoch]
        entry = {"snapshot": snap.ident, "name": snap.name, "reasons": list(decision.reasons)}
        if decision.keep:
            result["kept"].append(entry)
            continue
        if snap.name in protect or snap.ident in protect:
            entry["reasons"].append("kept: it is the base of the next incremental send")
            result["kept"].append(entry)
            continue
        if snap.held:
            entry["reasons"].append("not destroyed: it is held (%d hold(s))" % snap.userrefs)
            result["held"].append(entry)
            continue
        if not dry_run:
            try:
                fs.destroy(snap, recursive=recursive, dependents=dependents)
            except SnapshotError as exc:
                entry["error"] = exc.message
                result["errors"].append(entry)
                continue
        result["destroyed"].append(entry)
    result["changed"] = bool(result["destroyed"]) and not dry_run
    return result


# --------------------------------------------------------------------------
# consistency groups: one atomic snapshot for several assets
# --------------------------------------------------------------------------


def _copy_sqlite(src: str, directory: str) -> str:
    """A private copy of a database in a snapshot with its WAL/journal: SQLite recovers them on the copy."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    dest = os.path.join(directory, os.path.basename(src))
    for suffix in ("", "-wal", "-journal"):
        if os.path.exists(src + suffix):
            try:
                shutil.copyfile(src + suffix, dest + suffix)
                os.chmod(dest + suffix, 0o600)
            except OSError as exc:
                raise describe_os_error(exc, "copying the database out of the snapshot", src + suffix)
    return dest


def _sweep_groups(fs, volume: str, prefix: str, current: str) -> None:
    """Consistency-group snapshots of killed runs (older than STALE_AFTER)."""
    with contextlib.suppress(NodekeepError):
        snaps = fs.snapshots(volume) if fs.kind == "zfs" else fs.snapshots(volume, with_info=False)
        for snap in snaps:
            stamp = name_epoch("%s-%s" % (prefix, GROUP_INFIX), snap.name)
            stale = stamp and stamp != current and time.time() - epoch_time(stamp).timestamp() > STALE_AFTER
            if stale and not snap.held:
                fs.destroy(snap, recursive=fs.kind == "zfs")


@contextlib.contextmanager
def consistency_snapshots(
    assets: list[dict[str, Any]], epoch: str, scratch: str, prefix: str = DEFAULT_PREFIX
) -> Iterator[dict[str, dict[str, Any]]]:
    """One atomic snapshot per distinct ``snapshot:`` of ``assets``; yields name -> {path, snapshot}.

    ``path`` is where the asset's data is inside the snapshot (a private copy for a
    SQLite database, which needs its WAL recovered); ``snapshot`` the facts for the
    manifest. Everything made here (snapshots, views, copies) is removed on exit.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for asset in assets:
        if asset.get("snapshot"):
            groups.setdefault(os.path.normpath(str(asset["snapshot"])), []).append(asset)
    if not groups:
        yield {}
        return
    for mountpoint, members in groups.items():
        for asset in members:
            rel = os.path.relpath(asset["path"], mountpoint)
            if not os.path.isabs(mountpoint) or rel == ".." or rel.startswith("../"):
                raise CaptureError(
                    "asset %s: its path %s is not inside its snapshot: %s" % (asset["name"], asset["path"], mountpoint),
                    "set snapshot: to the mountpoint of the dataset or subvolume that holds the asset",
                )
    mapped: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for mountpoint, members in groups.items():
            fs, volume = detect_volume(mountpoint)
            name = group_name(prefix, epoch)
            _sweep_groups(fs, volume, prefix, epoch)
            if fs.kind == "zfs":
                fs.sweep_views(volume.split("/", 1)[0])
                tree = fs.datasets(volume)
                snap = fs.create(volume, name, recursive=True)
                stack.callback(fs.destroy, snap, True)
            else:
                tree = []
                snap = fs.create(volume, name)
                stack.callback(fs.destroy, snap)
            views: dict[str, str] = {}
            for asset in members:
                holder_name, holder_mount = volume, mountpoint
                target = snap
                if fs.kind == "zfs":
                    holder = fs.dataset_holding(asset["path"], tree) or (volume, mountpoint)
                    holder_name, holder_mount = holder
                    target = fs.snapshot(holder_name, name) or snap
                if target.ident not in views:
                    views[target.ident] = stack.enter_context(fs.view(target, scratch))
                rel = os.path.relpath(asset["path"], holder_mount)
                path = os.path.normpath(os.path.join(views[target.ident], rel))
                if asset.get("type") == "sqlite":
                    copies = tempfile.mkdtemp(prefix="snapshot-copy-", dir=scratch)
                    stack.callback(shutil.rmtree, copies, True)
                    path = _copy_sqlite(path, copies)
                facts = target.facts()
                facts.pop("path", None)
                mapped[asset["name"]] = {"path": path, "snapshot": facts}
        yield mapped


# --------------------------------------------------------------------------
# cutover: the staged dataset takes the live one's place (explicit request only)
# --------------------------------------------------------------------------


def zfs_cutover(staging: str, live: str, mode: str = "auto", fs: Zfs | None = None) -> dict[str, Any]:
    """Put the staged dataset in the live one's place; the live one is kept aside, nothing is destroyed.

    ``rename`` (OpenZFS): ``live`` becomes ``<live>-pre-restore-<EPOCH>`` and ``staging`` takes
    its name and mountpoint. ``mountpoint`` (zfs-fuse, which cannot rename filesystems):
    ``live`` is remounted at ``<mountpoint>.pre-restore-<EPOCH>`` and ``staging`` at the
    live mountpoint. ``auto`` picks by the detected ZFS. A failed second step undoes the first.
    Stop the service first: a busy mount cannot move.
    """
    fs = fs or Zfs()
    if mode == "auto":
        mode = "mountpoint" if fs.features.get("implementation") == "zfs-fuse" else "rename"
    if mode not in ("rename", "mountpoint"):
        raise SnapshotError("cutover mode %r is not valid" % (mode,), "use auto, rename or mountpoint")
    for name in (staging, live):
        if not fs.exists(name):
            raise SnapshotError("the dataset %s does not exist" % name, "check the names (zfs list)")
    mountpoint, source = fs.property(live, "mountpoint")
    if not mountpoint.startswith("/"):
        raise SnapshotError("%s has no mountpoint (%s)" % (live, mountpoint), "give the live dataset a mountpoint")
    stamp = epoch_name()
    aside = "%s.pre-restore-%s" % (mountpoint, stamp)

    def setmount(name: str, value: str) -> None:
        fs._run_busy(["set", "mountpoint=%s" % value, name], "mounting %s at %s" % (name, value))

    if mode == "mountpoint":
        setmount(live, aside)
        try:
            setmount(staging, mountpoint)
        except NodekeepError:
            with contextlib.suppress(NodekeepError):
                setmount(live, mountpoint)
            raise
        result = {"dataset": staging, "previous": live, "previous_mountpoint": aside}
    else:
        previous = "%s-pre-restore-%s" % (live, stamp)
        if source == "local":
            setmount(live, aside)
        fs.rename(live, previous)
        try:
            fs.rename(staging, live)
            setmount(live, mountpoint)
        except NodekeepError:
            with contextlib.suppress(NodekeepError):
                fs.rename(previous, live)
                setmount(live, mountpoint)
            raise
        if source != "local":
            snapshot_command(["zfs", "inherit", "mountpoint", live], "mounting %s" % live)
        result = {"dataset": live, "previous": previous, "previous_mountpoint": fs.mountpoint(previous)}
    serving = result["dataset"]
    if fs.property(serving, "mounted")[0] != "yes":
        snapshot_command(["zfs", "mount", serving], "mounting %s" % serving)
    result.update({"mode": mode, "mountpoint": mountpoint, "changed": True})
    return result


# --------------------------------------------------------------------------
# a snapshot stream to or from a sealed file (the zfs_snapshot / btrfs_snapshot modules)
# --------------------------------------------------------------------------


def send_to_file(fs, snap: Snap, base, dest: str, recipients: list, level: int = 3, recursive: bool = False):
    """Seal a send stream (zstd + age, one pass) into ``dest`` (0600, written beside it, renamed when complete)."""

    directory = os.path.dirname(dest) or "."
    temp = os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(dest), uuid.uuid4().hex[:8]))
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise describe_os_error(exc, "creating the stream file", temp)
    began = time.monotonic()
    try:
        with os.fdopen(fd, "wb") as sink:
            with fs.send(snap, base, recursive=recursive) as (stream, finish):
                result = seal(stream, sink, recipients, level=level, sink_name=dest)
                finish()
            sink.flush()
            os.fsync(sink.fileno())
        os.rename(temp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return {
        "dest": dest,
        "size": result.sealed.size,
        "sha256": result.sealed.sha256,
        "content_size": result.content.size,
        # never the unkeyed SHA-256 of the send stream (the files' data): ``sha256`` of the sealed file proves it
        "content_sha256": None,
        "seconds": round(time.monotonic() - began, 3),
    }


def receive_from_file(argv: list[str], src: str, identities: list, what: str) -> dict[str, Any]:
    """Unseal ``src`` (age, then zstd when compressed) into a receiving command's stdin."""
    began = time.monotonic()
    try:
        handle = open(src, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise describe_os_error(exc, "opening the stream file", src)
    receiver = snapshot_process(argv, what, stdin=PIPE)
    try:
        with handle:
            try:
                result = unseal(handle, receiver.proc.stdin, identities, sink_name=what)
            except (BrokenPipeError, NodekeepError):
                receiver.finish()
                raise
        receiver.finish()
    finally:
        receiver.close()
    return {
        "src": src,
        "size": result.sealed.size,
        "sha256": result.sealed.sha256,
        "content_size": result.content.size,
        "content_sha256": None,  # never the unkeyed SHA-256 of the send stream (the files' data)
        "seconds": round(time.monotonic() - began, 3),
    }
