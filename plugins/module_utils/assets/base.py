# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Asset types: how each kind of node data is captured, restored and checked.

An asset type turns a live asset into one plaintext stream for the seal
pipeline (``capture``), writes a restored stream back to disk (``restore_into``)
and deep-checks what was restored (``deep_check``). Everything else (sealing,
repository, manifest, signatures) is shared. A new asset type is one file in
this folder and one entry in ``assets.registry.ASSET_TYPES``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO, Callable, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact, check_name


class Captured:
    """A plaintext stream ready for sealing, and the facts known about it."""

    def __init__(
        self, stream: BinaryIO, facts: dict[str, Any] | None = None, finish: Callable[[], dict[str, Any]] | None = None
    ):
        self.stream = stream
        self.facts = dict(facts or {})
        self._finish = finish

    def finish(self) -> dict[str, Any]:
        """Facts that are only known once the stream has been read (e.g. a tar's file count)."""
        if self._finish is not None:
            self.facts.update(self._finish() or {})
        return self.facts


class Staged:
    """A restored artifact being written beside its final place.

    ``complete()`` is called once the whole stream was written and its checksums
    matched, before ``deep_check``: a sink that works in the background (a tar
    extraction) finishes there and raises its own error.
    """

    def __init__(self, path: str, stream: BinaryIO, complete: Callable[[], Any] | None = None) -> None:
        self.path = path
        self.stream = stream
        self._complete = complete
        self.facts: dict[str, Any] = {}

    def complete(self) -> dict[str, Any]:
        self.stream.flush()
        if self._complete is not None:
            self.facts.update(self._complete() or {})
        return self.facts


class RunContext:
    """What an asset type may need beyond its own options: where the run writes or reads.

    Given to ``capture`` and ``restore_into``. Simple types ignore it; types that
    store more than their one artifact (content-addressed objects of a ``files``
    tree) or that look at earlier epochs (incremental sends) use it.
    ``recipients``/``level`` are set when backing up, ``identities`` and
    ``artifact`` when restoring or deep-checking; ``scratch`` (a private
    directory removed after the run) is None for a restore.
    """

    def __init__(
        self,
        repository: Any,
        node: str,
        epoch: str,
        scratch: str | None,
        recipients: list | None = None,
        level: int = 3,
        identities: list | None = None,
        artifact: Artifact | None = None,
        full: bool = False,
    ) -> None:
        self.repository = repository
        self.node = node
        self.epoch = epoch
        self.scratch = scratch
        self.recipients = recipients
        self.level = level
        self.identities = identities
        self.artifact = artifact
        #: a full epoch requested for this run (epoch_backup full: true): incremental assets reuse no earlier map
        self.full = full


class AssetType:
    """Base class: one kind of node data."""

    name = "abstract"
    extension = ""
    content_format = ""
    #: options an asset of this type accepts beyond name/type/path
    options: ClassVar[dict[str, Any]] = {}
    #: restore_into gets a path pinned through an open directory descriptor (``safefs.Jail.anchor``);
    #: False only for types whose target is used by another program (a ZFS mountpoint)
    pinned_restore = True
    #: a deep verify that ran this type's full check records a signed proof a later restore trusts
    #: (storage/proofs.py); the type's ``deep_check`` then takes ``proven``: that proof's words
    records_proof = False

    def keeps_content_sha256(self, facts: dict[str, Any]) -> bool:
        """Whether the manifest records the unkeyed SHA-256 of this artifact's plaintext.

        Never for backed-up data (a database, a dump, a tar of a tree, a config, a secret): anyone who can
        read the manifest would confirm a guessed content with it. Their integrity is the signed SHA-256 of
        the sealed bytes, which age authenticates on decryption (docs/safety.md). Only artifacts that are
        nodekeep's own map of sealed pieces (a files index, a page map) keep it.
        """
        return False

    def content_facts(self, asset: dict[str, Any], content_sha256: str, context: RunContext | None) -> dict[str, Any]:
        """Facts known once the plaintext was sealed (its SHA-256 is known only here); a keyed MAC, never the hash."""
        return {}

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = dict(asset)
        check_name("asset name", str(asset.get("name", "")))
        path = asset.get("path")
        if not path or not os.path.isabs(str(path)):
            raise CaptureError(
                "asset %s has no absolute path" % asset.get("name"),
                "give every entry of nodekeep_assets an absolute path",
            )
        normalized["path"] = os.path.normpath(str(path))
        for option, default in self.options.items():
            normalized.setdefault(option, default)
        return normalized

    def artifact_file(self, asset: dict[str, Any]) -> str:
        return "%s%s.zst.age" % (asset["name"], self.extension)

    @property
    def artifact_format(self) -> str:
        return "%s+zstd+age" % self.content_format

    def artifact_format_for(self, asset: dict[str, Any]) -> str:
        """The artifact's format for one asset (a type may store some assets differently)."""
        return self.artifact_format

    def capture(
        self, asset: dict[str, Any], scratch_dir: str, context: RunContext | None = None
    ) -> contextlib.AbstractContextManager[Captured]:
        raise NotImplementedError

    def staging_path(self, artifact: Artifact, target_root: str) -> str:
        """Where a staged restore puts an asset: its original path mirrored under the target root."""
        source_path = str(artifact.source.get("path") or artifact.name)
        return os.path.join(target_root, source_path.lstrip("/"))

    def restore_into(
        self, target: str, force: bool = False, context: RunContext | None = None
    ) -> contextlib.AbstractContextManager[Staged]:
        raise NotImplementedError

    def drop_scratch(self, artifact: Artifact) -> None:
        """Remove what a deep verify made besides its restored files (a scratch database); a restore keeps it."""

    def deep_check(self, path: str, artifact: Artifact, check: str = "integrity") -> dict[str, Any]:
        return {}

    # Hooks for types that store more than their one artifact (a ``files`` tree's objects).

    def extra_files(self, artifact: Artifact) -> list[dict[str, Any]]:
        """Other files of the epoch that belong to this artifact: ``[{file, size, sha256}]`` from its signed facts."""
        return []

    def object_references(self, repository: Any, node: str, epoch: str, artifact: Artifact) -> dict[str, Any]:
        """Content-addressed objects of the node this artifact needs: name -> (sealed size, sealed SHA-256)."""
        return {}

    def verify_extra(self, artifact: Artifact, context: RunContext, deep: bool) -> dict[str, Any]:
        """Checks beyond the artifact's checksum (raise IntegrityError on a problem); reported under ``extra``."""
        return {}


class FileAssetType(AssetType):
    """An asset restored as one regular file, written beside its target and linked into place."""

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context: RunContext | None = None) -> Iterator[Staged]:
        directory = os.path.dirname(target)
        if os.path.lexists(target) and not force:
            raise RestoreError(
                "the restore target %s already exists" % target,
                "restore into an empty staging path (nodekeep_restore_to) or set nodekeep_restore_force: true "
                "to keep the existing file as %s.nodekeep-replaced-<time>" % target,
            )
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise describe_os_error(exc, "creating the restore directory", directory)
        temp = os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(target), uuid.uuid4().hex[:8]))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise describe_os_error(exc, "creating the restored file", temp)
        handle = os.fdopen(fd, "wb", buffering=1 << 20)
        try:
            yield Staged(temp, handle)
            try:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                if os.path.lexists(target):
                    os.rename(target, "%s.nodekeep-replaced-%d" % (target, int(time.time())))
                os.link(temp, target)
            except FileExistsError:
                raise RestoreError(
                    "the restore target %s appeared during the restore" % target, "nothing was overwritten"
                )
            except OSError as exc:
                raise describe_os_error(exc, "placing the restored file", target)
        finally:
            if not handle.closed:
                with contextlib.suppress(OSError):
                    handle.close()
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(temp + suffix)
