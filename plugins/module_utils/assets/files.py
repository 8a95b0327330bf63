# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``files`` asset type (large directory trees, incremental) and the ``config`` type.

``files``: a write-once, content-addressed layout in the repository itself.
Each distinct file content is sealed once through the one seal pipeline
(zstd + age, standard format) as an *object* of the node,
``NODE/objects/<name[:2]>/<name>``, where ``name`` is an HMAC-SHA-256 of the
content's SHA-256 under a per-node key kept on the node (so a repository
reader cannot test whether a known file is in the backup). The epoch's
artifact is the *index*: JSON lines (a header, then one entry per path with
type, mode, uid, gid, mtime_ns, size, content SHA-256, object name, symlink
or hard-link target), sealed like every artifact, so
``age -d -i KEY da.index.jsonl.zst.age | zstd -d`` shows it. Beside it the
epoch holds ``<asset>.refs.txt``: the object names the index needs with their
sealed sizes and SHA-256 (plaintext, no content facts), whose own checksum is
in the signed manifest. Verify, copies and retention's garbage collection
read that list without any identity.

An incremental run reads the node's local cache of the previous index (the
node holds only recipients, so it cannot decrypt the repository's copy; the
cache is used only when it matches a complete epoch's manifest), skips files
whose size, mtime_ns, ctime_ns and inode did not change, and uploads only
objects that do not exist yet (one listing of the node's objects per run).
Files are read once while they are hashed; a file whose size, mtime or ctime
changes while it is read is read again, and after three attempts it is
copied to scratch space and stored flagged ``changed`` (listed in the facts),
never silently torn. The stat calls alone cannot prove a read whole (a write
sets the times before its bytes land; a write through a mapping sets none):
a file read into memory is read a second time and must return the same bytes,
a streamed one is read again when it is sealed and must hash the same.

Restore rebuilds the tree from the index and the objects beside the target
with the same safe extractor as tar restores (no absolute paths, no ``..``,
no writes through symlinks, no links leaving the tree, no device nodes),
checking every object's plaintext SHA-256 against the index, then keeps
modes, numeric ownership (as root), nanosecond mtimes, symlinks and hard
links.

``config``: small configuration files or a directory of them, captured as
they are (a file, or a tar stream of a directory), restored with their mode,
owner and mtime; verify reports whether the live copy still matches.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import io
import json
import os
import random
import shutil
import stat
import time
import uuid
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _tree as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_capture import _TreeCapture
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_index import DEFAULT_STATE_DIR
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._files_objects import (
    _ObjectReader,
    check_objects,
    load_refs,
    rebuild_tree,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    RestoreError,
    check_range,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    discard_temp,
    sha256_file,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import unseal
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import pieces as _pieces

# --------------------------------------------------------------------------
# the asset types
# --------------------------------------------------------------------------

MAX_SAMPLE = 100000


class FilesAssetType(_assets.AssetType):
    """A directory tree stored as content-addressed objects plus a sealed index per epoch (incremental)."""

    name = "files"
    extension = ".index.jsonl"
    content_format = "files-index"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": [], "state_dir": DEFAULT_STATE_DIR, "sample": 20}

    def keeps_content_sha256(self, facts: dict[str, Any]) -> bool:
        return True  # the artifact is the files index (keyed piece names, sealed sizes and hashes), not data

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        for option in ("include", "exclude"):
            value = normalized.get(option) or []
            if isinstance(value, str) or not all(isinstance(item, str) for item in value):
                raise CaptureError(
                    "asset %s: %s must be a list of glob patterns" % (normalized["name"], option),
                    "write it as a YAML list, e.g. ['*.tmp', 'cache']",
                )
            normalized[option] = list(value)
        normalized["state_dir"] = _pieces.check_state_dir(normalized["name"], normalized.get("state_dir"))
        normalized["sample"] = check_range(
            normalized.get("sample") or 0,
            "asset %s: sample" % normalized["name"],
            0,
            MAX_SAMPLE,
            "files",
            why="how many files a deep verify compares with the live tree; e.g. sample: 20",
            error=CaptureError,
        )
        return normalized

    def refs_file(self, asset_name: str) -> str:
        return "%s.refs.txt" % asset_name

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        with self.capture_root(asset["path"], asset, scratch_dir, context) as captured:
            yield captured

    @contextlib.contextmanager
    def capture_root(self, root: str, asset: dict[str, Any], scratch_dir: str, context, facts=None):
        """Capture ``root`` (the asset's path, or a snapshot of it) as objects plus an index."""
        if context is None or getattr(context, "repository", None) is None or not context.recipients:
            raise CaptureError(
                "asset %s: files assets need the engine's run context (repository and recipients)" % asset["name"],
                "back it up through epoch_backup / backup_epoch",
            )
        began = time.monotonic()
        run = _TreeCapture(self, asset, root, scratch_dir, context)
        index_path = os.path.join(scratch_dir, "%s.%s.index.jsonl" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            run.run(index_path)
            # Pieces this epoch reuses were locked (S3 Object Lock) at least as long as this epoch by the writer.
            refs = run.write_refs(self.refs_file(asset["name"]))
            run.state.save(context.epoch, index_path)
            result = dict(facts or {})
            result.update(run.facts())
            result["refs"] = refs
            result["capture_seconds"] = round(time.monotonic() - began, 3)
            with open(index_path, "rb") as stream:
                yield _assets.Captured(stream, result)
        finally:
            for path in [index_path, *run.scratch_files]:
                with contextlib.suppress(OSError):
                    os.unlink(path)

    # -- restore --

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        if context is None or context.artifact is None or not context.identities:
            raise RestoreError(
                "files assets are restored through the engine (repository, identities and manifest)",
                "use epoch_restore / restore_epoch",
            )
        parent = _archive.restore_parent(target, force)
        token = uuid.uuid4().hex[:8]
        temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(target), token))
        index_dir = context.scratch or parent
        index_path = os.path.join(index_dir, ".%s.nodekeep-index-%s" % (os.path.basename(target), token))
        fd = os.open(index_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        handle = os.fdopen(fd, "wb", buffering=1 << 20)
        artifact = context.artifact

        def complete() -> dict[str, Any]:
            handle.close()
            size, digest = sha256_file(index_path)
            # The index decides which objects are read: check it against the signed manifest first.
            if (size, digest) != (artifact.content_size, artifact.content_sha256):
                raise IntegrityError(
                    "the index of %s does not match the manifest's content checksum" % artifact.name,
                    "do not trust this copy; restore another epoch or copy",
                )
            return {"entries": rebuild_tree(index_path, temp, context.repository, context.node, context.identities)}

        try:
            yield _assets.Staged(temp, handle, complete=complete)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        finally:
            discard_temp(handle, index_path)
        _archive.place_restored_tree(temp, target)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        return _archive.TreeAssetType.deep_check(self, path, artifact, check)  # type: ignore[arg-type]

    # -- hooks: the refs list, verify, copies and garbage collection --

    @staticmethod
    def uses_objects(artifact) -> bool:
        """Whether the artifact is an index of objects (an artifact of another layout has no extra parts)."""
        return artifact.source.get("layout") in ("objects", "pieces")  # a rocksdb pieces epoch is an index too

    def extra_files(self, artifact) -> list[dict[str, Any]]:
        refs = artifact.source.get("refs") or {}
        if not self.uses_objects(artifact) or not refs.get("file"):
            return []
        return [{"file": refs["file"], "size": int(refs.get("size") or 0), "sha256": refs.get("sha256")}]

    def object_references(self, repository, node: str, epoch: str, artifact) -> dict[str, Any]:
        if not self.uses_objects(artifact):
            return {}
        return load_refs(repository, node, epoch, artifact)

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        """Every referenced object is there with its size and sealed SHA-256; deep: a random sample vs the live tree.

        A deep verify has already rebuilt the whole tree (every object decrypted and
        checked against the index) through ``restore_into``.
        """
        if not self.uses_objects(artifact):
            return {}
        refs = load_refs(context.repository, context.node, context.epoch, artifact)
        report = check_objects(context.repository, context.node, refs, read=not deep)
        problems = []
        if report["missing"]:
            problems.append(
                "%d referenced object(s) missing (%s)" % (len(report["missing"]), ", ".join(report["missing"][:3]))
            )
        if report["wrong"]:
            problems.append(
                "%d object(s) damaged or modified (%s)" % (len(report["wrong"]), ", ".join(report["wrong"][:3]))
            )
        if problems:
            raise IntegrityError(
                "artifact %s: %s" % (artifact.name, "; ".join(problems)),
                "do not trust this copy for these files; restore another copy, and run a new backup "
                "(missing objects are uploaded again)",
            )
        result: dict[str, Any] = {"objects": report["objects"], "objects_ok": True}
        sample = int(artifact.source.get("sample") or 0)
        if deep and sample > 0 and context.identities:
            result["sample"] = sample_check(
                context.repository, context.node, context.epoch, artifact, context.identities, sample
            )
        return result


def sample_check(
    repository, node: str, epoch: str, artifact, identities: list, sample: int, live_root: str | None = None
) -> dict[str, Any]:
    """Runbook 000's random-sample restore check: restore N random files and compare them with the live tree.

    Files whose live size or mtime differ from the index changed since the backup
    and are only counted. A live file with the same size and mtime but other content
    is reported in ``differs`` (silent corruption of the live copy or of the backup).
    """
    root = live_root or str(artifact.source.get("path") or "")
    index = io.BytesIO()
    with repository.open_read(node, epoch, artifact.file) as stream:
        result = unseal(stream, index, identities, limit=artifact.content_size)
    if (result.content.size, result.content.sha256) != (artifact.content_size, artifact.content_sha256):
        raise IntegrityError("the index of %s does not match its manifest" % artifact.name, "use another copy")
    entries = [json.loads(line) for line in index.getvalue().decode("utf-8").splitlines()[1:] if line.strip()]
    files = [entry for entry in entries if entry.get("type") == "file"]
    chosen = random.sample(files, min(sample, len(files)))
    report: dict[str, Any] = {"checked": 0, "same": 0, "changed_since": 0, "absent": 0, "differs": []}
    reader = _ObjectReader(repository, node, identities)
    for entry in chosen:
        restored = io.BytesIO()
        reader.write_object(entry, restored)  # raises when the object does not match the index
        report["checked"] += 1
        live = os.path.join(root, entry["path"])
        try:
            info = os.lstat(live)
        except OSError:
            report["absent"] += 1
            continue
        if not stat.S_ISREG(info.st_mode) or (info.st_size, info.st_mtime_ns) != (entry["size"], entry["mtime_ns"]):
            report["changed_since"] += 1
            continue
        if sha256_file(live)[1] == entry["sha256"]:
            report["same"] += 1
        else:
            report["differs"].append(entry["path"])
    if report["differs"]:
        raise IntegrityError(
            "artifact %s: %d sampled file(s) differ from the live tree although size and mtime match (%s)"
            % (artifact.name, len(report["differs"]), ", ".join(report["differs"][:3])),
            "the live store or the backup is corrupt: compare the files, then run a new backup",
        )
    return report
