# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``config`` asset type: a small configuration tree as one tar stream."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import hmac
import os
import stat
import time
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _tree
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_content import _BytesSource, stat_stable
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_index import LIVE_COMPARE_LIMIT
from ansible_collections.nodekeep.backup.plugins.module_utils.core import archive as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core import fs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    sha256_file,
    stream_digest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces


class ConfigAssetType(_tree.TreeAssetType):
    """Configuration files as they are: one file (mode, owner, mtime kept) or a directory of them (a tar)."""

    name = "config"
    content_format = "config"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": [], "state_dir": _pieces.DEFAULT_STATE_DIR}

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        normalized["state_dir"] = _pieces.check_state_dir(normalized["name"], normalized.get("state_dir"))
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
        notes: list[dict[str, Any]] = []
        with open(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            data = handle.read()
            # xattrs and ACLs (system.posix_acl_access) go back on at restore; chattr flags cannot: listed
            xattrs = _attrs.read_xattrs(handle.fileno(), notes)
            _attrs.flags_not_kept(handle.fileno(), ".", notes)
            after = os.fstat(handle.fileno())
        if not stat_stable(info, after) or len(data) != info.st_size:
            raise CaptureError("the config file %s changed while it was read" % asset["path"], "run the backup again")
        facts = {
            "content": "file",
            "mode": fs.format_mode(stat.S_IMODE(info.st_mode)),
            "uid": info.st_uid,
            "gid": info.st_gid,
            "mtime_ns": info.st_mtime_ns,
        }
        if xattrs:
            facts["xattrs"] = _attrs.xattrs_to_facts(xattrs)
        if notes:
            facts["not_kept"] = notes
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
                mode = fs.parse_mode(artifact.source.get("mode")) or 0o600
                os.fchmod(fd, mode)
                # after the mode: a chmod rewrites an ACL's mask; a filesystem without them fails the restore
                xattrs = _attrs.xattrs_from_facts(artifact.source.get("xattrs"))
                _attrs.apply_xattrs(fd, xattrs, shown=target)
                mtime = int(artifact.source.get("mtime_ns") or time.time_ns())
                os.utime(fd, ns=(mtime, mtime))
                done = {"mode": fs.format_mode(mode)}
                if xattrs:
                    done["xattrs"] = sorted(xattrs)
                return done

            yield _assets.Staged(staged.path, handle, complete=complete)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        if artifact.source.get("content") == "file":
            info = os.stat(path)
            wanted = _attrs.xattrs_from_facts(artifact.source.get("xattrs"))
            found = {name: value for name, value in _attrs.read_xattrs(path).items() if name in wanted}
            if found != wanted:
                raise RestoreError(
                    "the restored config file %s lacks extended attributes or ACLs the backup recorded (%s)"
                    % (path, ", ".join(sorted(set(wanted) - set(found)) or sorted(wanted))),
                    "restore onto a filesystem that keeps extended attributes and ACLs (ext4, xfs, btrfs)",
                )
            checks = {"mode": fs.format_mode(stat.S_IMODE(info.st_mode)), "size": info.st_size}
            if wanted:
                checks["xattrs"] = len(wanted)
            return checks
        return super().deep_check(path, artifact, check)

    def content_facts(self, asset: dict[str, Any], content_sha256: str, context) -> dict[str, Any]:
        """A keyed MAC of the plaintext (the file, or the tar of the tree) under the node's key, never its hash:
        verify compares the live config with it on the node; a reader of the manifest cannot test a guess."""
        node = context.node if context is not None else ""
        key, _created = _pieces.node_key(asset["state_dir"], node)
        return {
            "content_mac": _pieces.content_mac(key, content_sha256),
            "key_id": _pieces.key_id(key),
            "state_dir": asset["state_dir"],
        }

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        """Runbook 000's "hash compare with live": does the live config still match this backup? (report only).

        Compared by the keyed MAC the manifest records (the node's key, ``state_dir``); epochs of older
        versions recorded the plain SHA-256 (``content_sha256``), compared as before."""
        path = str(artifact.source.get("path") or "")
        if not path or not os.path.lexists(path):
            return {"live": "absent"}
        key = b""
        if artifact.content_sha256 is None:
            state_dir = str(artifact.source.get("state_dir") or _pieces.DEFAULT_STATE_DIR)
            try:
                key = _pieces.node_key(state_dir, context.node, create=False)[0]
            except NodekeepError:
                key = b""
            if not key or _pieces.key_id(key) != artifact.source.get("key_id") or not artifact.source.get("content_mac"):
                return {"live": "not compared", "why": "the node's key (%s) is not the one of this backup" % state_dir}
        try:
            if artifact.source.get("content") == "file":
                if os.path.getsize(path) > LIVE_COMPARE_LIMIT:
                    return {"live": "not compared"}
                digest = sha256_file(path)[1]
            else:
                with _archive.tar_reader(
                    path, artifact.source.get("include") or None, artifact.source.get("exclude") or None
                ) as stream:
                    digest = stream_digest(stream)[1]
        except (OSError, NodekeepError):
            return {"live": "unreadable"}
        if key:
            same = hmac.compare_digest(_pieces.content_mac(key, digest), str(artifact.source["content_mac"]))
        else:
            same = digest == artifact.content_sha256
        return {"live": "same" if same else "differs"}
