# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: the boto3 client side of the S3 repository: error classification, bandwidth limit."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import threading
import time
from datetime import datetime, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError

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
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import TOOL_NAME, TOOL_VERSION
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import ADDRESSING, S3Settings

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


def utc_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(timezone.utc)


def iso_time(value: datetime | None) -> str | None:
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

    def __init__(self, rate: int, clock=time.monotonic, sleep=time.sleep) -> None:
        self.rate = max(0, int(rate or 0))
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(self.rate)
        self._stamp = clock()
        self._paid = self._stamp  # when the debt taken so far is paid off
        self._lock = threading.Lock()
        self.waited = 0.0
        self.charged = 0  # bytes that went through the bucket

    def consume(self, amount: int) -> None:
        if self.rate <= 0 or amount <= 0:
            return
        with self._lock:
            self.charged += amount
            now = self._clock()
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
            self._sleep(wait)


def require_boto3() -> None:
    if not HAS_BOTO3:
        raise RepositoryError(
            "the Python library boto3 is missing on this host (%s)" % BOTO3_IMPORT_ERROR,
            "run the nodekeep.backup.agent role (it installs boto3 into the node virtualenv) "
            "and run modules with that interpreter",
        )


def is_boto_error(exc: BaseException) -> bool:
    """True for botocore's own errors (connection, client and service errors)."""
    return HAS_BOTO3 and isinstance(exc, (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError))


def make_client(settings: S3Settings):
    """The boto3 S3 client for checked ``settings`` (retries, timeouts, pool size, CA bundle, addressing)."""
    config = botocore.config.Config(
        region_name=settings.region or None,
        s3={"addressing_style": ADDRESSING[bool(settings.path_style)]},
        retries={"max_attempts": settings.retries + 1, "mode": "standard"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        # Parts in flight, object uploads beside them, and the copying thread's own requests.
        max_pool_connections=max(10, settings.max_concurrency + settings.object_workers + 2),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        user_agent_extra="%s/%s" % (TOOL_NAME, TOOL_VERSION),
    )
    try:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key or None,
            aws_secret_access_key=settings.secret_key or None,
            aws_session_token=settings.session_token or None,
            profile_name=settings.profile or None,
            region_name=settings.region or None,
        )
        if settings.region is None and session.region_name is None and settings.endpoint_url:
            config = config.merge(botocore.config.Config(region_name="us-east-1"))
        # None (not True) keeps boto3's own CA lookup: AWS_CA_BUNDLE or the profile's ca_bundle.
        verify: Any = settings.ca_bundle if settings.ca_bundle else (None if settings.validate_certs else False)
        return session.client("s3", endpoint_url=settings.endpoint_url, config=config, verify=verify)
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise describe_s3_error("set up the S3 client for s3://%s" % settings.bucket, exc)
