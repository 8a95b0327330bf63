# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Btrfs: the ``btrfs`` command line as a backend (read-only subvolume snapshots, send/receive)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE, output_text
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    SNAPSHOT_DIR,
    Snap,
    SnapshotError,
    mount_of,
    snapshot_command,
    snapshot_process,
)

# --------------------------------------------------------------------------
# btrfs
# --------------------------------------------------------------------------


class Btrfs:
    """btrfs through btrfs-progs: read-only subvolume snapshots kept in a snapshot directory."""

    kind = "btrfs"

    def __init__(self) -> None:
        self.features = detect_btrfs_features()

    def _run(self, args: list[str], what: str, check: bool = True):
        return snapshot_command(["btrfs"] + args, what, check=check)

    def show(self, path: str) -> dict[str, str] | None:
        done = self._run(["subvolume", "show", path], "reading the subvolume %s" % path, check=False)
        if done.returncode != 0:
            return None
        info = {}
        for line in output_text(done.stdout).splitlines():
            if ":" in line:
                key, value = line.split(":", 1)
                info[key.strip().lower()] = value.strip()
        return info

    def volume_for(self, path: str) -> str | None:
        path = os.path.normpath(path)
        if mount_of(path)["fstype"] != "btrfs" or not os.path.isdir(path):
            return None
        return path if os.lstat(path).st_ino == 256 else None

    @staticmethod
    def snapshot_dir(volume: str, asset: dict[str, Any] | None = None) -> str:
        configured = (asset or {}).get("snapshot_dir")
        return os.path.normpath(configured) if configured else os.path.join(os.path.dirname(volume), SNAPSHOT_DIR)

    def _make(self, volume: str, path: str, name: str, info: dict[str, str] | None) -> Snap:
        info = info or {}
        created = None
        with contextlib.suppress(ValueError, KeyError):
            created = int(datetime.strptime(info["creation time"], "%Y-%m-%d %H:%M:%S %z").timestamp())
        return Snap(
            "btrfs",
            volume,
            name,
            path,
            guid=info.get("uuid", ""),
            createtxg=int(info["gen at creation"]) if info.get("gen at creation", "").isdigit() else None,
            created=created,
            path=path,
        )

    def snapshots(self, volume: str, snapshot_dir: str | None = None, with_info: bool = True) -> list[Snap]:
        directory = snapshot_dir or self.snapshot_dir(volume)
        leaf = os.path.basename(volume.rstrip("/"))
        snaps = []
        if not os.path.isdir(directory):
            return snaps
        for entry in sorted(os.listdir(directory)):
            if not entry.startswith(leaf + "@"):
                continue
            path = os.path.join(directory, entry)
            info = self.show(path) if with_info else {}
            if info is None:
                continue
            snaps.append(self._make(volume, path, entry.split("@", 1)[1], info))
        return sorted(snaps, key=lambda s: (s.createtxg or 0, s.name))

    def snapshot(self, volume: str, name: str, snapshot_dir: str | None = None) -> Snap | None:
        directory = snapshot_dir or self.snapshot_dir(volume)
        path = os.path.join(directory, "%s@%s" % (os.path.basename(volume.rstrip("/")), name))
        info = self.show(path) if os.path.isdir(path) else None
        return None if info is None else self._make(volume, path, name, info)

    def create(self, volume: str, name: str, recursive: bool = False, snapshot_dir: str | None = None) -> Snap:
        directory = snapshot_dir or self.snapshot_dir(volume)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, "creating the snapshot directory", directory)
        path = os.path.join(directory, "%s@%s" % (os.path.basename(volume.rstrip("/")), name))
        if os.path.lexists(path):
            raise SnapshotError("the snapshot %s already exists" % path, "choose another name or epoch")
        try:
            self._run(["subvolume", "snapshot", "-r", volume, path], "snapshotting %s" % volume)
        except SnapshotError as exc:
            raise SnapshotError(
                exc.problem,
                "snapshot_dir (%s) must be a directory on the same btrfs filesystem as %s" % (directory, volume),
            )
        snap = self.snapshot(volume, name, directory)
        if snap is None:
            raise SnapshotError("the snapshot %s vanished right after it was made" % path, "check the filesystem")
        return snap

    def destroy(self, snap: Snap, recursive: bool = False, dependents: bool = False) -> None:
        self._run(["subvolume", "delete", snap.ident], "deleting the snapshot %s" % snap.ident)

    def delete_subvolume(self, path: str) -> None:
        self._run(["subvolume", "delete", path], "deleting the subvolume %s" % path, check=False)

    def clean_stale_sends(self, volume: str) -> list[str]:
        return []

    @contextlib.contextmanager
    def send(self, snap: Snap, base: Snap | None = None, recursive: bool = False, raw: bool = False):
        argv = ["btrfs", "send", "-q"]
        if base is not None:
            argv += ["-p", base.ident]
        argv.append(snap.ident)
        process = snapshot_process(argv, "btrfs send of %s" % snap.ident, stdout=PIPE)
        try:
            yield process.proc.stdout, process.finish
        finally:
            process.close()

    @contextlib.contextmanager
    def view(self, snap: Snap, scratch: str | None = None) -> Iterator[str]:
        yield snap.ident


def detect_btrfs_features() -> dict[str, Any]:
    done = snapshot_command(["btrfs", "--version"], "btrfs --version", check=False)
    match = re.search(r"v(\d+(?:\.\d+)*)", output_text(done.stdout))
    helptext = snapshot_command(["btrfs", "send", "--help"], "btrfs send --help", check=False)
    text = output_text(helptext.stdout) + output_text(helptext.stderr)
    return {
        "implementation": "btrfs-progs",
        "version": match.group(1) if match else "",
        "send_proto2": "--proto" in text,
        "send_compressed": "--compressed-data" in text,
    }
