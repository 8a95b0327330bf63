# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``sqlite`` asset type: a live SQLite database captured from one pinned snapshot, its restore and check.

The database work itself (the pinned online-backup copy, ``PRAGMA integrity_check``, the facts) is in
``sqlite_db``, which the ``sqlite_backup`` module and the cutover use without the asset type.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import sqlite_db
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import (
    Captured,
    FileAssetType,
    RunContext,
    Staged,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import check_copy_options
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact


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
        self.how = ""
        self.error: BaseException | None = None
        self.seconds = 0.0

    def run(self) -> None:
        began = time.monotonic()
        try:
            self.outcome, self.how = sqlite_db.check_database(
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
        return {"integrity": self.outcome, "check_how": self.how, "check_seconds": self.seconds}


class SqliteAssetType(FileAssetType):
    """A live SQLite database, copied with the online backup API from one snapshot."""

    name = "sqlite"
    extension = ".sqlite"
    content_format = "sqlite3"
    options: ClassVar[dict[str, Any]] = {"busy_timeout": 5000, "pages_per_step": 1024, "check": "integrity"}
    records_proof = True

    def keeps_content_sha256(self, facts: dict[str, Any]) -> bool:
        """Only an incremental epoch's map of pieces keeps its SHA-256; the database itself never."""
        return facts.get("layout") == "pieces"

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        if normalized["check"] not in sqlite_db.CHECKS:
            raise CaptureError(
                "asset %s: check must be one of %s" % (normalized["name"], ", ".join(sqlite_db.CHECKS))
            )
        normalized["busy_timeout"], normalized["pages_per_step"] = check_copy_options(
            normalized["busy_timeout"], normalized["pages_per_step"], "asset %s: " % normalized["name"]
        )
        return normalized

    @staticmethod
    def snapshot_copy(asset: dict[str, Any], copy: str) -> dict[str, Any]:
        """The private copy of one pinned snapshot (no check yet, not fsynced: it is read once), and its facts
        (the live file's owner and mode among them)."""
        facts = sqlite_db.copy_database(
            asset["path"],
            copy,
            busy_timeout_ms=int(asset["busy_timeout"]),
            pages_per_step=int(asset["pages_per_step"]),
            check="none",
            durable=False,
        ).as_dict()
        notes: list[dict[str, Any]] = []
        # owner, mode, xattrs and ACLs of the live file go back on the restored one; chattr flags cannot: listed
        facts["owner"] = _attrs.owner_facts(asset["path"], notes)
        with contextlib.suppress(OSError):
            fd = os.open(asset["path"], os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            try:
                _attrs.flags_not_kept(fd, ".", notes)
            finally:
                os.close(fd)
        if notes:
            facts["not_kept"] = notes
        return facts

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context: RunContext | None = None) -> Iterator[Captured]:
        """Copy from one snapshot, then seal the copy while its check runs beside it.

        The check and the seal both only read the finished private copy, so they
        overlap (apsw releases the GIL); ``finish()`` waits for the check and a
        failed check aborts the artifact before it is committed.
        """
        copy = os.path.join(scratch_dir, "%s.%s.sqlite" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            facts = self.snapshot_copy(asset, copy)
            facts["check"] = asset["check"]
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
        """The restored database gets the live file's owner (as root), mode, xattrs and ACLs, recorded at backup."""
        owner = context.artifact.source.get("owner") if context is not None and context.artifact else None
        with super().restore_into(target, force, context) as staged:
            handle = staged.stream
            yield Staged(staged.path, handle, complete=lambda: _attrs.apply_owner(handle.fileno(), owner, staged.path))

    def deep_check(self, path: str, artifact: Artifact, check: str = "integrity", proven: str = "") -> dict[str, Any]:
        """The restored database's check. The engine calls it only after the restored bytes were proven
        equal to the captured copy's (the SHA-256 the signed manifest records, or the rebuilt file's in a
        checked page map); when that copy passed ``PRAGMA integrity_check`` at backup, the same bytes pass
        it again: the check is not re-run and the result says where it ran (``integrity_proven``).
        ``proven``: a deep verify's signed proof of the full check of these bytes (storage/proofs.py), the
        same. When the check runs, ``check_how`` says what ran."""
        sqlite_db.check_is_database(path, role="restored")
        proof = (checked_at_capture(artifact) or proven) if check in ("integrity", "quick") else ""
        # The restored file's write-back runs while the check reads it (restore_into fsyncs it again,
        # cheaply, before linking it into place).
        syncer = threading.Thread(target=_fsync_path, args=(path,), name="nodekeep-fsync", daemon=True)
        syncer.start()
        how = ""
        try:
            result, how = ("ok", "") if proof else sqlite_db.check_database(path, check)
        finally:
            syncer.join()
        facts = sqlite_db.database_facts(path)
        expected = artifact.source.get("page_count")
        if expected is not None and int(expected) != facts["page_count"]:
            raise RestoreError(
                "the restored database %s has %d pages, the manifest says %s" % (path, facts["page_count"], expected),
                "the artifact does not match its manifest; restore another epoch",
            )
        checks = {"integrity": result, "page_count": facts["page_count"]}
        if proof:
            checks["integrity_proven"] = proof
        elif how and how != "none":
            checks["check_how"] = how
        return checks


def checked_at_capture(artifact: Artifact) -> str:
    """Where a full ``PRAGMA integrity_check`` of an epoch's captured copy is recorded ('' when none is):
    the signed manifest says the check ``integrity`` ran on the copy and its result was ``ok``."""
    source = artifact.source or {}
    if source.get("check") != "integrity" or source.get("integrity") != "ok":
        return ""
    how = str(source.get("check_how") or "PRAGMA integrity_check")
    if artifact.content_sha256 is None:
        # a whole-file epoch: the restored bytes are the sealed copy's, pinned by the signed SHA-256 of the
        # sealed file and authenticated by age (no unkeyed hash of the database is recorded)
        return (
            "at backup (%s) on the captured copy; the restored file is that copy, decrypted from the sealed "
            "file whose SHA-256 the signed manifest records (age authenticates every byte)" % how
        )
    return (
        "at backup (%s) on the captured copy; the restored file's SHA-256 equals that copy's, as the signed "
        "manifest records it" % how
    )
