# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the files asset's formats and node state (index and refs formats, object names, the per-node
object-name key and cached indexes, a cached index read back: its packed contents and a cursor in walk order).
"""

from __future__ import absolute_import, annotations, division, print_function

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    IntegrityError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces

__metaclass__ = type

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from typing import Any

INDEX_FORMAT = "nodekeep.files-index/v2"


#: index formats this version reads (v1: one object per file, no packs)
INDEX_FORMATS = ("nodekeep.files-index/v1", INDEX_FORMAT)


REFS_FORMAT = _pieces.REFS_FORMAT


DEFAULT_STATE_DIR = _pieces.DEFAULT_STATE_DIR


KEY_FILE = _pieces.KEY_FILE


LIST_LIMIT = 100


#: config files hashed against the live copy by verify at most this big
LIVE_COMPARE_LIMIT = 64 << 20


# --------------------------------------------------------------------------
# object names and the node's state (key and index cache)
# --------------------------------------------------------------------------


#: the node's piece store (storage/pieces.py, docs/incremental.md): one key, naming and piece list for every type
object_name = _pieces.piece_name
key_id = _pieces.key_id


class NodeState:
    """The node's private files state: ``STATE/NODE/object-name.key`` and ``STATE/NODE/ASSET/index-EPOCH.jsonl``."""

    def __init__(self, state_dir: str, node: str, asset: str) -> None:
        self.state_dir = state_dir
        self.node = node
        self.node_dir = os.path.join(state_dir, node)
        self.asset_dir = _pieces.asset_state_dir(state_dir, node, asset)

    def key(self) -> tuple[bytes, bool]:
        """The node's object-name key (32 random bytes, 0600), made on first use; (key, created)."""
        return _pieces.node_key(self.state_dir, self.node)

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


_FILE_MARK = '"type":"file"'
_DIR_MARK = '"type":"dir"'


def read_index(
    path: str, files_only: bool = False, lines: bool = False, dirs: bool = False, raw: bool = False
) -> tuple[dict[str, Any], Iterator[Any]]:
    """The header and an iterator of entries of a plaintext index file (``files_only``: regular files only,
    with ``dirs`` directories too; ``lines``: ``(line, entry)`` pairs; ``raw``: the lines only, not parsed)."""
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

    def entries() -> Iterator[Any]:
        with handle:
            for line in handle:
                # Entries are written compact ("type":"file"; a path's own quotes are escaped): an
                # incremental run parses only the files of its cache (half the lines of a DA store).
                if line.strip() and (not files_only or _FILE_MARK in line or (dirs and _DIR_MARK in line)):
                    yield line if raw else (line, json.loads(line)) if lines else json.loads(line)

    return header, entries()


#: a packed file's line as this version writes it (compact, sorted keys): object, offset, sealed facts, content SHA-256
_PACKED_LINE = re.compile(
    r'"object":"([0-9a-f]+)","offset":([0-9]+),"path":"(?:[^"\\]+|\\.)*",'
    r'"sealed_sha256":"([0-9a-f]+)","sealed_size":([0-9]+),"sha256":"([0-9a-f]{64})","size":[0-9]+,"type":"file",'
)


#: lines of a cached index read at a time by load_packed (bytes, about)
_LOAD_CHUNK = 4 << 20


def load_packed(path: str, put: Callable[[str, tuple[str, int, int, str]], None]) -> dict[str, tuple[int, str]]:
    """Where the packed contents of the cached index ``path`` are (``put(content SHA-256, (piece, offset, sealed
    size, sealed SHA-256))``), and every piece's sealed facts (returned: piece name -> (sealed size, SHA-256)).

    The lines are matched by one regular expression, a few MiB of lines at a time (no JSON object per line):
    compact lines with sorted keys, as this version writes them. A line it does not match (an older writer's
    layout) is parsed as JSON. Either way only the facts are taken; a content not found here is packed again,
    never misplaced."""
    shared: dict[str, str] = {}  # one string per piece name and checksum, not one per file
    known: dict[str, tuple[int, str]] = {}
    with open(path, encoding="utf-8") as handle:
        handle.readline()  # the header (checked by the caller)
        while True:
            lines = handle.readlines(_LOAD_CHUNK)
            if not lines:
                break
            for line in lines:
                if _FILE_MARK not in line:
                    continue
                found = _PACKED_LINE.search(line)
                if found is not None:
                    name, offset, sealed, size, digest = found.groups()
                else:
                    entry = json.loads(line)
                    name, sealed, size = entry.get("object"), entry.get("sealed_sha256"), entry.get("sealed_size")
                    offset, digest = entry.get("offset"), entry.get("sha256")
                    if not name:
                        continue
                facts = known.get(name)
                if facts is None:
                    name = shared.setdefault(name, name)
                    facts = known[name] = (int(size), shared.setdefault(sealed, str(sealed)))
                if offset is not None:
                    put(digest, (name, int(offset), facts[0], facts[1]))
    return known


class IndexCursor:
    """A cached index's files and directories read in step with a walk (both in walk order): ``line`` is the
    current raw line ("" at the end), parsed only when a lookup needs it."""

    def __init__(self, path: str, rel: str) -> None:
        # files and directories (an unchanged directory's line is written again as it is)
        self.lines: Iterator[str] = read_index(path, files_only=True, dirs=True, raw=True)[1]
        self.entry: dict[str, Any] | None = None  # ``line`` parsed (None: not yet, or the end)
        self.line = ""
        self.key: list[str] = []
        self.advance()
        if self.parse() and self.key == ["."] and rel:
            self.advance()  # the root's line comes first whatever the names (not looked up with include)

    def advance(self) -> None:
        """Move to the next cached line (parsed only when it must be: ``parse``)."""
        self.line = next(self.lines, "")
        self.entry = None

    def parse(self) -> bool:
        """Parse the current line (False: the end of the cache)."""
        if self.entry is None:
            if not self.line:
                return False
            self.entry = json.loads(self.line)
            self.key = str(self.entry["path"]).split("/")
        return True

    def find(self, rel: str) -> tuple[dict[str, Any] | None, str]:
        """The cached entry of ``rel`` and its line, the cursor moved past it (None, "": not cached)."""
        key = rel.split("/") if rel else ["."]
        while self.parse():
            if self.key == key:
                found, line = self.entry, self.line
                self.advance()
                return found, line
            if self.key > key:
                return None, ""
            self.advance()
        return None, ""

    def close(self) -> None:
        self.lines.close()  # type: ignore[attr-defined]
