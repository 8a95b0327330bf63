# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors an operator can act on.

Every error raised by the engine says what went wrong and what to do about it,
and never carries secret material. Modules turn them into ``fail_json``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type


class NodekeepError(Exception):
    """A failure with a problem statement and, when known, a remedy."""

    kind = "error"

    def __init__(self, problem: str, remedy: str = "", **details: object) -> None:
        self.problem = problem
        self.remedy = remedy
        self.details = details
        super().__init__(self.message)

    @property
    def message(self) -> str:
        if self.remedy:
            return "%s: %s" % (self.problem.rstrip("."), self.remedy)
        return self.problem

    def to_result(self) -> dict:
        """Fields for ``fail_json``: msg plus a machine-readable kind."""
        result = {"msg": self.message, "error_kind": self.kind}
        if self.details:
            result["error_details"] = dict(self.details)
        return result


class SealError(NodekeepError):
    kind = "seal"


class UnsealError(NodekeepError):
    kind = "unseal"


class RepositoryError(NodekeepError):
    kind = "repository"


class ManifestError(NodekeepError):
    kind = "manifest"


class SignatureError(NodekeepError):
    kind = "signature"


class CaptureError(NodekeepError):
    kind = "capture"


class IntegrityError(NodekeepError):
    kind = "integrity"


class RestoreError(NodekeepError):
    kind = "restore"


def describe_os_error(exc: OSError, what: str, path: str) -> NodekeepError:
    """Turn a low-level OSError into an actionable error naming the path."""
    import errno

    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        return RepositoryError(
            "no space left on the device holding %s while %s" % (path, what),
            "free space there or point the repository at a larger disk; the partial "
            "file was removed and earlier epochs are intact",
            path=path,
        )
    if code == errno.EROFS:
        return RepositoryError(
            "%s is on a read-only file system (while %s)" % (path, what),
            "remount it read-write or point the repository at a writable disk; nothing was written",
            path=path,
        )
    if code in (errno.EACCES, errno.EPERM):
        return RepositoryError(
            "permission denied on %s while %s" % (path, what),
            "run as a user that may write there (become: true) or choose a writable path",
            path=path,
        )
    if code == errno.ENOENT:
        return RepositoryError(
            "%s does not exist (while %s)" % (path, what),
            "create the parent directory or correct the path",
            path=path,
        )
    return RepositoryError("%s failed on %s: %s" % (what, path, exc.strerror or exc), path=path)


SECRET_MARKERS = ("AGE-SECRET-KEY-", "PRIVATE KEY")


def looks_secret(value: str) -> bool:
    """Whether a value given where a public one is expected is in fact key material (an identity, a private key)."""
    upper = str(value).upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def check_range(
    value: object, name: str, low: int, high: int, unit: str = "", why: str = "", error: type | None = None
) -> int:
    """``value`` as a whole number from ``low`` to ``high``; else an error (``error``, a ``NodekeepError``
    subclass, default ``NodekeepError``) naming the option ``name`` and the value as the operator typed them
    (``compression_level 99 is out of range: give 1 to 22``)."""
    error = error or NodekeepError
    shown = "%s %r" % (name, value) if isinstance(value, str) else "%s %s" % (name, value)
    number = None
    if not isinstance(value, bool):
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            number = None
    span = "%d to %d%s" % (low, high, " " + unit if unit else "")
    if number is None:
        raise error("%s is not a whole number" % shown, "give %s%s" % (span, "; " + why if why else ""))
    if not low <= number <= high:
        raise error("%s is out of range" % shown, "give %s%s" % (span, "; " + why if why else ""))
    return number
