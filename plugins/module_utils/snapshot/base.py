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

import contextlib
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils import assets as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.manifest import (
    MANIFEST_NAME,
    Artifact,
    Manifest,
    epoch_name,
    epoch_time,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.retention import RetentionPolicy, plan
from ansible_collections.nodekeep.backup.plugins.module_utils.seal import CHUNK_SIZE, unseal

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


def _now_epoch() -> str:
    return epoch_name(datetime.now(timezone.utc))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_missing(command: str, package: str) -> SnapshotError:
    return SnapshotError(
        "the %s command was not found on this host" % command,
        "install %s (Debian: apt-get install %s) or remove the snapshot assets" % (package, package),
    )


def run_command(argv: list[str], what: str, check: bool = True, input_bytes: bytes | None = None, timeout=600):
    """Run a filesystem command; a failure names the command and its own message."""
    try:
        done = subprocess.run(
            argv,
            input=input_bytes,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise _command_missing(argv[0], "zfsutils-linux" if argv[0] in ("zfs", "zpool") else "btrfs-progs")
    except subprocess.TimeoutExpired:
        raise SnapshotError("%s did not finish within %d s (%s)" % (what, timeout, " ".join(argv)), "check the pool")
    if check and done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip() or done.stdout.decode("utf-8", "replace").strip()
        raise SnapshotError(
            "%s failed: %s" % (what, message or "exit status %d" % done.returncode),
            "see the message of `%s`" % " ".join(argv[:3]),
            command=argv,
            returncode=done.returncode,
        )
    return done


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def mount_of(path: str) -> dict[str, str]:
    """The mount holding ``path`` (longest mount point prefix): mountpoint, fstype, source."""
    path = os.path.realpath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    best = {"mountpoint": "/", "fstype": "", "source": ""}
    with open("/proc/self/mountinfo", "rb") as handle:
        for raw in handle:
            fields = _text(raw).split()
            if " - " not in _text(raw):
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


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK_SIZE)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


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
        elif want[0] == "file" and _file_digest(want_full) != _file_digest(have_full):
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


class _Process:
    """A child process streaming to or from us, with its stderr kept in a file."""

    def __init__(self, argv: list[str], what: str, stdin=None, stdout=None) -> None:
        self.argv = argv
        self.what = what
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=self.errors)
        except FileNotFoundError:
            self.errors.close()
            raise _command_missing(argv[0], "zfsutils-linux" if argv[0] == "zfs" else "btrfs-progs")
        self.pid = self.proc.pid

    def stderr(self) -> str:
        self.errors.seek(0)
        return _text(self.errors.read(64 << 10)).strip()

    def finish(self, timeout: float = 3600) -> None:
        """Wait for a clean end; a failure raises with the command's message."""
        for pipe in (self.proc.stdin,):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            raise SnapshotError(
                "%s failed (exit status %d): %s" % (self.what, code, self.stderr() or "no message"),
                "nothing was committed; see the message",
                command=self.argv,
            )

    def stop(self) -> None:
        """End the child after a failure elsewhere: close its pipes first so it can clean up, then signal."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        self.errors.close()


# --------------------------------------------------------------------------
# ZFS
# --------------------------------------------------------------------------


_ZFS_FEATURES_CACHE: dict[str, dict[str, Any]] = {}


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
    usage_run = run_command(["zfs", "-?"], "zfs usage", check=False)
    usage = _text(usage_run.stdout) + _text(usage_run.stderr)
    version_run = run_command(["zfs", "version"], "zfs version", check=False)
    version = ""
    implementation = "zfs"
    if version_run.returncode == 0:
        text = _text(version_run.stdout)
        match = re.search(r"zfs-(?:kmod-)?(\d+\.\d+[.\d]*)", text)
        version = match.group(1) if match else text.strip().splitlines()[0] if text.strip() else ""
        implementation = "openzfs"
    elif os.path.exists("/usr/sbin/zfs-fuse") or "zfs-fuse" in usage:
        implementation = "zfs-fuse"
    holds_run = run_command(["zfs", "holds", "nodekeep-probe/none@none"], "zfs holds", check=False)
    holds_text = _text(holds_run.stderr) + _text(holds_run.stdout)
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
        return run_command(["zfs"] + args, what, check=check)

    def datasets(self, root: str | None = None) -> list[tuple[str, str]]:
        """(name, mountpoint) of the filesystems (of ``root``'s tree)."""
        args = ["list", "-H", "-o", "name,mountpoint", "-t", "filesystem"]
        if root:
            args += ["-r", root]
        done = self._run(args, "listing ZFS datasets")
        rows = []
        for line in _text(done.stdout).splitlines():
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
        return _text(done.stdout).strip()

    def property(self, name: str, prop: str) -> tuple[str, str]:
        done = self._run(["get", "-Hp", "-o", "value,source", prop, name], "reading %s of %s" % (prop, name))
        value, source = (_text(done.stdout).rstrip("\n").split("\t") + [""])[:2]
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
        for line in _text(done.stdout).splitlines():
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
        names = [n for n in _text(done.stdout).splitlines() if "@" in n]
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
        return [line.split("\t")[1] for line in _text(done.stdout).splitlines() if "\t" in line]

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
        return _text(done.stdout).strip() if done.returncode == 0 else None

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
        for line in _text(done.stdout).splitlines():
            parts = line.split("\t")
            if len(parts) != 3 or "@" not in parts[0] or parts[1] in ("-", "") or parts[2] != "local":
                continue
            owner, send_pids, recursive = _parse_sending(parts[1])
            if owner and _pid_alive(owner):
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
            process = _Process(argv, "zfs send of %s" % snap.ident, stdout=subprocess.PIPE)
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
        clone = "%s/%s%s-%s" % (pool, VIEW_PREFIX, _now_epoch(), uuid.uuid4().hex[:8])
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
                "%s could not be destroyed: %s" % (name, _text(done.stderr).strip()),
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
            if done.returncode == 0 or "busy" not in _text(done.stderr) or attempt == tries - 1:
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
# btrfs
# --------------------------------------------------------------------------


class Btrfs:
    """btrfs through btrfs-progs: read-only subvolume snapshots kept in a snapshot directory."""

    kind = "btrfs"

    def __init__(self) -> None:
        self.features = detect_btrfs_features()

    def _run(self, args: list[str], what: str, check: bool = True):
        return run_command(["btrfs"] + args, what, check=check)

    def show(self, path: str) -> dict[str, str] | None:
        done = self._run(["subvolume", "show", path], "reading the subvolume %s" % path, check=False)
        if done.returncode != 0:
            return None
        info = {}
        for line in _text(done.stdout).splitlines():
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
        process = _Process(argv, "btrfs send of %s" % snap.ident, stdout=subprocess.PIPE)
        try:
            yield process.proc.stdout, process.finish
        finally:
            process.close()

    @contextlib.contextmanager
    def view(self, snap: Snap, scratch: str | None = None) -> Iterator[str]:
        yield snap.ident


def detect_btrfs_features() -> dict[str, Any]:
    done = run_command(["btrfs", "--version"], "btrfs --version", check=False)
    match = re.search(r"v(\d+(?:\.\d+)*)", _text(done.stdout))
    helptext = run_command(["btrfs", "send", "--help"], "btrfs send --help", check=False)
    text = _text(helptext.stdout) + _text(helptext.stderr)
    return {
        "implementation": "btrfs-progs",
        "version": match.group(1) if match else "",
        "send_proto2": "--proto" in text,
        "send_compressed": "--compressed-data" in text,
    }


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
# chains: which epochs an artifact needs, and reading them back
# --------------------------------------------------------------------------


def chain_epochs(artifact: Artifact) -> list[str]:
    """Earlier epochs an incremental artifact needs (oldest first); empty for a full one.

    Retention must keep these while it keeps the epoch of ``artifact``.
    """
    return [str(link.get("epoch")) for link in artifact.source.get("chain") or [] if link.get("epoch")]


def manifest_needs(manifest: Manifest) -> set[str]:
    """Every earlier epoch the snapshot artifacts of ``manifest`` depend on."""
    needs: set[str] = set()
    for artifact in manifest.artifacts:
        if artifact.asset_type in ("zfs", "btrfs"):
            needs.update(chain_epochs(artifact))
    return needs


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
            normalized["full_every"] = int(normalized["full_every"])
        except (TypeError, ValueError):
            raise CaptureError("asset %s: full_every must be a number" % normalized["name"], "give 0 or more")
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
        epoch = context.epoch if context is not None else _now_epoch()
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
        if result.content.size != int(link["content_size"]) or result.content.sha256 != link["content_sha256"]:
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


class ZfsAssetType(SnapshotAssetType):
    """A ZFS dataset: ``path`` is its mountpoint (``dataset`` may name it); ``recursive`` sends its children too."""

    name = "zfs"
    extension = ".zfs"
    content_format = "zfs-send"
    options: ClassVar[dict[str, Any]] = dict(SnapshotAssetType.options, dataset=None, recursive=False)

    def backend(self):
        return Zfs()

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
            run_command(["zfs", "create", "-o", "mountpoint=none", parent], "creating %s" % parent)
        if fs.exists(staging):
            if not force:
                raise RestoreError(
                    "the staging dataset %s already exists (an earlier restore to %s)" % (staging, target),
                    "destroy it (zfs destroy -r %s) or set force: true" % staging,
                )
            fs.destroy_dataset(staging, recursive=True)
        recursive = bool(artifact.source.get("recursive"))
        done = False
        state: dict[str, Any] = {"scratch": getattr(context, "scratch", None)}
        try:
            for link in links:
                receiver = _Process(
                    fs.receive_argv(staging, True, recursive), "zfs receive into %s" % staging, stdin=subprocess.PIPE
                )
                try:
                    self._feed_link(context, link, receiver.proc.stdin, staging)
                    receiver.finish()
                except BrokenPipeError:
                    receiver.finish()
                    raise
                finally:
                    receiver.close()
            receiver = _Process(
                fs.receive_argv(staging, bool(links), recursive), "zfs receive into %s" % staging, stdin=subprocess.PIPE
            )

            def complete() -> dict[str, Any]:
                receiver.finish()
                name = str((artifact.source.get("snapshot") or {}).get("name"))
                received = fs.snapshot(staging, name)
                state["received"] = received.guid if received else None
                run_command(["zfs", "set", "mountpoint=%s" % target, staging], "mounting %s" % staging)
                if fs.property(staging, "mounted")[0] != "yes":
                    run_command(["zfs", "mount", staging], "mounting %s" % staging)
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
                receiver = _Process(["btrfs", "receive", "-e", incoming], "btrfs receive", stdin=subprocess.PIPE)
                try:
                    self._feed_link(context, link, receiver.proc.stdin, incoming)
                    receiver.finish()
                finally:
                    receiver.close()
            receiver = _Process(["btrfs", "receive", "-e", incoming], "btrfs receive", stdin=subprocess.PIPE)

            def complete() -> dict[str, Any]:
                receiver.finish()
                leaf = os.path.basename(str(source.get("path") or ""))
                received = os.path.join(incoming, leaf)
                info = fs.show(received) or {}
                state["received"] = info.get("received uuid")
                run_command(
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
    stamp = _now_epoch()
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
            run_command(["zfs", "inherit", "mountpoint", live], "mounting %s" % live)
        result = {"dataset": live, "previous": previous, "previous_mountpoint": fs.mountpoint(previous)}
    serving = result["dataset"]
    if fs.property(serving, "mounted")[0] != "yes":
        run_command(["zfs", "mount", serving], "mounting %s" % serving)
    result.update({"mode": mode, "mountpoint": mountpoint, "changed": True})
    return result


# --------------------------------------------------------------------------
# a snapshot stream to or from a sealed file (the zfs_snapshot / btrfs_snapshot modules)
# --------------------------------------------------------------------------


def send_to_file(fs, snap: Snap, base, dest: str, recipients: list, level: int = 3, recursive: bool = False):
    """Seal a send stream (zstd + age, one pass) into ``dest`` (0600, written beside it, renamed when complete)."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.seal import seal

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
        "content_sha256": result.content.sha256,
        "seconds": round(time.monotonic() - began, 3),
    }


def receive_from_file(argv: list[str], src: str, identities: list, what: str) -> dict[str, Any]:
    """Unseal ``src`` (age, then zstd when compressed) into a receiving command's stdin."""
    began = time.monotonic()
    try:
        handle = open(src, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise describe_os_error(exc, "opening the stream file", src)
    receiver = _Process(argv, what, stdin=subprocess.PIPE)
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
        "content_sha256": result.content.sha256,
        "seconds": round(time.monotonic() - began, 3),
    }


# --------------------------------------------------------------------------
# the modules' states, for both backends
# --------------------------------------------------------------------------

POLICY_KEYS = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within")


def _listing(fs, volume: str, snapshot_dir: str | None) -> list[str]:
    snaps = fs.snapshots(volume) if fs.kind == "zfs" else fs.snapshots(volume, snapshot_dir, with_info=False)
    return [s.name for s in snaps]


def _diff(before: list[str], after: list[str], volume: str) -> dict[str, str]:
    return {
        "before": "".join("%s@%s\n" % (volume, n) for n in before),
        "after": "".join("%s@%s\n" % (volume, n) for n in after),
        "before_header": "%s (snapshots)" % volume,
        "after_header": "%s (snapshots)" % volume,
    }


def _need(params: dict[str, Any], key: str, state: str) -> Any:
    if not params.get(key):
        raise SnapshotError("state %s needs %s" % (state, key), "set %s" % key)
    return params[key]


def run_state(fs, volume: str, params: dict[str, Any], check_mode: bool) -> dict[str, Any]:
    """One module run: ``params`` are the module's options (see zfs_snapshot / btrfs_snapshot)."""
    state = params["state"]
    prefix = check_prefix(params.get("prefix") or DEFAULT_PREFIX)
    snapshot_dir = params.get("snapshot_dir")
    recursive = bool(params.get("recursive"))
    before = _listing(fs, volume, snapshot_dir) if state != "received" else []
    result: dict[str, Any] = {"changed": False, "volume": volume, "state": state, "features": dict(fs.features)}

    def find(name: str) -> Snap | None:
        return fs.snapshot(volume, name) if fs.kind == "zfs" else fs.snapshot(volume, name, snapshot_dir)

    def existing(name: str) -> Snap:
        snap = find(name)
        if snap is None:
            raise SnapshotError(
                "%s has no snapshot %s" % (volume, name), "choose one of: %s" % ", ".join(before[-5:] or ["(none)"])
            )
        return snap

    after = list(before)
    if state == "present":
        name = params.get("name") or snapshot_name(prefix, _now_epoch())
        snap = find(name)
        if snap is None:
            result["changed"] = True
            after.append(name)
            if not check_mode:
                snap = (
                    fs.create(volume, name, recursive)
                    if fs.kind == "zfs"
                    else fs.create(volume, name, snapshot_dir=snapshot_dir)
                )
        result["snapshot"] = snap.facts() if snap is not None else {"volume": volume, "name": name}
    elif state == "absent":
        name = _need(params, "name", state)
        snap = find(name)
        if snap is not None:
            if snap.held:
                raise SnapshotError(
                    "the snapshot %s is held (%d hold(s)) and is never destroyed" % (snap.ident, snap.userrefs),
                    "release its holds first (state: released)",
                )
            result["changed"] = True
            after.remove(name)
            if not check_mode:
                fs.destroy(snap, recursive=recursive, dependents=bool(params.get("allow_dependents")))
    elif state in ("held", "released"):
        if fs.kind != "zfs":
            raise SnapshotError("btrfs has no snapshot holds", "use zfs_snapshot for holds")
        snap = existing(_need(params, "name", state))
        tag = params.get("tag") or "nodekeep"
        tags = fs.holds(snap)
        if tags is not None:
            has = tag in tags
        else:
            # zfs-fuse cannot list holds: try the change (a release of an absent tag fails harmlessly).
            has = None
        if state == "held" and has is not True:
            if check_mode:
                result["changed"] = has is False or has is None
            else:
                done = fs._run(["hold"] + (["-r"] if recursive else []) + [tag, snap.ident], "holding", check=False)
                message = _text(done.stderr)
                if done.returncode != 0 and "already exists" not in message and "tag already" not in message:
                    raise SnapshotError("holding %s failed: %s" % (snap.ident, message.strip()), "see the message")
                result["changed"] = done.returncode == 0
        elif state == "released" and has is not False:
            if check_mode:
                result["changed"] = snap.held if has is None else True
            else:
                result["changed"] = fs.release(snap, tag, recursive=recursive, check=False)
        result["snapshot"] = (find(snap.name) or snap).facts()
        result["userrefs"] = (find(snap.name) or snap).userrefs
        result["tag"] = tag
    elif state == "pruned":
        options = {k: params.get(k) for k in POLICY_KEYS + ("pick",) if params.get(k) is not None}
        policy = RetentionPolicy.from_options(options)
        protect = set(params.get("protect") or [])
        if fs.kind == "zfs":
            report = prune_snapshots(
                fs,
                volume,
                policy,
                prefix,
                protect,
                dry_run=check_mode,
                recursive=recursive,
                dependents=bool(params.get("allow_dependents")),
            )
        else:
            report = prune_snapshots(fs, volume, policy, prefix, protect, dry_run=check_mode, snapshot_dir=snapshot_dir)
        gone = {e["name"] for e in report["destroyed"]}
        after = [n for n in before if n not in gone]
        result.update({k: report[k] for k in ("kept", "destroyed", "held", "errors", "policy")})
        result["changed"] = bool(gone)
        if report["errors"]:
            raise SnapshotError(
                "some snapshots could not be destroyed: %s" % "; ".join(e["error"] for e in report["errors"]),
                "see the errors; the others were pruned",
            )
    elif state == "sent":
        from ansible_collections.nodekeep.backup.plugins.module_utils.seal import load_recipients

        snap = existing(_need(params, "name", state))
        dest = _need(params, "dest", state)
        base = existing(params["base"]) if params.get("base") else None
        recipients = load_recipients(params.get("recipients") or [], params.get("recipients_files") or [])
        result["snapshot"] = snap.facts()
        result["base"] = base.facts() if base else None
        if os.path.exists(dest) and not params.get("force"):
            result["dest"] = dest
            result["msg"] = "%s exists; nothing was sent (force: true sends again)" % dest
        else:
            result["changed"] = True
            if not check_mode:
                result.update(send_to_file(fs, snap, base, dest, recipients, int(params.get("level") or 3), recursive))
    elif state == "received":
        from ansible_collections.nodekeep.backup.plugins.module_utils.seal import load_identities

        src = _need(params, "src", state)
        target = _need(params, "target", state)
        identities = load_identities(params.get("identities") or [], params.get("identity_files") or [])
        if not os.path.isfile(src):
            raise SnapshotError("the stream file %s does not exist" % src, "give src an existing sealed stream")
        result["changed"] = True
        result["target"] = target
        if not check_mode:
            if fs.kind == "zfs":
                argv = fs.receive_argv(target, bool(params.get("force")), recursive)
            else:
                os.makedirs(target, mode=0o700, exist_ok=True)
                argv = ["btrfs", "receive", "-e", target]
            result.update(receive_from_file(argv, src, identities, "%s receive into %s" % (fs.kind, target)))
    elif state == "rolled_back":
        snap = existing(_need(params, "name", state))
        newer = before[before.index(snap.name) + 1 :]
        if newer and not params.get("discard_newer"):
            raise SnapshotError(
                "%s has newer snapshots than %s (%s)" % (volume, snap.name, ", ".join(newer)),
                "set discard_newer: true to destroy them with the rollback (zfs rollback -r)",
            )
        result["changed"] = True
        after = before[: before.index(snap.name) + 1]
        if not check_mode:
            fs.rollback(snap, discard_newer=bool(params.get("discard_newer")))
    elif state == "cutover":
        staging = _need(params, "staging", state)
        result["changed"] = True
        if not check_mode:
            result.update(zfs_cutover(staging, volume, mode=params.get("cutover_mode") or "auto", fs=fs))
    else:
        raise SnapshotError("unknown state %r" % (state,), "see the module documentation")
    result["snapshots"] = after
    result["diff"] = _diff(before, after, volume)
    return result
