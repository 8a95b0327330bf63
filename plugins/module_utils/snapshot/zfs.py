# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ZFS: the ``zfs`` command line as a backend (snapshots, holds, bookmarks, send/receive)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name, epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE, output_text
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.base import (
    HOLD_TAG,
    SENDING_PROPERTY,
    STALE_AFTER,
    VIEW_PREFIX,
    Snap,
    SnapshotError,
    pid_alive,
    snapshot_command,
    snapshot_process,
)


def _usage_line(usage: str, command: str) -> str:
    lines = [line.strip() for line in usage.splitlines() if line.strip().startswith(command + " ")]
    return " ".join(lines)


def _has_flag(line: str, flag: str) -> bool:
    return bool(re.search(r"\[-[A-Za-z]*%s[A-Za-z]*\]" % re.escape(flag), line))


def detect_zfs_features(refresh: bool = False) -> dict[str, Any]:
    """What the installed ZFS supports, from its own usage text and ``zfs version``.

    OpenZFS 2.x: ``list -p``, ``-j`` JSON, raw/compressed/large-block sends, bookmarks,
    resumable receives (``receive -s``, ``send -t``), ``zfs holds``, ``receive -u``; the
    kernel drops a killed send's temporary holds. zfs-fuse 0.7 has none of these.
    """
    if not refresh and "zfs" in _ZFS_FEATURES_CACHE:
        return dict(_ZFS_FEATURES_CACHE["zfs"])
    usage_run = snapshot_command(["zfs", "-?"], "zfs usage", check=False)
    usage = output_text(usage_run.stdout) + output_text(usage_run.stderr)
    version_run = snapshot_command(["zfs", "version"], "zfs version", check=False)
    version = ""
    implementation = "zfs"
    if version_run.returncode == 0:
        text = output_text(version_run.stdout)
        match = re.search(r"zfs-(?:kmod-)?(\d+\.\d+[.\d]*)", text)
        version = match.group(1) if match else text.strip().splitlines()[0] if text.strip() else ""
        implementation = "openzfs"
    elif os.path.exists("/usr/sbin/zfs-fuse") or "zfs-fuse" in usage:
        implementation = "zfs-fuse"
    holds_run = snapshot_command(["zfs", "holds", "nodekeep-probe/none@none"], "zfs holds", check=False)
    holds_text = output_text(holds_run.stderr) + output_text(holds_run.stdout)
    send, receive, listing = _usage_line(usage, "send"), _usage_line(usage, "receive"), _usage_line(usage, "list")
    features = {
        "implementation": implementation,
        "version": version,
        "list_parsable": _has_flag(listing, "p"),
        "list_json": _has_flag(listing, "j"),
        "send_raw": _has_flag(send, "w"),
        "send_compressed": _has_flag(send, "c"),
        "send_large_blocks": _has_flag(send, "L"),
        "send_embedded": _has_flag(send, "e"),
        "send_dry_run": _has_flag(send, "n"),
        "bookmarks": bool(re.search(r"^\s*bookmark\s", usage, re.MULTILINE)),
        "resume_tokens": _has_flag(receive, "s") and "-t" in send,
        "receive_unmounted": _has_flag(receive, "u"),
        "holds_list": "holds" in usage and "internal error" not in holds_text and "pyzfs" not in holds_text,
        "temp_holds_cleaned_by_kernel": implementation == "openzfs",
    }
    _ZFS_FEATURES_CACHE["zfs"] = features
    return dict(features)


class Zfs:
    """ZFS through its CLI, on OpenZFS 2.x or zfs-fuse (features detected, never assumed)."""

    kind = "zfs"

    def __init__(self, features: dict[str, Any] | None = None) -> None:
        self.features = features or detect_zfs_features()

    # ---- datasets -------------------------------------------------------

    def _run(self, args: list[str], what: str, check: bool = True):
        return snapshot_command(["zfs"] + args, what, check=check)

    def datasets(self, root: str | None = None) -> list[tuple[str, str]]:
        """(name, mountpoint) of the filesystems (of ``root``'s tree)."""
        args = ["list", "-H", "-o", "name,mountpoint", "-t", "filesystem"]
        if root:
            args += ["-r", root]
        done = self._run(args, "listing ZFS datasets")
        rows = []
        for line in output_text(done.stdout).splitlines():
            parts = line.split("\t")
            if len(parts) == 2:
                rows.append((parts[0], parts[1]))
        return rows

    def exists(self, name: str) -> bool:
        return self._run(["list", "-H", "-o", "name", name], "looking up %s" % name, check=False).returncode == 0

    def volume_for(self, path: str) -> str | None:
        """The dataset mounted exactly at ``path``, else None."""
        path = os.path.normpath(path)
        with contextlib.suppress(SnapshotError):
            for name, mountpoint in self.datasets():
                if mountpoint == path:
                    return name
        return None

    def dataset_holding(self, path: str, datasets: list[tuple[str, str]] | None = None) -> tuple[str, str] | None:
        """The dataset whose mountpoint is the longest prefix of ``path``."""
        best = None
        for name, mountpoint in datasets if datasets is not None else self.datasets():
            if not mountpoint.startswith("/"):
                continue
            inside = path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")
            if inside and (best is None or len(mountpoint) > len(best[1])):
                best = (name, mountpoint)
        return best

    def mountpoint(self, dataset: str) -> str:
        done = self._run(["get", "-H", "-o", "value", "mountpoint", dataset], "reading the mountpoint of %s" % dataset)
        return output_text(done.stdout).strip()

    def property(self, name: str, prop: str) -> tuple[str, str]:
        done = self._run(["get", "-Hp", "-o", "value,source", prop, name], "reading %s of %s" % (prop, name))
        value, source = (output_text(done.stdout).rstrip("\n").split("\t") + [""])[:2]
        return value, source

    # ---- snapshots ------------------------------------------------------

    def _snap_props(self, names: list[str]) -> dict[str, dict[str, str]]:
        props: dict[str, dict[str, str]] = {}
        if not names:
            return props
        done = self._run(
            ["get", "-Hp", "-o", "name,property,value", "guid,createtxg,creation,userrefs"] + names,
            "reading snapshot properties",
        )
        for line in output_text(done.stdout).splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                props.setdefault(parts[0], {})[parts[1]] = parts[2]
        return props

    def _make(self, ident: str, props: dict[str, str]) -> Snap:
        volume, name = ident.split("@", 1)
        return Snap(
            "zfs",
            volume,
            name,
            ident,
            guid=props.get("guid"),
            createtxg=int(props["createtxg"]) if props.get("createtxg", "-").isdigit() else None,
            created=int(props["creation"]) if props.get("creation", "-").isdigit() else None,
            userrefs=int(props["userrefs"]) if props.get("userrefs", "-").isdigit() else 0,
        )

    def snapshots(self, volume: str, recursive: bool = False) -> list[Snap]:
        """Snapshots of ``volume`` (and its descendants when recursive), oldest first by createtxg."""
        args = ["list", "-H", "-o", "name", "-t", "snapshot", "-r"]
        if not recursive:
            args += ["-d", "1"]
        done = self._run(args + [volume], "listing the snapshots of %s" % volume)
        names = [n for n in output_text(done.stdout).splitlines() if "@" in n]
        if not recursive:
            names = [n for n in names if n.split("@", 1)[0] == volume]
        props = self._snap_props(names)
        snaps = [self._make(n, props.get(n, {})) for n in names]
        return sorted(snaps, key=lambda s: (s.createtxg or 0, s.ident))

    def snapshot(self, volume: str, name: str) -> Snap | None:
        ident = "%s@%s" % (volume, name)
        if not self.exists(ident):
            return None
        return self._make(ident, self._snap_props([ident]).get(ident, {}))

    def create(self, volume: str, name: str, recursive: bool = False) -> Snap:
        ident = "%s@%s" % (volume, name)
        if self.exists(ident):
            raise SnapshotError("the snapshot %s already exists" % ident, "choose another name or epoch")
        self._run(["snapshot"] + (["-r"] if recursive else []) + [ident], "creating the snapshot %s" % ident)
        snap = self.snapshot(volume, name)
        if snap is None:
            raise SnapshotError("the snapshot %s vanished right after it was made" % ident, "check the pool")
        return snap

    def destroy(self, snap: Snap, recursive: bool = False, dependents: bool = False) -> None:
        """Destroy one snapshot (``-r``: the same-named ones of descendants; ``-R`` only when asked)."""
        flags = ["-R"] if dependents else (["-r"] if recursive else [])
        self._run(["destroy"] + flags + [snap.ident], "destroying the snapshot %s" % snap.ident)

    def hold(self, snap: Snap, tag: str, recursive: bool = False) -> None:
        self._run(["hold"] + (["-r"] if recursive else []) + [tag, snap.ident], "holding %s" % snap.ident)

    def release(self, snap: Snap, tag: str, recursive: bool = False, check: bool = True) -> bool:
        done = self._run(
            ["release"] + (["-r"] if recursive else []) + [tag, snap.ident], "releasing %s" % snap.ident, check=check
        )
        return done.returncode == 0

    def holds(self, snap: Snap) -> list[str] | None:
        """Tags held on a snapshot (OpenZFS), or None when the ZFS cannot list them (zfs-fuse: use userrefs)."""
        if not self.features.get("holds_list"):
            return None
        done = self._run(["holds", "-H", snap.ident], "listing the holds of %s" % snap.ident)
        return [line.split("\t")[1] for line in output_text(done.stdout).splitlines() if "\t" in line]

    def bookmark(self, snap: Snap) -> str | None:
        if not self.features.get("bookmarks"):
            return None
        mark = "%s#%s" % (snap.volume, snap.name)
        if self._run(["list", "-H", "-o", "name", "-t", "bookmark", mark], "bookmark", check=False).returncode != 0:
            self._run(["bookmark", snap.ident, mark], "bookmarking %s" % snap.ident)
        return mark

    def bookmark_guid(self, volume: str, name: str) -> str | None:
        if not self.features.get("bookmarks"):
            return None
        mark = "%s#%s" % (volume, name)
        done = self._run(["get", "-Hp", "-o", "value", "guid", mark], "reading %s" % mark, check=False)
        return output_text(done.stdout).strip() if done.returncode == 0 else None

    # ---- send / receive -------------------------------------------------

    def _sweep_send_tags(self, volume: str, send_pids: list[int], recursive: bool) -> list[str]:
        """Release the temporary holds ``.send-<PID>-N`` a dead ``zfs send`` left on the tree's snapshots."""
        released = []
        if not send_pids:
            return released
        for snap in self.snapshots(volume, recursive=bool(recursive)):
            if not snap.held:
                continue
            for pid in send_pids:
                for seq in (0, 1):
                    if self.release(snap, ".send-%d-%d" % (pid, seq), check=False):
                        released.append("%s:.send-%d-%d" % (snap.ident, pid, seq))
        return released

    def clean_stale_sends(self, volume: str) -> list[str]:
        """Holds left by a run that was killed while sending (its PID no longer lives)."""
        done = self._run(
            ["get", "-H", "-r", "-o", "name,value,source", SENDING_PROPERTY, volume],
            "reading %s" % SENDING_PROPERTY,
            check=False,
        )
        released = []
        for line in output_text(done.stdout).splitlines():
            parts = line.split("\t")
            if len(parts) != 3 or "@" not in parts[0] or parts[1] in ("-", "") or parts[2] != "local":
                continue
            owner, send_pids, recursive = _parse_sending(parts[1])
            if owner and pid_alive(owner):
                continue
            snap = self._make(parts[0], {})
            if self.release(snap, HOLD_TAG, recursive=recursive, check=False):
                released.append("%s:%s" % (snap.ident, HOLD_TAG))
            released.extend(self._sweep_send_tags(snap.volume, send_pids, recursive))
            self._run(["inherit", SENDING_PROPERTY, snap.ident], "clearing %s" % SENDING_PROPERTY, check=False)
        return released

    def send_argv(self, snap: Snap, base: str | None, recursive: bool, raw: bool = False) -> list[str]:
        argv = ["zfs", "send"]
        if recursive:
            argv.append("-R")
        if raw and self.features.get("send_raw"):
            argv.append("-w")
        if base:
            argv += ["-i", base]
        return argv + [snap.ident]

    @contextlib.contextmanager
    def send(self, snap: Snap, base: Snap | str | None = None, recursive: bool = False, raw: bool = False):
        """A readable ``zfs send`` stream, with the snapshot (and its base) held while it runs.

        Yields ``(stream, finish)``: call ``finish()`` after reading to EOF; it raises when the send
        failed. On any exit the holds are released, and a killed/broken ``send -R``'s temporary holds too.
        """
        base_ident = base.ident if isinstance(base, Snap) else base
        held: list[Snap] = []
        process = None
        self.clean_stale_sends(snap.volume)
        try:
            for item in [snap] + ([base] if isinstance(base, Snap) else []):
                try:
                    self.hold(item, HOLD_TAG, recursive=recursive)
                except SnapshotError as exc:
                    raise SnapshotError(
                        "cannot hold %s for the send: %s" % (item.ident, exc.problem),
                        "another nodekeep send of it may be running; if not, run `zfs release %s %s`"
                        % (HOLD_TAG, item.ident),
                    )
                held.append(item)
            argv = self.send_argv(snap, base_ident, recursive, raw)
            process = snapshot_process(argv, "zfs send of %s" % snap.ident, stdout=PIPE)
            self._run(
                ["set", "%s=%d:%d:%d" % (SENDING_PROPERTY, os.getpid(), process.pid, int(recursive)), snap.ident],
                "marking %s as being sent" % snap.ident,
                check=False,
            )
            yield process.proc.stdout, process.finish
        finally:
            errors = []
            if process is not None:
                process.close()
                if not self.features.get("temp_holds_cleaned_by_kernel"):
                    with contextlib.suppress(SnapshotError):
                        self._sweep_send_tags(snap.volume, [process.pid], recursive)
                self._run(["inherit", SENDING_PROPERTY, snap.ident], "clearing %s" % SENDING_PROPERTY, check=False)
            for item in held:
                try:
                    self.release(item, HOLD_TAG, recursive=recursive)
                except SnapshotError as exc:
                    errors.append(exc.problem)
            if errors:
                raise SnapshotError("releasing the send holds failed: %s" % "; ".join(errors), "release them by hand")

    def receive_argv(self, target: str, force: bool, recursive: bool) -> list[str]:
        argv = ["zfs", "receive"]
        if force:
            argv.append("-F")
        if self.features.get("receive_unmounted"):
            argv.append("-u")
        return argv + [target]

    # ---- views of a snapshot's files -------------------------------------

    @contextlib.contextmanager
    def view(self, snap: Snap, scratch: str | None = None) -> Iterator[str]:
        """The snapshot's files as a read-only directory: ``.zfs/snapshot/NAME`` or a temporary read-only clone."""
        mountpoint = self.mountpoint(snap.volume)
        if mountpoint.startswith("/"):
            direct = os.path.join(mountpoint, ".zfs", "snapshot", snap.name)
            if os.path.isdir(direct):
                yield direct
                return
        pool = snap.volume.split("/", 1)[0]
        clone = "%s/%s%s-%s" % (pool, VIEW_PREFIX, epoch_name(), uuid.uuid4().hex[:8])
        where = tempfile.mkdtemp(prefix="view-", dir=scratch)
        try:
            self._run(
                ["clone", "-o", "readonly=on", "-o", "mountpoint=%s" % where, snap.ident, clone],
                "cloning %s to read its files" % snap.ident,
            )
            try:
                yield where
            finally:
                self._destroy_view(clone)
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(where)

    def destroy_dataset(self, name: str, recursive: bool = False, check: bool = True) -> None:
        """Destroy a dataset of ours (a view, a staging dataset); a mount just read is briefly busy on zfs-fuse."""
        flags = ["-r"] if recursive else []
        done = None
        for attempt in range(8):
            force = ["-f"] if attempt >= 3 else []
            done = self._run(["destroy"] + flags + force + [name], "destroying %s" % name, check=False)
            if done.returncode == 0 or not self.exists(name):
                return
            time.sleep(0.25 * (attempt + 1))
        if check:
            raise SnapshotError(
                "%s could not be destroyed: %s" % (name, output_text(done.stderr).strip()),
                "destroy it by hand (zfs destroy -f%s %s)" % (" -r" if recursive else "", name),
            )

    def _destroy_view(self, clone: str) -> None:
        self.destroy_dataset(clone)

    def sweep_views(self, pool: str) -> None:
        """Views left by a killed run (older than STALE_AFTER)."""
        with contextlib.suppress(SnapshotError):
            for name, mountpoint in self.datasets(pool):
                leaf = name.rsplit("/", 1)[-1]
                if not leaf.startswith(VIEW_PREFIX):
                    continue
                stamp = leaf[len(VIEW_PREFIX) : len(VIEW_PREFIX) + 16]
                with contextlib.suppress(ValueError, NodekeepError):
                    if time.time() - epoch_time(stamp).timestamp() > STALE_AFTER:
                        self.destroy_dataset(name, check=False)
                        with contextlib.suppress(OSError):
                            os.rmdir(mountpoint)

    def rollback(self, snap: Snap, discard_newer: bool = False) -> None:
        self._run_busy(
            ["rollback"] + (["-r"] if discard_newer else []) + [snap.ident], "rolling back to %s" % snap.ident
        )

    def _run_busy(self, args: list[str], what: str, tries: int = 8):
        """A command that unmounts first: a mount just used is briefly busy on zfs-fuse; try again a few times."""
        for attempt in range(tries):
            done = self._run(args, what, check=False)
            if done.returncode == 0 or "busy" not in output_text(done.stderr) or attempt == tries - 1:
                break
            time.sleep(0.25 * (attempt + 1))
        return self._run(args, what) if done.returncode != 0 else done

    def rename(self, old: str, new: str) -> None:
        self._run_busy(["rename", old, new], "renaming %s to %s" % (old, new))


def _parse_sending(value: str) -> tuple[int, list[int], bool]:
    parts = value.split(":")
    try:
        return int(parts[0]), [int(parts[1])] if len(parts) > 1 else [], len(parts) > 2 and parts[2] == "1"
    except ValueError:
        return 0, [], False


# --------------------------------------------------------------------------
# ZFS
# --------------------------------------------------------------------------


_ZFS_FEATURES_CACHE: dict[str, dict[str, Any]] = {}
