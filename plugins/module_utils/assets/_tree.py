# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private base of the directory-tree asset types (files, config, rocksdb): one PAX tar stream in,
a directory out, placed only after the checks passed.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import shutil
import stat
import time
import uuid
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core.archive import tar_reader
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.extract import tar_writer
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import fsync_dir

# --------------------------------------------------------------------------
# secrets sealed into a signed epoch of their own (age_seal state=epoch, playbooks/keys_seal.yml)
# --------------------------------------------------------------------------


def restore_parent(target: str, force: bool) -> str:
    """Refuse an existing restore ``target`` unless ``force``; create its directory (0700) and return it."""
    if os.path.lexists(target) and not force:
        raise RestoreError(
            "the restore target %s already exists" % target,
            "restore into an empty staging path (nodekeep_restore_to) or set nodekeep_restore_force: true "
            "to keep the existing tree as %s.nodekeep-replaced-<time>" % target,
        )
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, "creating the restore directory", parent)
    return parent


def place_restored_tree(temp: str, target: str) -> None:
    """Rename the restored tree ``temp`` to ``target``; an existing one is kept as ``.nodekeep-replaced-<time>``."""
    try:
        if os.path.lexists(target):
            os.rename(target, "%s.nodekeep-replaced-%d" % (target, int(time.time())))
        os.rename(temp, target)
        fsync_dir(os.path.dirname(target))
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise describe_os_error(exc, "placing the restored tree", target)


class TreeAssetType(_assets.AssetType):
    """Base of the directory-tree asset types: one PAX tar stream in, a directory out.

    ``capture`` streams the tree (``include``/``exclude`` globs as in
    ``tar_reader``) and records the entry counts; ``restore_into`` extracts
    into a hidden directory beside the target (modes, numeric ownership as
    root, nanosecond mtimes, symlinks and hard links kept) and renames it into
    place only when the stream's checksums and the asset's deep check passed.
    Subclasses (files, config, rocksdb...) set ``name`` and register themselves.
    """

    name = "tree"
    extension = ".tar"
    content_format = "tar"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": []}

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        with self.capture_tree(asset["path"], asset) as captured:
            yield captured

    @contextlib.contextmanager
    def capture_tree(self, root: str, asset: dict[str, Any], facts: dict[str, Any] | None = None):
        """A tar stream of ``root`` (which may be a snapshot or a copy of the asset's path)."""
        with tar_reader(root, asset.get("include") or None, asset.get("exclude") or None) as stream:
            yield _assets.Captured(stream, facts, finish=lambda: tree_facts(stream.stats()))

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        parent = restore_parent(target, force)
        temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(target), uuid.uuid4().hex[:8]))
        writer = tar_writer(temp)
        try:
            yield _assets.Staged(temp, writer, complete=lambda: {"entries": writer.finish()})
        except BaseException as exc:
            cause = writer.abort()
            shutil.rmtree(temp, ignore_errors=True)
            if cause is not None and isinstance(exc, (BrokenPipeError, NodekeepError)) and cause is not exc:
                raise cause from exc
            raise
        place_restored_tree(temp, target)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        """The restored tree holds as many entries of each kind as were archived."""
        found = tree_counts(path)
        expected = artifact.source.get("entries") or {}
        for kind, count in found.items():
            wanted = expected.get(kind)
            if wanted is not None and int(wanted) != count:
                raise RestoreError(
                    "the restored tree %s has %d %s, the manifest says %s" % (path, count, kind, wanted),
                    "the artifact does not match its manifest; restore another epoch",
                )
        return {"entries": found}


def tree_counts(path: str) -> dict[str, int]:
    """Entries of a directory tree counted the way ``tar_reader`` counts them (not the root itself)."""
    counts = {"files": 0, "directories": 0, "symlinks": 0}
    seen: set[tuple[int, int]] = set()
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            info = os.lstat(os.path.join(parent, name))
            if stat.S_ISLNK(info.st_mode):
                counts["symlinks"] += 1
            elif stat.S_ISDIR(info.st_mode):
                counts["directories"] += 1
            elif stat.S_ISREG(info.st_mode):
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue  # a hard link: tar_reader counts it under "hardlinks"
                    seen.add((info.st_dev, info.st_ino))
                counts["files"] += 1
    return counts


def entry_totals(stats: dict[str, Any]) -> dict[str, int]:
    return {key: value for key, value in stats.items() if isinstance(value, int)}


def tree_facts(stats: dict[str, Any]) -> dict[str, Any]:
    """A captured tree's facts: entry counts, and the lists (skipped, changed, outside_links, not_kept) that hold any."""
    facts: dict[str, Any] = {"entries": entry_totals(stats)}
    facts.update({key: value for key, value in stats.items() if isinstance(value, list) and value})
    return facts
