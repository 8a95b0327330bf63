# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Asset types: how each kind of node data is captured, restored and checked.

An asset type turns a live asset into one plaintext stream for the seal
pipeline (``capture``), writes a restored stream back to disk (``restore_into``)
and deep-checks what was restored (``deep_check``). Everything else (sealing,
repository, manifest, signatures) is shared. A new asset type registers itself
in ``ASSET_TYPES``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO, Callable, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils import sqlite as sqlite_utils
from ansible_collections.nodekeep.backup.plugins.module_utils.errors import (
    CaptureError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.manifest import Artifact, check_name


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
    ) -> None:
        self.repository = repository
        self.node = node
        self.epoch = epoch
        self.scratch = scratch
        self.recipients = recipients
        self.level = level
        self.identities = identities
        self.artifact = artifact


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
                "restore into an empty staging path (nodekeep_restore_to) or set force: true "
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


def _fsync_path(path: str) -> None:
    """Start and wait for the write-back of a file; errors surface at the caller's own fsync."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _CheckThread(threading.Thread):
    """``PRAGMA integrity_check`` (or quick_check) of a private copy, in the background."""

    def __init__(self, path: str, check: str, source: str) -> None:
        super().__init__(name="nodekeep-sqlite-check", daemon=True)
        self.path = path
        self.check = check
        self.source = source
        self.outcome: str | None = None
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.outcome = sqlite_utils.run_check(
                self.path,
                self.check,
                label="the snapshot of %s" % self.source,
                remedy="the live database is damaged and nothing was backed up: check it with "
                "PRAGMA integrity_check and restore the last good epoch",
            )
        except BaseException as exc:  # noqa: BLE001 - re-raised by result() in the caller's thread
            self.error = exc
        self.seconds = round(time.monotonic() - began, 3)

    def result(self) -> dict[str, Any]:
        self.join()
        if self.error is not None:
            raise self.error
        return {"integrity": self.outcome, "check_seconds": self.seconds}


class SqliteAssetType(FileAssetType):
    """A live SQLite database, copied with the online backup API from one snapshot."""

    name = "sqlite"
    extension = ".sqlite"
    content_format = "sqlite3"
    options: ClassVar[dict[str, Any]] = {"busy_timeout": 5000, "pages_per_step": 1024, "check": "integrity"}

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        if normalized["check"] not in sqlite_utils.CHECKS:
            raise CaptureError(
                "asset %s: check must be one of %s" % (normalized["name"], ", ".join(sqlite_utils.CHECKS))
            )
        return normalized

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context: RunContext | None = None) -> Iterator[Captured]:
        """Copy from one snapshot, then seal the copy while its check runs beside it.

        The check and the seal both only read the finished private copy, so they
        overlap (apsw releases the GIL); ``finish()`` waits for the check and a
        failed check aborts the artifact before it is committed.
        """
        copy = os.path.join(scratch_dir, "%s.%s.sqlite" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            facts = sqlite_utils.copy_database(
                asset["path"],
                copy,
                busy_timeout_ms=int(asset["busy_timeout"]),
                pages_per_step=int(asset["pages_per_step"]),
                check="none",
                durable=False,
            ).as_dict()
            facts["owner"] = _attrs.owner_facts(asset["path"])
            checker = _CheckThread(copy, asset["check"], asset["path"])
            checker.start()
            try:
                with open(copy, "rb") as stream:
                    yield Captured(stream, facts, finish=checker.result)
            finally:
                checker.join()
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(copy)

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context: RunContext | None = None) -> Iterator[Staged]:
        """The restored database gets the live file's owner (as root) and mode, recorded at backup."""
        owner = context.artifact.source.get("owner") if context is not None and context.artifact else None
        with super().restore_into(target, force, context) as staged:
            handle = staged.stream
            yield Staged(staged.path, handle, complete=lambda: _attrs.apply_owner(handle.fileno(), owner))

    def deep_check(self, path: str, artifact: Artifact, check: str = "integrity") -> dict[str, Any]:
        sqlite_utils.check_is_database(path, role="restored")
        # The restored file's write-back runs while the check reads it (restore_into fsyncs it again,
        # cheaply, before linking it into place).
        syncer = threading.Thread(target=_fsync_path, args=(path,), name="nodekeep-fsync", daemon=True)
        syncer.start()
        try:
            result = sqlite_utils.run_check(path, check)
        finally:
            syncer.join()
        facts = sqlite_utils.database_facts(path)
        expected = artifact.source.get("page_count")
        if expected is not None and int(expected) != facts["page_count"]:
            raise RestoreError(
                "the restored database %s has %d pages, the manifest says %s" % (path, facts["page_count"], expected),
                "the artifact does not match its manifest; restore another epoch",
            )
        return {"integrity": result, "page_count": facts["page_count"]}


ASSET_TYPES: dict[str, AssetType] = {}


def register(asset_type: AssetType) -> None:
    ASSET_TYPES[asset_type.name] = asset_type


register(SqliteAssetType())

#: asset types registered on first use by ``_register_late`` (listed in error messages)
LATE_TYPES = ("secret", "files", "config", "rocksdb", "zfs", "btrfs", "postgres")


def _register_late(name: str) -> None:
    """Asset types whose module imports this one: registered on first use, to avoid an import cycle.

    One branch per module, each a plain ``from ... import`` so that Ansible's
    module packer (which follows imports statically) ships the module with
    every module that can restore any asset type.
    """
    if name == "secret":
        from ansible_collections.nodekeep.backup.plugins.module_utils.archive import SecretAssetType

        register(SecretAssetType())
    elif name in ("zfs", "btrfs"):
        from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import BtrfsAssetType, ZfsAssetType

        register(ZfsAssetType())
        register(BtrfsAssetType())
    elif name in ("files", "config"):
        from ansible_collections.nodekeep.backup.plugins.module_utils.files import ConfigAssetType, FilesAssetType

        register(FilesAssetType())
        register(ConfigAssetType())
    elif name == "rocksdb":
        from ansible_collections.nodekeep.backup.plugins.module_utils.rocksdb import RocksdbAssetType

        register(RocksdbAssetType())
    elif name == "postgres":
        from ansible_collections.nodekeep.backup.plugins.module_utils.postgres import PostgresAssetType

        register(PostgresAssetType())


def asset_type(name: str) -> AssetType:
    if name not in ASSET_TYPES:
        _register_late(name)
    try:
        return ASSET_TYPES[name]
    except KeyError:
        raise CaptureError(
            "unknown asset type %r" % (name,),
            "use one of: %s" % ", ".join(sorted(set(ASSET_TYPES) | set(LATE_TYPES))),
        )


def normalize_assets(assets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validate an inventory's ``nodekeep_assets`` list; names must be unique."""
    if not assets:
        raise CaptureError("no assets were given", "list this node's data in nodekeep_assets")
    normalized = []
    seen = set()
    for index, asset in enumerate(assets):
        if not isinstance(asset, dict):
            raise CaptureError("nodekeep_assets entry #%d is not a mapping" % (index + 1), "give name, type and path")
        for key in ("name", "type", "path"):
            if not asset.get(key):
                raise CaptureError(
                    "nodekeep_assets entry #%d has no %s" % (index + 1, key), "give name, type and path for every asset"
                )
        item = asset_type(str(asset["type"])).normalize(asset)
        if item["name"] in seen:
            raise CaptureError("two assets are named %s" % item["name"], "asset names must be unique per node")
        seen.add(item["name"])
        normalized.append(item)
    return normalized
