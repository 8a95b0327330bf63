# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``files`` asset type (large directory trees, incremental) and the ``config`` type.

``files``: a write-once, content-addressed layout in the repository itself.
Each distinct file content is sealed once through the one seal pipeline
(zstd + age, standard format) as an *object* of the node,
``NODE/objects/<name[:2]>/<name>``, where ``name`` is an HMAC-SHA-256 of the
content's SHA-256 under a per-node key kept on the node (so a repository
reader cannot test whether a known file is in the backup). The epoch's
artifact is the *index*: JSON lines (a header, then one entry per path with
type, mode, uid, gid, mtime_ns, size, content SHA-256, object name, symlink
or hard-link target), sealed like every artifact, so
``age -d -i KEY da.index.jsonl.zst.age | zstd -d`` shows it. Beside it the
epoch holds ``<asset>.refs.txt``: the object names the index needs with their
sealed sizes and SHA-256 (plaintext, no content facts), whose own checksum is
in the signed manifest. Verify, copies and retention's garbage collection
read that list without any identity.

An incremental run reads the node's local cache of the previous index (the
node holds only recipients, so it cannot decrypt the repository's copy; the
cache is used only when it matches a complete epoch's manifest), skips files
whose size, mtime_ns, ctime_ns and inode did not change, and uploads only
objects that do not exist yet (one listing of the node's objects per run).
Files are read once while they are hashed; a file whose size, mtime or ctime
changes while it is read is read again, and after three attempts it is
copied to scratch space and stored flagged ``changed`` (listed in the facts),
never silently torn. The stat calls alone cannot prove a read whole (a write
sets the times before its bytes land; a write through a mapping sets none):
a file read into memory is read a second time and must return the same bytes,
a streamed one is read again when it is sealed and must hash the same.

Restore rebuilds the tree from the index and the objects beside the target
with the same safe extractor as tar restores (no absolute paths, no ``..``,
no writes through symlinks, no device nodes; symlinks, absolute ones too, are created as they are),
checking every object's plaintext SHA-256 against the index, then keeps
modes, numeric ownership (as root), nanosecond mtimes, symlinks and hard
links.

``config``: small configuration files or a directory of them, captured as
they are (a file, or a tar stream of a directory), restored with their mode,
owner and mtime; verify reports whether the live copy still matches.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import errno
import hashlib
import hmac
import io
import json
import os
import random
import shutil
import stat
import tarfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils import archive as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils import assets as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RepositoryError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.manifest import EPOCH_RE, MANIFEST_NAME, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import (
    discard_temp,
    fsync_dir,
    makedirs_private,
    stream_digest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.seal import seal, unseal

INDEX_FORMAT = "nodekeep.files-index/v2"
#: index formats this version reads (v1: one object per file, no packs)
INDEX_FORMATS = ("nodekeep.files-index/v1", INDEX_FORMAT)
REFS_FORMAT = "nodekeep.files-refs/v1"
DEFAULT_STATE_DIR = "/var/lib/nodekeep/files"
KEY_FILE = "object-name.key"
#: files up to this size are read into memory once (hash and seal the same bytes)
SMALL_FILE = 4 << 20
#: files up to this size are stored in pack objects (many small files, one age header and one write)
PACK_MEMBER_MAX = 256 << 10
#: a pack is sealed and written once its members reach this many plaintext bytes
PACK_SIZE = 4 << 20
#: index entries held back (walk order) while a pack is open; reaching it closes the pack early
PACK_QUEUE = 16384
#: stable reads tried before a changing file is copied to scratch and flagged
READ_ATTEMPTS = 3
LIST_LIMIT = 100
#: config files hashed against the live copy by verify at most this big
LIVE_COMPARE_LIMIT = 64 << 20


class _Changed(Exception):
    """The file's content changed between hashing and sealing: read it again."""


# --------------------------------------------------------------------------
# object names and the node's state (key and index cache)
# --------------------------------------------------------------------------


def object_name(key: bytes, content_sha256: str) -> str:
    """The object name of a content: HMAC-SHA-256 of its SHA-256 under the node's object-name key."""
    return hmac.new(key, b"nodekeep-object-v1\0" + bytes.fromhex(content_sha256), hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A public fingerprint of the object-name key (a changed key means a full upload)."""
    return hmac.new(key, b"nodekeep-key-id", hashlib.sha256).hexdigest()[:16]


class NodeState:
    """The node's private files state: ``STATE/NODE/object-name.key`` and ``STATE/NODE/ASSET/index-EPOCH.jsonl``."""

    def __init__(self, state_dir: str, node: str, asset: str) -> None:
        self.node_dir = os.path.join(state_dir, node)
        self.asset_dir = os.path.join(self.node_dir, asset)
        try:
            makedirs_private(self.asset_dir)
        except OSError as exc:
            raise describe_os_error(exc, "creating the files state directory", self.asset_dir)

    def key(self) -> tuple[bytes, bool]:
        """The node's object-name key (32 random bytes, 0600), made on first use; (key, created)."""
        path = os.path.join(self.node_dir, KEY_FILE)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return self._new_key(path), True
        except OSError as exc:
            raise describe_os_error(exc, "reading the object-name key", path)
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if info.st_mode & 0o077 or info.st_uid != os.geteuid():
                raise CaptureError(
                    "the object-name key %s is readable by others or owned by another user" % path,
                    "chmod 0600 it (owner: the backup user)",
                )
            key = handle.read(64)
        if len(key) != 32:
            raise CaptureError(
                "the object-name key %s is damaged (%d bytes, 32 expected)" % (path, len(key)),
                "remove it: the next backup makes a new key and uploads every content once more",
            )
        return key, False

    @staticmethod
    def _new_key(path: str) -> bytes:
        key = os.urandom(32)
        temp = "%s.%s" % (path, uuid.uuid4().hex[:8])
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as handle:
            handle.write(key)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            os.unlink(temp)
            with open(path, "rb") as handle:
                return handle.read(64)[:32]
        os.unlink(temp)
        fsync_dir(os.path.dirname(path))
        return key

    def caches(self) -> list[tuple[str, str]]:
        """(epoch, path) of the cached indexes, newest first."""
        found = []
        for name in os.listdir(self.asset_dir):
            if name.startswith("index-") and name.endswith(".jsonl") and EPOCH_RE.match(name[6:-6]):
                found.append((name[6:-6], os.path.join(self.asset_dir, name)))
        return sorted(found, reverse=True)

    def save(self, epoch: str, index_path: str) -> str:
        final = os.path.join(self.asset_dir, "index-%s.jsonl" % epoch)
        temp = final + ".tmp"
        shutil.copyfile(index_path, temp)
        os.chmod(temp, 0o600)
        os.rename(temp, final)
        return final


def _file_digest(path: str) -> tuple[int, str]:
    with open(path, "rb") as handle:
        return stream_digest(handle)


_FILE_MARK = '"type":"file"'


def read_index(path: str, files_only: bool = False) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """The header and an iterator of entries of a plaintext index file (``files_only``: regular files only)."""
    handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the generator below
    try:
        header = json.loads(handle.readline() or "{}")
    except ValueError:
        handle.close()
        raise IntegrityError("the files index %s is not JSON lines" % path, "the index is damaged")
    if header.get("format") not in INDEX_FORMATS:
        handle.close()
        raise IntegrityError(
            "the files index %s has format %r, expected %s" % (path, header.get("format"), INDEX_FORMAT),
            "restore it with a nodekeep version that knows this format",
        )

    def entries() -> Iterator[dict[str, Any]]:
        with handle:
            for line in handle:
                # Entries are written compact ("type":"file"; a path's own quotes are escaped): an
                # incremental run parses only the files of its cache (half the lines of a DA store).
                if line.strip() and (not files_only or _FILE_MARK in line):
                    yield json.loads(line)

    return header, entries()


# --------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------


class _BytesSource:
    """A read-only source for the seal pipeline (no ``readinto``: it would allocate a 4 MiB buffer per object)."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class _Content:
    """One read of a file: its SHA-256, size and stat, and how to read the same bytes again."""

    def __init__(
        self,
        sha256: str,
        size: int,
        info: os.stat_result,
        data: bytes | None = None,
        path: str | None = None,
        changed: bool = False,
    ) -> None:
        self.sha256 = sha256
        self.size = size
        self.info = info
        self.data = data
        self.path = path
        self.changed = changed

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        if self.data is not None:
            yield _BytesSource(self.data)
            return
        fd = os.open(str(self.path), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as handle:
            yield handle


def _stable(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_size,
        after.st_mtime_ns,
        after.st_ctime_ns,
    )


def _unchanged(cached: dict[str, Any] | None, info: os.stat_result) -> bool:
    return bool(
        cached
        and cached.get("type") == "file"
        and not cached.get("changed")
        and cached.get("size") == info.st_size
        and cached.get("mtime_ns") == info.st_mtime_ns
        and cached.get("ctime_ns") == info.st_ctime_ns
        and cached.get("ino") == info.st_ino
    )


class _TreeCapture:
    """One backup of one files asset: walk, hash, upload new objects, write the index and the refs list."""

    def __init__(self, kind: FilesAssetType, asset: dict[str, Any], root: str, scratch: str, context) -> None:
        self.kind = kind
        self.asset = asset
        self.root = os.path.abspath(root)
        self.scratch = scratch
        self.repo = context.repository
        self.node = context.node
        self.epoch = context.epoch
        self.recipients = context.recipients
        self.level = context.level
        self.include = list(asset.get("include") or [])
        self.exclude = list(asset.get("exclude") or [])
        self.state = NodeState(str(asset.get("state_dir") or DEFAULT_STATE_DIR), self.node, asset["name"])
        self.key, self.new_key = self.state.key()
        self.key_id = key_id(self.key)
        self.base_epoch: str | None = None
        self.base: dict[str, dict[str, Any]] = {}
        self.known: dict[str, tuple[int, str]] = {}
        self.existing: dict[str, tuple[int, float]] = {}
        self.refs: dict[str, tuple[int, str]] = {}
        self.unvouched: set[str] = set()
        self.links: dict[tuple[int, int], str] = {}
        self.emitted: set[str] = set()
        # small files go into packs: the open pack's members, and the index entries waiting for its name
        # content SHA-256 -> (pack, offset, sealed size, sealed SHA-256) of a pack that holds it
        self.packed: dict[str, tuple[str, int, int, str]] = {}
        self.pack_members: list[bytes] = []
        self.pack_bytes = 0
        self.pack_slots: dict[str, int] = {}  # content SHA-256 -> offset in the open pack
        # lines waiting behind the open pack: encoded, or the entry of a member still to be named
        self.queue: list[str | dict[str, Any]] = []
        self.sealer: ThreadPoolExecutor | None = None
        self.sealing: tuple[Future, str, int, list] | None = None  # the pack in flight
        self.stats: dict[str, Any] = _archive.entry_counts("excluded")
        self.work: dict[str, Any] = {
            "unchanged": 0,
            "read": 0,
            "read_bytes": 0,
            "retries": 0,
            "new_objects": 0,
            "new_bytes": 0,
            "uploaded_bytes": 0,
            "reused_objects": 0,
            "rehashed_objects": 0,
            "new_packs": 0,
            "packed_files": 0,
        }
        self.notes: dict[str, list[Any]] = {"changed": [], "skipped": [], "outside_links": [], "not_kept": []}
        self.changed_count = 0
        self.scratch_files: list[str] = []

    # -- the previous index (local cache) --

    def load_base(self) -> None:
        caches = self.state.caches()
        complete = set(self.repo.complete_epochs(self.node))
        chosen = None
        for epoch, path in caches:
            if epoch not in complete or epoch >= self.epoch:
                continue
            try:
                manifest = Manifest.from_bytes(
                    self.repo.get_bytes(self.node, epoch, MANIFEST_NAME), node=self.node, epoch=epoch
                )
                artifact = manifest.artifact(self.asset["name"])
                size, digest = _file_digest(path)
            except (NodekeepError, OSError):
                continue
            if (size, digest) != (artifact.content_size, artifact.content_sha256):
                continue
            header, entries = read_index(path, files_only=True)
            if header.get("key_id") != self.key_id:
                for _entry in entries:
                    pass
                continue
            for entry in entries:
                self.base[entry["path"]] = entry
                if entry.get("object"):
                    self.known[entry["object"]] = (int(entry["sealed_size"]), str(entry["sealed_sha256"]))
                    if "offset" in entry:
                        self.packed[entry["sha256"]] = (
                            entry["object"],
                            int(entry["offset"]),
                            int(entry["sealed_size"]),
                            str(entry["sealed_sha256"]),
                        )
            chosen = epoch
            break
        self.base_epoch = chosen
        for epoch, path in caches:
            if epoch != chosen and (chosen is None or epoch < chosen or epoch not in complete):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- walking --

    def run(self, index_path: str) -> None:
        try:
            info = os.stat(self.root)
        except FileNotFoundError:
            raise CaptureError("the directory %s does not exist" % self.root, "check the asset's path")
        except OSError as exc:
            raise describe_os_error(exc, "reading the directory", self.root)
        if not stat.S_ISDIR(info.st_mode):
            raise CaptureError("%s is not a directory" % self.root, "files assets are directory trees")
        self.load_base()
        self.existing = self.repo.object_names(self.node)
        fd = os.open(index_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as out:
            self.out = out
            header = {
                "format": INDEX_FORMAT,
                "root": self.root,
                "key_id": self.key_id,
                "epoch": self.epoch,
                "include": self.include,
                "exclude": self.exclude,
            }
            out.write(json.dumps(header, sort_keys=True) + "\n")
            try:
                self._emit("", os.lstat(self.root))
                self._visit(self.root, "", selected=not self.include)
                self._close_pack()
                self._finish_pack()
                self._flush_queue()
            finally:
                self._stop_sealer()
        self._recheck_unvouched()

    def _visit(self, directory: str, rel_dir: str, selected: bool) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise CaptureError(
                "cannot list the directory %s (%s)" % (directory, exc.strerror),
                "check its permissions (become: true); nothing was committed",
            )
        for entry in entries:
            rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
            if self.exclude and _archive._matches(rel, self.exclude):
                self.stats["excluded"] += 1
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                continue
            chosen = selected or _archive._matches(rel, self.include)
            if stat.S_ISDIR(info.st_mode):
                if chosen:
                    self._emit(rel, info)
                self._visit(entry.path, rel, chosen)
            elif chosen:
                self._emit(rel, info)

    _encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode

    def _write(self, entry: dict[str, Any]) -> None:
        pending = "offset" in entry and entry.get("object") is None
        if self.queue or pending or self.sealing is not None:
            # A pack is open or being written: its members' entries need its name and sealed
            # checksum; later entries wait behind them (walk order).
            self.queue.append(entry if pending else self._encode(entry) + "\n")
            if self.pack_bytes >= PACK_SIZE or len(self.queue) >= PACK_QUEUE:
                self._close_pack()
            elif self.sealing is not None and self.sealing[0].done():
                self._finish_pack()
                if not self.pack_members:
                    self._flush_queue()
            return
        self.out.write(self._encode(entry) + "\n")

    def _emit(self, rel: str, info: os.stat_result) -> None:
        if self.include:
            # Only include patterns can select an entry whose parent was not emitted (nor the same one twice).
            parent = rel.rpartition("/")[0]
            if rel and parent not in self.emitted:
                self._emit(parent, os.lstat(os.path.join(self.root, parent)))
            if rel in self.emitted:
                return
        path = os.path.join(self.root, rel) if rel else self.root
        entry: dict[str, Any] = {
            "path": rel or ".",
            "mode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mtime_ns": info.st_mtime_ns,
        }
        mode = info.st_mode
        # xattrs and ACLs in the entry itself (sealed in the index), holes of a sparse file, what cannot be kept
        xattrs = _attrs.read_xattrs(path, self.notes["not_kept"], rel)
        segments = None
        if stat.S_ISREG(mode):
            segments = self._sparse_and_flags(rel, path, info)
        _attrs.to_index(xattrs, segments, entry)
        if stat.S_ISDIR(mode):
            entry["type"] = "dir"
            if rel:
                self.stats["directories"] += 1
        elif stat.S_ISREG(mode):
            if not self._file(rel, path, info, entry):
                return
        elif stat.S_ISLNK(mode):
            entry["type"] = "symlink"
            try:
                entry["target"] = os.readlink(path)
            except FileNotFoundError:
                self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                return
            self.stats["symlinks"] += 1
            if _archive._leaves_tree(rel, entry["target"]):
                self._note("outside_links", {"path": rel, "target": entry["target"]})
        elif stat.S_ISFIFO(mode):
            entry["type"] = "fifo"
            self.stats["other"] += 1
        else:
            self._note("skipped", {"path": rel, "reason": "socket" if stat.S_ISSOCK(mode) else "device node"})
            return
        self._write(entry)
        if self.include:
            self.emitted.add(rel)

    def _sparse_and_flags(self, rel: str, path: str, info: os.stat_result) -> list[list[int]] | None:
        """A regular file's data segments when it has holes; its chattr flags go to ``not_kept``."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            return None  # vanished or unreadable: _file reports it
        try:
            _attrs.flags_not_kept(fd, rel, self.notes["not_kept"])
            return _attrs.data_segments(fd, info.st_size)
        finally:
            os.close(fd)

    def _file(self, rel: str, path: str, info: os.stat_result, entry: dict[str, Any]) -> bool:
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in self.links:
            entry.update(type="hardlink", link=self.links[key])
            self.stats["hardlinks"] += 1
            return True
        entry["type"] = "file"
        cached = self.base.get(rel)
        name = cached.get("object") if cached else None
        if _unchanged(cached, info) and name in self.existing and self.existing[name][0] == cached["sealed_size"]:
            entry.update({k: cached[k] for k in ("size", "sha256", "object", "sealed_size", "sealed_sha256")})
            if "offset" in cached:
                entry["offset"] = int(cached["offset"])
            entry.update(ino=info.st_ino, ctime_ns=info.st_ctime_ns)
            self.refs[name] = (int(cached["sealed_size"]), str(cached["sealed_sha256"]))
            self.work["unchanged"] += 1
        else:
            content = self._read(path)
            if content is None:
                self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                return False
            # A content stored as its own object (an earlier version's, or a large file) is reused by
            # name; a small one is found in, or added to, a pack.
            name = object_name(self.key, content.sha256)
            place = None if name in self.refs or name in self.existing else self._pack_place(content)
            if place is None:
                try:
                    sealed = self._ensure(content)
                except _Changed:
                    content = self._read(path, copy=True)
                    if content is None:
                        self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                        return False
                    sealed = self._ensure(content)
                    name = object_name(self.key, content.sha256)
                self.refs[name] = sealed
                place = {"object": name, "sealed_size": sealed[0], "sealed_sha256": sealed[1]}
            current = content.info
            entry.update(
                mode=stat.S_IMODE(current.st_mode),
                uid=current.st_uid,
                gid=current.st_gid,
                mtime_ns=current.st_mtime_ns,
                size=content.size,
                sha256=content.sha256,
                ino=current.st_ino,
                ctime_ns=current.st_ctime_ns,
            )
            entry.update(place)
            if content.changed:
                entry["changed"] = True
                self.changed_count += 1
                self._note("changed", rel)
        if info.st_nlink > 1:
            self.links[key] = rel
        self.stats["files"] += 1
        self.stats["bytes"] += int(entry["size"])
        return True

    # -- packs --

    def _pack_place(self, content: _Content) -> dict[str, Any] | None:
        """Where a small content goes: a pack that holds it already, or the open pack; None: its own object."""
        known = self.packed.get(content.sha256)
        if known is not None:
            pack, offset, sealed_size, sealed_sha256 = known
            if self.refs.get(pack) == (sealed_size, sealed_sha256) or (
                pack in self.existing and self.existing[pack][0] == sealed_size
            ):
                self.refs[pack] = (sealed_size, sealed_sha256)
                self.work["reused_objects"] += 1
                return {"object": pack, "offset": offset, "sealed_size": sealed_size, "sealed_sha256": sealed_sha256}
        if content.data is None or content.size > PACK_MEMBER_MAX:
            return None
        offset = self.pack_slots.get(content.sha256)
        if offset is None:
            offset = self.pack_bytes
            self.pack_slots[content.sha256] = offset
            self.pack_members.append(content.data)
            self.pack_bytes += content.size
            self.work["packed_files"] += 1
        # The pack's name and sealed facts are filled in when it is written (_close_pack).
        return {"object": None, "offset": offset, "sealed_size": None, "sealed_sha256": None}

    def _close_pack(self) -> None:
        """Hand the open pack to the sealing thread; its entries wait until it is written (``_finish_pack``).

        One pack is sealed and written (zstd, the age CLI, fsyncs: all outside the GIL)
        while the walk reads the files of the next one. The previous pack is finished
        first, so at most one is in flight and the repository is used by one thread at a time.
        """
        self._finish_pack()
        if not self.pack_members:
            self._flush_queue()
            return
        data = b"".join(self.pack_members)
        self.pack_members = []
        self.pack_bytes = 0
        self.pack_slots = {}
        digest = hashlib.sha256(data).hexdigest()
        name = object_name(self.key, digest)
        queue, self.queue = self.queue, []
        if name in self.refs or name in self.existing:
            # The same pack was written before (the same members in the same order).
            sealed = self.refs[name] if name in self.refs else self._reuse(name)
            self._name_members(queue, name, sealed)
            self.out.write("".join(queue))  # type: ignore[arg-type]
            return
        if self.sealer is None:
            self.sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodekeep-pack")
        future = self.sealer.submit(self._put_pack, name, data)
        self.sealing = (future, name, len(data), queue)

    def _put_pack(self, name: str, data: bytes):
        """(sealing thread) Seal a pack into its object; committed only if the whole seal succeeded."""
        with self.repo.put_object(self.node, name, epoch=self.epoch, size_hint=None) as sink:
            return seal(
                _BytesSource(data),
                sink,
                self.recipients,
                level=self.level,
                threads=0,
                sink_name=self.repo.describe_object(self.node, name),
            )

    def _finish_pack(self) -> None:
        """Wait for the pack in flight, record its object, name its members and write its entries."""
        if self.sealing is None:
            return
        future, name, size, queue = self.sealing
        self.sealing = None
        try:
            result = future.result()
        except RepositoryError as exc:
            if exc.details.get("code") != "exists":
                raise
            self.existing[name] = (0, time.time())
            sealed = self._reuse(name)
        else:
            sealed = (result.sealed.size, result.sealed.sha256)
            self.existing[name] = (result.sealed.size, time.time())
            self.known[name] = sealed
            self.work["new_objects"] += 1
            self.work["new_packs"] += 1
            self.work["new_bytes"] += size
            self.work["uploaded_bytes"] += result.sealed.size
        self._name_members(queue, name, sealed)
        self.out.write("".join(queue))  # type: ignore[arg-type]

    def _name_members(self, queue: list, name: str, sealed: tuple[int, str]) -> None:
        self.refs[name] = sealed
        for number, item in enumerate(queue):
            if isinstance(item, dict):
                item.update(object=name, sealed_size=sealed[0], sealed_sha256=sealed[1])
                self.packed.setdefault(item["sha256"], (name, item["offset"], sealed[0], sealed[1]))
                queue[number] = self._encode(item) + "\n"

    def _flush_queue(self) -> None:
        """Write the held entries (none of them waits for a pack any more)."""
        queue, self.queue = self.queue, []
        self.out.write("".join(queue))  # type: ignore[arg-type]

    def _stop_sealer(self) -> None:
        """Never leave the sealing thread writing: wait for it (after an error, its result is dropped)."""
        if self.sealing is not None:
            future = self.sealing[0]
            self.sealing = None
            with contextlib.suppress(Exception):
                future.result()
        if self.sealer is not None:
            self.sealer.shutdown(wait=True)
            self.sealer = None

    def _read(self, path: str, copy: bool = False) -> _Content | None:
        """A stable read (size, mtime and ctime the same before and after; in memory: the same bytes read
        twice), or a flagged copy after retries."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for attempt in range(READ_ATTEMPTS + 1):
            last = copy or attempt == READ_ATTEMPTS
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise CaptureError(
                    "cannot read %s (%s)" % (path, exc.strerror),
                    "check its permissions (become: true); nothing was committed",
                )
            with open(fd, "rb", buffering=0) as handle:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    return None
                self.work["read"] += 1
                if last:
                    return self._copy(handle, before)
                if before.st_size <= SMALL_FILE:
                    data = handle.readall()
                    after = os.fstat(fd)
                    self.work["read_bytes"] += len(data)
                    # The same stat does not prove the bytes whole: a write() under way when ``before``
                    # was taken had set the times already (one through a mapping sets none). A second
                    # read must return the same bytes: the rest of such a write, landed meanwhile or
                    # landing, changes them (only a writer stalled through both reads goes unseen).
                    if (
                        _stable(before, after)
                        and len(data) == before.st_size
                        and os.pread(fd, len(data) + 1, 0) == data
                    ):
                        return _Content(hashlib.sha256(data).hexdigest(), len(data), before, data=data)
                else:
                    size, digest = stream_digest(handle)
                    after = os.fstat(fd)
                    self.work["read_bytes"] += size
                    if _stable(before, after) and size == before.st_size:
                        return _Content(digest, size, before, path=path)
            self.work["retries"] += 1
            time.sleep(0.02 * (attempt + 1))
        return None  # not reached: the last attempt copies

    def _copy(self, handle, before: os.stat_result) -> _Content:
        """Copy a file that keeps changing into scratch space; what was read is stored, flagged ``changed``."""
        temp = os.path.join(self.scratch, "changing-%s" % uuid.uuid4().hex[:12])
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            size, digest = stream_digest(handle, out)
        self.work["read_bytes"] += size
        self.scratch_files.append(temp)
        return _Content(digest, size, before, path=temp, changed=True)

    def _ensure(self, content: _Content) -> tuple[int, str]:
        """The object of a content: reused when the node has it, else sealed and uploaded once."""
        self._finish_pack()  # one thread uses the repository at a time
        name = object_name(self.key, content.sha256)
        if name in self.refs:
            return self.refs[name]
        if name in self.existing:
            return self._reuse(name)
        began_size = content.size
        try:
            with self.repo.put_object(self.node, name, epoch=self.epoch, size_hint=None) as sink:
                with content.open() as source:
                    result = seal(
                        source,
                        sink,
                        self.recipients,
                        level=self.level,
                        threads=0 if began_size <= SMALL_FILE else -1,
                        sink_name=self.repo.describe_object(self.node, name),
                    )
                if (result.content.size, result.content.sha256) != (content.size, content.sha256):
                    raise _Changed()  # aborts the write: nothing is committed under this name
        except RepositoryError as exc:
            if exc.details.get("code") != "exists":
                raise
            self.existing[name] = (0, time.time())
            return self._reuse(name)
        self.existing[name] = (result.sealed.size, time.time())
        self.known[name] = (result.sealed.size, result.sealed.sha256)
        self.work["new_objects"] += 1
        self.work["new_bytes"] += result.content.size
        self.work["uploaded_bytes"] += result.sealed.size
        return result.sealed.size, result.sealed.sha256

    def _reuse(self, name: str) -> tuple[int, str]:
        self._finish_pack()
        known = self.known.get(name)
        size = self.existing[name][0]
        if known is not None and (known[0] == size or size == 0):
            self.work["reused_objects"] += 1
            return known
        # An object this node has no record of (its cache was lost, or a run that failed left it): hash it.
        with self.repo.open_object(self.node, name) as stream:
            size, digest = stream_digest(stream)
        self.known[name] = (size, digest)
        self.unvouched.add(name)
        self.work["rehashed_objects"] += 1
        return size, digest

    def _recheck_unvouched(self) -> None:
        """Objects reused without a record must still be there (garbage collection may have run meanwhile)."""
        for name in sorted(self.unvouched):
            if self.repo.has_object(self.node, name) is None:
                raise CaptureError(
                    "object %s disappeared during the backup (garbage collection ran at the same time)"
                    % self.repo.describe_object(self.node, name),
                    "run the backup again; do not run epoch_prune while a backup of the node runs",
                )

    def _note(self, kind: str, item: Any) -> None:
        if len(self.notes[kind]) < LIST_LIMIT:
            self.notes[kind].append(item)

    # -- the refs list --

    def write_refs(self, file_name: str) -> dict[str, Any]:
        digest = hashlib.sha256()
        size = 0
        total = 0
        with self.repo.open_write(self.node, self.epoch, file_name) as sink:
            lines = ["%s\n" % REFS_FORMAT]
            for name in sorted(self.refs):
                sealed_size, sealed_sha = self.refs[name]
                total += sealed_size
                lines.append("%s %d %s\n" % (name, sealed_size, sealed_sha))
                if len(lines) >= 4096:
                    size += self._flush_lines(sink, digest, lines)
            size += self._flush_lines(sink, digest, lines)
        return {
            "file": file_name,
            "size": size,
            "sha256": digest.hexdigest(),
            "objects": len(self.refs),
            "bytes": total,
        }

    @staticmethod
    def _flush_lines(sink, digest, lines: list[str]) -> int:
        data = "".join(lines).encode("ascii")
        lines.clear()
        sink.write(data)
        digest.update(data)
        return len(data)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "layout": "objects",
            "entries": dict(self.stats),
            "objects": dict(self.work, referenced=len(self.refs)),
            "key_id": self.key_id,
            "base_epoch": self.base_epoch,
            "include": self.include,
            "exclude": self.exclude,
            "sample": int(self.asset.get("sample") or 0),
            "changed_files": self.changed_count,
        }
        if self.new_key:
            facts["new_key"] = True
        for kind, items in self.notes.items():
            if items:
                facts[kind] = items
        return facts


# --------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------


_MEMBER_TYPES = {
    "dir": tarfile.DIRTYPE,
    "file": tarfile.REGTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


class _Member(tarfile.TarInfo):
    """A tar member built from an index entry; regular files carry their entry (object, checksums)."""

    nodekeep_entry: dict[str, Any] | None = None


def _member(entry: dict[str, Any]) -> tarfile.TarInfo:
    kind = entry.get("type")
    if kind not in _MEMBER_TYPES:
        raise RestoreError(
            "the files index holds an entry of unknown type %r (%s)" % (kind, str(entry.get("path"))[:200]),
            "the index is damaged or newer than this nodekeep",
        )
    member = _Member(str(entry["path"]))
    member.type = _MEMBER_TYPES[kind]
    member.mode = int(entry.get("mode", 0o700)) & 0o7777
    member.uid = int(entry.get("uid", 0))
    member.gid = int(entry.get("gid", 0))
    mtime_ns = int(entry.get("mtime_ns", 0))
    member.mtime = mtime_ns // 10**9
    member.pax_headers = {"mtime": _archive._pax_time(mtime_ns)}
    member.pax_headers.update(_attrs.index_to_pax(entry))
    if kind == "symlink":
        member.linkname = str(entry.get("target", ""))
    elif kind == "hardlink":
        member.linkname = str(entry.get("link", ""))
    elif kind == "file":
        member.size = int(entry["size"])
        member.nodekeep_entry = entry
    return member


class _ObjectExtractor(_archive._Extractor):
    """The tar extractor's safety rules, with regular files filled from objects instead of a tar stream.

    A file stored as its own object is written at once. A file stored in a pack is
    created empty (0600) in walk order, like every other entry, and filled later by
    ``fill_packs``: each pack is decrypted once, whatever order its members come in.
    """

    def __init__(self, root: str, keep_ownership: bool) -> None:
        # no per-file fsync: rebuild_tree makes the whole tree durable at once (sync_filesystem)
        super().__init__(root, keep_ownership, False)
        # pack -> [(rel, offset, size, sha256 digest, mode, uid, gid, mtime_ns)]: one small tuple per file
        self.packs: dict[str, list[tuple[Any, ...]]] = {}
        self.pack_facts: dict[str, tuple[int, str]] = {}
        #: packed files with holes: rel -> their data segments
        self.sparse: dict[str, Any] = {}

    def _fill(self, rel: str, member: tarfile.TarInfo, archive, out: BinaryIO) -> bool:
        """A file stored as its own object is written now; a pack member is noted and filled by ``fill_packs``."""
        entry = member.nodekeep_entry  # type: ignore[attr-defined]
        if "offset" in entry:
            pack = str(entry.get("object") or "")
            facts = (int(entry["sealed_size"]), str(entry["sealed_sha256"]))
            if self.pack_facts.setdefault(pack, facts) != facts:
                raise IntegrityError(
                    "the files index gives two sizes or checksums for pack %s (%s)" % (pack, entry["path"]),
                    "the index is damaged; restore another epoch or copy",
                )
            if entry.get("sparse") is not None:
                self.sparse[rel] = _attrs.from_pax(member.pax_headers)[1]
            self.packs.setdefault(pack, []).append(
                (
                    rel,
                    int(entry["offset"]),
                    int(entry["size"]),
                    bytes.fromhex(str(entry["sha256"])),
                    member.mode,
                    member.uid,
                    member.gid,
                    int(entry.get("mtime_ns", 0)),
                )
            )
            return False
        archive.write_object(entry, out)
        return True

    def fill_packs(self, reader: _ObjectReader) -> None:
        """Decrypt each pack once and write its members, checking each member's size and SHA-256."""
        flags = os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for pack in list(self.packs):
            members = self.packs.pop(pack)
            end = max(offset + size for _target, offset, size, *_rest in members)
            data = reader.read_pack(pack, self.pack_facts[pack], end, members[0][0])
            view = memoryview(data)
            for rel, offset, size, sha256, mode, uid, gid, mtime_ns in members:
                part = view[offset : offset + size]
                if len(part) != size or hashlib.sha256(part).digest() != sha256:
                    raise IntegrityError(
                        "object %s of %s: its content does not match the index's SHA-256"
                        % (reader.repository.describe_object(reader.node, pack), rel),
                        "do not trust this copy; restore another epoch or copy",
                    )
                target = os.path.join(self.root, rel)
                fd = os.open(target, flags)
                with open(fd, "wb", buffering=0) as out:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise RestoreError(
                            "%s is no longer a regular file" % target, "restore into a private directory"
                        )
                    holes = self.sparse.pop(rel, None)
                    if holes is None:
                        out.write(part)
                    else:
                        sink = _attrs.SparseWriter(out, holes, size)
                        sink.write(part)
                        sink.finish()
                    self._fd_attributes(fd, uid, gid, mode, mtime_ns)
            view.release()


class _ObjectReader:
    """Fills restored files from the node's objects, checking each against the index."""

    def __init__(self, repository, node: str, identities: list) -> None:
        self.repository = repository
        self.node = node
        self.identities = identities
        self.objects = 0
        self.sealed_bytes = 0

    def _unseal(self, name: str, out, path: str, limit: int):
        """Unseal an object, never past ``limit`` plaintext bytes (what the signed index records)."""
        where = self.repository.describe_object(self.node, name) if name else "(no object)"
        try:
            with self.repository.open_object(self.node, name) as stream:
                return where, unseal(stream, out, self.identities, sink_name=path, limit=limit)
        except NodekeepError as exc:
            # Name the object and the path it holds: the operator checks or replaces exactly that.
            raise type(exc)("object %s of %s: %s" % (where, path, exc.problem), exc.remedy) from exc

    def read_pack(self, name: str, facts: tuple[int, str], end: int, path: str) -> bytearray:
        """The first ``end`` bytes of a pack's plaintext, after checking the whole object's sealed bytes."""
        sink = _PrefixSink(end)
        # A pack closes once its members reach PACK_SIZE; its last member is at most PACK_MEMBER_MAX.
        where, result = self._unseal(name, sink, path, PACK_SIZE + PACK_MEMBER_MAX)
        if (result.sealed.size, result.sealed.sha256) != facts:
            raise IntegrityError(
                "object %s of %s: its sealed bytes do not match the index's SHA-256" % (where, path),
                "do not trust this copy; restore another epoch or copy",
            )
        self.objects += 1
        self.sealed_bytes += result.sealed.size
        return sink.getvalue()

    def write_object(self, entry: dict[str, Any], out: BinaryIO) -> None:
        name = str(entry.get("object") or "")
        path = str(entry["path"])
        if "offset" in entry:
            offset, size = int(entry["offset"]), int(entry["size"])
            data = self.read_pack(name, (int(entry["sealed_size"]), str(entry["sealed_sha256"])), offset + size, path)
            part = data[offset : offset + size]
            if len(part) != size or hashlib.sha256(part).hexdigest() != entry["sha256"]:
                raise IntegrityError(
                    "object %s of %s: its content does not match the index's SHA-256"
                    % (self.repository.describe_object(self.node, name), path),
                    "do not trust this copy; restore another epoch or copy",
                )
            out.write(part)
            return
        where, result = self._unseal(name, out, path, int(entry["size"]))
        problems = []
        if (result.content.size, result.content.sha256) != (int(entry["size"]), entry["sha256"]):
            problems.append("its content does not match the index's SHA-256")
        if entry.get("sealed_sha256") and (result.sealed.size, result.sealed.sha256) != (
            int(entry["sealed_size"]),
            entry["sealed_sha256"],
        ):
            problems.append("its sealed bytes do not match the index's SHA-256")
        if problems:
            raise IntegrityError(
                "object %s of %s: %s" % (where, path, "; ".join(problems)),
                "do not trust this copy; restore another epoch or copy",
            )
        self.objects += 1
        self.sealed_bytes += result.sealed.size


class _PrefixSink:
    """Keeps the first ``keep`` bytes of a pack's plaintext (what the index needs) and only counts the rest.

    A pack may hold members no longer referenced (files deleted since it was written);
    memory stays bounded whatever the object holds.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.buffer = bytearray()

    def write(self, data) -> int:
        room = self.keep - len(self.buffer)
        if room > 0:
            self.buffer += data[:room]
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered elsewhere."""

    def getvalue(self) -> bytearray:
        return self.buffer  # not copied: a pack is a few MiB


def sync_filesystem(path: str) -> None:
    """Make everything written under ``path`` durable: one ``syncfs`` of its filesystem (``sync`` elsewhere).

    One call instead of an fsync per restored file and directory: the tree is
    placed (renamed in) only after this returns.
    """
    if _SYNCFS is None:
        os.sync()
        return
    syncfs, get_errno = _SYNCFS
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        if syncfs(fd) == 0:
            return
        code = get_errno()
    finally:
        os.close(fd)
    if code == errno.ENOSYS:
        os.sync()
        return
    raise OSError(code, os.strerror(code), path)


def _load_syncfs():
    try:
        import ctypes

        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (ImportError, OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function, ctypes.get_errno


_SYNCFS = _load_syncfs()


def rebuild_tree(
    index_path: str,
    dest_dir: str,
    repository,
    node: str,
    identities: list,
    keep_ownership: bool | None = None,
    fsync: bool = True,
) -> dict[str, Any]:
    """Rebuild a tree in the new directory ``dest_dir`` from a plaintext index and the node's objects.

    With ``fsync`` the whole tree is made durable once at the end (``sync_filesystem``).
    """
    _header, entries = read_index(index_path)
    root = _archive._prepare_destination(dest_dir)
    owner = (os.geteuid() == 0) if keep_ownership is None else keep_ownership
    extractor = _ObjectExtractor(root, owner)
    reader = _ObjectReader(repository, node, identities)
    try:
        for entry in entries:
            extractor.add(_member(entry), reader)
        extractor.fill_packs(reader)
        extractor.finish()
        if fsync:
            sync_filesystem(root)
    except FileExistsError:
        raise RestoreError("the files index lists a path twice", "the index is damaged")
    except OSError as exc:
        raise describe_os_error(exc, "rebuilding the tree", getattr(exc, "filename", None) or root)
    stats = dict(extractor.stats)
    stats["objects_read"] = reader.objects
    return stats


# --------------------------------------------------------------------------
# the refs list (plaintext, checked against the signed manifest)
# --------------------------------------------------------------------------


def load_refs(repository, node: str, epoch: str, artifact) -> dict[str, tuple[int, str]]:
    """The objects an epoch's files artifact references, after checking the list against its manifest facts."""
    facts = artifact.source.get("refs") or {}
    file_name = facts.get("file")
    if not file_name:
        raise IntegrityError("artifact %s has no refs facts in its manifest" % artifact.name, "the manifest is damaged")
    data = repository.get_bytes(node, epoch, file_name, limit=max(16 << 20, int(facts.get("size") or 0) + 1))
    if len(data) != int(facts.get("size", -1)) or hashlib.sha256(data).hexdigest() != facts.get("sha256"):
        raise IntegrityError(
            "%s does not match its manifest (size or SHA-256)" % repository.describe(node, epoch, file_name),
            "the list of objects was modified or damaged; do not trust this copy, use another copy or epoch",
        )
    lines = data.decode("ascii").splitlines()
    if not lines or lines[0] != REFS_FORMAT:
        raise IntegrityError("%s is not a %s list" % (file_name, REFS_FORMAT), "the list is damaged")
    refs: dict[str, tuple[int, str]] = {}
    for line in lines[1:]:
        name, size, digest = line.split(" ")
        refs[name] = (int(size), digest)
    return refs


def check_objects(repository, node: str, refs: dict[str, tuple[int, str]], read: bool = True) -> dict[str, Any]:
    """Every referenced object exists with its size and, when ``read``, its sealed SHA-256."""
    present = repository.object_names(node)
    missing, wrong = [], []
    checked_bytes = 0
    for name in sorted(refs):
        size, digest = refs[name]
        if name not in present:
            missing.append(name)
            continue
        if present[name][0] != size:
            wrong.append("%s (size %d, expected %d)" % (name, present[name][0], size))
            continue
        if read:
            with repository.open_object(node, name) as stream:
                found_size, found = stream_digest(stream)
            checked_bytes += found_size
            if (found_size, found) != (size, digest):
                wrong.append("%s (SHA-256 differs)" % name)
    return {"objects": len(refs), "missing": missing, "wrong": wrong, "read_bytes": checked_bytes}


# --------------------------------------------------------------------------
# the asset types
# --------------------------------------------------------------------------


class FilesAssetType(_assets.AssetType):
    """A directory tree stored as content-addressed objects plus a sealed index per epoch (incremental)."""

    name = "files"
    extension = ".index.jsonl"
    content_format = "files-index"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": [], "state_dir": DEFAULT_STATE_DIR, "sample": 20}

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        for option in ("include", "exclude"):
            value = normalized.get(option) or []
            if isinstance(value, str) or not all(isinstance(item, str) for item in value):
                raise CaptureError(
                    "asset %s: %s must be a list of glob patterns" % (normalized["name"], option),
                    "write it as a YAML list, e.g. ['*.tmp', 'cache']",
                )
            normalized[option] = list(value)
        state = str(normalized.get("state_dir") or DEFAULT_STATE_DIR)
        if not os.path.isabs(state):
            raise CaptureError(
                "asset %s: state_dir %r is not absolute" % (normalized["name"], state),
                "give an absolute directory such as %s" % DEFAULT_STATE_DIR,
            )
        normalized["state_dir"] = state
        try:
            normalized["sample"] = int(normalized.get("sample") or 0)
        except (TypeError, ValueError):
            raise CaptureError("asset %s: sample must be a number of files" % normalized["name"], "e.g. sample: 20")
        return normalized

    def refs_file(self, asset_name: str) -> str:
        return "%s.refs.txt" % asset_name

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        with self.capture_root(asset["path"], asset, scratch_dir, context) as captured:
            yield captured

    @contextlib.contextmanager
    def capture_root(self, root: str, asset: dict[str, Any], scratch_dir: str, context, facts=None):
        """Capture ``root`` (the asset's path, or a snapshot of it) as objects plus an index."""
        if context is None or getattr(context, "repository", None) is None or not context.recipients:
            raise CaptureError(
                "asset %s: files assets need the engine's run context (repository and recipients)" % asset["name"],
                "back it up through epoch_backup / backup_epoch",
            )
        began = time.monotonic()
        run = _TreeCapture(self, asset, root, scratch_dir, context)
        index_path = os.path.join(scratch_dir, "%s.%s.index.jsonl" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            run.run(index_path)
            refs = run.write_refs(self.refs_file(asset["name"]))
            run.state.save(context.epoch, index_path)
            result = dict(facts or {})
            result.update(run.facts())
            result["refs"] = refs
            result["capture_seconds"] = round(time.monotonic() - began, 3)
            with open(index_path, "rb") as stream:
                yield _assets.Captured(stream, result)
        finally:
            for path in [index_path, *run.scratch_files]:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- restore --

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        if context is None or context.artifact is None or not context.identities:
            raise RestoreError(
                "files assets are restored through the engine (repository, identities and manifest)",
                "use epoch_restore / restore_epoch",
            )
        parent = _archive.restore_parent(target, force)
        token = uuid.uuid4().hex[:8]
        temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(target), token))
        index_dir = context.scratch or parent
        index_path = os.path.join(index_dir, ".%s.nodekeep-index-%s" % (os.path.basename(target), token))
        fd = os.open(index_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        handle = os.fdopen(fd, "wb", buffering=1 << 20)
        artifact = context.artifact

        def complete() -> dict[str, Any]:
            handle.close()
            size, digest = _file_digest(index_path)
            # The index decides which objects are read: check it against the signed manifest first.
            if (size, digest) != (artifact.content_size, artifact.content_sha256):
                raise IntegrityError(
                    "the index of %s does not match the manifest's content checksum" % artifact.name,
                    "do not trust this copy; restore another epoch or copy",
                )
            return {"entries": rebuild_tree(index_path, temp, context.repository, context.node, context.identities)}

        try:
            yield _assets.Staged(temp, handle, complete=complete)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        finally:
            discard_temp(handle, index_path)
        _archive.place_restored_tree(temp, target)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        return _archive.TreeAssetType.deep_check(self, path, artifact, check)  # type: ignore[arg-type]

    # -- hooks: the refs list, verify, copies and garbage collection --

    @staticmethod
    def uses_objects(artifact) -> bool:
        """Whether the artifact is an index of objects (an artifact of another layout has no extra parts)."""
        return artifact.source.get("layout") == "objects"

    def extra_files(self, artifact) -> list[dict[str, Any]]:
        refs = artifact.source.get("refs") or {}
        if not self.uses_objects(artifact) or not refs.get("file"):
            return []
        return [{"file": refs["file"], "size": int(refs.get("size") or 0), "sha256": refs.get("sha256")}]

    def object_references(self, repository, node: str, epoch: str, artifact) -> dict[str, Any]:
        if not self.uses_objects(artifact):
            return {}
        return load_refs(repository, node, epoch, artifact)

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        """Every referenced object is there with its size and sealed SHA-256; deep: a random sample vs the live tree.

        A deep verify has already rebuilt the whole tree (every object decrypted and
        checked against the index) through ``restore_into``.
        """
        if not self.uses_objects(artifact):
            return {}
        refs = load_refs(context.repository, context.node, context.epoch, artifact)
        report = check_objects(context.repository, context.node, refs, read=not deep)
        problems = []
        if report["missing"]:
            problems.append(
                "%d referenced object(s) missing (%s)" % (len(report["missing"]), ", ".join(report["missing"][:3]))
            )
        if report["wrong"]:
            problems.append(
                "%d object(s) damaged or modified (%s)" % (len(report["wrong"]), ", ".join(report["wrong"][:3]))
            )
        if problems:
            raise IntegrityError(
                "artifact %s: %s" % (artifact.name, "; ".join(problems)),
                "do not trust this copy for these files; restore another copy, and run a new backup "
                "(missing objects are uploaded again)",
            )
        result: dict[str, Any] = {"objects": report["objects"], "objects_ok": True}
        sample = int(artifact.source.get("sample") or 0)
        if deep and sample > 0 and context.identities:
            result["sample"] = sample_check(
                context.repository, context.node, context.epoch, artifact, context.identities, sample
            )
        return result


def sample_check(
    repository, node: str, epoch: str, artifact, identities: list, sample: int, live_root: str | None = None
) -> dict[str, Any]:
    """Runbook 000's random-sample restore check: restore N random files and compare them with the live tree.

    Files whose live size or mtime differ from the index changed since the backup
    and are only counted. A live file with the same size and mtime but other content
    is reported in ``differs`` (silent corruption of the live copy or of the backup).
    """
    root = live_root or str(artifact.source.get("path") or "")
    index = io.BytesIO()
    with repository.open_read(node, epoch, artifact.file) as stream:
        result = unseal(stream, index, identities, limit=artifact.content_size)
    if (result.content.size, result.content.sha256) != (artifact.content_size, artifact.content_sha256):
        raise IntegrityError("the index of %s does not match its manifest" % artifact.name, "use another copy")
    entries = [json.loads(line) for line in index.getvalue().decode("utf-8").splitlines()[1:] if line.strip()]
    files = [entry for entry in entries if entry.get("type") == "file"]
    chosen = random.sample(files, min(sample, len(files)))
    report: dict[str, Any] = {"checked": 0, "same": 0, "changed_since": 0, "absent": 0, "differs": []}
    reader = _ObjectReader(repository, node, identities)
    for entry in chosen:
        restored = io.BytesIO()
        reader.write_object(entry, restored)  # raises when the object does not match the index
        report["checked"] += 1
        live = os.path.join(root, entry["path"])
        try:
            info = os.lstat(live)
        except OSError:
            report["absent"] += 1
            continue
        if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            report["changed_since"] += 1
            continue
        if _file_digest(live)[1] == entry["sha256"]:
            report["same"] += 1
        else:
            report["differs"].append(entry["path"])
    if report["differs"]:
        raise IntegrityError(
            "artifact %s: %d sampled file(s) differ from the live tree although size and mtime match (%s)"
            % (artifact.name, len(report["differs"]), ", ".join(report["differs"][:3])),
            "the live store or the backup is corrupt: compare the files, then run a new backup",
        )
    return report


class ConfigAssetType(_archive.TreeAssetType):
    """Configuration files as they are: one file (mode, owner, mtime kept) or a directory of them (a tar)."""

    name = "config"
    content_format = "config"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": []}

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        path = normalized["path"]
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise CaptureError("config asset %s: %s does not exist" % (normalized["name"], path), "check the path")
        except OSError as exc:
            raise describe_os_error(exc, "reading the config", path)
        if stat.S_ISDIR(info.st_mode):
            normalized["content"] = "tree"
        elif stat.S_ISREG(info.st_mode):
            normalized["content"] = "file"
        else:
            raise CaptureError(
                "config asset %s: %s is neither a file nor a directory" % (normalized["name"], path),
                "give a config file or a directory of them",
            )
        return normalized

    def artifact_file(self, asset: dict[str, Any]) -> str:
        return "%s%s.zst.age" % (asset["name"], ".tar" if asset.get("content") == "tree" else "")

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        if asset.get("content") == "tree":
            facts = {"content": "tree", "include": asset.get("include") or [], "exclude": asset.get("exclude") or []}
            with self.capture_tree(asset["path"], asset, facts) as captured:
                yield captured
            return
        fd = os.open(asset["path"], os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
            after = os.fstat(handle.fileno())
        if not _stable(info, after) or len(data) != info.st_size:
            raise CaptureError("the config file %s changed while it was read" % asset["path"], "run the backup again")
        facts = {
            "content": "file",
            "mode": _archive.format_mode(stat.S_IMODE(info.st_mode)),
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mtime_ns": info.st_mtime_ns,
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        yield _assets.Captured(_BytesSource(data), facts)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        artifact = context.artifact if context is not None else None
        if artifact is None or artifact.source.get("content") != "file":
            with super().restore_into(target, force, context) as staged:
                yield staged
            return
        with _assets.FileAssetType.restore_into(self, target, force, context) as staged:  # type: ignore[arg-type]
            handle = staged.stream

            def complete() -> dict[str, Any]:
                fd = handle.fileno()
                if os.geteuid() == 0:
                    os.fchown(fd, int(artifact.source.get("uid", 0)), int(artifact.source.get("gid", 0)))
                mode = _archive.parse_mode(artifact.source.get("mode")) or 0o600
                os.fchmod(fd, mode)
                mtime = int(artifact.source.get("mtime_ns") or time.time_ns())
                os.utime(fd, ns=(mtime, mtime))
                return {"mode": _archive.format_mode(mode)}

            yield _assets.Staged(staged.path, handle, complete=complete)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        if artifact.source.get("content") == "file":
            info = os.stat(path)
            return {"mode": _archive.format_mode(stat.S_IMODE(info.st_mode)), "size": info.st_size}
        return super().deep_check(path, artifact, check)

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        """Runbook 000's "hash compare with live": does the live config still match this backup? (report only)."""
        path = str(artifact.source.get("path") or "")
        if not path or not os.path.lexists(path):
            return {"live": "absent"}
        try:
            if artifact.source.get("content") == "file":
                if os.path.getsize(path) > LIVE_COMPARE_LIMIT:
                    return {"live": "not compared"}
                digest = _file_digest(path)[1]
            else:
                with _archive.tar_reader(
                    path, artifact.source.get("include") or None, artifact.source.get("exclude") or None
                ) as stream:
                    digest = stream_digest(stream)[1]
        except (OSError, NodekeepError):
            return {"live": "unreadable"}
        return {"live": "same" if digest == artifact.content_sha256 else "differs"}
