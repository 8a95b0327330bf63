# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystem snapshots (ZFS and btrfs) behind one interface, and the ``zfs``/``btrfs`` asset types.

A *backend* (``Zfs``, ``Btrfs``) knows one filesystem: it finds the volume
(a ZFS dataset, a btrfs subvolume) of a path, lists, creates and destroys
snapshots, opens a ``send`` stream (full, or incremental from a base) and a
``receive`` sink, and shows a snapshot's files as a read-only directory
(``view``). Everything above it is shared:

- naming: ``<volume>@<prefix>-<EPOCH>`` (``tank/app@nodekeep-20261122T101500Z``);
  consistency groups use ``<prefix>-cg-<EPOCH>``, which retention never matches;
- holds (ZFS): a user hold ``nodekeep-send`` on the snapshot and its base for
  the whole send, released after, also on failure. zfs-fuse's ``send -R`` that
  dies (broken pipe, kill) leaks its temporary holds ``.send-<PID>-0``: the
  sender's PIDs are recorded in the user property ``nodekeep:sending`` while it
  runs, its temporary tags are released when it ends, and the next run releases
  what a killed run left behind;
- chains: an artifact records its snapshot (name, guid/uuid, createtxg), its
  base and every earlier link back to the last full, with each link's epoch,
  file and checksums; a restore receives the links oldest first and checks each
  link's checksums against the (signed) newest manifest;
- retention of local snapshots uses ``retention.plan`` (the epochs' policy);
  a held snapshot is never destroyed, ``destroy -R`` only when asked;
- consistency groups: ``consistency_snapshots`` takes one atomic snapshot per
  distinct ``snapshot:`` value of a run's assets and maps each asset's path
  into it.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import sha256_file
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import (
    Completed,
    Process,
    output_text,
    run_command,
)

DEFAULT_PREFIX = "nodekeep"


HOLD_TAG = "nodekeep-send"


SENDING_PROPERTY = "nodekeep:sending"


GROUP_INFIX = "cg"


VIEW_PREFIX = "nodekeep-view-"


RESTORE_PARENT = "nodekeep-restore"


SNAPSHOT_DIR = ".nodekeep-snapshots"


_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z")


_EPOCH_SUFFIX_RE = re.compile(r"-(\d{8}T\d{6}Z)\Z")


#: a stale consistency-group snapshot or view is removed once it is this old (seconds)
STALE_AFTER = 3600


class SnapshotError(NodekeepError):
    kind = "snapshot"


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix or ""):
        raise SnapshotError(
            "snapshot prefix %r is not valid" % (prefix,),
            "use letters, digits, '_', '.', ':' and '-' (at most 64, starting with a letter or digit)",
        )
    return prefix


def snapshot_name(prefix: str, epoch: str) -> str:
    """``nodekeep-20261122T101500Z``: the epoch the snapshot belongs to is in its name."""
    epoch_time(epoch)
    return "%s-%s" % (check_prefix(prefix), epoch)


def name_epoch(prefix: str, name: str) -> str | None:
    """The epoch of a snapshot named by ``snapshot_name(prefix, ...)``, else None (not ours)."""
    if not name.startswith(prefix + "-"):
        return None
    rest = name[len(prefix) + 1 :]
    match = _EPOCH_SUFFIX_RE.match("-" + rest)
    return match.group(1) if match else None


def group_name(prefix: str, epoch: str) -> str:
    return "%s-%s-%s" % (check_prefix(prefix), GROUP_INFIX, epoch)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _package(command: str) -> str:
    return "zfsutils-linux" if command in ("zfs", "zpool") else "btrfs-progs"


def _missing(command: str) -> str:
    package = _package(command)
    return "install %s (Debian: apt-get install %s) or remove the snapshot assets" % (package, package)


def snapshot_command(argv: list[str], what: str, check: bool = True, timeout: float = 600) -> Completed:
    """A zfs/btrfs command through the gateway; a failure is a SnapshotError naming the command and its message."""
    return run_command(argv, what, timeout=timeout, check=check, error=SnapshotError, missing=_missing(argv[0]))


def snapshot_process(argv: list[str], what: str, stdin=None, stdout=None) -> Process:
    """A zfs/btrfs send or receive streaming to or from us (``core.process.Process``)."""
    return Process(argv, what, stdin=stdin, stdout=stdout, error=SnapshotError, missing=_missing(argv[0]))


def mount_of(path: str) -> dict[str, str]:
    """The mount holding ``path`` (longest mount point prefix): mountpoint, fstype, source."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    best = {"mountpoint": "/", "fstype": "", "source": ""}
    with open("/proc/self/mountinfo", "rb") as handle:
        for raw in handle:
            fields = output_text(raw).split()
            if " - " not in output_text(raw):
                continue
            sep = fields.index("-")
            mountpoint = fields[4].replace("\\040", " ")
            inside = path == mountpoint or path.startswith(mountpoint.rstrip("/") + "/")
            if inside and len(mountpoint) >= len(best["mountpoint"]):
                best = {"mountpoint": mountpoint, "fstype": fields[sep + 1], "source": fields[sep + 2]}
    return best


# --------------------------------------------------------------------------
# trees: counts and file-by-file comparison
# --------------------------------------------------------------------------


def _walk(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """Every entry under ``root`` (not the root), without crossing into other mounts."""
    device = os.lstat(root).st_dev
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        directory = os.path.join(root, rel_dir) if rel_dir else root
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise describe_os_error(exc, "reading a snapshot tree", directory)
        for name in names:
            rel = os.path.join(rel_dir, name) if rel_dir else name
            full = os.path.join(root, rel)
            info = os.lstat(full)
            if stat.S_ISDIR(info.st_mode) and info.st_dev != device:
                continue  # another mount (a child dataset): compared on its own
            yield rel, full, info
            if stat.S_ISDIR(info.st_mode):
                stack.append(rel)


def tree_stats(root: str) -> dict[str, int]:
    """Entry counts and regular-file bytes of a tree (recorded at capture, compared when no snapshot is left)."""
    counts = {"files": 0, "directories": 0, "symlinks": 0, "other": 0, "bytes": 0}
    for rel, full, info in _walk(root):
        if stat.S_ISREG(info.st_mode):
            counts["files"] += 1
            counts["bytes"] += info.st_size
        elif stat.S_ISDIR(info.st_mode):
            counts["directories"] += 1
        elif stat.S_ISLNK(info.st_mode):
            counts["symlinks"] += 1
        else:
            counts["other"] += 1
    return counts


def _entry(full: str, info: os.stat_result) -> tuple:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISREG(info.st_mode):
        return ("file", mode, info.st_uid, info.st_gid, info.st_size, int(info.st_mtime))
    if stat.S_ISDIR(info.st_mode):
        return ("directory", mode, info.st_uid, info.st_gid)
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", os.readlink(full))
    return ("other", stat.S_IFMT(info.st_mode), mode)


def compare_trees(expected: str, actual: str, limit: int = 10) -> dict[str, int]:
    """Compare two trees file by file (type, mode, owner, size, mtime, content, link target).

    Raises ``IntegrityError`` listing the first differences; returns the counts.
    """
    wanted = {rel: (full, info) for rel, full, info in _walk(expected)}
    found = {rel: (full, info) for rel, full, info in _walk(actual)}
    problems = []
    for rel in sorted(set(wanted) - set(found)):
        problems.append("%s is missing" % rel)
    for rel in sorted(set(found) - set(wanted)):
        problems.append("%s is extra" % rel)
    for rel in sorted(set(wanted) & set(found)):
        if len(problems) >= limit:
            break
        (want_full, want_info), (have_full, have_info) = wanted[rel], found[rel]
        want, have = _entry(want_full, want_info), _entry(have_full, have_info)
        if want != have:
            problems.append("%s differs (%s, snapshot has %s)" % (rel, have, want))
        elif want[0] == "file" and sha256_file(want_full)[1] != sha256_file(have_full)[1]:
            problems.append("%s has other content" % rel)
    if problems:
        raise IntegrityError(
            "the restored tree %s differs from the snapshot %s: %s%s"
            % (actual, expected, "; ".join(problems[:limit]), " ..." if len(problems) > limit else ""),
            "do not cut over to it; restore another epoch",
        )
    return tree_stats(actual)


def compare_counts(path: str, recorded: dict[str, Any]) -> dict[str, int]:
    """Without the source snapshot: the restored tree has the counts and bytes the manifest recorded."""
    found = tree_stats(path)
    for key in ("files", "directories", "symlinks", "bytes"):
        if key in recorded and int(recorded[key]) != found[key]:
            raise IntegrityError(
                "the restored tree %s has %d %s, the manifest says %s" % (path, found[key], key, recorded[key]),
                "the artifact does not match its manifest; restore another epoch",
            )
    return found


# --------------------------------------------------------------------------
# one snapshot, as every backend describes it
# --------------------------------------------------------------------------


class Snap:
    """A snapshot: ``volume`` + ``name``; ``ident`` is what the backend's commands take."""

    def __init__(self, backend: str, volume: str, name: str, ident: str, **info: Any) -> None:
        self.backend = backend
        self.volume = volume
        self.name = name
        self.ident = ident
        self.guid = str(info.get("guid") or "")
        self.createtxg = info.get("createtxg")
        self.created = info.get("created")
        self.userrefs = int(info.get("userrefs") or 0)
        self.path = info.get("path")

    @property
    def held(self) -> bool:
        return self.userrefs > 0

    def facts(self) -> dict[str, Any]:
        """The snapshot as the manifest records it."""
        facts: dict[str, Any] = {"backend": self.backend, "volume": self.volume, "name": self.name}
        facts["guid" if self.backend == "zfs" else "uuid"] = self.guid
        if self.createtxg is not None:
            facts["createtxg"] = int(self.createtxg)
        if self.created is not None:
            facts["created"] = datetime.fromtimestamp(int(self.created), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.path:
            facts["path"] = self.path
        return facts

    def __repr__(self) -> str:
        return "Snap(%s)" % self.ident
