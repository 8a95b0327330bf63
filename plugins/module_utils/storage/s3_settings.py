# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 settings: sizes, URLs, lock rules, the typed ``S3Settings`` and the IAM policy helpers."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import re
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    PERIODS,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError, check_range

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


def _check_object_workers(value: Any) -> int:
    """``object_workers`` as a whole number from 1 to 64 (a clear error otherwise)."""
    return check_range(
        value,
        "object_workers",
        1,
        64,
        why="how many object uploads one epoch copy runs at once for this target "
        "(1: one at a time; default %d), or leave it out" % DEFAULT_OBJECT_WORKERS,
        error=RepositoryError,
    )


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


@dataclass
class S3Settings:
    """Where an S3 repository is and how to reach it: the options of docs/s3.md as one typed object.

    ``check()`` refuses bad settings before any request and normalises them (prefix, sizes, counts);
    credentials and the SSE-C key are left out of ``repr``.
    """

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile: str | None = None
    path_style: bool = False
    ca_bundle: str | None = None
    validate_certs: bool = True
    object_lock_mode: str | None = "none"
    retain_days: int = 0
    lock_periods: dict[str, Any] | None = None
    legal_hold: bool = False
    sse: str = "none"
    sse_kms_key_id: str | None = None
    sse_customer_key: str | None = field(default=None, repr=False)
    bandwidth_limit: Any = 0
    retries: int = DEFAULT_RETRIES
    part_size: Any = DEFAULT_PART_SIZE
    max_concurrency: int = DEFAULT_CONCURRENCY
    object_workers: Any = DEFAULT_OBJECT_WORKERS
    name: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> S3Settings:
        """From a dict of the documented options (``type`` ignored, ``url`` = ``s3://bucket/prefix`` allowed)."""
        options = {k: v for k, v in dict(spec).items() if v is not None and k not in ("type",)}
        url = options.pop("url", None)
        if url:
            bucket, prefix = parse_s3_url(str(url))
            options.setdefault("bucket", bucket)
            options.setdefault("prefix", prefix)
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(options) - set(S3_TARGET_OPTIONS) - known)
        if unknown:
            raise RepositoryError(
                "unknown S3 repository option(s): %s" % ", ".join(unknown),
                "see docs/s3.md for the options",
            )
        return cls(**options)

    def check(self) -> None:
        """Refuse bad settings with a clear error; normalise the prefix, sizes and counts in place."""
        self._check_location()
        self._check_encryption()
        self.retries = check_range(self.retries, "retries", 0, 100, why="retries of a failed request")
        self.retain_days = check_range(self.retain_days, "retain_days", 0, 36500, "days")
        raw = self.part_size
        self.part_size = parse_size(raw, "part_size")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise RepositoryError(
                "part_size %s is out of range" % raw,
                "S3 parts are 5 MiB to 5 GiB; the default 16M suits most links",
            )
        self.max_concurrency = check_range(
            self.max_concurrency, "max_concurrency", 1, 64, why="parallel part transfers of one object"
        )
        self.object_workers = _check_object_workers(self.object_workers)
        parse_size(self.bandwidth_limit, "bandwidth_limit")
        self.endpoint_url = self.endpoint_url or None

    def _check_location(self) -> None:
        if not self.bucket or not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", self.bucket):
            raise RepositoryError(
                "%r is not a valid S3 bucket name" % (self.bucket,),
                "use 3-63 lowercase letters, digits, dots and dashes",
            )
        prefix = "/".join(p for p in str(self.prefix or "").split("/") if p)
        for part in prefix.split("/") if prefix else ():
            if part in (".", ".."):
                raise RepositoryError("the S3 prefix %r contains %r" % (self.prefix, part), "use a plain path")
        self.prefix = prefix
        if bool(self.access_key) != bool(self.secret_key):
            raise RepositoryError(
                "only one of access_key and secret_key was given",
                "give both, or neither to use a profile, the environment or an instance role",
            )
        lock_rules(self.object_lock_mode, self.retain_days, self.lock_periods)

    def _check_encryption(self) -> None:
        if self.sse not in SSE_CHOICES:
            raise RepositoryError("sse %r is not valid" % (self.sse,), "use one of %s" % ", ".join(SSE_CHOICES))
        self.customer_key()
        if self.sse != "customer" and self.sse_customer_key:
            raise RepositoryError(
                "sse_customer_key is set but sse is %s" % self.sse, "set sse: customer, or drop the key"
            )
        if self.sse_kms_key_id and self.sse != "aws:kms":
            raise RepositoryError(
                "sse_kms_key_id is set but sse is %s" % self.sse, "set sse: aws:kms, or drop the key id"
            )

    def customer_key(self) -> bytes | None:
        """The SSE-C key as bytes when ``sse`` is ``customer`` (checked), else None."""
        return _decode_customer_key(self.sse_customer_key) if self.sse == "customer" else None
