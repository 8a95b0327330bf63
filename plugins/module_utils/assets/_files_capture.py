# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the files asset's capture walk (content-addressed objects, small-file packs); what it reads and
keeps per file is in ``_files_content``."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import collections
import contextlib
import fnmatch
import hashlib
import json
import operator
import os
import stat
import time
import uuid
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_content import (
    _DIR_VERBATIM,
    _KEPT,
    _VERBATIM,
    RACY_NS,
    PackedContents,
    _Changed,
    _Content,
    _read_fd,
    _unchanged,
    encode_entry,
    stat_stable,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_index import (
    DEFAULT_STATE_DIR,
    INDEX_FORMAT,
    LIST_LIMIT,
    IndexCursor,
    NodeState,
    key_id,
    load_packed,
    object_name,
    read_index,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import AssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core import archive as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.extract import entry_counts
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    sha256_file,
    stream_digest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces

#: files up to this size are read into memory once (hash and seal the same bytes)
SMALL_FILE = 4 << 20


#: files up to this size are stored in pack objects (many small files, one age header and one write)
PACK_MEMBER_MAX = 256 << 10


#: a pack is sealed and written once its members reach this many plaintext bytes
PACK_SIZE = 4 << 20


#: index entries held back (walk order) while a pack is open; reaching it closes the pack early
PACK_QUEUE = 16384


#: packs sealed and written at the same time, beside the walk (each by its own thread)
PACK_WORKERS = 2


#: stable reads tried before a changing file is copied to scratch and flagged
READ_ATTEMPTS = 3


#: the clock racy reads are judged by (the file system's clock: wall time)
_now_ns = time.time_ns


#: how a file is opened for reading: never through a symlink
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


_BY_NAME = operator.attrgetter("name")


#: a directory's index line as encode_entry writes it, without its closing brace (and without xattrs)
_DIR_LINE = '{"ctime_ns":%d,"gid":%d,"ino":%d,"mode":%d,"mtime_ns":%d,"path":%s,"type":"dir","uid":%d'


#: a path as encode_entry writes it (a JSON string, ASCII)
_json_string = json.encoder.encode_basestring_ascii


class _TreeCapture:
    """One backup of one files asset: walk, hash, upload new objects, write the index and the refs list."""

    def __init__(self, kind: AssetType, asset: dict[str, Any], root: str, scratch: str, context) -> None:
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
        self.immutable = list(asset.get("immutable") or [])
        self.exclude = list(asset.get("exclude") or [])
        self.state = NodeState(str(asset.get("state_dir") or DEFAULT_STATE_DIR), self.node, asset["name"])
        self.key, self.new_key = self.state.key()
        self.key_id = key_id(self.key)
        self.base_epoch: str | None = None
        # The cached previous index is read in step with the walk (both are in walk order): memory does
        # not hold its entries, only ``packed`` (a small tuple per packed content) and the pieces' facts.
        self.base_path: str | None = None
        self.cursor: IndexCursor | None = None
        self.verbatim: str | None = None  # the cached line of the unchanged file being emitted
        # (rel, cached entry, its line) looked up by _same_line and not used: _file takes it instead
        self.peeked: tuple[str, dict[str, Any] | None, str] | None = None
        # The node's piece store (storage/pieces.py): one writer for every type; it keeps the epoch's
        # piece list, the listing, the vouched facts, lock extensions and the final recheck.
        self.writer = _pieces.PieceWriter(self.repo, self.node, self.epoch, self.recipients, self.level, self.key)
        self.builder = _pieces.PackBuilder(self.writer, size=PACK_SIZE, workers=PACK_WORKERS)
        self.large_new = 0  # large files written as their own piece (the rest of the new pieces are packs)
        self.links: dict[tuple[int, int], str] = {}
        self.emitted: set[str] = set()
        # small files go into packs: the open pack's members, and the index entries waiting for its name
        # content SHA-256 -> (pack, offset, sealed size, sealed SHA-256) of a pack that holds it
        self.packed = PackedContents()
        self.base_loaded = True  # the cached index's pieces are in ``packed`` and the writer's records
        self.slots: dict[str, tuple[int, int]] = {}  # content SHA-256 -> (pack number, offset) of this run's packs
        self.written_packs = 0  # packs known written: the held entries are written up to the first of a later pack
        # lines waiting behind the open pack: encoded, or the entry of a member still to be named
        self.queue: collections.deque[str | dict[str, Any]] = collections.deque()
        self.stats: dict[str, Any] = entry_counts("excluded")
        self.work: dict[str, Any] = {
            "unchanged": 0,
            "read": 0,
            "read_bytes": 0,
            "retries": 0,
            "reused_objects": 0,
            "packed_files": 0,
            "racy": 0,
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
                size, digest = sha256_file(path)
            except (NodekeepError, OSError):
                continue
            if (size, digest) != (artifact.content_size, artifact.content_sha256):
                continue
            header, entries = read_index(path, files_only=True)
            entries.close()  # type: ignore[attr-defined]
            if header.get("key_id") != self.key_id:
                continue
            chosen = epoch
            self.base_path = path
            self.base_loaded = False  # read when the first file must be read (never, when nothing changed)
            break
        self.base_epoch = chosen
        for epoch, path in caches:
            if epoch != chosen and (chosen is None or epoch < chosen or epoch not in complete):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def _load_packed(self) -> None:
        """Record the pieces of the cached index: where its packed contents are, and every piece's sealed facts
        (``load_packed``)."""
        self.base_loaded = True
        if self.base_path is None:
            return
        known = load_packed(self.base_path, self.packed.put)
        with self.writer.lock:
            for name, facts in known.items():
                self.writer.known.setdefault(name, facts)

    def _cached(self, rel: str) -> tuple[dict[str, Any] | None, str]:
        """The cached entry of the file ``rel`` and its line, read in step with the walk (paths come in walk order)."""
        if self.base_path is None:
            return None, ""
        peeked = self.peeked
        if peeked is not None:
            self.peeked = None
            if peeked[0] == rel:
                return peeked[1], peeked[2]
        return self._open_cursor(rel).find(rel)

    def _open_cursor(self, rel: str) -> IndexCursor:
        if self.cursor is None:
            self.cursor = IndexCursor(str(self.base_path), rel)
        return self.cursor

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
        self.existing = self.writer.listing()
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
                self.builder.finish()
                self._drain(block=True)
            finally:
                self.builder.stop()
                if self.cursor is not None:
                    self.cursor.close()
        self.writer.recheck()  # every reused piece is still there (garbage collection may have run)

    def _visit(self, directory: str, rel_dir: str, selected: bool) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=_BY_NAME)
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
                    self._emit(rel, info, entry.path)
                self._visit(entry.path, rel, chosen)
            elif chosen:
                self._emit(rel, info, entry.path)

    _encode = staticmethod(encode_entry)

    def _write(self, entry: dict[str, Any], line: str | None = None) -> None:
        """Write an entry's line (``line``: the entry already encoded), or hold it behind a pack not written yet."""
        if "_pack" in entry:
            # A pack is open or being written: its members' entries need its name and sealed
            # checksum; later entries wait behind them (walk order).
            self._hold(entry)
        else:
            self._write_line(line or self._encode(entry) + "\n")

    def _write_line(self, line: str) -> None:
        """Write an encoded line, or hold it behind the entries waiting for a pack."""
        if self.queue:
            self._hold(line)
        else:
            self.out.write(line)

    def _hold(self, item: str | dict[str, Any]) -> None:
        queue = self.queue
        queue.append(item)
        if len(queue) >= PACK_QUEUE:
            self._drain(block=True)
        elif self.builder.written() > self.written_packs:
            self.written_packs = self.builder.written()
            self._drain(block=False)

    def _drain(self, block: bool) -> None:
        """Write the held entries up to the first whose pack is not written yet (``block``: wait for it)."""
        queue = self.queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                self.out.write(head)
                queue.popleft()
                continue
            number = head["_pack"]
            if not block and not self.builder.ready(number):
                return
            name, sealed_size, sealed_sha256, _plain = self.builder.result(number)
            del head["_pack"]
            head.update(object=name, sealed_size=sealed_size, sealed_sha256=sealed_sha256)
            self.packed.put(head["sha256"], (name, head["offset"], sealed_size, sealed_sha256))
            if self.slots.get(head["sha256"], (None,))[0] == number:
                del self.slots[head["sha256"]]  # found by ``packed`` from now on
            self.out.write(self._encode(head) + "\n")
            queue.popleft()

    def _same_line(self, rel: str, info: os.stat_result) -> str | None:
        """The cached line of a directory or a regular file that has not changed since the cached index, to be
        written again as it is; None: the entry is read and encoded (``_emit``).

        An unchanged entry costs the walk's ``lstat`` and this comparison: no ``listxattr``, no ``open``, no
        JSON encoding. Its owner, mode, mtime, ctime and inode (and a file's size) equal the cached entry's;
        setting an xattr or an ACL, ``chmod``, ``chown``, punching a hole and ``chattr`` all change the ctime,
        so the cached xattrs, holes and flags are the entry's own. A directory entry is compared only when
        its line records a ctime (no xattr could not be read when it was made, see ``_emit``).
        """
        mode = info.st_mode
        if stat.S_ISREG(mode):
            if info.st_nlink > 1 or self.immutable:
                return None  # hard links and immutable files: _file
        elif not stat.S_ISDIR(mode):
            return None
        elif rel:
            # A directory whose line, made from its lstat, is the cached one (with or without xattrs, the
            # last key): no JSON parsed either.
            self.peeked = None  # an earlier entry's, not used
            cursor = self._open_cursor(rel)
            line = cursor.line
            same = _DIR_LINE % (
                info.st_ctime_ns,
                info.st_gid,
                info.st_ino,
                stat.S_IMODE(mode),
                info.st_mtime_ns,
                _json_string(rel),
                info.st_uid,
            )
            if line == same + "}\n" or (line.startswith(same + ',"xattrs":{') and line.endswith("}}\n")):
                cursor.advance()
                self.stats["directories"] += 1
                return line
        cached, line = self._cached(rel)
        self.peeked = (rel, cached, line)
        if (
            cached is None
            or cached.get("ctime_ns") != info.st_ctime_ns
            or cached.get("mtime_ns") != info.st_mtime_ns
            or cached.get("ino") != info.st_ino
            or (cached.get("mode"), cached.get("uid"), cached.get("gid"))
            != (stat.S_IMODE(mode), info.st_uid, info.st_gid)
            or not line.endswith("\n")
        ):
            return None
        if stat.S_ISDIR(mode):
            if cached.get("type") != "dir" or not cached.keys() <= _DIR_VERBATIM:
                return None
            if rel:
                self.stats["directories"] += 1
            return line
        if not (_unchanged(cached, info) and cached.keys() <= _VERBATIM):
            return None
        name = cached["object"]
        listed = self.existing.get(name)
        if listed is None or listed[0] != cached["sealed_size"]:
            return None
        self._reference(name, (int(cached["sealed_size"]), str(cached["sealed_sha256"])))
        self.work["unchanged"] += 1
        if cached.get("not_kept"):
            self.notes["not_kept"].append({"path": rel, "what": str(cached["not_kept"]), "reason": "not restored"})
        self.stats["files"] += 1
        self.stats["bytes"] += int(cached["size"])
        self.peeked = None
        return line

    def _emit(self, rel: str, info: os.stat_result, path: str | None = None) -> None:
        if self.base_path is not None and not self.include:
            line = self._same_line(rel, info)
            if line is not None:
                self._write_line(line)
                return
        if self.include:
            # Only include patterns can select an entry whose parent was not emitted (nor the same one twice).
            parent = rel.rpartition("/")[0]
            if rel and parent not in self.emitted:
                self._emit(parent, os.lstat(os.path.join(self.root, parent)))
            if rel in self.emitted:
                return
        if path is None:
            path = os.path.join(self.root, rel) if rel else self.root
        entry: dict[str, Any] = {
            "path": rel or ".",
            "mode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mtime_ns": info.st_mtime_ns,
        }
        mode = info.st_mode
        # xattrs and ACLs in the entry itself (sealed in the index), holes of a sparse file, what cannot be
        # kept; a regular file's are found by _file (from the cache for an unchanged file, else on the
        # descriptor it reads)
        if not stat.S_ISREG(mode):
            notes = len(self.notes["not_kept"])
            _attrs.to_index(_attrs.read_xattrs(path, self.notes["not_kept"], rel), None, entry)
            if stat.S_ISDIR(mode) and len(self.notes["not_kept"]) == notes:
                # compared by the next run (_same_line): the same ctime, the same xattrs and ACLs
                entry.update(ino=info.st_ino, ctime_ns=info.st_ctime_ns)
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
        line, self.verbatim = self.verbatim, None
        self._write(entry, line)
        if self.include:
            self.emitted.add(rel)

    def _probe(self, fd: int, rel: str, info: os.stat_result, content: _Content) -> None:
        """A regular file's data segments when it has holes, and its chattr flags (``not_kept``), on its descriptor
        (``info``: its ``fstat``)."""
        notes = self.notes["not_kept"]
        count = len(notes)
        _attrs.flags_not_kept(fd, rel, notes)
        if len(notes) > count:
            content.flags = str(notes[-1].get("what", ""))
        content.segments = _attrs.data_segments(fd, info.st_size, info)

    def _read_once(self, path: str, rel: str, info: os.stat_result) -> _Content | None:
        """A small file in one open, one read and one ``fstat``, when that proves the read whole; None: ``_read``.

        ``info`` is the walk's ``lstat`` of the path, taken before the open: when the descriptor's ``fstat``
        after the read is the same inode with the same size, mtime and ctime, nothing changed the file
        from before the open to after the read (the racy rule below still applies, as in ``_read``).
        Holes, flags and xattrs are read on the same descriptor. Anything else (a change, an error, a file
        swapped for another) is left to ``_read``, which reads carefully and reports.
        """
        try:
            fd = os.open(path, _READ_FLAGS)
        except OSError:
            return None
        try:
            data = _read_fd(fd, info.st_size)
            after = os.fstat(fd)
            self.work["read"] += 1
            self.work["read_bytes"] += len(data)
            if not (
                len(data) == info.st_size
                and after.st_ino == info.st_ino
                and after.st_dev == info.st_dev
                and stat.S_ISREG(after.st_mode)
                and stat_stable(info, after)
            ):
                self.work["retries"] += 1
                return None
            racy = after.st_ctime_ns >= _now_ns() - RACY_NS  # see _read
            if racy:
                self.work["racy"] += 1
                if os.pread(fd, len(data) + 1, 0) != data:
                    self.work["retries"] += 1
                    return None
            content = _Content(hashlib.sha256(data).hexdigest(), len(data), after, data=data)
            self._probe(fd, rel, after, content)
            content.xattrs = _attrs.read_xattrs(fd, self.notes["not_kept"], rel)
            return content
        finally:
            os.close(fd)

    def _file(self, rel: str, path: str, info: os.stat_result, entry: dict[str, Any]) -> bool:
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in self.links:
            _attrs.to_index(_attrs.read_xattrs(path, self.notes["not_kept"], rel), None, entry)
            entry.update(type="hardlink", link=self.links[key])
            self.stats["hardlinks"] += 1
            return True
        entry["type"] = "file"
        cached, cached_line = self._cached(rel)
        name = cached.get("object") if cached else None
        immutable = bool(self.immutable) and any(fnmatch.fnmatchcase(os.path.basename(rel), p) for p in self.immutable)
        if (
            not immutable
            and _unchanged(cached, info)
            and name in self.existing
            and self.existing[name][0] == cached["sealed_size"]
        ):
            # Not opened at all: setting an xattr or an ACL, punching a hole and chattr all change the
            # ctime, so the cached entry's xattrs, holes and flags are the file's.
            entry.update({k: cached[k] for k in _KEPT if k in cached})
            if "offset" in cached:
                entry["offset"] = int(cached["offset"])
            if cached.get("not_kept"):
                self.notes["not_kept"].append({"path": rel, "what": str(cached["not_kept"]), "reason": "not restored"})
            entry.update(ino=info.st_ino, ctime_ns=info.st_ctime_ns)
            self._reference(name, (int(cached["sealed_size"]), str(cached["sealed_sha256"])))
            self.work["unchanged"] += 1
            if (
                cached_line.endswith("\n")
                and cached.keys() <= _VERBATIM
                and (cached.get("mode"), cached.get("uid"), cached.get("gid"))
                == (entry["mode"], entry["uid"], entry["gid"])
            ):
                self.verbatim = cached_line  # the same entry: its line is written again as it is
        elif (
            immutable
            and _unchanged(cached, info, True)
            and name in self.existing
            and self.existing[name][0] == cached["sealed_size"]
        ):
            # An immutable file (RocksDB's SST and blob files) whose ctime a checkpoint's hard link
            # changed: content from the cache, its attributes read again.
            probe = _Content("", 0, info)
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
                try:
                    self._probe(fd, rel, info, probe)
                finally:
                    os.close(fd)
            _attrs.to_index(_attrs.read_xattrs(path, self.notes["not_kept"], rel), probe.segments, entry)
            if probe.flags:
                entry["not_kept"] = probe.flags
            entry.update({k: cached[k] for k in ("size", "sha256", "object", "sealed_size", "sealed_sha256")})
            if "offset" in cached:
                entry["offset"] = int(cached["offset"])
            entry.update(ino=info.st_ino, ctime_ns=info.st_ctime_ns)
            self._reference(name, (int(cached["sealed_size"]), str(cached["sealed_sha256"])))
            self.work["unchanged"] += 1
        else:
            if not self.base_loaded:
                self._load_packed()
            content = self._read_once(path, rel, info) if info.st_size <= SMALL_FILE else None
            if content is None:
                content = self._read(path, rel=rel)
            if content is None:
                self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                return False
            xattrs = content.xattrs
            if xattrs is None:
                xattrs = _attrs.read_xattrs(path, self.notes["not_kept"], rel)
            _attrs.to_index(xattrs, content.segments, entry)
            if content.flags:
                entry["not_kept"] = content.flags
            # A content stored as its own object (an earlier version's, or a large file) is reused by
            # name; a small one is found in, or added to, a pack.
            name = object_name(self.key, content.sha256)
            place = None if name in self.writer.refs or name in self.existing else self._pack_place(content)
            if place is None:
                try:
                    sealed = self._ensure(content)
                except _Changed:
                    content = self._read(path, copy=True, rel=rel)
                    if content is None:
                        self._note("skipped", {"path": rel, "reason": "vanished before it was read"})
                        return False
                    sealed = self._ensure(content)
                    name = object_name(self.key, content.sha256)
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

    def _reference(self, name: str, facts: tuple[int, str] | None = None) -> tuple[int, str]:
        """Reference a stored piece in this epoch (the writer vouches for it, or hashes it; lock extended)."""
        referenced = self.writer.refs.get(name)  # most files share a pack referenced already
        if referenced is not None:
            return referenced
        with self.writer.lock:  # the sealing threads update the writer's records too
            return self.writer.reuse(name, facts)

    def _pack_place(self, content: _Content) -> dict[str, Any] | None:
        """Where a small content goes: a pack that holds it already, or the open pack; None: its own object."""
        known = self.packed.get(content.sha256)
        if known is not None:
            pack, offset, sealed_size, sealed_sha256 = known
            if self.writer.refs.get(pack) == (sealed_size, sealed_sha256) or (
                pack in self.existing and self.existing[pack][0] == sealed_size
            ):
                self._reference(pack, (sealed_size, sealed_sha256))
                self.work["reused_objects"] += 1
                return {"object": pack, "offset": offset, "sealed_size": sealed_size, "sealed_sha256": sealed_sha256}
        if content.data is None or content.size > PACK_MEMBER_MAX:
            return None
        slot = self.slots.get(content.sha256)
        if slot is None:
            # The pack builder seals and writes full packs in its threads (zstd, the age CLI, SHA-256
            # and the fsyncs run outside the GIL) while the walk reads on.
            slot = self.builder.add(content.data)
            self.slots[content.sha256] = slot
            self.work["packed_files"] += 1
        # The pack's name and sealed facts are filled in when it is written (_drain).
        return {"_pack": slot[0], "offset": slot[1]}

    def _read(self, path: str, copy: bool = False, rel: str | None = None) -> _Content | None:
        """A stable read (size, mtime and ctime the same before and after; a racy file in memory: the same
        bytes read twice), or a flagged copy after retries. With ``rel``, the first descriptor is also
        probed for holes and inode flags (``_probe``): one open per file."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        probed: _Content | None = None
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
                if rel is not None and probed is None:
                    probed = _Content("", 0, before)
                    self._probe(fd, rel, before, probed)
                self.work["read"] += 1
                content = None
                if last:
                    content = self._copy(handle, before)
                elif before.st_size <= SMALL_FILE:
                    data = handle.readall()
                    after = os.fstat(fd)
                    self.work["read_bytes"] += len(data)
                    # The same stat does not prove the bytes whole: a write() under way when ``before``
                    # was taken had set the times already (one through a mapping sets none). For a file
                    # changed recently enough for that to be possible ("racy": its ctime within RACY_NS),
                    # a second read must return the same bytes: the rest of such a write, landed
                    # meanwhile or landing, changes them (only a writer stalled through both reads goes
                    # unseen). An older file is read once.
                    if stat_stable(before, after) and len(data) == before.st_size:
                        racy = before.st_ctime_ns >= _now_ns() - RACY_NS
                        if racy:
                            self.work["racy"] += 1
                        if not racy or os.pread(fd, len(data) + 1, 0) == data:
                            content = _Content(hashlib.sha256(data).hexdigest(), len(data), before, data=data)
                else:
                    size, digest = stream_digest(handle)
                    after = os.fstat(fd)
                    self.work["read_bytes"] += size
                    if stat_stable(before, after) and size == before.st_size:
                        content = _Content(digest, size, before, path=path)
            if content is not None:
                if probed is not None:
                    content.segments, content.flags = probed.segments, probed.flags
                return content
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
        name = object_name(self.key, content.sha256)
        referenced = name in self.writer.refs
        try:
            with content.open() as source:
                _name, sealed_size, sealed_sha256 = self.writer.put_stream(
                    source, content.sha256, content.size, threads=0 if content.size <= SMALL_FILE else -1
                )
        except _pieces.PieceChanged:
            raise _Changed()
        if not referenced:
            if name in self.writer.reused:
                self.work["reused_objects"] += 1
            else:
                self.large_new += 1
        return sealed_size, sealed_sha256

    def _note(self, kind: str, item: Any) -> None:
        if len(self.notes[kind]) < LIST_LIMIT:
            self.notes[kind].append(item)

    # -- the refs list --

    def write_refs(self, file_name: str) -> dict[str, Any]:
        return self.writer.write_list(file_name)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "layout": "objects",
            "entries": dict(self.stats),
            "objects": dict(
                self.work,
                new_objects=self.writer.work["new"],
                new_packs=self.writer.work["new"] - self.large_new,
                new_bytes=self.writer.work["new_bytes"],
                uploaded_bytes=self.writer.work["uploaded_bytes"],
                rehashed_objects=self.writer.work["rehashed"],
                locks_extended=self.writer.work["locks_extended"],
                referenced=len(self.writer.refs),
            ),
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
