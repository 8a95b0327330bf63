"""storage/_s3_lock.py: which Object Lock an epoch's objects get (epoch time + days, the strongest rule, a
period rule only for the first complete epoch of its period, nothing for a lock already over), and a lock
that is raised or extended but never lowered or shortened; on a real SeaweedFS with Object Lock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_lock import S3ObjectLock

OBJECT = "ab" + "01" * 31


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%SZ")


NOW = datetime.now(timezone.utc).replace(microsecond=0)
#: the first second of this month and the second after it: two epochs of one month whatever the day
MONTH = NOW.replace(day=1, hour=0, minute=0, second=0)
FIRST, SECOND = stamp(MONTH), stamp(MONTH + timedelta(seconds=1))
RECENT = stamp(NOW - timedelta(hours=1))


def complete(repository, node: str, epoch: str, signed: bool = True) -> None:
    repository.put_bytes(node, epoch, MANIFEST_NAME, b"{}")
    if signed:
        repository.put_bytes(node, epoch, SIGNATURE_NAME, b"sig")


def head(client, bucket: str, key: str) -> dict:
    return client.head_object(Bucket=bucket, Key=key)


class TestWhichLock:
    def test_every_epoch_is_locked_until_its_time_plus_the_days(self, s3_repository, s3_server):
        repository = s3_repository(s3_server.bucket(lock=False), object_lock_mode="GOVERNANCE", retain_days=30)
        lock = repository.lock_for("node1", RECENT)
        assert lock == {
            "mode": "GOVERNANCE",
            "until": epoch_time(RECENT) + timedelta(days=30),
            "rule": "GOVERNANCE 30d (every)",
        }

    def test_an_old_epoch_whose_lock_is_over_gets_none(self, s3_repository, s3_server):
        """A copy of an old epoch is locked only for what is left of its period: nothing left, no lock."""
        repository = s3_repository(s3_server.bucket(lock=False), object_lock_mode="COMPLIANCE", retain_days=30)
        assert repository.lock_for("node1", stamp(NOW - timedelta(days=31))) is None
        # a lock that would end within MIN_LOCK (a minute) is not worth an upload that may take longer
        assert repository.lock_for("node1", stamp(NOW - timedelta(days=30) + timedelta(seconds=20))) is None
        assert repository.lock_for("node1", stamp(NOW - timedelta(days=29)))["mode"] == "COMPLIANCE"

    def test_a_period_rule_locks_the_first_complete_epoch_of_its_period_only(self, s3_repository, s3_server):
        bucket = s3_server.bucket(lock=False)
        options = {
            "object_lock_mode": "GOVERNANCE",
            "retain_days": 40,
            "lock_periods": {"monthly": {"mode": "COMPLIANCE", "days": 400}},
        }
        writer = s3_repository(bucket)
        monthly = {"mode": "COMPLIANCE", "until": MONTH + timedelta(days=400), "rule": "COMPLIANCE 400d (monthly)"}
        assert s3_repository(bucket, **options).lock_for("node1", FIRST) == monthly
        complete(writer, "node1", FIRST, signed=False)  # an incomplete epoch does not represent the month
        assert s3_repository(bucket, **options).lock_for("node1", SECOND)["rule"] == "COMPLIANCE 400d (monthly)"
        writer.put_bytes("node1", FIRST, SIGNATURE_NAME, b"sig")
        second = s3_repository(bucket, **options).lock_for("node1", SECOND)
        assert second == {
            "mode": "GOVERNANCE",
            "until": MONTH + timedelta(seconds=1, days=40),
            "rule": "GOVERNANCE 40d (every)",
        }
        # the month's representative keeps its lock once later epochs exist (only earlier epochs count)
        complete(writer, "node1", SECOND)
        assert s3_repository(bucket, **options).lock_for("node1", FIRST) == monthly

    @pytest.mark.parametrize(
        ("default_days", "monthly", "expected"),
        [
            (30, {"mode": "COMPLIANCE", "days": 10}, "GOVERNANCE 30d (every)"),  # the longest wins
            (30, {"mode": "COMPLIANCE", "days": 30}, "COMPLIANCE 30d (monthly)"),  # COMPLIANCE on a tie
            (30, {"mode": "GOVERNANCE", "days": 31}, "GOVERNANCE 31d (monthly)"),
        ],
    )
    def test_the_strongest_rule_wins(self, s3_repository, s3_server, default_days, monthly, expected):
        bucket = s3_server.bucket(lock=False)
        repository = s3_repository(
            bucket, object_lock_mode="GOVERNANCE", retain_days=default_days, lock_periods={"monthly": monthly}
        )
        assert repository.lock_for("node1", FIRST)["rule"] == expected

    def test_legal_hold_alone(self, s3_repository, s3_server):
        repository = s3_repository(s3_server.bucket(lock=False), legal_hold=True)
        assert repository.lock_for("node1", RECENT) == {"legal_hold": True}
        assert S3ObjectLock._lock_args({"legal_hold": True}) == {"ObjectLockLegalHoldStatus": "ON"}
        until = NOW + timedelta(days=1)
        assert S3ObjectLock._lock_args({"mode": "COMPLIANCE", "until": until}) == {
            "ObjectLockMode": "COMPLIANCE",
            "ObjectLockRetainUntilDate": until,
        }
        assert S3ObjectLock._lock_args(None) == {}


class TestOnTheObjects:
    def test_uploads_carry_the_lock_and_are_confirmed(self, s3_repository, s3_server, s3_client):
        bucket = s3_server.bucket(lock=True)
        repository = s3_repository(bucket, object_lock_mode="GOVERNANCE", retain_days=2, legal_hold=True)
        with repository.open_write("node1", RECENT, "data.bin.zst.age") as sink:
            sink.write(b"sealed")
        info = sink.info
        until = epoch_time(RECENT) + timedelta(days=2)
        assert (info["lock_mode"], info["retain_until"], info["legal_hold"]) == (
            "GOVERNANCE",
            until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            True,
        )
        (locked,) = repository.locked_objects("node1", RECENT)
        assert (
            locked["name"] == "data.bin.zst.age"
            and locked["reason"] == "GOVERNANCE until %s, legal hold" % (info["retain_until"])
        )

    def test_a_lock_found_at_the_target_is_extended_never_shortened(self, s3_repository, s3_server, s3_client):
        """ensure_lock (a file left by an interrupted copy): a shorter retention is extended to the policy's,
        a longer one is left as it is."""
        bucket = s3_server.bucket(lock=True)
        longer = NOW + timedelta(days=5)
        short = s3_repository(bucket, object_lock_mode="GOVERNANCE", retain_days=3)
        for name, until in (("short", NOW + timedelta(hours=2)), ("long", longer)):
            s3_client.put_object(
                Bucket=bucket,
                Key=short._key("node1", RECENT, name),
                Body=b"x",
                ObjectLockMode="GOVERNANCE",
                ObjectLockRetainUntilDate=until,
            )
        wanted = epoch_time(RECENT) + timedelta(days=3)
        assert short.ensure_lock("node1", RECENT, "short").startswith("lock GOVERNANCE until")
        assert head(s3_client, bucket, short._key("node1", RECENT, "short"))["ObjectLockRetainUntilDate"] == wanted
        assert short.ensure_lock("node1", RECENT, "long") == "lock ok"
        assert head(s3_client, bucket, short._key("node1", RECENT, "long"))["ObjectLockRetainUntilDate"] == longer

    def test_a_shared_object_lasts_as_long_as_the_newest_epoch_using_it(self, s3_repository, s3_server, s3_client):
        bucket = s3_server.bucket(lock=True)
        repository = s3_repository(bucket, object_lock_mode="GOVERNANCE", retain_days=2)
        older, newer = stamp(NOW - timedelta(hours=3)), RECENT
        with repository.put_object("node1", OBJECT, epoch=older) as sink:
            sink.write(b"piece")
        assert repository.object_lock_info("node1", OBJECT)["retain_until"] == epoch_time(older) + timedelta(days=2)
        assert repository.extend_object_lock("node1", OBJECT, newer) is True
        assert repository.object_lock_info("node1", OBJECT)["retain_until"] == epoch_time(newer) + timedelta(days=2)
        assert repository.extend_object_lock("node1", OBJECT, newer) is False
        # an epoch older than the lock never shortens it
        assert repository.extend_object_lock("node1", OBJECT, stamp(NOW - timedelta(hours=5))) is False
        assert repository.object_lock_info("node1", OBJECT)["retain_until"] == epoch_time(newer) + timedelta(days=2)
