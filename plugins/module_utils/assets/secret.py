# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``secret`` asset type: one key file or a small tree of them, sealed for the custodians."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import os
import stat
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._tree import (
    TreeAssetType,
    tree_facts,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.archive import tar_reader
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    RestoreError,
    SealError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import format_mode
from ansible_collections.nodekeep.backup.plugins.module_utils.keys.facts import key_facts


class SecretAssetType(_assets.FileAssetType):
    """A ``secret`` asset (a key file, a mnemonic, an ``.env``, or a directory of them).

    A file is sealed as it is, a directory as a PAX tar stream; both zstd-compressed
    like every artifact. Small key files get their public facts (age recipient,
    SSH public key and fingerprint: never the key) recorded in the manifest, so
    a recovery can be compared with what was backed up.
    """

    name = "secret"
    content_format = "secret"

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        normalized["content"] = "tar" if source_kind(normalized["path"]) == "directory" else "file"
        return normalized

    def artifact_file(self, asset: dict[str, Any]) -> str:
        return "%s%s.zst.age" % (asset["name"], ".tar" if asset.get("content") == "tar" else "")

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        path = asset["path"]
        if asset.get("content") == "tar":
            with tar_reader(path) as stream:
                yield _assets.Captured(stream, {"content": "tar"}, finish=lambda: tree_facts(stream.stats()))
            return
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            facts: dict[str, Any] = {"content": "file", "mode": format_mode(stat.S_IMODE(info.st_mode))}
            facts.update(uid=info.st_uid, gid=info.st_gid)
            # A secret file comes back 0600, owned by the restoring user: its xattrs and ACLs are not kept
            # (nothing but public key facts is recorded about a secret), and the result says so.
            notes: list[dict[str, Any]] = []
            xattrs = _attrs.read_xattrs(stream.fileno(), notes)
            if xattrs:
                notes.append(
                    {
                        "path": ".",
                        "what": "%d extended attribute(s) or ACL(s)" % len(xattrs),
                        "reason": "a secret file is restored 0600 without them",
                    }
                )
            if notes:
                facts["not_kept"] = notes
            if info.st_size <= 64 << 10:
                key = key_facts(stream.read())
                stream.seek(0)
                facts.update({k: v for k, v in key.items() if k in ("kind", "public_key", "fingerprint", "key_type")})
            yield _assets.Captured(stream, facts)

    @staticmethod
    def _is_tree(artifact) -> bool:
        return artifact is not None and artifact.source.get("content") == "tar"

    def restore_into(self, target: str, force: bool = False, context=None):
        """A sealed directory is restored as a directory (0700 and its own modes), a file as a 0600 file."""
        if self._is_tree(getattr(context, "artifact", None)):
            return TreeAssetType().restore_into(target, force, context)
        return super().restore_into(target, force, context)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        if self._is_tree(artifact):
            return TreeAssetType().deep_check(path, artifact, check)
        if not artifact.source.get("public_key"):
            return {}
        facts = opened_key_facts(path) or {}
        if facts.get("public_key") != artifact.source["public_key"]:
            raise RestoreError(
                "the restored key %s does not derive the public key recorded in the manifest" % artifact.name,
                "the artifact does not match its manifest; use another epoch",
            )
        return {"public_key": facts["public_key"]}


# --------------------------------------------------------------------------
# sealing and opening files and directories (the age_seal module)
# --------------------------------------------------------------------------


def source_kind(src: str) -> str:
    try:
        info = os.stat(src)
    except FileNotFoundError:
        raise SealError(f"the source {src} does not exist", "check the path; nothing was written")
    except OSError as exc:
        raise SealError(f"cannot read the source {src} ({exc.strerror})", "run with become: true")
    if stat.S_ISDIR(info.st_mode):
        if not os.access(src, os.R_OK | os.X_OK):
            raise SealError(f"cannot read the directory {src} (permission denied)", "run with become: true")
        return "directory"
    if not stat.S_ISREG(info.st_mode):
        raise SealError(f"{src} is neither a regular file nor a directory", "give a file or a directory")
    try:
        with open(src, "rb"):
            pass
    except OSError as exc:
        raise SealError(f"cannot read the source {src} ({exc.strerror})", "run with become: true")
    return "file"


def opened_key_facts(path: str) -> dict[str, Any] | None:
    """Public facts of an opened key file (age identity or private key): its public key, never the key."""
    try:
        with open(path, "rb") as handle:
            facts = key_facts(handle.read(64 << 10))
    except OSError:
        return None
    return facts if facts.get("kind") != "data" else None
