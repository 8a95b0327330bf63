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

Everything S3-specific stays here; callers use the ``Repository`` interface.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import contextlib
import hashlib
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.manifest import (
    EPOCH_RE,
    MANIFEST_NAME,
    NAME_RE,
    SIGNATURE_NAME,
    TOOL_NAME,
    TOOL_VERSION,
    check_name,
    epoch_time,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import (
    OBJECT_NAME_RE,
    OBJECTS_DIR,
    Repository,
    check_object_name,
    private_temp_dir,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.retention import PERIODS, period_key

try:
    import boto3
    import botocore
    import botocore.config
    import botocore.exceptions

    HAS_BOTO3 = True
    BOTO3_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover - exercised by the sanity import test
    HAS_BOTO3 = False
    BOTO3_IMPORT_ERROR = _exc

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 << 30
MAX_PARTS = 10000
DEFAULT_PART_SIZE = 16 * MIB
DEFAULT_CONCURRENCY = 4
# Object transfers of one epoch copy at once for a target (the same as replicate.OBJECT_WORKERS, the
# default for other targets; defined here too so this module does not import replicate).
DEFAULT_OBJECT_WORKERS = 4
DEFAULT_RETRIES = 5
READ_CHUNK = 4 * MIB
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
SSE_CHOICES = ("none", "AES256", "aws:kms", "customer")
ADDRESSING = {True: "path", False: "auto"}
# A lock whose retain-until would be this close to now is not worth setting.
MIN_LOCK = timedelta(minutes=1)

# Error codes that mean "the connection or the server failed", not "the request was wrong":
# a copy run keeps a multipart upload in that case so the next run can resume it.
TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ConditionalRequestConflict",
    "500",
    "502",
    "503",
    "504",
}

REMEDIES = {
    "AccessDenied": "the credentials lack this permission. Writer credentials may only put, get and list; "
    "retention runs with the separate pruner credentials (docs/s3.md). A locked object also answers AccessDenied",
    "AllAccessDisabled": "the bucket refuses all access; check the bucket policy",
    "InvalidAccessKeyId": "the access key is unknown to the server: check access_key / the AWS profile",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check secret_key / the AWS profile",
    "ExpiredToken": "the session token expired: refresh the credentials",
    "NoSuchBucket": "the bucket does not exist: create it with Object Lock enabled (docs/s3.md)",
    "NoSuchKey": "the object is missing: the epoch is incomplete or was pruned; choose another epoch",
    "404": "the object is missing: the epoch is incomplete or was pruned; choose another epoch",
    "NoSuchUpload": "the multipart upload was aborted or completed meanwhile; run again",
    "PreconditionFailed": "an object with this key already exists and keys are write-once; nothing was overwritten",
    "BadDigest": "the server computed another SHA-256 for the bytes it received: they were damaged on the way; "
    "nothing was stored, run again",
    "XAmzContentSHA256Mismatch": "the bytes were damaged on the way; nothing was stored, run again",
    "InvalidDigest": "the checksum header is malformed; this is a bug, please report it",
    "InvalidRequest": "the server refused the request; if it mentions Object Lock, the bucket was created "
    "without Object Lock (it cannot be added later to every provider): use a bucket with Object Lock enabled",
    "InvalidBucketState": "the bucket is not in a state that allows this (for example versioning is not enabled)",
    "ObjectLockConfigurationNotFoundError": "the bucket has no Object Lock: create a bucket with Object Lock "
    "enabled or set object_lock_mode to none",
    "KMS.NotFoundException": "the KMS key given in sse_kms_key_id does not exist",
    "InvalidArgument": "the server refused an argument; check sse, sse_customer_key and the Object Lock settings",
    "EntityTooSmall": "a part was smaller than 5 MiB; this is a bug, please report it",
    "SlowDown": "the server is throttling; retries were exhausted: lower max_concurrency or run later",
    "RequestTimeTooSkewed": "this host's clock is off: synchronise it (NTP)",
}


# --------------------------------------------------------------------------
# options (shared by the modules; documented in doc_fragments/_s3.py)
# --------------------------------------------------------------------------

S3_TARGET_OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str"},
    "bucket": {"type": "str", "required": True},
    "prefix": {"type": "str", "default": ""},
    "endpoint_url": {"type": "str"},
    "region": {"type": "str"},
    "access_key": {"type": "str", "no_log": True},
    "secret_key": {"type": "str", "no_log": True},
    "session_token": {"type": "str", "no_log": True},
    "profile": {"type": "str"},
    "path_style": {"type": "bool", "default": False},
    "ca_bundle": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "object_lock_mode": {"type": "str", "choices": ["none"] + list(LOCK_MODES), "default": "none"},
    "retain_days": {"type": "int", "default": 0},
    "lock_periods": {"type": "dict", "default": {}},
    "legal_hold": {"type": "bool", "default": False},
    "sse": {"type": "str", "choices": list(SSE_CHOICES), "default": "none"},
    "sse_kms_key_id": {"type": "str"},
    "sse_customer_key": {"type": "str", "no_log": True},
    "bandwidth_limit": {"type": "str", "default": "0"},
    "retries": {"type": "int", "default": DEFAULT_RETRIES},
    "part_size": {"type": "str", "default": "16M"},
    "max_concurrency": {"type": "int", "default": DEFAULT_CONCURRENCY},
    "object_workers": {"type": "int", "default": DEFAULT_OBJECT_WORKERS},
}

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE)


def parse_size(value: Any, what: str = "size") -> int:
    """Bytes from ``1048576``, ``"512K"``, ``"10M"``, ``"1.5G"`` (binary multiples; ``/s`` allowed)."""
    if value is None or value == "":
        return 0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number, unit = float(value), ""
    else:
        match = _SIZE_RE.match(str(value))
        if not match:
            raise RepositoryError(
                "%s %r is not a size" % (what, value),
                "give bytes, or a number with K, M, G or T (binary multiples), e.g. 10M",
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(number * factor)


def parse_s3_url(text: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (bucket, prefix)."""
    match = re.match(r"^s3://([^/]+)/?(.*)$", text or "")
    if not match:
        raise RepositoryError("%r is not an s3:// URL" % (text,), "write it as s3://BUCKET/PREFIX")
    return match.group(1), match.group(2).strip("/")


# --------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------


class ObjectLockedError(RepositoryError):
    """Removal refused because objects of the epoch are under Object Lock or legal hold."""

    kind = "locked"


def _client_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    return str(error.get("Code") or response.get("ResponseMetadata", {}).get("HTTPStatusCode") or "")


def is_transient(exc: BaseException) -> bool:
    """True for network and server-side failures (worth a resume), False for refusals."""
    if isinstance(exc, RepositoryError):
        return bool(exc.details.get("transient"))
    if not HAS_BOTO3:
        return False
    if isinstance(exc, botocore.exceptions.ClientError):
        return _client_error_code(exc) in TRANSIENT_CODES
    return isinstance(
        exc,
        (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ResponseStreamingError,
            botocore.exceptions.IncompleteReadError,
            ConnectionError,
        ),
    )


def describe_s3_error(action: str, exc: BaseException) -> RepositoryError:
    """One clear message: ``Failed to <action>: <reason>``, with what to do about it."""
    transient = is_transient(exc)
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ClientError):
        code = _client_error_code(exc)
        error = exc.response.get("Error") or {}
        message = error.get("Message") or ""
        reason = "%s (%s)" % (code, message) if message and message != code else code
        remedy = REMEDIES.get(code, "")
        if transient and not remedy:
            remedy = "the server failed; retries were exhausted: run again later"
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return RepositoryError(
            "Failed to %s: %s" % (action, reason), remedy, code=code, status=status, transient=transient
        )
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.NoCredentialsError):
        return RepositoryError(
            "Failed to %s: no AWS credentials were found" % action,
            "set access_key and secret_key, a profile, the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "environment, or an instance role",
            code="NoCredentials",
        )
    if HAS_BOTO3 and isinstance(exc, botocore.exceptions.ProfileNotFound):
        return RepositoryError("Failed to %s: %s" % (action, exc), "check the profile name and ~/.aws/config")
    if transient:
        return RepositoryError(
            "Failed to %s: %s" % (action, exc),
            "the S3 endpoint could not be reached or dropped the connection (retries were exhausted); "
            "check endpoint_url and the network, then run again: a copy resumes where it stopped",
            code=type(exc).__name__,
            transient=True,
        )
    return RepositoryError("Failed to %s: %s" % (action, exc), code=type(exc).__name__)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def composite_checksum(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: SHA-256 of the parts' SHA-256 digests, then ``-N``."""
    return "%s-%d" % (_b64(hashlib.sha256(b"".join(part_digests)).digest()), len(part_digests))


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


# --------------------------------------------------------------------------
# bandwidth
# --------------------------------------------------------------------------


class BandwidthLimiter:
    """A token bucket shared by every transfer of one repository, in bytes per second.

    Callers take tokens before sending (or after receiving) a block and sleep off
    any debt, so the average rate stays at the limit; the burst is one second of
    traffic (uploads are charged a part, or a whole small object, at a time). The
    bucket is one for all threads (parts in flight, object uploads of a copy run
    side by side): the limit holds for their sum, and ``waited`` is the wall-clock
    time spent throttled.
    """

    def __init__(self, rate: int) -> None:
        self.rate = max(0, int(rate or 0))
        self._tokens = float(self.rate)
        self._stamp = time.monotonic()
        self._paid = self._stamp  # when the debt taken so far is paid off
        self._lock = threading.Lock()
        self.waited = 0.0

    def consume(self, amount: int) -> None:
        if self.rate <= 0 or amount <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.rate), self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
            if wait > 0:
                # Wall-clock time throttled: callers waiting at the same time (parts, object uploads)
                # wait in the same span, counted once.
                until = now + wait
                self.waited += max(0.0, until - max(self._paid, now))
                self._paid = max(self._paid, until)
        if wait > 0:
            time.sleep(wait)


# --------------------------------------------------------------------------
# Object Lock policy
# --------------------------------------------------------------------------


class LockRule:
    """Object Lock for the epochs a rule applies to: a mode and a number of days from the epoch's time."""

    def __init__(self, mode: str, days: int, period: str = "any") -> None:
        if mode not in LOCK_MODES:
            raise RepositoryError(
                "Object Lock mode %r for %s epochs is not valid" % (mode, period),
                "use GOVERNANCE or COMPLIANCE",
            )
        try:
            count = int(days)
        except (TypeError, ValueError):
            count = 0
        if count <= 0:
            raise RepositoryError(
                "Object Lock for %s epochs needs a positive number of days (got %r)" % (period, days),
                "set retain_days (or lock_periods.%s.days) to how long the copies must stay immutable" % period,
            )
        self.mode = mode
        self.days = count
        self.period = period

    def strength(self) -> tuple[int, int]:
        return (self.days, 1 if self.mode == "COMPLIANCE" else 0)

    def describe(self) -> str:
        return "%s %dd (%s)" % (self.mode, self.days, self.period)


def lock_rules(
    object_lock_mode: str | None, retain_days: int, lock_periods: dict[str, Any] | None
) -> tuple[LockRule | None, dict[str, LockRule]]:
    """The default rule (every epoch) and the per-period rules (the first epoch of each period)."""
    default = None
    if object_lock_mode and object_lock_mode != "none":
        default = LockRule(object_lock_mode, retain_days, "every")
    elif retain_days:
        raise RepositoryError(
            "retain_days is set but object_lock_mode is none",
            "set object_lock_mode to GOVERNANCE or COMPLIANCE, or drop retain_days",
        )
    periods: dict[str, LockRule] = {}
    for period, rule in (lock_periods or {}).items():
        if period not in PERIODS:
            raise RepositoryError(
                "lock_periods has an unknown period %r" % (period,),
                "use %s" % ", ".join(PERIODS),
            )
        if not isinstance(rule, dict):
            raise RepositoryError(
                "lock_periods.%s must be a dict with mode and days" % period,
                "for example {monthly: {mode: COMPLIANCE, days: 400}}",
            )
        periods[period] = LockRule(str(rule.get("mode") or object_lock_mode or ""), rule.get("days") or 0, period)
    return default, periods


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------


class S3ObjectWriter:
    """A write-once object, streamed as parts; committed only by ``commit()``.

    ``info`` holds what the server confirmed after the commit (version, size,
    checksum, lock, encryption); ``resumed_parts`` counts parts a resumed upload
    did not have to send again.
    """

    def __init__(
        self,
        repository: S3Repository,
        key: str,
        extra: dict[str, Any],
        lock: dict[str, Any] | None,
        size_hint: int | None = None,
        resume: bool = False,
    ) -> None:
        self._repo = repository
        self.key = key
        self._extra = extra
        self._lock = lock
        self._resume = resume
        self._base_part = repository.part_size
        if size_hint:
            needed = -(-int(size_hint) // (MAX_PARTS - 1000))
            self._base_part = max(self._base_part, -(-needed // MIB) * MIB)
        self._buffer = bytearray()
        self._number = 0
        self._upload_id: str | None = None
        self._existing: dict[int, dict[str, Any]] = {}
        self._parts: dict[int, dict[str, Any]] = {}
        self._digests: dict[int, bytes] = {}
        self._pending: set[Future] = set()
        self._pending_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(repository.max_concurrency)
        self._executor: ThreadPoolExecutor | None = None
        self._failure: BaseException | None = None
        self.size = 0
        self.resumed_parts = 0
        self.info: dict[str, Any] | None = None
        self.closed = False

    # -- file-like surface used by the seal pipeline and copies --

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._raise_failure()

    def write(self, data) -> int:
        self._raise_failure()
        self._buffer += data
        count = len(data)
        self.size += count
        while len(self._buffer) >= self._part_size(self._number + 1):
            size = self._part_size(self._number + 1)
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            self._submit(chunk)
        return count

    # -- parts --

    def _part_size(self, number: int) -> int:
        # Sizes grow with the part number so that a stream of unknown length fits in 10,000 parts;
        # they depend only on the settings, so a resumed upload cuts the same parts again.
        growth = 1 << ((number - 1) // 1000)
        return min(self._base_part * growth, MAX_PART_SIZE)

    def _raise_failure(self) -> None:
        # Checked on every write, so it must stay O(1): finished parts leave _pending in _finished().
        if self._failure is not None:
            raise self._failure

    def _finished(self, future: Future) -> None:
        self._slots.release()
        with self._pending_lock:
            self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None and self._failure is None:
            self._failure = future.exception()

    def _start(self) -> None:
        repo = self._repo
        if self._resume:
            self._upload_id, self._existing = repo._resumable_upload(self.key)
        if self._upload_id is None:
            args = dict(self._extra)
            args.update(repo._lock_args(self._lock))
            response = repo._call(
                "start the upload of %s" % repo._uri(self.key),
                repo.client.create_multipart_upload,
                Bucket=repo.bucket,
                Key=self.key,
                ChecksumAlgorithm="SHA256",
                **args,
            )
            self._upload_id = response["UploadId"]
        self._executor = ThreadPoolExecutor(max_workers=repo.max_concurrency, thread_name_prefix="nodekeep-s3-part")

    def _submit(self, chunk: bytes) -> None:
        if self._upload_id is None:
            self._start()
        self._number += 1
        number = self._number
        digest = hashlib.sha256(chunk).digest()
        self._digests[number] = digest
        existing = self._existing.pop(number, None)
        if existing is not None and self._matches(existing, chunk, digest):
            self._parts[number] = {"PartNumber": number, "ETag": existing["ETag"], "ChecksumSHA256": _b64(digest)}
            self.resumed_parts += 1
            return
        self._slots.acquire()
        try:
            future = self._executor.submit(self._upload_part, number, chunk, digest)
        except BaseException:
            self._slots.release()
            raise
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(self._finished)

    @staticmethod
    def _matches(existing: dict[str, Any], chunk: bytes, digest: bytes) -> bool:
        if existing.get("Size") != len(chunk):
            return False
        if existing.get("ChecksumSHA256"):
            return existing["ChecksumSHA256"] == _b64(digest)
        etag = str(existing.get("ETag") or "").strip('"')
        return bool(etag) and etag == hashlib.md5(chunk, usedforsecurity=False).hexdigest()

    def _upload_part(self, number: int, chunk: bytes, digest: bytes) -> None:
        repo = self._repo
        repo.limiter.consume(len(chunk))
        checksum = _b64(digest)
        response = repo._call(
            "upload part %d of %s" % (number, repo._uri(self.key)),
            repo.client.upload_part,
            Bucket=repo.bucket,
            Key=self.key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=chunk,
            ChecksumSHA256=checksum,
            **repo._sse_customer_args(),
        )
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != checksum:
            raise RepositoryError(
                "Failed to upload part %d of %s: the server acknowledged SHA-256 %s, we sent %s"
                % (number, repo._uri(self.key), returned, checksum),
                "the bytes were changed on the way; nothing was committed, run again",
            )
        self._parts[number] = {"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum}

    def _drain(self) -> None:
        with self._pending_lock:
            pending = list(self._pending)
        wait(pending)
        for future in pending:  # callbacks may run after wait() returns: look at the futures themselves
            if not future.cancelled() and future.exception() is not None and self._failure is None:
                self._failure = future.exception()
        self._raise_failure()

    # -- commit / abort --

    def commit(self) -> dict[str, Any]:
        """Make the object visible (write-once) and confirm it with a HEAD of the stored version."""
        repo = self._repo
        self._raise_failure()
        uri = repo._uri(self.key)
        if self._upload_id is None:
            data = bytes(self._buffer)
            self._buffer = bytearray()
            expected = _b64(hashlib.sha256(data).digest())
            args = dict(self._extra)
            args.update(repo._lock_args(self._lock))
            repo.limiter.consume(len(data))
            response = repo._call(
                "upload %s" % uri,
                repo.client.put_object,
                Bucket=repo.bucket,
                Key=self.key,
                Body=data,
                ChecksumSHA256=expected,
                IfNoneMatch="*",
                **args,
            )
        else:
            if self._buffer or self._number == 0:
                chunk = bytes(self._buffer)
                self._buffer = bytearray()
                self._submit(chunk)
            self._drain()
            parts = [self._parts[n] for n in sorted(self._parts)]
            expected = composite_checksum([self._digests[n] for n in sorted(self._parts)])
            response = self._complete(parts, expected)
        returned = response.get("ChecksumSHA256")
        if returned is not None and returned != expected:
            raise RepositoryError(
                "Failed to upload %s: the server reports SHA-256 %s, we computed %s" % (uri, returned, expected),
                "the stored object differs from what was sent; do not use it (the epoch stays incomplete)",
            )
        self.info = repo._confirm(self.key, response.get("VersionId"), self.size, expected, self._lock)
        self.info["resumed_parts"] = self.resumed_parts
        self.closed = True
        self._shutdown()
        return self.info

    def _complete(self, parts: list[dict[str, Any]], expected: str) -> dict[str, Any]:
        repo = self._repo
        try:
            return repo._call(
                "complete the upload of %s" % repo._uri(self.key),
                repo.client.complete_multipart_upload,
                Bucket=repo.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
                **repo._sse_customer_args(),
            )
        except RepositoryError as exc:
            # A retried CompleteMultipartUpload whose first attempt succeeded answers
            # NoSuchUpload or PreconditionFailed: it is ours when the checksum is ours.
            if exc.details.get("code") not in ("NoSuchUpload", "PreconditionFailed"):
                raise
            head = repo._head(self.key)
            if head is None or head.get("ChecksumSHA256") != expected:
                raise
            return {"VersionId": head.get("VersionId"), "ChecksumSHA256": head.get("ChecksumSHA256")}

    def abort(self, error: BaseException | None = None) -> None:
        """Abort the upload so nothing partial stays behind (kept for a resume after a network failure)."""
        self.closed = True
        self._shutdown(cancel=True)
        if self._upload_id is None:
            return
        failure = self._failure or error
        if self._resume and failure is not None and is_transient(failure):
            return
        with contextlib.suppress(NodekeepError):
            self._repo._call(
                "abort the upload of %s" % self._repo._uri(self.key),
                self._repo.client.abort_multipart_upload,
                Bucket=self._repo.bucket,
                Key=self.key,
                UploadId=self._upload_id,
            )

    def _shutdown(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=cancel)
            self._executor = None


class S3ObjectReader:
    """A readable stream of one stored object version, resumed with a Range request if the connection drops."""

    def __init__(self, repository: S3Repository, key: str) -> None:
        self._repo = repository
        self.key = key
        self.version_id: str | None = None
        self.etag: str | None = None
        self.position = 0
        self.length: int | None = None
        self._body = None
        self._open()

    def _open(self) -> None:
        repo = self._repo
        args: dict[str, Any] = dict(Bucket=repo.bucket, Key=self.key, **repo._sse_customer_args())
        # A resumed read must continue the same object: the version (versioned bucket) or the ETag.
        if self.version_id:
            args["VersionId"] = self.version_id
        elif self.etag:
            args["IfMatch"] = self.etag
        if self.position:
            args["Range"] = "bytes=%d-" % self.position
        response = repo._call("download %s" % repo._uri(self.key), repo.client.get_object, **args)
        if self.length is None:
            self.version_id = response.get("VersionId")
            self.etag = response.get("ETag")
            self.length = int(response.get("ContentLength") or 0)
        self._body = response["Body"]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        attempt = 0
        while True:
            try:
                data = self._body.read(size if size and size > 0 else None)
                if not data and size != 0 and self.length is not None and self.position < self.length:
                    raise ConnectionError("the connection ended at byte %d of %d" % (self.position, self.length))
            except Exception as exc:  # noqa: BLE001 - botocore, urllib3 and socket errors alike; sorted below
                if not is_transient(exc) or attempt >= self._repo.retries:
                    raise describe_s3_error("download %s" % self._repo._uri(self.key), exc)
                attempt += 1
                time.sleep(self._repo.backoff(attempt))
                with contextlib.suppress(Exception):
                    self._body.close()
                self._open()
                continue
            break
        self.position += len(data)
        self._repo.limiter.consume(len(data))
        return data

    def close(self) -> None:
        if self._body is not None:
            with contextlib.suppress(Exception):
                self._body.close()


# --------------------------------------------------------------------------
# the repository
# --------------------------------------------------------------------------


class S3Repository(Repository):
    """Epochs in an S3 bucket under a prefix: write-once keys, Object Lock, checksums checked by the server."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        profile: str | None = None,
        path_style: bool = False,
        ca_bundle: str | None = None,
        validate_certs: bool = True,
        object_lock_mode: str | None = "none",
        retain_days: int = 0,
        lock_periods: dict[str, Any] | None = None,
        legal_hold: bool = False,
        sse: str = "none",
        sse_kms_key_id: str | None = None,
        sse_customer_key: str | None = None,
        bandwidth_limit: Any = 0,
        retries: int = DEFAULT_RETRIES,
        part_size: Any = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_CONCURRENCY,
        object_workers: int = DEFAULT_OBJECT_WORKERS,
        name: str | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        require_boto3()
        if not bucket or not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
            raise RepositoryError(
                "%r is not a valid S3 bucket name" % (bucket,),
                "use 3-63 lowercase letters, digits, dots and dashes",
            )
        self.bucket = bucket
        self.prefix = "/".join(p for p in str(prefix or "").split("/") if p)
        for part in self.prefix.split("/") if self.prefix else ():
            if part in (".", ".."):
                raise RepositoryError("the S3 prefix %r contains %r" % (prefix, part), "use a plain path")
        if bool(access_key) != bool(secret_key):
            raise RepositoryError(
                "only one of access_key and secret_key was given",
                "give both, or neither to use a profile, the environment or an instance role",
            )
        self.name = name or ""
        self.default_lock, self.period_locks = lock_rules(object_lock_mode, retain_days, lock_periods)
        self.legal_hold = bool(legal_hold)
        if sse not in SSE_CHOICES:
            raise RepositoryError("sse %r is not valid" % (sse,), "use one of %s" % ", ".join(SSE_CHOICES))
        self.sse = sse
        self.sse_kms_key_id = sse_kms_key_id
        self._sse_key: bytes | None = None
        if sse == "customer":
            self._sse_key = _decode_customer_key(sse_customer_key)
        elif sse_customer_key:
            raise RepositoryError("sse_customer_key is set but sse is %s" % sse, "set sse: customer, or drop the key")
        if sse_kms_key_id and sse != "aws:kms":
            raise RepositoryError("sse_kms_key_id is set but sse is %s" % sse, "set sse: aws:kms, or drop the key id")
        self.retries = max(0, int(retries))
        self.part_size = parse_size(part_size, "part_size")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise RepositoryError(
                "part_size %s is out of range" % part_size,
                "S3 parts are 5 MiB to 5 GiB; the default 16M suits most links",
            )
        self.max_concurrency = max(1, int(max_concurrency))
        self.object_workers = _check_object_workers(object_workers)
        self.limiter = BandwidthLimiter(parse_size(bandwidth_limit, "bandwidth_limit"))
        self.endpoint_url = endpoint_url or None
        self._epoch_locks: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._epoch_locks_lock = threading.Lock()
        if client is not None:
            self.client = client
            return
        config = botocore.config.Config(
            region_name=region or None,
            s3={"addressing_style": ADDRESSING[bool(path_style)]},
            retries={"max_attempts": self.retries + 1, "mode": "standard"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            # Parts in flight, object uploads beside them, and the copying thread's own requests.
            max_pool_connections=max(10, self.max_concurrency + self.object_workers + 2),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="%s/%s" % (TOOL_NAME, TOOL_VERSION),
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=access_key or None,
                aws_secret_access_key=secret_key or None,
                aws_session_token=session_token or None,
                profile_name=profile or None,
                region_name=region or None,
            )
            if region is None and session.region_name is None and endpoint_url:
                config = config.merge(botocore.config.Config(region_name="us-east-1"))
            # None (not True) keeps boto3's own CA lookup: AWS_CA_BUNDLE or the profile's ca_bundle.
            verify: Any = ca_bundle if ca_bundle else (None if validate_certs else False)
            self.client = session.client("s3", endpoint_url=self.endpoint_url, config=config, verify=verify)
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise describe_s3_error("set up the S3 client for s3://%s" % bucket, exc)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> S3Repository:
        """Build from a dict of the documented options (``type``, ``url`` = ``s3://bucket/prefix`` allowed)."""
        options = {k: v for k, v in dict(spec).items() if v is not None and k not in ("type",)}
        url = options.pop("url", None)
        if url:
            bucket, prefix = parse_s3_url(str(url))
            options.setdefault("bucket", bucket)
            options.setdefault("prefix", prefix)
        unknown = sorted(set(options) - set(S3_TARGET_OPTIONS) - {"connect_timeout", "read_timeout", "client"})
        if unknown:
            raise RepositoryError(
                "unknown S3 repository option(s): %s" % ", ".join(unknown),
                "see docs/s3.md for the options",
            )
        return cls(**options)

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
            if HAS_BOTO3 and isinstance(exc, (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)):
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

    @staticmethod
    def _lock_args(lock: dict[str, Any] | None) -> dict[str, Any]:
        if not lock:
            return {}
        args: dict[str, Any] = {}
        if lock.get("mode"):
            args["ObjectLockMode"] = lock["mode"]
            args["ObjectLockRetainUntilDate"] = lock["until"]
        if lock.get("legal_hold"):
            args["ObjectLockLegalHoldStatus"] = "ON"
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
                    modified = _utc(entry.get("LastModified"))
                    found[name] = (int(entry.get("Size") or 0), modified.timestamp() if modified else 0.0)
        return found

    def object_lock_info(self, node: str, name: str) -> dict[str, Any] | None:
        """The current version's lock of an object (None when absent)."""
        head = self._head(self._object_key(node, name))
        if head is None:
            return None
        return {
            "size": int(head.get("ContentLength") or 0),
            "lock_mode": head.get("ObjectLockMode"),
            "retain_until": _utc(head.get("ObjectLockRetainUntilDate")),
            "version_id": head.get("VersionId"),
        }

    def extend_object_lock(self, node: str, name: str, epoch: str) -> bool:
        """Make an object's lock last at least as long as ``epoch``'s (a new epoch that references it).

        Retention may be extended under GOVERNANCE and COMPLIANCE alike, never shortened.
        Returns True when the lock was extended.
        """
        lock = self.lock_for(node, epoch)
        if not lock or not lock.get("mode"):
            return False
        info = self.object_lock_info(node, name)
        if info is None:
            raise RepositoryError("object %s is missing" % self.describe_object(node, name), "copy it again")
        if info["retain_until"] is not None and info["retain_until"] >= lock["until"] - timedelta(seconds=1):
            return False
        mode = info["lock_mode"] or lock["mode"]
        if mode != lock["mode"] and lock["mode"] == "COMPLIANCE":
            mode = "COMPLIANCE"
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self._object_key(node, name),
            "Retention": {"Mode": mode, "RetainUntilDate": lock["until"]},
        }
        if info.get("version_id"):
            args["VersionId"] = info["version_id"]
        self._call("extend the lock of %s" % self.describe_object(node, name), self.client.put_object_retention, **args)
        return True

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
            until = _utc(head.get("ObjectLockRetainUntilDate"))
            if (head.get("ObjectLockMode") and until is not None and until > now) or (
                head.get("ObjectLockLegalHoldStatus") == "ON"
            ):
                raise ObjectLockedError(
                    "object %s is locked (%s until %s); it was not removed"
                    % (self._uri(key), head.get("ObjectLockMode") or "legal hold", _iso(until)),
                    "it can be removed once the lock expires; locks are never bypassed",
                    objects=[{"name": name, "retain_until": _iso(until)}],
                )
        for version in versions:
            args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
            if version.get("VersionId"):
                args["VersionId"] = version["VersionId"]
            self._call("remove %s" % self._uri(key), self.client.delete_object, **args)

    # -- Object Lock --

    def lock_for(self, node: str, epoch: str, now: datetime | None = None) -> dict[str, Any] | None:
        """The lock every object of this epoch gets: the strongest rule that applies, until epoch time + days.

        A period rule applies to the first complete epoch of its period at this target
        (the epoch retention keeps for that period), so the lock and the retention policy agree.
        """
        with self._epoch_locks_lock:  # object uploads of a copy run in threads: one computation per epoch
            cache_key = (node, epoch)
            if cache_key not in self._epoch_locks:
                self._epoch_locks[cache_key] = self._lock_of(node, epoch, now)
            return self._epoch_locks[cache_key]

    def _lock_of(self, node: str, epoch: str, now: datetime | None) -> dict[str, Any] | None:
        rules = [self.default_lock] if self.default_lock else []
        if self.period_locks:
            moment = epoch_time(epoch)
            earlier = [e for e in self.complete_epochs(node) if e < epoch]
            for period, rule in self.period_locks.items():
                key = period_key(period, moment)
                if not any(period_key(period, epoch_time(e)) == key for e in earlier):
                    rules.append(rule)
        lock: dict[str, Any] | None = None
        if rules:
            rule = max(rules, key=LockRule.strength)
            until = epoch_time(epoch) + timedelta(days=rule.days)
            if until > (now or datetime.now(timezone.utc)) + MIN_LOCK:
                lock = {"mode": rule.mode, "until": until, "rule": rule.describe()}
        if self.legal_hold:
            lock = dict(lock or {})
            lock["legal_hold"] = True
        return lock

    def _confirm(
        self, key: str, version_id: str | None, size: int, checksum: str, lock: dict[str, Any] | None
    ) -> dict[str, Any]:
        """HEAD the stored version and compare everything we asked for with what the server holds."""
        head = self._head(key, version_id)
        uri = self._uri(key)
        if head is None:
            raise RepositoryError("Failed to confirm %s: it is not there after the upload" % uri, "run again")
        problems = []
        if int(head.get("ContentLength") or 0) != size:
            problems.append("size is %s, we sent %d bytes" % (head.get("ContentLength"), size))
        stored = head.get("ChecksumSHA256")
        if stored is None:
            problems.append("the server keeps no SHA-256 checksum for it (it may not support S3 additional checksums)")
        elif stored != checksum:
            problems.append("its SHA-256 is %s, we computed %s" % (stored, checksum))
        mode = head.get("ObjectLockMode")
        until = _utc(head.get("ObjectLockRetainUntilDate"))
        if lock and lock.get("mode"):
            if mode != lock["mode"]:
                problems.append(
                    "Object Lock mode is %s, %s was requested (is Object Lock enabled on the bucket?)"
                    % (mode or "none", lock["mode"])
                )
            elif until is None or until < lock["until"] - timedelta(seconds=1):
                problems.append("retain-until is %s, %s was requested" % (_iso(until), _iso(lock["until"])))
        hold = head.get("ObjectLockLegalHoldStatus") == "ON"
        if lock and lock.get("legal_hold") and not hold:
            problems.append("the legal hold is not on")
        if self.sse in ("AES256", "aws:kms") and head.get("ServerSideEncryption") != self.sse:
            problems.append(
                "server-side encryption is %s, %s was requested" % (head.get("ServerSideEncryption"), self.sse)
            )
        if self.sse == "customer" and not head.get("SSECustomerAlgorithm"):
            problems.append("it is not encrypted with the customer key")
        if problems:
            raise RepositoryError(
                "Failed to confirm %s: %s" % (uri, "; ".join(problems)),
                "the object is not stored as required, so the epoch stays incomplete; fix the bucket settings "
                "(docs/s3.md) and run again",
            )
        return {
            "key": key,
            "version_id": head.get("VersionId") or version_id,
            "size": size,
            "checksum_sha256": checksum,
            "lock_mode": mode,
            "retain_until": _iso(until),
            "legal_hold": hold,
            "sse": head.get("ServerSideEncryption") or ("customer" if head.get("SSECustomerAlgorithm") else None),
        }

    def _versions(self, prefix: str) -> list[dict[str, Any]]:
        """Every version and delete marker under a prefix (``IsMarker`` set on markers)."""
        found: list[dict[str, Any]] = []
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = self._call(
                "list the versions under %s" % self._uri(prefix), self.client.list_object_versions, **args
            )
            for entry in page.get("Versions") or []:
                found.append(dict(entry, IsMarker=False))
            for entry in page.get("DeleteMarkers") or []:
                found.append(dict(entry, IsMarker=True))
            if not page.get("IsTruncated"):
                break
            args["KeyMarker"] = page.get("NextKeyMarker")
            args["VersionIdMarker"] = page.get("NextVersionIdMarker")
        if not found:
            # A bucket without versioning may not answer ListObjectVersions with its objects.
            for page in self._list(prefix):
                for entry in page.get("Contents") or []:
                    found.append({"Key": entry["Key"], "VersionId": None, "IsMarker": False})
        return [v for v in found if v["Key"].startswith(prefix)]

    def locked_objects(self, node: str, epoch: str, now: datetime | None = None) -> list[dict[str, Any]]:
        """Object versions of an epoch that cannot be removed now: retention in the future or legal hold on."""
        now = now or datetime.now(timezone.utc)
        locked = []
        for version in self._versions(self._epoch_prefix(node, epoch)):
            if version["IsMarker"]:
                continue
            head = self._head(version["Key"], version.get("VersionId"))
            if head is None:
                continue
            until = _utc(head.get("ObjectLockRetainUntilDate"))
            reasons = []
            if head.get("ObjectLockMode") and until is not None and until > now:
                reasons.append("%s until %s" % (head["ObjectLockMode"], _iso(until)))
            if head.get("ObjectLockLegalHoldStatus") == "ON":
                reasons.append("legal hold")
            if reasons:
                locked.append(
                    {
                        "name": version["Key"].rsplit("/", 1)[-1],
                        "version_id": version.get("VersionId"),
                        "lock_mode": head.get("ObjectLockMode"),
                        "retain_until": _iso(until),
                        "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
                        "reason": ", ".join(reasons),
                    }
                )
        return locked

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
            key=lambda u: _utc(u.get("Initiated")) or datetime.min.replace(tzinfo=timezone.utc),
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
            started = _utc(upload.get("Initiated"))
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
            "retain_until": _iso(_utc(head.get("ObjectLockRetainUntilDate"))),
            "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
        }

    def scratch_dir(self) -> str:
        """A private directory for transient plaintext (deep verify, restore checks) of this user."""
        return private_temp_dir()

    def transfer_stats(self) -> dict[str, Any]:
        return {"throttled_seconds": round(self.limiter.waited, 3), "bandwidth_limit": self.limiter.rate}


def _check_object_workers(value: Any) -> int:
    """``object_workers`` as a whole number of at least 1 (a clear error otherwise)."""
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = 0
    if isinstance(value, bool) or workers < 1 or (workers != value and str(workers) != str(value).strip()):
        raise RepositoryError(
            "object_workers must be a whole number of at least 1, not %r" % (value,),
            "set object_workers to how many object uploads one epoch copy runs at once for this target "
            "(1: one at a time; default %d), or leave it out" % DEFAULT_OBJECT_WORKERS,
        )
    return workers


def _decode_customer_key(value: str | None) -> bytes:
    if not value:
        raise RepositoryError(
            "sse is customer but no sse_customer_key was given",
            "give the 256-bit key base64-encoded (openssl rand -base64 32); keep it: without it nothing can be read",
        )
    try:
        key = base64.b64decode(value, validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise RepositoryError(
            "sse_customer_key is not a base64-encoded 256-bit key",
            "generate one with: openssl rand -base64 32",
        )
    return key


def require_boto3() -> None:
    if not HAS_BOTO3:
        raise RepositoryError(
            "the Python library boto3 is missing on this host (%s)" % BOTO3_IMPORT_ERROR,
            "run the nodekeep.backup.agent role (it installs boto3 into the node virtualenv) "
            "and run modules with that interpreter",
        )


def open_s3_repository(spec: Any) -> S3Repository:
    """``s3://bucket/prefix`` (connection from the usual AWS sources) or a dict of the documented options."""
    if isinstance(spec, dict):
        return S3Repository.from_spec(spec)
    bucket, prefix = parse_s3_url(str(spec))
    return S3Repository(bucket=bucket, prefix=prefix)


# --------------------------------------------------------------------------
# IAM policies for the two kinds of credentials (rendered in docs/s3.md, used by the tests)
# --------------------------------------------------------------------------

# Where SeaweedFS names an action differently from AWS IAM.
_DIALECT_ACTIONS: dict[str, dict[str, Any]] = {
    "aws": {
        "list_uploads": "s3:ListBucketMultipartUploads",
        "list_parts": "s3:ListMultipartUploadParts",
        "bucket_extra": [],
    },
    # SeaweedFS classifies ListMultipartUploads as a bucket-level write: it needs s3:PutObject on the
    # bucket ARN (which does not allow writing any object; tested).
    "seaweedfs": {
        "list_uploads": "s3:ListMultipartUploads",
        "list_parts": "s3:ListParts",
        "bucket_extra": ["s3:PutObject"],
    },
}


def _resources(bucket: str, prefix: str) -> tuple[str, str]:
    objects = "arn:aws:s3:::%s/%s*" % (bucket, (prefix.strip("/") + "/") if prefix.strip("/") else "")
    return "arn:aws:s3:::%s" % bucket, objects


def writer_policy(bucket: str, prefix: str = "", dialect: str = "aws") -> dict[str, Any]:
    """Append-only: put (with locks), get, list, abort its own unfinished uploads. No delete of any kind."""
    names = _DIALECT_ACTIONS[dialect]
    bucket_arn, objects_arn = _resources(bucket, prefix)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "NodekeepWriterObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:PutObject",
                    "s3:PutObjectRetention",
                    "s3:PutObjectLegalHold",
                    "s3:GetObject",
                    "s3:GetObjectVersion",
                    "s3:GetObjectRetention",
                    "s3:GetObjectLegalHold",
                    "s3:AbortMultipartUpload",
                    names["list_parts"],
                ],
                "Resource": [objects_arn],
            },
            {
                "Sid": "NodekeepWriterBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", names["list_uploads"], "s3:GetBucketObjectLockConfiguration"]
                + names["bucket_extra"],
                "Resource": [bucket_arn],
            },
        ],
    }


def pruner_policy(bucket: str, prefix: str = "", dialect: str = "aws") -> dict[str, Any]:
    """Retention: list, read locks and manifests, delete versions. Never bypasses governance retention."""
    names = _DIALECT_ACTIONS[dialect]
    bucket_arn, objects_arn = _resources(bucket, prefix)
    statements = [
        {
            "Sid": "NodekeepPrunerObjects",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectRetention",
                "s3:GetObjectLegalHold",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:AbortMultipartUpload",
            ],
            "Resource": [objects_arn],
        },
        {
            "Sid": "NodekeepPrunerBucket",
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:ListBucketVersions", names["list_uploads"]] + names["bucket_extra"],
            "Resource": [bucket_arn],
        },
    ]
    if dialect == "aws":
        # Explicit, so no other policy attached to the pruner can grant these (SeaweedFS has no Deny;
        # there the pruner simply is not granted them).
        statements.append(
            {
                "Sid": "NodekeepPrunerNeverBypasses",
                "Effect": "Deny",
                "Action": ["s3:BypassGovernanceRetention", "s3:PutObject", "s3:PutObjectRetention"],
                "Resource": [objects_arn],
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}
