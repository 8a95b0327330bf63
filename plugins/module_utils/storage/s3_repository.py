# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 repository: epochs in a bucket, write-once, under Object Lock.

Layout: ``s3://BUCKET/PREFIX/NODE/EPOCH/<artifact files>``, ``manifest.json``
and ``manifest.json.sig``, the same as a local repository. An epoch is complete
when its signature object exists; the signature is always the last object
written, so an interrupted run never leaves an epoch that looks complete.

Writes stream: an artifact coming out of the seal pipeline is cut into parts and
sent as a multipart upload (a few parts in flight, bounded memory). Each part
carries its SHA-256 (``x-amz-checksum-sha256``), which the server checks before
storing it; the composite checksum the server reports on completion is compared
with the one computed here, and a ``HEAD`` of the stored version confirms size,
checksum, Object Lock mode and retain-until, legal hold and server-side
encryption. Keys are write-once: a ``HEAD`` refuses an existing key early and
``If-None-Match: *`` refuses it atomically at commit. A failed upload is
aborted, so no partial object becomes visible; when the failure is the network
or the server, a copy run can instead resume the multipart upload later, part
by part, skipping the parts whose checksums match.

Removal (retention, with the separate pruner credentials) is whole-epoch or
nothing: every version's lock is checked first, nothing is removed when one is
locked, and otherwise the signature goes first so the epoch stops counting.

Everything S3-specific stays in storage/ (Object Lock in ``_s3_lock``, the client in ``_s3_client``,
streaming transfers in ``_s3_copy``); callers use the ``Repository`` interface.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    RepositoryError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import private_temp_dir
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    NAME_RE,
    SIGNATURE_NAME,
    check_name,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_client import (
    BandwidthLimiter,
    ObjectLockedError,
    describe_s3_error,
    is_boto_error,
    is_transient,
    iso_time,
    make_client,
    require_boto3,
    utc_datetime,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_copy import S3ObjectReader, S3ObjectWriter
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_lock import S3ObjectLock
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import (
    OBJECT_NAME_RE,
    OBJECTS_DIR,
    Repository,
    check_object_name,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import (
    READ_CHUNK,
    S3Settings,
    lock_rules,
    parse_s3_url,
    parse_size,
)

# --------------------------------------------------------------------------
# the repository
# --------------------------------------------------------------------------


class S3Repository(S3ObjectLock, Repository):
    """Epochs in an S3 bucket under a prefix: write-once keys, Object Lock, checksums checked by the server."""

    kind = "s3"

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        """An S3 repository for ``settings`` (checked here); ``client`` replaces the boto3 client (tests)."""
        require_boto3()
        settings.check()
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.name = settings.name or ""
        self.default_lock, self.period_locks = lock_rules(
            settings.object_lock_mode, settings.retain_days, settings.lock_periods
        )
        self.legal_hold = bool(settings.legal_hold)
        self.sse = settings.sse
        self.sse_kms_key_id = settings.sse_kms_key_id
        self._sse_key: bytes | None = settings.customer_key()
        self.retries = settings.retries
        self.part_size = settings.part_size
        self.max_concurrency = settings.max_concurrency
        self.object_workers = settings.object_workers
        self.limiter = BandwidthLimiter(parse_size(settings.bandwidth_limit, "bandwidth_limit"))
        self.endpoint_url = settings.endpoint_url
        self._epoch_locks: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._epoch_locks_lock = threading.Lock()
        self.client = client if client is not None else make_client(settings)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> S3Repository:
        """Build from a dict of the documented options (``type``, ``url`` = ``s3://bucket/prefix`` allowed)."""
        options = dict(spec)
        client = options.pop("client", None)
        return cls(S3Settings.from_spec(options), client=client)

    # -- addressing --

    @property
    def location(self) -> str:
        return "s3://%s/%s" % (self.bucket, self.prefix) if self.prefix else "s3://%s" % self.bucket

    def _base(self) -> str:
        return self.prefix + "/" if self.prefix else ""

    def _node_prefix(self, node: str) -> str:
        check_name("node", node)
        return "%s%s/" % (self._base(), node)

    def _epoch_prefix(self, node: str, epoch: str) -> str:
        if not EPOCH_RE.match(epoch or ""):
            raise RepositoryError("%r is not an epoch name" % (epoch,), "epoch names look like 20260101T000000Z")
        return "%s%s/" % (self._node_prefix(node), epoch)

    def _key(self, node: str, epoch: str, name: str) -> str:
        check_name("file", name)
        return self._epoch_prefix(node, epoch) + name

    def _uri(self, key: str) -> str:
        return "s3://%s/%s" % (self.bucket, key)

    # -- plumbing --

    def _call(self, action: str, function: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return function(**kwargs)
        except RepositoryError:
            raise
        except Exception as exc:
            if is_boto_error(exc):
                raise describe_s3_error(action, exc)
            if is_transient(exc):
                raise describe_s3_error(action, exc)
            raise

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff, capped at 20 s."""
        return random.uniform(0, min(20.0, 0.5 * (2**attempt)))

    def _sse_customer_args(self) -> dict[str, Any]:
        if self._sse_key is None:
            return {}
        return {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": self._sse_key}

    def _write_args(self, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if self.sse in ("AES256", "aws:kms"):
            args["ServerSideEncryption"] = self.sse
            if self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        args.update(self._sse_customer_args())
        if metadata:
            args["Metadata"] = dict(metadata)
        return args

    def _list(self, prefix: str, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            args["Delimiter"] = delimiter
        token = None
        while True:
            if token:
                args["ContinuationToken"] = token
            page = self._call("list %s" % self._uri(prefix), self.client.list_objects_v2, **args)
            yield page
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    def _children(self, prefix: str) -> list[str]:
        names = []
        for page in self._list(prefix, "/"):
            for entry in page.get("CommonPrefixes") or []:
                names.append(entry["Prefix"][len(prefix) :].rstrip("/"))
        return sorted(names)

    def _head(self, key: str, version_id: str | None = None) -> dict[str, Any] | None:
        args: dict[str, Any] = dict(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED", **self._sse_customer_args())
        if version_id:
            args["VersionId"] = version_id
        try:
            return self._call("inspect %s" % self._uri(key), self.client.head_object, **args)
        except RepositoryError as exc:
            if exc.details.get("code") in ("404", "NoSuchKey", "NotFound", "NoSuchVersion"):
                return None
            raise

    # -- Repository primitives --

    def nodes(self) -> list[str]:
        return [n for n in self._children(self._base()) if NAME_RE.match(n)]

    def epoch_names(self, node: str) -> list[str]:
        return [e for e in self._children(self._node_prefix(node)) if EPOCH_RE.match(e)]

    def files(self, node: str, epoch: str) -> dict[str, int]:
        prefix = self._epoch_prefix(node, epoch)
        result = {}
        for page in self._list(prefix, "/"):
            for entry in page.get("Contents") or []:
                name = entry["Key"][len(prefix) :]
                if name and not name.startswith(".") and NAME_RE.match(name):
                    result[name] = int(entry.get("Size") or 0)
        return result

    def _epoch_files(self, node: str) -> dict[str, dict[str, int]]:
        """Every epoch of a node with its files, from one listing."""
        prefix = self._node_prefix(node)
        epochs: dict[str, dict[str, int]] = {}
        for page in self._list(prefix):
            for entry in page.get("Contents") or []:
                parts = entry["Key"][len(prefix) :].split("/")
                if len(parts) == 2 and EPOCH_RE.match(parts[0]) and parts[1] and not parts[1].startswith("."):
                    epochs.setdefault(parts[0], {})[parts[1]] = int(entry.get("Size") or 0)
        return epochs

    def complete_epochs(self, node: str) -> list[str]:
        epochs = self._epoch_files(node)
        return sorted(e for e, names in epochs.items() if MANIFEST_NAME in names and SIGNATURE_NAME in names)

    def incomplete_epochs(self, node: str) -> list[str]:
        epochs = self._epoch_files(node)
        return sorted(e for e, names in epochs.items() if not (MANIFEST_NAME in names and SIGNATURE_NAME in names))

    def claim_epoch(self, node: str, epoch: str) -> bool:
        # S3 has no atomic "mkdir"; every key is written with If-None-Match, so two runs that
        # picked the same name cannot overwrite each other: the second fails cleanly.
        prefix = self._epoch_prefix(node, epoch)
        page = self._call(
            "list %s" % self._uri(prefix),
            self.client.list_objects_v2,
            Bucket=self.bucket,
            Prefix=prefix,
            MaxKeys=1,
        )
        return not page.get("Contents")

    @contextlib.contextmanager
    def open_write(
        self,
        node: str,
        epoch: str,
        name: str,
        size_hint: int | None = None,
        metadata: dict[str, str] | None = None,
        resume: bool = False,
    ) -> Iterator[S3ObjectWriter]:
        key = self._key(node, epoch, name)
        if self._head(key) is not None:
            raise RepositoryError(
                "%s already exists and the repository is write-once" % self._uri(key),
                "write a new epoch instead of rewriting this one",
                code="PreconditionFailed",
            )
        lock = self.lock_for(node, epoch)
        writer = S3ObjectWriter(self, key, self._write_args(metadata), lock, size_hint=size_hint, resume=resume)
        try:
            yield writer
            writer.commit()
        except BaseException as exc:
            writer.abort(exc)
            raise

    @contextlib.contextmanager
    def open_read(self, node: str, epoch: str, name: str) -> Iterator[BinaryIO]:
        reader = S3ObjectReader(self, self._key(node, epoch, name))
        try:
            yield reader  # type: ignore[misc]
        finally:
            reader.close()

    def get_bytes(self, node: str, epoch: str, name: str, limit: int = 16 << 20) -> bytes:
        with self.open_read(node, epoch, name) as handle:
            chunks = []
            total = 0
            while total <= limit:
                data = handle.read(min(READ_CHUNK, limit + 1 - total))
                if not data:
                    break
                chunks.append(data)
                total += len(data)
        if total > limit:
            raise RepositoryError("%s is larger than %d bytes" % (self.describe(node, epoch, name), limit))
        return b"".join(chunks)

    # -- content-addressed objects (files assets): NODE/objects/<name[:2]>/<name>, write-once --

    def _object_key(self, node: str, name: str) -> str:
        check_object_name(name)
        return "%s%s/%s/%s" % (self._node_prefix(node), OBJECTS_DIR, name[:2], name)

    def describe_object(self, node: str, name: str) -> str:
        return self._uri(self._object_key(node, name))

    @contextlib.contextmanager
    def put_object(
        self,
        node: str,
        name: str,
        epoch: str | None = None,
        size_hint: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Iterator[S3ObjectWriter]:
        """Write an object once; it gets the Object Lock of ``epoch`` (the epoch that first references it)."""
        key = self._object_key(node, name)
        if self._head(key) is not None:
            raise RepositoryError(
                "%s already exists and objects are write-once" % self._uri(key), "reuse it", code="exists"
            )
        lock = self.lock_for(node, epoch) if epoch else None
        writer = S3ObjectWriter(self, key, self._write_args(metadata), lock, size_hint=size_hint)
        try:
            yield writer
            try:
                writer.commit()
            except RepositoryError as exc:
                if exc.details.get("code") == "PreconditionFailed":
                    raise RepositoryError(
                        "%s appeared while it was being written" % self._uri(key), "reuse it", code="exists"
                    )
                raise
        except BaseException as exc:
            writer.abort(exc)
            raise

    @contextlib.contextmanager
    def open_object(self, node: str, name: str) -> Iterator[BinaryIO]:
        key = self._object_key(node, name)
        try:
            reader = S3ObjectReader(self, key)
        except RepositoryError as exc:
            if exc.details.get("code") in ("404", "NoSuchKey", "NotFound"):
                raise RepositoryError(
                    "object %s is missing" % self._uri(key),
                    "an epoch referencing it was damaged or pruned wrongly; restore another epoch or copy",
                    code="NoSuchKey",
                )
            raise
        try:
            yield reader  # type: ignore[misc]
        finally:
            reader.close()

    def has_object(self, node: str, name: str) -> int | None:
        head = self._head(self._object_key(node, name))
        return None if head is None else int(head.get("ContentLength") or 0)

    def object_names(self, node: str) -> dict[str, tuple[int, float]]:
        prefix = "%s%s/" % (self._node_prefix(node), OBJECTS_DIR)
        found: dict[str, tuple[int, float]] = {}
        for page in self._list(prefix):
            for entry in page.get("Contents") or []:
                name = entry["Key"].rsplit("/", 1)[-1]
                if OBJECT_NAME_RE.match(name) and entry["Key"] == prefix + name[:2] + "/" + name:
                    modified = utc_datetime(entry.get("LastModified"))
                    found[name] = (int(entry.get("Size") or 0), modified.timestamp() if modified else 0.0)
        return found

    def remove_object(self, node: str, name: str) -> None:
        """Remove every version of an object, or nothing when one is locked (never bypassed)."""
        key = self._object_key(node, name)
        versions = [v for v in self._versions(key) if v["Key"] == key]
        now = datetime.now(timezone.utc)
        for version in versions:
            if version["IsMarker"]:
                continue
            head = self._head(key, version.get("VersionId"))
            if head is None:
                continue
            until = utc_datetime(head.get("ObjectLockRetainUntilDate"))
            if (head.get("ObjectLockMode") and until is not None and until > now) or (
                head.get("ObjectLockLegalHoldStatus") == "ON"
            ):
                raise ObjectLockedError(
                    "object %s is locked (%s until %s); it was not removed"
                    % (self._uri(key), head.get("ObjectLockMode") or "legal hold", iso_time(until)),
                    "it can be removed once the lock expires; locks are never bypassed",
                    objects=[{"name": name, "retain_until": iso_time(until)}],
                )
        for version in versions:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if version.get("VersionId"):
                args["VersionId"] = version["VersionId"]
            self._call("remove %s" % self._uri(key), self.client.delete_object, **args)

    def remove_epoch(self, node: str, epoch: str) -> None:
        """Remove every version of every object of the epoch, or nothing when one is locked.

        Never bypasses a lock (no ``BypassGovernanceRetention``). The signature goes first,
        so an interruption leaves an incomplete epoch, never a complete one with missing parts.
        """
        prefix = self._epoch_prefix(node, epoch)
        locked = self.locked_objects(node, epoch)
        if locked:
            raise ObjectLockedError(
                "epoch %s of %s in %s has %d locked object(s) (%s); nothing was removed"
                % (
                    epoch,
                    node,
                    self.location,
                    len(locked),
                    "; ".join("%s: %s" % (o["name"], o["reason"]) for o in locked),
                ),
                "it can be removed once the locks expire; locks are never bypassed",
                objects=locked,
            )
        order = {SIGNATURE_NAME: 0, MANIFEST_NAME: 1}
        versions = sorted(
            self._versions(prefix),
            key=lambda v: (order.get(v["Key"][len(prefix) :], 2), v["IsMarker"], v["Key"]),
        )
        for version in versions:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": version["Key"]}
            if version.get("VersionId"):
                args["VersionId"] = version["VersionId"]
            self._call("remove %s" % self._uri(version["Key"]), self.client.delete_object, **args)

    # -- multipart housekeeping --

    def _uploads(self, prefix: str) -> list[dict[str, Any]]:
        uploads: list[dict[str, Any]] = []
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._call(
                "list the unfinished uploads under %s" % self._uri(prefix), self.client.list_multipart_uploads, **args
            )
            uploads.extend(page.get("Uploads") or [])
            if not page.get("IsTruncated"):
                return uploads
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["UploadIdMarker"] = page.get("NextUploadIdMarker")

    def _resumable_upload(self, key: str) -> tuple[str | None, dict[int, dict[str, Any]]]:
        """The newest unfinished upload of ``key`` with its parts; older ones are aborted."""
        uploads = sorted(
            (u for u in self._uploads(key) if u.get("Key") == key),
            key=lambda u: utc_datetime(u.get("Initiated")) or datetime.min.replace(tzinfo=timezone.utc),
        )
        if not uploads:
            return None, {}
        for stale in uploads[:-1]:
            with contextlib.suppress(NodekeepError):
                self._call(
                    "abort a stale upload of %s" % self._uri(key),
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=stale["UploadId"],
                )
        upload_id = uploads[-1]["UploadId"]
        parts: dict[int, dict[str, Any]] = {}
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "UploadId": upload_id}
        args.update(self._sse_customer_args())
        while True:
            page = self._call("list the parts of %s" % self._uri(key), self.client.list_parts, **args)
            for part in page.get("Parts") or []:
                parts[int(part["PartNumber"])] = part
            if not page.get("IsTruncated"):
                break
            args["PartNumberMarker"] = page.get("NextPartNumberMarker")
        return upload_id, parts

    def abort_stale_uploads(self, node: str, older_than: timedelta, now: datetime | None = None) -> list[str]:
        """Abort unfinished multipart uploads of a node older than ``older_than`` (invisible leftovers)."""
        now = now or datetime.now(timezone.utc)
        aborted = []
        for upload in self._uploads(self._node_prefix(node)):
            started = utc_datetime(upload.get("Initiated"))
            if started is not None and now - started < older_than:
                continue
            self._call(
                "abort the upload of %s" % self._uri(upload["Key"]),
                self.client.abort_multipart_upload,
                Bucket=self.bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
            )
            aborted.append(upload["Key"])
        return aborted

    def object_info(self, node: str, epoch: str, name: str) -> dict[str, Any] | None:
        """What the server holds for one object (None when absent): size, checksum, lock, metadata."""
        key = self._key(node, epoch, name)
        head = self._head(key)
        if head is None:
            return None
        return {
            "key": key,
            "version_id": head.get("VersionId"),
            "size": int(head.get("ContentLength") or 0),
            "checksum_sha256": head.get("ChecksumSHA256"),
            "metadata": dict(head.get("Metadata") or {}),
            "lock_mode": head.get("ObjectLockMode"),
            "retain_until": iso_time(utc_datetime(head.get("ObjectLockRetainUntilDate"))),
            "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
        }

    def scratch_dir(self) -> str:
        """A private directory for transient plaintext (deep verify, restore checks) of this user."""
        return private_temp_dir()

    def transfer_stats(self) -> dict[str, Any]:
        return {
            "throttled_seconds": round(self.limiter.waited, 3),
            "throttled_bytes": self.limiter.charged,
            "bandwidth_limit": self.limiter.rate,
        }


def open_s3_repository(spec: Any) -> S3Repository:
    """``s3://bucket/prefix`` (connection from the usual AWS sources) or a dict of the documented options."""
    if isinstance(spec, dict):
        return S3Repository.from_spec(spec)
    bucket, prefix = parse_s3_url(str(spec))
    return S3Repository(S3Settings(bucket=bucket, prefix=prefix))
