# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the files asset's formats and node state (index and refs formats, object names, the per-node
object-name key and cached indexes).
"""

from __future__ import absolute_import, annotations, division, print_function

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import fsync_dir, makedirs_private

__metaclass__ = type

import hashlib
import hmac
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

INDEX_FORMAT = "nodekeep.files-index/v2"


#: index formats this version reads (v1: one object per file, no packs)
INDEX_FORMATS = ("nodekeep.files-index/v1", INDEX_FORMAT)


REFS_FORMAT = "nodekeep.files-refs/v1"


DEFAULT_STATE_DIR = "/var/lib/nodekeep/files"


KEY_FILE = "object-name.key"


LIST_LIMIT = 100


#: config files hashed against the live copy by verify at most this big
LIVE_COMPARE_LIMIT = 64 << 20


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
