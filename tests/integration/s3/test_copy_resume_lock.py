"""A re-run of an interrupted copy checks an object it finds at the target for its Object Lock, not only for its
size and checksum, before counting it (issue 13): an object left there unlocked, or locked weaker or shorter than
the epoch's policy asks, gets the epoch's lock (never shortened) or the copy fails; SeaweedFS enforces the locks."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import SHA256_METADATA, copy_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(120)
UTC = timezone.utc


@pytest.mark.parametrize("left", ["unlocked", "compliance-short", "legal-hold-missing"])
def test_an_object_left_by_an_interrupted_copy_gets_the_epochs_lock(
    left, s3_server, locked_bucket, make_epoch, signing_key, tmp_path
):
    source = LocalRepository(str(tmp_path / "repo"))
    epoch = epoch_name(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    manifest = make_epoch(source, "node1", epoch)
    artifact = manifest.artifacts[0]
    options = {"object_lock_mode": "COMPLIANCE", "retain_days": 30}
    if left == "legal-hold-missing":
        options = {"legal_hold": True}
    target = s3_server.repository(locked_bucket, **options)
    # What an interrupted run (or a writer key used by someone else) left: the right bytes, a weaker lock.
    client = s3_server.client()
    key = "node1/%s/%s" % (epoch, artifact.file)
    extra = {}
    if left == "compliance-short":
        extra = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": datetime.now(UTC) + timedelta(days=1)}
    with open(tmp_path / "repo" / "node1" / epoch / artifact.file, "rb") as handle:
        client.put_object(
            Bucket=locked_bucket, Key=key, Body=handle.read(), Metadata={SHA256_METADATA: artifact.sha256}, **extra
        )

    report = copy_epoch(source, target, "node1", epoch, signing_key.public_line)

    assert report["status"] == "copied"
    head = client.head_object(Bucket=locked_bucket, Key=key)
    if left == "legal-hold-missing":
        assert head["ObjectLockLegalHoldStatus"] == "ON"
    else:
        wanted = datetime.strptime(epoch, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) + timedelta(days=30)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] >= wanted - timedelta(seconds=1)
    kept = next(o for o in report["objects"] if o["file"] == artifact.file)
    assert ("legal hold set" if left == "legal-hold-missing" else "lock COMPLIANCE until") in kept["kept"]


def test_an_object_locked_weaker_than_asked_does_not_count(s3_server, locked_bucket, make_epoch, signing_key, tmp_path):
    """GOVERNANCE where the policy asks COMPLIANCE: the server refuses to raise it, so the copy fails, the epoch
    stays incomplete at the target, and the message says which lock it found and which one it wanted."""
    source = LocalRepository(str(tmp_path / "repo"))
    epoch = epoch_name(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    artifact = make_epoch(source, "node1", epoch).artifacts[0]
    target = s3_server.repository(locked_bucket, object_lock_mode="COMPLIANCE", retain_days=30)
    with open(tmp_path / "repo" / "node1" / epoch / artifact.file, "rb") as handle:
        s3_server.client().put_object(
            Bucket=locked_bucket,
            Key="node1/%s/%s" % (epoch, artifact.file),
            Body=handle.read(),
            Metadata={SHA256_METADATA: artifact.sha256},
            ObjectLockMode="GOVERNANCE",
            ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
        )
    with pytest.raises(IntegrityError) as raised:
        copy_epoch(source, target, "node1", epoch, signing_key.public_line)
    assert "locked GOVERNANCE" in raised.value.message and "asks COMPLIANCE" in raised.value.message
    assert target.complete_epochs("node1") == []
