# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the files asset's formats and node state (index and refs formats, object names, the per-node
object-name key and cached indexes).
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
import shutil
from collections.abc import Iterator
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
