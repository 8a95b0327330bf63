# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: reading the files asset's objects back (rebuild a tree, check objects)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import collections
import errno
import hashlib
import os
import queue
import stat
import tarfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_capture import PACK_MEMBER_MAX, PACK_SIZE
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_index import read_index
from ansible_collections.nodekeep.backup.plugins.module_utils.core import archive as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core import extract as _extract
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces

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


#: decrypted packs held in memory for members still to come (beyond it, the oldest is dropped and its
#: remaining members are filled by a second read of it at the end)
HOLD_BYTES = 48 << 20


#: packs decrypted ahead of the extraction by the prefetching thread
PREFETCH = 2


#: threads that create and write packed files (open, write, fchown, fchmod, futimens release the GIL); 0: the
#: extraction's own thread writes them. Off by default: measured on the 2-core VM (20,000 files), two writing
#: threads cost more CPU than they saved (restore 3.3 s -> 4.2-4.5 s on tmpfs, system time doubled by the
#: threads' hand-offs), docs/files.md "Measured".
WRITERS = 0


#: packed files go to the writing threads in batches of this many files (or bytes), each thread woken once a batch
WRITE_BATCH = 64
WRITE_BATCH_BYTES = 1 << 20


#: bytes handed to the writing threads and not written yet, at most, and batches (each holds a descriptor
#: per directory it writes into, so this bounds the descriptors too: a tree of tiny files stays far below
#: RLIMIT_NOFILE)
WRITE_BYTES_IN_FLIGHT = 16 << 20
WRITE_BATCHES_IN_FLIGHT = 4


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class _PackPlan:
    """Which packs an index needs, in the order their first member comes, with each pack's member count."""

    def __init__(self, index_path: str) -> None:
        self.order: list[str] = []
        self.remaining: dict[str, int] = {}
        self.end: dict[str, int] = {}
        self.facts: dict[str, tuple[int, str]] = {}
        self.first_path: dict[str, str] = {}
        _header, entries = read_index(index_path, files_only=True)
        for entry in entries:
            if "offset" not in entry:
                continue
            pack = str(entry.get("object") or "")
            facts = (int(entry["sealed_size"]), str(entry["sealed_sha256"]))
            if self.facts.setdefault(pack, facts) != facts:
                raise IntegrityError(
                    "the files index gives two sizes or checksums for pack %s (%s)" % (pack, entry["path"]),
                    "the index is damaged; restore another epoch or copy",
                )
            if pack not in self.remaining:
                self.order.append(pack)
                self.remaining[pack] = 0
                self.end[pack] = 0
                self.first_path[pack] = str(entry["path"])
            self.remaining[pack] += 1
            self.end[pack] = max(self.end[pack], int(entry["offset"]) + int(entry["size"]))


class _Prefetcher:
    """Decrypts packs in the plan's order in a thread, ``PREFETCH`` ahead of the extraction (zstd, SHA-256
    and the reads run outside the GIL): the extraction writes files while the next pack is decrypted."""

    def __init__(self, reader: _ObjectReader, plan: _PackPlan) -> None:
        self.plan = plan
        self.reader = reader
        self.position = 0
        self.results: queue.Queue = queue.Queue(maxsize=PREFETCH)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="nodekeep-pack-read", daemon=True)
        if plan.order:
            self.thread.start()

    def _run(self) -> None:
        for name in self.plan.order:
            if self.stopping.is_set():
                return
            try:
                item: Any = self.reader.read_pack(
                    name, self.plan.facts[name], self.plan.end[name], self.plan.first_path[name]
                )
            except BaseException as exc:  # noqa: BLE001 - handed to the extraction, which raises it
                item = exc
            while not self.stopping.is_set():
                try:
                    self.results.put((name, item), timeout=0.5)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next_name(self) -> str | None:
        return self.plan.order[self.position] if self.position < len(self.plan.order) else None

    def take(self) -> tuple[str, bytearray]:
        name, item = self.results.get()
        self.position += 1
        if isinstance(item, BaseException):
            raise item
        return name, item

    def stop(self) -> None:
        self.stopping.set()
        while self.thread.is_alive():
            try:
                self.results.get(timeout=0.5)
            except queue.Empty:
                pass
        if self.plan.order:
            self.thread.join()


class _ObjectExtractor(_extract.Extractor):
    """The tar extractor's safety rules, with regular files filled from objects instead of a tar stream.

    A file stored as its own object is written at once. A file stored in a pack is written
    when it is created, from the pack decrypted ahead by the prefetching thread (packs come in
    the order their first member comes in the walk, and stay in memory until their last member
    is written): one open, one write and its attributes on the same descriptor. Only a member
    of a pack dropped to stay under ``HOLD_BYTES`` is created empty (0600) and filled later by
    ``fill_packs`` (that pack is decrypted once more).
    """

    def __init__(self, root_fd: int, root: str, keep_ownership: bool) -> None:
        # no per-file fsync: rebuild_tree makes the whole tree durable at once (sync_filesystem)
        super().__init__(root_fd, root, keep_ownership, False)
        self.prefetcher: _Prefetcher | None = None
        self.held: dict[str, bytearray] = {}
        self.held_bytes = 0
        self.remaining: dict[str, int] = {}
        # pack -> [(rel, offset, size, sha256 digest, mode, uid, gid, mtime_ns)]: one small tuple per file
        self.packs: dict[str, list[tuple[Any, ...]]] = {}
        self.pack_facts: dict[str, tuple[int, str]] = {}
        #: packed files with holes: rel -> their data segments
        self.sparse: dict[str, Any] = {}
        #: the threads writing packed files, the batches handed to them (oldest first) and the batch being made
        self.writers: ThreadPoolExecutor | None = None
        self.writes: collections.deque[tuple[Future, int]] = collections.deque()
        self.write_bytes = 0
        self.batch: list[tuple[Any, ...]] = []
        self.batch_bytes = 0
        self.batch_dirs: dict[str, int] = {}  # the batch's descriptor of each directory it writes into

    def _file(self, rel: str, member: tarfile.TarInfo, archive) -> None:
        """A packed file without holes whose pack is at hand is created and written by a writing thread.

        The thread gets its own descriptor of the parent directory (a ``dup`` of the one this extraction
        made and checked), so the directory it writes into is pinned whatever happens to the path or to the
        descriptors kept open here; it creates the file with ``O_CREAT|O_EXCL|O_NOFOLLOW`` in it, after
        checking the content's size and SHA-256, then sets owner, mode and mtime on its descriptor. Files
        go to the threads in batches (``WRITE_BATCH`` files or ``WRITE_BATCH_BYTES``), so a thread wakes once
        per batch, not per file. Everything else (a large file's object, a sparse member, a member of a
        dropped pack) is written here.
        """
        entry = member.nodekeep_entry  # type: ignore[attr-defined]
        if self.writers is None or "offset" not in entry or entry.get("sparse") is not None or rel in self.files:
            super()._file(rel, member, archive)
            return
        part = self._pack_part(entry)
        if part is None:
            super()._file(rel, member, archive)  # its pack was dropped: created empty now, filled by fill_packs
            return
        with part:
            data = bytes(part)  # a copy: the pack's memory is not held by writes in flight
        parent_fd, name = self._where(rel)
        parent = rel.rpartition("/")[0]
        dir_fd = self.batch_dirs.get(parent)
        if dir_fd is None:
            dir_fd = self.batch_dirs[parent] = os.dup(parent_fd)
        self.batch.append(
            (
                dir_fd,
                name,
                data,
                int(entry["size"]),
                str(entry["sha256"]),
                (member.uid, member.gid, member.mode, int(entry.get("mtime_ns", 0))),
                rel,
                reader_object(archive, entry),
            )
        )
        self.batch_bytes += len(data)
        self.files.add(rel)
        self.stats["files"] += 1
        self.stats["bytes"] += member.size
        if len(self.batch) >= WRITE_BATCH or self.batch_bytes >= WRITE_BATCH_BYTES:
            self._hand_batch()

    def _hand_batch(self) -> None:
        """Hand the batch being made to the writing threads (waiting while too many bytes are in flight)."""
        if not self.batch:
            return
        batch, size, dirs = self.batch, self.batch_bytes, list(self.batch_dirs.values())
        self.batch, self.batch_bytes, self.batch_dirs = [], 0, {}
        try:
            if self.writers is None:
                raise RestoreError("the writing threads were stopped with files still to write", "restore again")
            future = self.writers.submit(self._write_batch, batch, dirs)
        except BaseException:
            for fd in dirs:
                os.close(fd)
            raise
        self.writes.append((future, size))
        self.write_bytes += size
        while self.writes and (
            len(self.writes) > WRITE_BATCHES_IN_FLIGHT
            or self.write_bytes > WRITE_BYTES_IN_FLIGHT
            or self.writes[0][0].done()
        ):
            self._written(self.writes.popleft())

    def _write_batch(self, batch: list[tuple[Any, ...]], dirs: list[int]) -> None:
        """In a writing thread: for each file, check its content, create it in its directory's descriptor,
        write it and set its attributes. Every descriptor of the batch is closed, whatever fails."""
        try:
            for dir_fd, name, data, size, sha256, attributes, rel, where in batch:
                if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
                    raise IntegrityError(
                        "object %s of %s: its content does not match the index's SHA-256" % (where, rel),
                        "do not trust this copy; restore another epoch or copy",
                    )
                try:
                    fd = os.open(name, _CREATE, 0o600, dir_fd=dir_fd)
                except FileExistsError:
                    raise RestoreError(
                        "the archive holds %r more than once, or over a directory" % rel[:200],
                        "the archive is damaged or was not made by nodekeep; nothing was placed",
                    )
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    self._fd_attributes(fd, *attributes)
                finally:
                    os.close(fd)
        finally:
            for fd in dirs:
                os.close(fd)

    def _written(self, write: tuple[Future, int]) -> None:
        future, size = write
        self.write_bytes -= size
        future.result()

    def wait_writes(self) -> None:
        """Wait for every packed file handed to the writing threads; the first failure is raised."""
        self._hand_batch()
        while self.writes:
            self._written(self.writes.popleft())

    def stop_writes(self) -> None:
        """Stop the writing threads once every batch handed to them has ended (after a failure too: each
        closes its own descriptors; the tree is removed by the caller)."""
        for fd in self.batch_dirs.values():
            os.close(fd)
        self.batch, self.batch_bytes, self.batch_dirs = [], 0, {}
        if self.writers is not None:
            self.writers.shutdown(wait=True)
            self.writers = None
        self.writes.clear()
        self.write_bytes = 0

    def _hardlink(self, rel: str, member: tarfile.TarInfo) -> None:
        self.wait_writes()  # the file it links to is written by now
        super()._hardlink(rel, member)

    def _fill(self, rel: str, member: tarfile.TarInfo, archive, out: BinaryIO) -> bool:
        """A file stored as its own object is written now; a pack member is noted and filled by ``fill_packs``."""
        entry = member.nodekeep_entry  # type: ignore[attr-defined]
        if "offset" in entry and self._write_member(entry, archive, out):
            return True
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

    def _pack_part(self, entry: dict[str, Any]) -> memoryview | None:
        """A packed file's slice of its decrypted pack (taken from the prefetcher when its turn comes);
        None when its pack was dropped to bound memory (``fill_packs`` reads it again)."""
        pack = str(entry.get("object") or "")
        data = self.held.get(pack)
        if data is None:
            if self.prefetcher is None or self.prefetcher.next_name() != pack:
                return None  # dropped earlier to bound memory: fill_packs reads it again
            name, data = self.prefetcher.take()
            self.held[name] = data
            self.held_bytes += len(data)
            self._bound_held(name)
        offset, size = int(entry["offset"]), int(entry["size"])
        part = memoryview(data)[offset : offset + size]
        self.remaining[pack] -= 1
        if self.remaining[pack] <= 0:
            self.held_bytes -= len(self.held.pop(pack))  # the slice keeps its bytes alive until it is written
        return part

    def _write_member(self, entry: dict[str, Any], reader: _ObjectReader, out) -> bool:
        """Write a packed file now from its decrypted pack; False when its pack was dropped (filled later)."""
        part = self._pack_part(entry)
        if part is None:
            return False
        try:
            if len(part) != int(entry["size"]) or hashlib.sha256(part).hexdigest() != entry["sha256"]:
                raise IntegrityError(
                    "object %s of %s: its content does not match the index's SHA-256"
                    % (reader_object(reader, entry), entry["path"]),
                    "do not trust this copy; restore another epoch or copy",
                )
            out.write(part)
        finally:
            part.release()
        return True

    def _bound_held(self, keep: str) -> None:
        """Drop the oldest held packs (not ``keep``) while more than HOLD_BYTES are held."""
        for name in list(self.held):
            if self.held_bytes <= HOLD_BYTES:
                return
            if name != keep:
                self.held_bytes -= len(self.held.pop(name))

    def fill_packs(self, reader: _ObjectReader) -> None:
        """Decrypt each pack once and write its members, checking each member's size and SHA-256."""
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
                fd = self.open_entry(rel, os.O_WRONLY)  # in the directory's descriptor, never through a link
                with open(fd, "wb", buffering=0) as out:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise RestoreError(
                            "%s is no longer a regular file" % self.describe(rel), "restore into a private directory"
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


def reader_object(reader: _ObjectReader, entry: dict[str, Any]) -> str:
    """How messages name the object holding an entry."""
    return reader.repository.describe_object(reader.node, str(entry.get("object") or ""))


class _ObjectReader:
    """Fills restored files from the node's objects, checking each against the index."""

    def __init__(self, repository, node: str, identities: list) -> None:
        self.repository = repository
        self.node = node
        self.identities = identities
        self.objects = 0
        self.sealed_bytes = 0
        self.counting = threading.Lock()  # packs are read by the prefetching thread too

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
        with self.counting:
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
        with self.counting:
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
    root, root_fd = _extract.open_destination(dest_dir)
    owner = (os.geteuid() == 0) if keep_ownership is None else keep_ownership
    extractor = _ObjectExtractor(root_fd, root, owner)
    reader = _ObjectReader(repository, node, identities)
    try:
        plan = _PackPlan(index_path)
        extractor.remaining = dict(plan.remaining)
        extractor.prefetcher = _Prefetcher(reader, plan)
        if plan.order and WRITERS > 0:
            extractor.writers = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="nodekeep-write")
        try:
            for entry in entries:
                extractor.add(_member(entry), reader)
            extractor.wait_writes()
        finally:
            extractor.stop_writes()
            extractor.prefetcher.stop()
            extractor.held.clear()
        extractor.fill_packs(reader)
        extractor.finish()
        if fsync:
            sync_filesystem(root)
    except FileExistsError:
        raise RestoreError("the files index lists a path twice", "the index is damaged")
    except OSError as exc:
        raise describe_os_error(exc, "rebuilding the tree", getattr(exc, "filename", None) or root)
    finally:
        extractor.close()
        os.close(root_fd)
    stats = dict(extractor.stats)
    stats["objects_read"] = reader.objects
    return stats


# --------------------------------------------------------------------------
# the refs list (plaintext, checked against the signed manifest)
# --------------------------------------------------------------------------


load_refs = _pieces.load_piece_list
check_objects = _pieces.check_pieces
