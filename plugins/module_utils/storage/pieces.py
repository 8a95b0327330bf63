# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The node's piece store: content-addressed, sealed, write-once pieces shared by its epochs.

One mechanism for every asset type whose data is mostly unchanged between
epochs (``files`` trees, ``sqlite`` pages, ``rocksdb`` SST files): see
docs/incremental.md.

- A **piece** is one standard sealed file (zstd + age, the one seal pipeline) in
  ``NODE/objects/<name[:2]>/<name>``: a *pack* of many small contents (pages,
  small files) or one large content. It is written once and never rewritten.
- Its **name** is a keyed MAC (HMAC-SHA-256) of its plaintext's SHA-256 under a
  per-node key that stays on the node (``STATE/NODE/object-name.key``, 0600):
  the node finds a content it stored before, a reader of the repository cannot
  confirm a guessed page or file. No unkeyed hash of plaintext leaves the node
  outside a sealed file.
- Each epoch holds a **piece list** ``<asset>.refs.txt`` (one line per piece: name,
  sealed size, SHA-256 of the sealed bytes) whose own size and SHA-256 are in the
  signed manifest: the signature covers every byte an epoch restores, and
  verify, ``epoch_copy`` and garbage collection need no identity.
- An epoch references only pieces, never another epoch: deleting any epoch
  breaks no other; a piece goes only when no kept epoch lists it.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import hashlib
import hmac
import io
import os
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RepositoryError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    fsync_dir,
    makedirs_private,
    stream_digest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import seal, unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import OBJECTS_DIR

#: the piece list's first line (the name predates sqlite and rocksdb pieces: files epochs carry it)
REFS_FORMAT = "nodekeep.files-refs/v1"
#: the node's key and caches; one key per node serves every asset type
DEFAULT_STATE_DIR = "/var/lib/nodekeep/files"
KEY_FILE = "object-name.key"
#: a pack is sealed and written once its members reach this many plaintext bytes
PACK_SIZE = 4 << 20


# --------------------------------------------------------------------------
# names and the node's key
# --------------------------------------------------------------------------


def piece_name(key: bytes, content_sha256: str) -> str:
    """A piece's name: HMAC-SHA-256 of its plaintext's SHA-256 under the node's key (64 hex digits)."""
    # hmac.digest: OpenSSL's one-shot HMAC (the same MAC as hmac.new, without a Python object per name)
    return hmac.digest(key, b"nodekeep-object-v1\0" + bytes.fromhex(content_sha256), "sha256").hex()


def content_mac(key: bytes, content_sha256: str) -> str:
    """A keyed MAC of a whole plaintext (a config file, a tar of a tree) a manifest may record: HMAC-SHA-256
    of its SHA-256 under the node's key, as ``piece_name`` but in its own domain. The node compares a live
    file with a backup by it; a reader of the repository cannot confirm a guessed content."""
    return hmac.new(key, b"nodekeep-content-v1\0" + bytes.fromhex(content_sha256), hashlib.sha256).hexdigest()


def check_state_dir(asset: str, value: Any) -> str:
    """An asset's ``state_dir`` (the node's key and caches), absolute; the default when not given."""
    state = str(value or DEFAULT_STATE_DIR)
    if not os.path.isabs(state):
        raise CaptureError(
            "asset %s: state_dir %r is not absolute" % (asset, state),
            "give an absolute directory such as %s" % DEFAULT_STATE_DIR,
        )
    return state


def key_id(key: bytes) -> str:
    """A public fingerprint of the node's key (a changed key means every content is uploaded once more)."""
    return hmac.new(key, b"nodekeep-key-id", hashlib.sha256).hexdigest()[:16]


def page_mac(key: bytes):
    """A keyed digest function for fixed-size pieces of a content (SQLite pages): 16-byte keyed BLAKE2b."""
    mac_key = hmac.new(key, b"nodekeep-page-digest-v1", hashlib.sha256).digest()

    def digest(data) -> bytes:
        return hashlib.blake2b(data, digest_size=16, key=mac_key).digest()

    return digest


def node_key(state_dir: str, node: str, create: bool = True) -> tuple[bytes, bool]:
    """The node's piece key (32 random bytes, 0600 in ``STATE/NODE/object-name.key``), made on first use.

    Returns (key, created); with ``create=False`` a missing key is (b"", False), nothing is written.
    A key readable by others, owned by another user or of the wrong length is refused with the remedy.
    """
    node_dir = os.path.join(state_dir, node)
    path = os.path.join(node_dir, KEY_FILE)
    if create:
        try:
            makedirs_private(node_dir)
        except OSError as exc:
            raise describe_os_error(exc, "creating the node's state directory", node_dir)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return (_new_key(path), True) if create else (b"", False)
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


def asset_state_dir(state_dir: str, node: str, asset: str) -> str:
    """``STATE/NODE/ASSET`` (0700): the asset's local caches of its last epoch."""
    path = os.path.join(state_dir, node, asset)
    try:
        makedirs_private(path)
    except OSError as exc:
        raise describe_os_error(exc, "creating the state directory", path)
    return path


def locks_pieces(repository, node: str, epoch: str) -> bool:
    """Whether pieces written for ``epoch`` get an Object Lock (an S3 repository with a lock rule)."""
    lock_for = getattr(repository, "lock_for", None)
    return bool(
        epoch and lock_for is not None and getattr(repository, "extend_object_lock", None) and lock_for(node, epoch)
    )


def extend_lock(repository, node: str, name: str, epoch: str) -> bool:
    """Make a reused piece's Object Lock last at least as long as ``epoch``'s (S3 with locks; no-op elsewhere)."""
    if not locks_pieces(repository, node, epoch):
        return False
    return bool(repository.extend_object_lock(node, name, epoch))


def extend_locks(repository, node: str, epoch: str, names) -> int:
    """``extend_lock`` for every reused piece of an epoch; the number of locks extended."""
    if not names or not locks_pieces(repository, node, epoch):
        return 0
    return sum(1 for name in sorted(names) if repository.extend_object_lock(node, name, epoch))


def stored_bytes(artifact) -> int:
    """Bytes an epoch's artifact added to the repository: the artifact, its piece list and the pieces it uploaded."""
    source = artifact.source or {}
    uploaded = (source.get("pieces") or {}).get("uploaded_bytes")
    if uploaded is None:
        uploaded = (source.get("objects") or {}).get("uploaded_bytes") or 0
    return int(artifact.size) + int((source.get("refs") or {}).get("size") or 0) + int(uploaded or 0)


# --------------------------------------------------------------------------
# writing pieces during one backup
# --------------------------------------------------------------------------


class _BytesSource:
    """A read-only source for the seal pipeline (no ``readinto``: it would allocate a 4 MiB buffer per piece)."""

    def __init__(self, data) -> None:
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


class PieceChanged(CaptureError):
    """What was sealed is not the content that was hashed (it changed in between): nothing was committed."""


class PieceWriter:
    """One backup run's pieces: seals new ones, reuses stored ones, keeps the epoch's piece list.

    ``known`` holds (sealed size, SHA-256) of pieces a checked local record vouches
    for (the previous epoch's index); a stored piece without a record is hashed
    before it is reused. Reused pieces get their Object Lock extended to this
    epoch's, and ``recheck`` proves, just before the manifest is written, that
    every reused piece is still there (garbage collection may have run).
    """

    def __init__(self, repository, node: str, epoch: str, recipients: list, level: int, key: bytes) -> None:
        self.repository = repository
        self.node = node
        self.epoch = epoch
        self.recipients = recipients
        self.level = level
        self.key = key
        self.existing: dict[str, tuple[int, float]] | None = None
        self.known: dict[str, tuple[int, str]] = {}
        self.refs: dict[str, tuple[int, str]] = {}
        self.reused: set[str] = set()
        self.lock = threading.Lock()  # the bookkeeping, when packs are written by several threads
        self.work: dict[str, int] = {
            "new": 0,
            "new_bytes": 0,
            "uploaded_bytes": 0,
            "reused": 0,
            "rehashed": 0,
            "locks_extended": 0,
        }

    def listing(self) -> dict[str, tuple[int, float]]:
        if self.existing is None:
            self.existing = self.repository.object_names(self.node)
        return self.existing

    def has(self, name: str, size: int | None = None) -> bool:
        found = self.listing().get(name)
        return found is not None and (size is None or found[0] == size)

    def put(self, data, sha256: str | None = None) -> tuple[str, int, str]:
        """Store ``data`` as a piece (or reuse the stored one of the same content): (name, sealed size, SHA-256)."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        # bytes do not change between the hash and the seal: the seal does not hash them again
        return self.put_stream(_BytesSource(bytes(data)), digest, len(data), immutable=True)

    def put_stream(
        self, source, sha256: str, size: int, threads: int = 0, immutable: bool = False
    ) -> tuple[str, int, str]:
        """Store the content ``source`` reads (its SHA-256 and size known) as a piece, or reuse the stored one.

        The content is sealed as it is read; if what was read does not hash to ``sha256``
        (a file that changed since it was hashed) nothing is committed and ``PieceChanged`` is raised.
        An ``immutable`` source (bytes in memory, hashed by the caller) is not hashed again.
        """
        name = piece_name(self.key, sha256)
        with self.lock:
            if name in self.refs:
                return (name, *self.refs[name])
            if name in self.listing():
                return (name, *self.reuse(name))
        try:
            with self.repository.put_object(self.node, name, epoch=self.epoch, size_hint=None) as sink:
                result = seal(
                    source,
                    sink,
                    self.recipients,
                    level=self.level,
                    threads=threads,
                    sink_name=self.repository.describe_object(self.node, name),
                    content_sha256=sha256 if immutable else None,
                )
                if (result.content.size, result.content.sha256) != (size, sha256):
                    raise PieceChanged(
                        "a piece changed while it was sealed (%s)" % name, "run the backup again"
                    )  # inside: the write is aborted, nothing is committed under this name
        except RepositoryError as exc:
            if exc.details.get("code") != "exists":
                raise
            with self.lock:
                self.listing()[name] = (0, time.time())
                return (name, *self.reuse(name))
        facts = (result.sealed.size, result.sealed.sha256)
        with self.lock:
            self.listing()[name] = (result.sealed.size, time.time())
            self.known[name] = facts
            self.refs[name] = facts
            self.work["new"] += 1
            self.work["new_bytes"] += size
            self.work["uploaded_bytes"] += result.sealed.size
        return (name, *facts)

    def reuse(self, name: str, facts: tuple[int, str] | None = None) -> tuple[int, str]:
        """Reference a stored piece in this epoch: its facts (vouched, or hashed now), lock extended."""
        if name in self.refs:
            return self.refs[name]
        facts = facts or self.known.get(name)
        listed = self.listing().get(name)
        if listed is None:
            raise RepositoryError(
                "piece %s is not in the repository" % self.repository.describe_object(self.node, name),
                "the run stores it again",
                code="missing",
            )
        if facts is None or (listed[0] and listed[0] != facts[0]):
            # No record (or a different size): hash what is stored; restore still checks every byte.
            with self.repository.open_object(self.node, name) as stream:
                facts = stream_digest(stream)
            self.work["rehashed"] += 1
        if extend_lock(self.repository, self.node, name, self.epoch):
            self.work["locks_extended"] += 1
        self.known[name] = facts
        self.refs[name] = facts
        self.reused.add(name)
        self.work["reused"] += 1
        return facts

    def recheck(self) -> None:
        """Every reused piece must still be there before the epoch that references it is committed."""
        if not self.reused:
            return
        present = self.repository.object_names(self.node)
        gone = sorted(name for name in self.reused if present.get(name, (None,))[0] != self.refs[name][0])
        if gone:
            raise CaptureError(
                "%d piece(s) disappeared or changed during the backup (%s): garbage collection ran at the same time"
                % (len(gone), self.repository.describe_object(self.node, gone[0])),
                "run the backup again; do not run epoch_prune while a backup of the node runs",
            )

    def write_list(self, file_name: str) -> dict[str, Any]:
        """Write the epoch's piece list; its facts go into the signed manifest (``source.refs``)."""
        return write_piece_list(self.repository, self.node, self.epoch, file_name, self.refs)


class PackBuilder:
    """Groups small contents into packs of about ``PACK_SIZE`` plaintext bytes, written through a ``PieceWriter``.

    ``add`` returns (pack number, offset) of a content in this run's packs. A full pack is
    sealed and written by ``workers`` background threads (zstd, the age CLI and the fsyncs run
    outside the GIL) while the caller reads on; at most ``workers`` packs are in flight, so memory
    stays bounded. ``finish`` waits for every pack; then ``packs[n]`` is (name, sealed size,
    sealed SHA-256, plaintext size) of pack ``n``.
    """

    def __init__(self, writer: PieceWriter, size: int = PACK_SIZE, workers: int = 2) -> None:
        self.writer = writer
        self.size = size
        self.workers = max(1, workers)
        self.members: list[bytes] = []
        self.open_bytes = 0
        self.futures: list[Future] = []
        self.packs: list[tuple[str, int, str, int]] = []
        self.pool: ThreadPoolExecutor | None = None
        self.done = 0  # packs written (or failed), counted as they finish in any order
        self.counting = threading.Lock()

    def add(self, data) -> tuple[int, int]:
        if self.open_bytes and self.open_bytes + len(data) > self.size:
            self.close()
        offset = self.open_bytes
        self.members.append(bytes(data))
        self.open_bytes += len(data)
        return len(self.futures), offset

    def close(self) -> None:
        """Hand the open pack to the sealing threads (waiting while ``workers`` packs are in flight)."""
        if not self.members:
            return
        data = b"".join(self.members)
        self.members = []
        self.open_bytes = 0
        if self.pool is None:
            self.writer.listing()  # listed once, before the threads share the writer
            self.pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="nodekeep-pack")
        if len(self.futures) >= self.workers:
            self.futures[-self.workers].result()  # the oldest in flight: raises its error here
        future = self.pool.submit(self._put, data)
        self.futures.append(future)
        future.add_done_callback(self._finished)

    def _finished(self, _future: Future) -> None:
        with self.counting:
            self.done += 1

    def written(self) -> int:
        """How many packs are written (or failed) so far: a cheap test of whether ``ready`` may have changed."""
        return self.done

    def ready(self, number: int) -> bool:
        """Whether pack ``number`` is written (or failed): ``result`` returns at once."""
        return number < len(self.futures) and self.futures[number].done()

    def result(self, number: int) -> tuple[str, int, str, int]:
        """(name, sealed size, sealed SHA-256, plaintext size) of pack ``number``, closing it if it is the open
        one and waiting for it if it is in flight; its failure is raised here."""
        if number >= len(self.futures):
            self.close()
        return self.futures[number].result()

    def _put(self, data: bytes) -> tuple[str, int, str, int]:
        return (*self.writer.put(data), len(data))

    def finish(self) -> None:
        """Write the open pack and wait for every pack; the first failure is raised (after all stopped)."""
        try:
            self.close()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)
                self.pool = None
        self.packs = [future.result() for future in self.futures]

    def stop(self) -> None:
        """After a failure: never leave a sealing thread writing (their results are dropped)."""
        self.members = []
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


# --------------------------------------------------------------------------
# the piece list (plaintext, checked against the signed manifest)
# --------------------------------------------------------------------------


def write_piece_list(repository, node: str, epoch: str, file_name: str, refs: dict[str, tuple[int, str]]):
    digest = hashlib.sha256()
    size = 0
    total = 0
    with repository.open_write(node, epoch, file_name) as sink:
        lines = ["%s\n" % REFS_FORMAT]
        for name in sorted(refs):
            sealed_size, sealed_sha = refs[name]
            total += sealed_size
            lines.append("%s %d %s\n" % (name, sealed_size, sealed_sha))
            if len(lines) >= 4096:
                size += _flush_lines(sink, digest, lines)
        size += _flush_lines(sink, digest, lines)
    return {"file": file_name, "size": size, "sha256": digest.hexdigest(), "objects": len(refs), "bytes": total}


def _flush_lines(sink, digest, lines: list[str]) -> int:
    data = "".join(lines).encode("ascii")
    lines.clear()
    sink.write(data)
    digest.update(data)
    return len(data)


def load_piece_list(repository, node: str, epoch: str, artifact) -> dict[str, tuple[int, str]]:
    """The pieces an epoch's artifact references, after checking the list against its manifest facts."""
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
    try:
        lines = data.decode("ascii").splitlines()
    except UnicodeDecodeError:
        lines = []
    if not lines or lines[0] != REFS_FORMAT:
        raise IntegrityError("%s is not a %s list" % (file_name, REFS_FORMAT), "the list is damaged")
    refs: dict[str, tuple[int, str]] = {}
    for line in lines[1:]:
        name, size, digest = line.split(" ")
        refs[name] = (int(size), digest)
    return refs


def epoch_pieces(repository, node: str, epoch: str, manifest) -> tuple[list[str], int]:
    """(sorted paths relative to NODE of the pieces ``epoch`` needs, their stored size), from the epoch's piece
    lists (checked against its signed manifest); a piece missing or not a regular file fails, naming it.
    What ships an epoch to another host (epoch_info objects_of)."""
    present = repository.object_names(node)  # regular files only
    names: set[str] = set()
    for artifact in manifest.artifacts:
        if (artifact.source.get("refs") or {}).get("file"):
            names.update(load_piece_list(repository, node, epoch, artifact))
    missing = sorted(names - set(present))
    if missing:
        raise IntegrityError(
            "epoch %s of %s needs %d piece(s) that %s does not hold as regular files: %s"
            % (epoch, node, len(missing), repository.describe(node, OBJECTS_DIR, ""), ", ".join(missing[:3])),
            "this epoch cannot be restored from this repository; restore another epoch or copy",
        )
    paths = sorted("%s/%s/%s" % (OBJECTS_DIR, name[:2], name) for name in names)
    return paths, sum(present[name][0] for name in names)


def check_pieces(repository, node: str, refs: dict[str, tuple[int, str]], read: bool = True) -> dict[str, Any]:
    """Every referenced piece exists with its size and, when ``read``, its sealed SHA-256."""
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


def verify_pieces(artifact, context, deep: bool) -> dict[str, Any]:
    """``verify_extra`` for a pieces artifact: every listed piece is there with its size and sealed SHA-256.

    A deep verify decrypts every piece anyway (the restore path), so it only checks sizes here.
    """
    refs = load_piece_list(context.repository, context.node, context.epoch, artifact)
    report = check_pieces(context.repository, context.node, refs, read=not deep)
    problems = []
    if report["missing"]:
        problems.append(
            "%d referenced piece(s) missing (%s)" % (len(report["missing"]), ", ".join(report["missing"][:3]))
        )
    if report["wrong"]:
        problems.append("%d piece(s) damaged or modified (%s)" % (len(report["wrong"]), ", ".join(report["wrong"][:3])))
    if problems:
        raise IntegrityError(
            "artifact %s of epoch %s: %s" % (artifact.name, context.epoch, "; ".join(problems)),
            "do not trust this epoch for this asset; restore another copy or epoch, and run a new backup "
            "(missing pieces are stored again)",
        )
    return {"objects": report["objects"], "objects_ok": True}


# --------------------------------------------------------------------------
# reading pieces back
# --------------------------------------------------------------------------


class _MemorySink:
    """A piece's plaintext in memory (``unseal``'s ``limit`` bounds it by the epoch's signed record)."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data) -> int:
        self.buffer += data
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered elsewhere."""


def read_piece(repository, node: str, name: str, facts: tuple[int, str], size: int, identities: list) -> bytearray:
    """A piece's plaintext (exactly ``size`` bytes), after checking its sealed size and SHA-256 against ``facts``."""
    where = repository.describe_object(node, name)
    sink = _MemorySink()
    try:
        with repository.open_object(node, name) as stream:
            # the sealed bytes are proven against the record below; age authenticates their plaintext
            result = unseal(stream, sink, identities, sink_name=where, limit=size, hash_content=False)
    except NodekeepError as exc:
        raise type(exc)("piece %s: %s" % (where, exc.problem), exc.remedy) from exc
    if (result.sealed.size, result.sealed.sha256) != tuple(facts):
        raise IntegrityError(
            "piece %s: its sealed bytes do not match the epoch's record (size or SHA-256)" % where,
            "do not trust this copy; restore another epoch or copy",
        )
    if len(sink.buffer) != size:
        raise IntegrityError(
            "piece %s holds %d bytes, its record says %d" % (where, len(sink.buffer), size),
            "do not trust this copy; restore another epoch or copy",
        )
    return sink.buffer
