# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Page-granular incremental SQLite epochs on the node's piece store (docs/incremental.md).

The pinned-snapshot copy of the database is read page by page; each page gets a
keyed digest (16-byte keyed BLAKE2b under the node's key) compared with the
previous epoch's. Changed pages are grouped into packs (``pieces.PackBuilder``,
about 4 MiB of plaintext each, sealed like every artifact); unchanged pages keep
pointing into the packs that already hold them. The epoch's artifact is the
*page map*: JSON lines, sealed like every artifact, with a header (page size,
page count, the database's size and SHA-256, the base epoch), one line per pack
(piece name, sealed size and SHA-256, plaintext size) and one line per run of
consecutive pages stored consecutively in one pack. Restore writes every run at
its place and proves the whole file against the SHA-256 in the map, whose own
checksum is in the signed manifest; the pack's sealed SHA-256 are in the map and
in the epoch's piece list (also in the manifest).

The node cannot decrypt the repository, so the previous epoch's map and page
digests come from a local cache (``STATE/NODE/ASSET``), used only when the map's
SHA-256 equals the ``content_sha256`` of that asset in a complete epoch's
manifest and the digests' SHA-256 equals the map's record; otherwise the epoch is
a full one (every page packed again) and its facts say why (``full_reason``).

Packs that hold mostly pages no longer used by this epoch are repacked on write:
their live pages are stored again in this epoch's new packs, so the old pack is
referenced only by older epochs and goes with them (write-once, Object Lock safe).

Reading a map back and rebuilding the database from it are in ``_sqlite_rebuild``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from array import array
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite as _sqlite
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite_db as _sqlite_db
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._sqlite_rebuild import (
    MAP_FORMAT,
    read_map,
    restore_pages,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import Captured, RunContext, Staged
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    check_range,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import sha256_file
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, Artifact, Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces

LAYOUT = "pieces"
#: pages read per step of the scan
SCAN_PAGES = 256
#: up to this size the page arrays take 4 bytes a page (8 above)
COMPACT_BYTES = 64 << 30
#: a pack whose pages still used by the new epoch fill less than this share of it is repacked
REPACK_BELOW = 0.25


def page_size_of(path: str) -> int:
    """The page size in an SQLite file's header (bytes 16-17; 1 means 65536)."""
    with open(path, "rb") as handle:
        header = handle.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        raise CaptureError("%s is not an SQLite database file" % path, "check the asset path and type")
    value = int.from_bytes(header[16:18], "big")
    return 65536 if value == 1 else value


class _Cache:
    """The asset's local cache of its last epoch: the page map and the page digests (0600)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def epochs(self) -> list[str]:
        found = []
        for name in os.listdir(self.directory):
            if name.startswith("pages-") and name.endswith(".jsonl") and EPOCH_RE.match(name[6:-6]):
                found.append(name[6:-6])
        return sorted(found, reverse=True)

    def map_path(self, epoch: str) -> str:
        return os.path.join(self.directory, "pages-%s.jsonl" % epoch)

    def digests_path(self, epoch: str) -> str:
        return os.path.join(self.directory, "digests-%s.bin" % epoch)

    def save(self, epoch: str, map_path: str, digests_path: str) -> None:
        for source, final in ((digests_path, self.digests_path(epoch)), (map_path, self.map_path(epoch))):
            temp = final + ".tmp"
            shutil.copyfile(source, temp)
            os.chmod(temp, 0o600)
            os.rename(temp, final)

    def prune(self, keep: set[str]) -> None:
        """Remove the cached maps and digests of every epoch but ``keep``."""
        for name in os.listdir(self.directory):
            epoch = name.split("-", 1)[-1].split(".", 1)[0]
            if (name.startswith(("pages-", "digests-"))) and epoch not in keep:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))


class _PageArrays:
    """Where each page of an incremental epoch is: ``pack_of[i]`` >= 0 a base pack (its index in the base
    map), < 0 ``-(n + 1)`` for this epoch's new pack n; ``slot_of[i]`` its page slot in that pack.
    2 + 2 bytes a page up to 64 GiB (at most 32767 packs each way, 65535 pages a pack), else 4 + 4."""

    def __init__(self, page_count: int, compact: bool) -> None:
        self.page_count = page_count
        self.pack_of = array("h" if compact else "i", [0]) * page_count
        self.slot_of = array("H" if compact else "I", [0]) * page_count

    def set(self, index: int, count: int, pack: int, slot: int) -> None:
        self.pack_of[index : index + count] = array(self.pack_of.typecode, [pack]) * count
        self.slot_of[index : index + count] = array(self.slot_of.typecode, range(slot, slot + count))

    def runs(self) -> Iterator[tuple[int, int, int, int]]:
        """(first index, count, pack, first slot) of each run of pages stored consecutively in one pack."""
        pack_of, slot_of, page_count = self.pack_of, self.slot_of, self.page_count
        start = 0
        while start < page_count:
            pack = pack_of[start]
            end = start + 1
            while end < page_count and pack_of[end] == pack and slot_of[end] == slot_of[end - 1] + 1:
                end += 1
            yield start, end - start, pack, slot_of[start]
            start = end


class _PageRuns:
    """Where each page of a full epoch is, as runs only: every page is stored again in file order, so the
    list holds about one run per pack whatever the database's size (no per-page arrays)."""

    def __init__(self) -> None:
        self.stored: list[list[int]] = []

    def set(self, index: int, count: int, pack: int, slot: int) -> None:
        last = self.stored[-1] if self.stored else None
        if last and last[0] + last[1] == index and last[2] == pack and last[3] + last[1] == slot:
            last[1] += count
        else:
            self.stored.append([index, count, pack, slot])

    def runs(self) -> Iterator[tuple[int, int, int, int]]:
        return (tuple(run) for run in self.stored)  # type: ignore[misc]


class PageCapture:
    """One incremental (or full) epoch of one SQLite asset from its private snapshot copy."""

    def __init__(self, asset: dict[str, Any], copy: str, context, full: bool = False) -> None:
        self.asset = asset
        self.copy = copy
        self.context = context
        self.repo = context.repository
        self.node = context.node
        self.epoch = context.epoch
        state_dir = str(asset.get("state_dir") or _pieces.DEFAULT_STATE_DIR)
        self.key, self.new_key = _pieces.node_key(state_dir, self.node)
        self.key_id = _pieces.key_id(self.key)
        self.cache = _Cache(_pieces.asset_state_dir(state_dir, self.node, asset["name"]))
        self.writer = _pieces.PieceWriter(self.repo, self.node, self.epoch, context.recipients, context.level, self.key)
        self.full_requested = full or bool(asset.get("full"))
        self.full_reason = ""
        self.base_epoch: str | None = None
        self.base_header: dict[str, Any] = {}
        self.base_packs: list[dict[str, Any]] = []
        self.base_runs: list[tuple[int, int, int, int]] = []
        self.stats: dict[str, Any] = {}
        self.page_size = 0

    # -- the previous epoch --

    def load_base(self, page_size: int) -> None:
        if self.full_requested:
            self.full_reason = "requested (full: true)"
            return
        complete = set(self.repo.complete_epochs(self.node))
        reasons = []
        for epoch in self.cache.epochs():
            if epoch >= self.epoch or epoch not in complete:
                continue
            try:
                manifest = Manifest.from_bytes(
                    self.repo.get_bytes(self.node, epoch, MANIFEST_NAME), node=self.node, epoch=epoch
                )
                artifact = manifest.artifact(self.asset["name"])
                if artifact.source.get("layout") != LAYOUT:
                    reasons.append("epoch %s of the asset is not a pieces epoch" % epoch)
                    break
                map_path = self.cache.map_path(epoch)
                if sha256_file(map_path) != (artifact.content_size, artifact.content_sha256):
                    reasons.append("the local copy of epoch %s's page map does not match its manifest" % epoch)
                    break
                header, packs, runs = read_map(map_path)
                if header.get("key_id") != self.key_id:
                    reasons.append("the node's piece key changed since epoch %s" % epoch)
                    break
                if int(header["page_size"]) != page_size:
                    reasons.append("the page size changed since epoch %s" % epoch)
                    break
                if sha256_file(self.cache.digests_path(epoch))[1] != header.get("digests_sha256"):
                    reasons.append("the local page digests of epoch %s do not match its page map" % epoch)
                    break
            except (NodekeepError, OSError) as exc:
                reasons.append("epoch %s is unreadable here (%s)" % (epoch, getattr(exc, "message", exc)))
                break
            full_every = int(self.asset.get("full_every") or 0)
            if full_every and int(header.get("chain", 0)) + 1 >= full_every:
                self.full_reason = "scheduled (full_every: %d epochs)" % full_every
                return
            self.base_epoch, self.base_header, self.base_packs, self.base_runs = epoch, header, packs, runs
            for pack in packs:
                self.writer.known[pack["object"]] = (pack["sealed_size"], pack["sealed_sha256"])
            return
        self.full_reason = reasons[0] if reasons else "no previous epoch of this asset on this node"

    # -- the scan --

    def plan(self) -> bool:
        """Decide from the previous epoch whether this epoch is full; True when it is."""
        self.page_size = page_size_of(self.copy)
        self.load_base(self.page_size)
        return self.base_epoch is None

    def _store_changed(self, builder, view, page: int, known: int, fresh: bytes, old: bytes, where) -> int:
        """Pack the pages of one scanned chunk (``view``, from page index ``page``) whose digest differs from
        the base's (the first ``known`` have one); consecutive ones go into a pack in one piece. The count."""
        page_size = self.page_size
        pages = len(view) // page_size
        longest = max(1, builder.size // page_size)

        if not known and pages <= longest:  # no base page here (a full epoch, appended pages): one piece
            pack, offset = builder.add(view)
            where.set(page, pages, -(pack + 1), offset // page_size)
            return pages

        def same(number: int) -> bool:
            return number < known and fresh[number * 16 : number * 16 + 16] == old[number * 16 : number * 16 + 16]

        stored = 0
        number = 0
        while number < pages:
            if same(number):
                number += 1
                continue
            end = number + 1
            while end < pages and end - number < longest and not same(end):
                end += 1
            count = end - number
            pack, offset = builder.add(view[number * page_size : end * page_size])
            slot = offset // page_size
            where.set(page + number, count, -(pack + 1), slot)
            stored += count
            number = end
        return stored

    def run(self, map_path: str, digests_path: str) -> dict[str, Any]:
        began = time.monotonic()
        page_size = self.page_size
        size = os.path.getsize(self.copy)
        if size % page_size:
            raise CaptureError(
                "the snapshot copy of %s is not a whole number of pages" % self.asset["path"], "run the backup again"
            )
        page_count = size // page_size
        # Where each page is stored: per-page arrays against the base (incremental), runs only (full).
        where: _PageArrays | _PageRuns = _PageRuns()
        base_count = 0
        if self.base_epoch:
            compact = (
                size <= COMPACT_BYTES
                and len(self.base_packs) < 32768
                and all(info["size"] // page_size < 65536 for info in self.base_packs)
            )
            where = _PageArrays(page_count, compact)
            base_count = int(self.base_header["page_count"])
            for first, count, pack, offset in self.base_runs:
                if first > page_count:
                    continue
                where.set(first - 1, min(count, page_count - first + 1), pack, offset // page_size)
        builder = _pieces.PackBuilder(self.writer)
        mac = _pieces.page_mac(self.key)
        whole = hashlib.sha256()
        # The whole file's SHA-256 is computed by a second thread (hashlib releases the GIL) while this
        # one digests pages; one worker keeps the chunks in order.
        hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nodekeep-sha256")
        hashing: list[Future] = []
        digests_hash = hashlib.sha256()
        changed = 0
        base_digests = open(self.cache.digests_path(self.base_epoch), "rb") if self.base_epoch else None  # noqa: SIM115
        try:
            with open(self.copy, "rb") as source, open(digests_path, "wb") as digests_out:
                page = 0
                while page < page_count:
                    chunk = source.read(SCAN_PAGES * page_size)
                    if not chunk:
                        break
                    hashing.append(hasher.submit(whole.update, chunk))
                    if len(hashing) > 4:
                        hashing.pop(0).result()  # at most a few chunks wait: memory stays bounded
                    view = memoryview(chunk)
                    pages = len(chunk) // page_size
                    old = base_digests.read(pages * 16) if base_digests is not None else b""
                    fresh = b"".join([mac(view[n * page_size : (n + 1) * page_size]) for n in range(pages)])
                    known = max(0, min(pages, base_count - page))  # pages of this chunk the base has
                    if known < pages or fresh != old:
                        changed += self._store_changed(builder, view, page, known, fresh, old, where)
                    digests_out.write(fresh)
                    digests_hash.update(fresh)
                    page += pages
                if page != page_count:
                    raise CaptureError("the snapshot copy of %s shrank while read" % self.asset["path"])
            # Base packs: reuse (lock extended), or repack their pages when mostly unused or gone.
            used_pages: dict[int, int] = {}
            for _index, count, pack, _slot in where.runs():
                if pack >= 0:
                    used_pages[pack] = used_pages.get(pack, 0) + count
            repack: set[int] = set()
            for pack, pages in used_pages.items():
                info = self.base_packs[pack]
                if pages * page_size < REPACK_BELOW * info["size"] or not self.writer.has(
                    info["object"], info["sealed_size"]
                ):
                    repack.add(pack)
            repacked = 0
            if repack:
                moved = [(index, count) for index, count, pack, _slot in where.runs() if pack in repack]
                with open(self.copy, "rb") as source:
                    for start, count in moved:
                        for index in range(start, start + count):
                            data = os.pread(source.fileno(), page_size, index * page_size)
                            pack, offset = builder.add(data)
                            where.set(index, 1, -(pack + 1), offset // page_size)
                            repacked += 1
            builder.finish()
            for future in hashing:
                future.result()
        finally:
            hasher.shutdown(wait=True)
            builder.stop()
            if base_digests is not None:
                base_digests.close()
        # This epoch's pack table: base packs still used (reused: vouched facts, lock extended), then new ones.
        table: list[tuple[str, int, str, int]] = []
        base_index: dict[int, int] = {}
        new_index: dict[int, int] = {}
        for _index, _count, pack, _slot in where.runs():
            if pack >= 0 and pack not in base_index:
                info = self.base_packs[pack]
                sealed = self.writer.reuse(info["object"], (info["sealed_size"], info["sealed_sha256"]))
                base_index[pack] = len(table)
                table.append((info["object"], sealed[0], sealed[1], info["size"]))
            elif pack < 0 and -(pack + 1) not in new_index:
                new_index[-(pack + 1)] = len(table)
                table.append(builder.packs[-(pack + 1)])
        runs = 0
        with open(map_path, "w", encoding="utf-8") as out:
            header = {
                "format": MAP_FORMAT,
                "epoch": self.epoch,
                "key_id": self.key_id,
                "page_size": page_size,
                "page_count": page_count,
                "size": size,
                "sha256": whole.hexdigest(),
                "digests_sha256": digests_hash.hexdigest(),
                "base_epoch": self.base_epoch,
                "full": self.base_epoch is None,
                "chain": 0 if self.base_epoch is None else int(self.base_header.get("chain", 0)) + 1,
            }
            out.write(json.dumps(header, sort_keys=True) + "\n")
            out.writelines(
                json.dumps(
                    {"object": name, "sealed_size": sealed_size, "sealed_sha256": sealed_sha, "size": plain},
                    sort_keys=True,
                )
                + "\n"
                for name, sealed_size, sealed_sha, plain in table
            )
            lines: list[str] = []
            for start, count, pack, slot in where.runs():
                number = base_index[pack] if pack >= 0 else new_index[-(pack + 1)]
                lines.append(
                    '{"count":%d,"first":%d,"offset":%d,"pack":%d}\n' % (count, start + 1, slot * page_size, number)
                )
                runs += 1
                if len(lines) >= 4096:
                    out.write("".join(lines))
                    lines = []
            out.write("".join(lines))
        self.stats = {
            "layout": LAYOUT,
            "page_map": MAP_FORMAT,
            "key_id": self.key_id,
            "base_epoch": self.base_epoch,
            "full": self.base_epoch is None,
            "pages": {
                "total": page_count,
                "changed": changed if self.base_epoch else page_count,
                "stored": changed + repacked,
                "repacked": repacked,
                "runs": runs,
            },
            "pieces": {
                "referenced": len(table),
                "new": self.writer.work["new"],
                "reused": self.writer.work["reused"],
                "rehashed": self.writer.work["rehashed"],
                "locks_extended": self.writer.work["locks_extended"],
                "new_bytes": self.writer.work["new_bytes"],
                "uploaded_bytes": self.writer.work["uploaded_bytes"],
            },
            "pages_seconds": round(time.monotonic() - began, 3),
        }
        if self.base_epoch is None:
            self.stats["full_reason"] = self.full_reason
        if self.new_key:
            self.stats["new_key"] = True
        return self.stats


def capture_pages(capture: PageCapture, scratch: str, refs_file: str):
    """Run a planned ``PageCapture``: the page map's path (in scratch) and the facts; the piece list is in the epoch.

    Every piece is stored (and every reused one rechecked) before the piece list is written; the
    local cache keeps this epoch's map beside its base's (an epoch that fails to commit leaves the
    base usable); the caller seals the map as the artifact and commits the epoch.
    """
    token = os.path.basename(capture.copy)
    map_path = os.path.join(scratch, "%s.pages.jsonl" % token)
    digests_path = os.path.join(scratch, "%s.digests" % token)
    try:
        facts = capture.run(map_path, digests_path)
        capture.writer.recheck()
        facts["refs"] = capture.writer.write_list(refs_file)
        capture.cache.save(capture.epoch, map_path, digests_path)
        capture.cache.prune({capture.epoch, capture.base_epoch or capture.epoch})
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(map_path)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(digests_path)
    return map_path, facts


# --------------------------------------------------------------------------
# the sqlite asset type with its incremental layout
# --------------------------------------------------------------------------


class IncrementalSqliteAssetType(_sqlite.SqliteAssetType):
    """The ``sqlite`` asset type; with ``incremental: true`` its epochs are pages on the node's piece store.

    Registered as ``sqlite`` (assets.registry): the whole-copy layout is the base class's, unchanged.
    """

    options: ClassVar[dict[str, Any]] = dict(
        _sqlite.SqliteAssetType.options,
        incremental=False,
        incremental_check="quick",
        full_every=0,
        full=False,
        state_dir=None,
    )

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        if normalized["incremental_check"] not in _sqlite_db.CHECKS:
            raise CaptureError(
                "asset %s: incremental_check must be one of %s" % (normalized["name"], ", ".join(_sqlite_db.CHECKS)),
                "set the asset's incremental_check in nodekeep_assets",
            )
        for option in ("incremental", "full"):
            if not isinstance(normalized[option], bool):
                raise CaptureError(
                    "asset %s: %s must be true or false, not %r" % (normalized["name"], option, normalized[option]),
                    "set the asset's %s in nodekeep_assets to a boolean" % option,
                )
        normalized["full_every"] = check_range(
            normalized["full_every"] or 0,
            "asset %s: full_every" % normalized["name"],
            0,
            10000,
            "epochs",
            why="0 makes a full copy only the first time, on demand and on fallbacks; e.g. full_every: 288",
            error=CaptureError,
        )
        state = normalized.get("state_dir")
        if state is not None and not os.path.isabs(str(state)):
            raise CaptureError(
                "asset %s: state_dir %r is not absolute" % (normalized["name"], state),
                "give an absolute directory such as /var/lib/nodekeep/files (the node's piece key lives there)",
            )
        return normalized

    def artifact_file(self, asset: dict[str, Any]) -> str:
        if asset.get("incremental"):
            return "%s.pages.jsonl.zst.age" % asset["name"]
        return super().artifact_file(asset)

    def artifact_format_for(self, asset: dict[str, Any]) -> str:
        return "sqlite-pages+zstd+age" if asset.get("incremental") else self.artifact_format

    @staticmethod
    def uses_pieces(artifact: Artifact) -> bool:
        return artifact.source.get("layout") == LAYOUT

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context: RunContext | None = None) -> Iterator[Captured]:
        """The whole copy (base class), or: copy from one snapshot, then store only the changed pages.

        The check policy (recorded as ``check``): a full epoch runs the asset's ``check``, an incremental one
        its ``incremental_check``; the check reads the copy while the pages are scanned and sealed, and a
        failed check aborts the epoch before it is committed.
        """
        if not asset.get("incremental"):
            with super().capture(asset, scratch_dir, context) as captured:
                yield captured
            return
        if context is None or context.repository is None or not context.recipients:
            raise CaptureError(
                "asset %s: incremental SQLite epochs need the engine's run context" % asset["name"],
                "back it up through epoch_backup / backup_epoch",
            )
        copy = os.path.join(scratch_dir, "%s.%s.sqlite" % (asset["name"], uuid.uuid4().hex[:8]))
        map_path = None
        try:
            facts = self.snapshot_copy(asset, copy)
            capture = PageCapture(asset, copy, context, full=context.full)
            check = asset["check"] if capture.plan() else asset["incremental_check"]
            facts["check"] = check
            checker = _sqlite._CheckThread(copy, check, asset["path"])
            checker.start()
            try:
                map_path, pages = capture_pages(capture, scratch_dir, "%s.refs.txt" % asset["name"])
                facts.update(pages)
                with open(map_path, "rb") as stream:
                    yield Captured(stream, facts, finish=checker.result)
            finally:
                checker.join()
        finally:
            for path in (copy, map_path):
                if path:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context: RunContext | None = None) -> Iterator[Staged]:
        artifact = context.artifact if context is not None else None
        with super().restore_into(target, force, context) as staged:
            if artifact is None or not self.uses_pieces(artifact):
                yield staged
                return
            with restore_pages(staged, artifact, context) as pages:
                yield pages

    def extra_files(self, artifact: Artifact) -> list[dict[str, Any]]:
        refs = artifact.source.get("refs") or {}
        if not self.uses_pieces(artifact) or not refs.get("file"):
            return []
        return [{"file": refs["file"], "size": int(refs.get("size") or 0), "sha256": refs.get("sha256")}]

    def object_references(self, repository: Any, node: str, epoch: str, artifact: Artifact) -> dict[str, Any]:
        if not self.uses_pieces(artifact):
            return {}
        return _pieces.load_piece_list(repository, node, epoch, artifact)

    def verify_extra(self, artifact: Artifact, context: RunContext, deep: bool) -> dict[str, Any]:
        if not self.uses_pieces(artifact):
            return {}
        return _pieces.verify_pieces(artifact, context, deep)
