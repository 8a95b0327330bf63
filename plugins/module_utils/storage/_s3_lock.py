# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Object Lock for ``S3Repository`` (private to storage/): which lock an epoch's objects get, setting,
raising and extending it (never lowering or shortening it), reading it back to confirm an upload, and
finding the versions that cannot be removed yet.

``S3ObjectLock`` is a part of ``S3Repository`` kept in its own file: it uses the repository's client,
bucket, addressing (``_key``, ``_uri``, ``_head``, ``_list``...) and lock settings.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from datetime import datetime, timedelta, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time, period_key
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_client import iso_time, utc_datetime
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import MIN_LOCK, LockRule


class S3ObjectLock:
    """The Object Lock side of ``S3Repository`` (mixed into it)."""

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

    def object_lock_info(self, node: str, name: str) -> dict[str, Any] | None:
        """The current version's lock of an object (None when absent)."""
        head = self._head(self._object_key(node, name))
        if head is None:
            return None
        return {
            "size": int(head.get("ContentLength") or 0),
            "lock_mode": head.get("ObjectLockMode"),
            "retain_until": utc_datetime(head.get("ObjectLockRetainUntilDate")),
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

    def ensure_lock(self, node: str, epoch: str, name: str) -> str | None:
        """Give a file of ``epoch`` found at the target (left by an interrupted copy) the epoch's Object Lock.

        A weaker mode is raised (GOVERNANCE to COMPLIANCE), a shorter retention extended and a missing legal
        hold set; a lock is never lowered or shortened. The server's answer is read back and compared, so a
        file counts only once it is locked as the policy asks. Returns what was done (None: no lock asked).
        """
        lock = self.lock_for(node, epoch)
        if not lock:
            return None
        key = self._key(node, epoch, name)
        uri = self._uri(key)
        head = self._head(key)
        if head is None:
            raise RepositoryError("%s disappeared from the target" % uri, "run the copy again")
        version = {"VersionId": head["VersionId"]} if head.get("VersionId") else {}
        done = []
        if lock.get("mode"):
            mode, until = head.get("ObjectLockMode"), utc_datetime(head.get("ObjectLockRetainUntilDate"))
            wanted = "COMPLIANCE" if "COMPLIANCE" in (mode, lock["mode"]) else lock["mode"]
            if mode != wanted or until is None or until < lock["until"] - timedelta(seconds=1):
                retention = {"Mode": wanted, "RetainUntilDate": max(until or lock["until"], lock["until"])}
                try:
                    self._call(
                        "lock %s" % uri,
                        self.client.put_object_retention,
                        Bucket=self.bucket,
                        Key=key,
                        Retention=retention,
                        **version,
                    )
                except RepositoryError as exc:
                    raise IntegrityError(
                        "%s is already at the target locked %s until %s, but this epoch's policy asks %s until %s "
                        "and the server refused the change (%s)"
                        % (uri, mode or "not at all", iso_time(until), wanted, iso_time(lock["until"]), exc.problem),
                        "it does not count as copied: remove the incomplete epoch at the target once its lock "
                        "allows (epoch_prune with prune_incomplete, pruner credentials) and copy again",
                    ) from exc
                done.append(
                    "lock %s until %s (was %s)" % (wanted, iso_time(retention["RetainUntilDate"]), mode or "none")
                )
        if lock.get("legal_hold") and head.get("ObjectLockLegalHoldStatus") != "ON":
            self._call(
                "set the legal hold of %s" % uri,
                self.client.put_object_legal_hold,
                Bucket=self.bucket,
                Key=key,
                LegalHold={"Status": "ON"},
                **version,
            )
            done.append("legal hold set")
        after = self._head(key, head.get("VersionId")) or {}
        problems = []
        if lock.get("mode"):
            until = utc_datetime(after.get("ObjectLockRetainUntilDate"))
            if (
                after.get("ObjectLockMode") not in (lock["mode"], "COMPLIANCE")
                or until is None
                or (until < lock["until"] - timedelta(seconds=1))
            ):
                problems.append("its lock is %s until %s" % (after.get("ObjectLockMode"), iso_time(until)))
        if lock.get("legal_hold") and after.get("ObjectLockLegalHoldStatus") != "ON":
            problems.append("it has no legal hold")
        if problems:
            raise IntegrityError(
                "%s is already at the target but %s, not what this epoch's policy asks" % (uri, "; ".join(problems)),
                "the writer credentials need s3:PutObjectRetention and s3:PutObjectLegalHold; nothing counts as "
                "copied until it is locked",
            )
        return "; ".join(done) or "lock ok"

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
        until = utc_datetime(head.get("ObjectLockRetainUntilDate"))
        if lock and lock.get("mode"):
            if mode != lock["mode"]:
                problems.append(
                    "Object Lock mode is %s, %s was requested (is Object Lock enabled on the bucket?)"
                    % (mode or "none", lock["mode"])
                )
            elif until is None or until < lock["until"] - timedelta(seconds=1):
                problems.append("retain-until is %s, %s was requested" % (iso_time(until), iso_time(lock["until"])))
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
            "retain_until": iso_time(until),
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
            until = utc_datetime(head.get("ObjectLockRetainUntilDate"))
            reasons = []
            if head.get("ObjectLockMode") and until is not None and until > now:
                reasons.append("%s until %s" % (head["ObjectLockMode"], iso_time(until)))
            if head.get("ObjectLockLegalHoldStatus") == "ON":
                reasons.append("legal hold")
            if reasons:
                locked.append(
                    {
                        "name": version["Key"].rsplit("/", 1)[-1],
                        "version_id": version.get("VersionId"),
                        "lock_mode": head.get("ObjectLockMode"),
                        "retain_until": iso_time(until),
                        "legal_hold": head.get("ObjectLockLegalHoldStatus") == "ON",
                        "reason": ", ".join(reasons),
                    }
                )
        return locked
