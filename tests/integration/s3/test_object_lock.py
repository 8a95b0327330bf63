"""Object Lock on a real server: per-epoch locks from the policy, refusals by the server, retention that respects them."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_client import ObjectLockedError

pytestmark = pytest.mark.timeout(120)

UTC = timezone.utc


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def month_start(moment: datetime, back: int = 0) -> datetime:
    month = moment.month - 1 - back
    return moment.replace(year=moment.year + month // 12, month=month % 12 + 1, day=1, hour=0, minute=0, second=10)


def versions(server, bucket, prefix) -> list:
    page = server.client().list_object_versions(Bucket=bucket, Prefix=prefix)
    return (page.get("Versions") or []) + (page.get("DeleteMarkers") or [])


class TestLocksFromThePolicy:
    def test_the_first_epoch_of_a_month_gets_compliance_the_others_governance(self, s3_server, locked_bucket, make_epoch):
        repository = s3_server.repository(
            locked_bucket, object_lock_mode="GOVERNANCE", retain_days=40,
            lock_periods={"monthly": {"mode": "COMPLIANCE", "days": 60}},
        )
        first = epoch_name(month_start(now()))
        second = epoch_name(month_start(now()) + timedelta(hours=1))
        make_epoch(repository, "node1", first)
        make_epoch(repository, "node1", second)
        for epoch, mode, days in ((first, "COMPLIANCE", 60), (second, "GOVERNANCE", 40)):
            until = datetime.strptime(epoch, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) + timedelta(days=days)
            for name in ("data.bin.zst.age", MANIFEST_NAME, SIGNATURE_NAME):
                head = s3_server.client().head_object(Bucket=locked_bucket, Key="node1/%s/%s" % (epoch, name))
                assert head["ObjectLockMode"] == mode, (epoch, name)
                assert head["ObjectLockRetainUntilDate"] == until, (epoch, name)
                assert head["ObjectLockLegalHoldStatus"] == "OFF"

    def test_legal_hold_on_request(self, s3_server, locked_bucket, make_epoch):
        repository = s3_server.repository(locked_bucket, legal_hold=True)
        make_epoch(repository, "node1", epoch_name(now()))
        (epoch,) = repository.complete_epochs("node1")
        info = repository.object_info("node1", epoch, SIGNATURE_NAME)
        assert info["legal_hold"] is True
        assert info["lock_mode"] is None
        assert [o["reason"] for o in repository.locked_objects("node1", epoch)] == ["legal hold"] * 3

    def test_a_lock_on_a_bucket_without_object_lock_fails_and_the_epoch_stays_incomplete(
        self, s3_server, plain_bucket, make_epoch
    ):
        repository = s3_server.repository(plain_bucket, object_lock_mode="COMPLIANCE", retain_days=1)
        epoch = epoch_name(now())
        with pytest.raises(RepositoryError) as raised:
            make_epoch(repository, "node1", epoch)
        assert raised.value.message.startswith("Failed to ")
        assert "Object Lock" in raised.value.message
        assert repository.complete_epochs("node1") == []


class TestTheServerEnforcesLocks:
    @pytest.fixture
    def locked_epoch(self, s3_server, locked_bucket, make_epoch):
        repository = s3_server.repository(locked_bucket, object_lock_mode="COMPLIANCE", retain_days=2)
        epoch = epoch_name(now())
        make_epoch(repository, "node1", epoch)
        key = "node1/%s/data.bin.zst.age" % epoch
        version = s3_server.client().head_object(Bucket=locked_bucket, Key=key)["VersionId"]
        return repository, epoch, key, version

    def test_deleting_a_locked_version_is_refused_even_with_bypass(self, s3_server, locked_bucket, locked_epoch):
        _repository, _epoch, key, version = locked_epoch
        client = s3_server.client()  # the admin identity: even it cannot
        for extra in ({}, {"BypassGovernanceRetention": True}):
            with pytest.raises(ClientError) as raised:
                client.delete_object(Bucket=locked_bucket, Key=key, VersionId=version, **extra)
            assert raised.value.response["Error"]["Code"] == "AccessDenied"
        assert client.head_object(Bucket=locked_bucket, Key=key, VersionId=version)["ObjectLockMode"] == "COMPLIANCE"

    def test_compliance_retention_cannot_be_shortened_only_extended(self, s3_server, locked_bucket, locked_epoch):
        _repository, _epoch, key, version = locked_epoch
        client = s3_server.client()
        with pytest.raises(ClientError) as raised:
            client.put_object_retention(
                Bucket=locked_bucket, Key=key, VersionId=version,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now() + timedelta(hours=1)},
            )
        assert raised.value.response["Error"]["Code"] == "AccessDenied"
        client.put_object_retention(
            Bucket=locked_bucket, Key=key, VersionId=version,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": now() + timedelta(days=3)},
        )

    def test_remove_epoch_refuses_a_locked_epoch_and_removes_nothing(self, s3_server, locked_bucket, locked_epoch):
        repository, epoch, _key, _version = locked_epoch
        before = versions(s3_server, locked_bucket, "node1/%s/" % epoch)
        with pytest.raises(ObjectLockedError) as raised:
            repository.remove_epoch("node1", epoch)
        assert "3 locked object(s)" in raised.value.message
        assert "nothing was removed" in raised.value.message
        assert "locks are never bypassed" in raised.value.message
        assert versions(s3_server, locked_bucket, "node1/%s/" % epoch) == before
        assert repository.is_complete("node1", epoch)


class TestRetentionRespectsLocks:
    def test_locked_epochs_are_skipped_whole_and_unlocked_ones_removed_whole(
        self, s3_server, locked_bucket, make_epoch, signing_key
    ):
        repository = s3_server.repository(locked_bucket, object_lock_mode="GOVERNANCE", retain_days=30)
        old = epoch_name(now() - timedelta(days=45))  # its 30 days are over: uploaded without a lock
        recent = epoch_name(now() - timedelta(days=5))  # locked for 25 more days
        partly = epoch_name(now() - timedelta(days=44))  # unlocked, but one object gets a lock afterwards
        newest = epoch_name(now())
        for epoch in (old, partly, recent, newest):
            make_epoch(repository, "node1", epoch)
        client = s3_server.client()
        client.put_object_retention(
            Bucket=locked_bucket, Key="node1/%s/data.bin.zst.age" % partly,
            Retention={"Mode": "GOVERNANCE", "RetainUntilDate": now() + timedelta(days=1)},
        )
        policy = RetentionPolicy(keep_last=1)

        plan = apply_retention(repository, "node1", policy, signing_key.public_line, dry_run=True)
        assert [e["epoch"] for e in plan["removed"]] == [old]
        assert [e["epoch"] for e in plan["locked"]] == [partly, recent]
        assert repository.complete_epochs("node1") == sorted([old, partly, recent, newest])

        result = apply_retention(repository, "node1", policy, signing_key.public_line)
        assert [e["epoch"] for e in result["removed"]] == [old]
        assert versions(s3_server, locked_bucket, "node1/%s/" % old) == []  # every version, no delete markers
        locked = {e["epoch"]: e for e in result["locked"]}
        assert set(locked) == {partly, recent}
        assert [o["name"] for o in locked[partly]["objects"]] == ["data.bin.zst.age"]
        assert locked[partly]["reasons"][-1].startswith("not removed: 1 object(s) locked (GOVERNANCE until ")
        assert len(locked[recent]["objects"]) == 3
        # whole or nothing: the partly locked epoch still has its signature and still counts
        assert repository.complete_epochs("node1") == sorted([partly, recent, newest])
        assert result["errors"] == []

    def test_an_expired_lock_no_longer_holds_the_epoch(self, s3_server, locked_bucket, make_epoch, signing_key):
        """The first run's clock is injected (a moment before the lock ends: locked, however slow the machine);
        the second starts only once the server itself lets a version locked until the same moment be deleted
        (its retention state, polled), never after a guessed sleep."""
        repository = s3_server.repository(locked_bucket)
        expiring = epoch_name(now() - timedelta(days=1))
        make_epoch(repository, "node1", expiring)
        make_epoch(repository, "node1", epoch_name(now()))
        client = s3_server.client()
        until = (now() + timedelta(seconds=2)).replace(microsecond=0)
        client.put_object_retention(
            Bucket=locked_bucket, Key="node1/%s/%s" % (expiring, SIGNATURE_NAME),
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until},
        )
        canary = client.put_object(
            Bucket=locked_bucket, Key="canary/lock", Body=b"x",
            ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
        )
        policy = RetentionPolicy(keep_last=1)
        first = apply_retention(repository, "node1", policy, signing_key.public_line, now=until - timedelta(seconds=1))
        assert [e["epoch"] for e in first["locked"]] == [expiring]
        assert repository.complete_epochs("node1")[0] == expiring
        deadline = time.monotonic() + 60
        while True:  # the server's own verdict on the lock, asked until it ends
            try:
                client.delete_object(Bucket=locked_bucket, Key="canary/lock", VersionId=canary["VersionId"])
                break
            except ClientError:
                assert time.monotonic() < deadline, "the server still held a lock 60 s after it ended"
                time.sleep(0.1)
        second = apply_retention(repository, "node1", policy, signing_key.public_line)
        assert [e["epoch"] for e in second["removed"]] == [expiring]
        assert second["locked"] == []

    def test_monthly_compliance_locks_land_on_the_epochs_retention_keeps(
        self, s3_server, locked_bucket, make_epoch, signing_key
    ):
        # Uploaded with only a per-period rule: the first epoch of each month is locked.
        repository = s3_server.repository(locked_bucket, lock_periods={"monthly": {"mode": "COMPLIANCE", "days": 120}})
        epochs = []
        for back in (2, 1, 0):
            start = month_start(now(), back)
            for hours in (0, 30, 60):
                epochs.append(epoch_name(start + timedelta(hours=hours)))
        for epoch in epochs:
            make_epoch(repository, "node1", epoch)
        locked_at_upload = {e for e in epochs if repository.object_info("node1", e, SIGNATURE_NAME)["lock_mode"]}
        assert locked_at_upload == {epochs[0], epochs[3], epochs[6]}

        # restic's pick (the newest of each month) would fight the locks: each month's locked first epoch
        last = apply_retention(
            repository, "node1", RetentionPolicy(keep_monthly=3, pick="last"), signing_key.public_line, dry_run=True
        )
        assert {e["epoch"] for e in last["locked"]} == locked_at_upload

        result = apply_retention(repository, "node1", RetentionPolicy(keep_monthly=3), signing_key.public_line)
        kept = {e["epoch"] for e in result["kept"]}
        assert kept == locked_at_upload | {epochs[-1]}
        assert result["locked"] == []  # nothing the policy drops is locked: lock and policy agree
        assert [e["epoch"] for e in result["removed"]] == sorted(set(epochs) - kept)
