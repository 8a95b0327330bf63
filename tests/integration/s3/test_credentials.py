"""Two kinds of credentials, made with the server's IAM API from the policies docs/s3.md documents.

The writer (backups and copies) may put, get and list; the server refuses it every
kind of delete. The pruner (retention) may delete unlocked versions, but not write
and not bypass a lock.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import replicate
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import pruner_policy, writer_policy

pytestmark = pytest.mark.timeout(120)

UTC = timezone.utc
PREFIX = "fleet"


def refused(call, **kwargs) -> str:
    with pytest.raises(ClientError) as raised:
        call(**kwargs)
    return raised.value.response["Error"]["Code"]


@pytest.fixture
def credentials(s3_server, locked_bucket):
    tag = uuid.uuid4().hex[:8]
    writer = s3_server.user("writer-" + tag, writer_policy(locked_bucket, PREFIX, dialect="seaweedfs"))
    pruner = s3_server.user("pruner-" + tag, pruner_policy(locked_bucket, PREFIX, dialect="seaweedfs"))
    return writer, pruner


@pytest.fixture
def epochs(s3_server, locked_bucket, credentials, make_epoch):
    """Three epochs written with the writer's keys: an old unlocked one, a locked one, the newest."""
    writer, _pruner = credentials
    repository = s3_server.repository(
        locked_bucket, PREFIX, access_key=writer[0], secret_key=writer[1], object_lock_mode="GOVERNANCE", retain_days=7
    )
    now = datetime.now(UTC)
    old, locked, newest = (epoch_name(now - timedelta(days=d)) for d in (30, 3, 0))
    for epoch in (old, locked, newest):
        make_epoch(repository, "node1", epoch)
    return repository, old, locked, newest


class TestWriter:
    def test_the_writer_writes_with_locks_and_reads_back(self, epochs, s3_node):
        repository, old, locked, newest = epochs
        assert repository.complete_epochs("node1") == [old, locked, newest]
        assert repository.object_info("node1", locked, "manifest.json")["lock_mode"] == "GOVERNANCE"
        assert repository.object_info("node1", old, "manifest.json")["lock_mode"] is None  # its 7 days are over
        assert s3_node(repository, "node1").verify()["ok"]

    def test_the_writer_policy_is_enough_for_a_real_copy(
        self, s3_server, locked_bucket, credentials, repository, s3_node, sqlite_db, signing_key
    ):
        writer, _pruner = credentials
        node = s3_node(repository, "node2")
        manifest = node.backup([node.sqlite_asset(sqlite_db, name="app-db")])
        target = s3_server.repository(
            locked_bucket, PREFIX, access_key=writer[0], secret_key=writer[1],
            object_lock_mode="COMPLIANCE", retain_days=1, legal_hold=True,
        )
        result = replicate(repository, target, "node2", [manifest.epoch], signing_key.public_line)
        assert result["ok"], result.get("failed")  # multipart, resume look-up, locks, legal hold, HEAD checks
        (artifact,) = result["copied"][0]["objects"]
        assert artifact["lock_mode"] == "COMPLIANCE" and artifact["legal_hold"] is True
        assert s3_node(target, "node2").verify()["ok"]

    def test_the_server_refuses_the_writer_every_delete(self, s3_server, locked_bucket, credentials, epochs):
        writer, _pruner = credentials
        repository, old, _locked, _newest = epochs
        client = s3_server.client(access_key=writer[0], secret_key=writer[1], retries=0)
        key = "%s/node1/%s/manifest.json" % (PREFIX, old)  # unlocked: only the permission stands in the way
        version = client.head_object(Bucket=locked_bucket, Key=key)["VersionId"]
        assert refused(client.delete_object, Bucket=locked_bucket, Key=key) == "AccessDenied"
        assert refused(client.delete_object, Bucket=locked_bucket, Key=key, VersionId=version) == "AccessDenied"
        batch = client.delete_objects(Bucket=locked_bucket, Delete={"Objects": [{"Key": key, "VersionId": version}]})
        assert [e["Code"] for e in batch.get("Errors", [])] == ["AccessDenied"]
        assert not batch.get("Deleted")
        lifecycle = {"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}
        assert refused(client.put_bucket_lifecycle_configuration, Bucket=locked_bucket,
                       LifecycleConfiguration=lifecycle) == "AccessDenied"
        assert refused(client.put_bucket_versioning, Bucket=locked_bucket,
                       VersioningConfiguration={"Status": "Suspended"}) == "AccessDenied"
        assert refused(client.delete_bucket, Bucket=locked_bucket) == "AccessDenied"
        # outside its prefix it cannot even write
        assert refused(client.put_object, Bucket=locked_bucket, Key="elsewhere/x", Body=b"x") == "AccessDenied"
        assert repository.is_complete("node1", old)

    def test_retention_with_the_writer_keys_removes_nothing_and_says_why(self, epochs, signing_key):
        repository, old, locked, newest = epochs
        with pytest.raises(RepositoryError) as raised:
            repository.remove_epoch("node1", old)
        assert raised.value.message.startswith("Failed to ")
        assert "AccessDenied" in raised.value.message
        assert "retention runs with the separate pruner credentials" in raised.value.message
        result = apply_retention(repository, "node1", RetentionPolicy(keep_last=1), signing_key.public_line)
        assert result["removed"] == []
        assert {e["epoch"] for e in result["errors"]} == {old, locked}
        assert repository.complete_epochs("node1") == [old, locked, newest]


class TestPruner:
    def test_the_pruner_removes_unlocked_epochs_and_skips_locked_ones(
        self, s3_server, locked_bucket, credentials, epochs, signing_key
    ):
        _writer, pruner = credentials
        _repository, old, locked, newest = epochs
        repository = s3_server.repository(locked_bucket, PREFIX, access_key=pruner[0], secret_key=pruner[1])
        result = apply_retention(repository, "node1", RetentionPolicy(keep_last=1), signing_key.public_line)
        assert [e["epoch"] for e in result["removed"]] == [old]
        assert [e["epoch"] for e in result["locked"]] == [locked]
        assert result["errors"] == []
        assert repository.complete_epochs("node1") == [locked, newest]
        listing = s3_server.client().list_object_versions(Bucket=locked_bucket, Prefix="%s/node1/%s/" % (PREFIX, old))
        assert not listing.get("Versions") and not listing.get("DeleteMarkers")

    def test_the_pruner_aborts_unfinished_uploads(self, s3_server, locked_bucket, credentials):
        writer, pruner = credentials
        key = "%s/node1/20261122T000000Z/data.bin.zst.age" % PREFIX
        s3_server.client(access_key=writer[0], secret_key=writer[1]).create_multipart_upload(Bucket=locked_bucket, Key=key)
        repository = s3_server.repository(locked_bucket, PREFIX, access_key=pruner[0], secret_key=pruner[1])
        assert repository.abort_stale_uploads("node1", timedelta(days=1)) == []  # too young
        assert repository.abort_stale_uploads("node1", timedelta(0)) == [key]
        assert s3_server.client().list_multipart_uploads(Bucket=locked_bucket).get("Uploads") is None

    def test_the_pruner_cannot_write_nor_bypass_a_lock(self, s3_server, locked_bucket, credentials, epochs):
        _writer, pruner = credentials
        _repository, _old, locked, _newest = epochs
        client = s3_server.client(access_key=pruner[0], secret_key=pruner[1], retries=0)
        key = "%s/node1/%s/manifest.json" % (PREFIX, locked)
        version = client.head_object(Bucket=locked_bucket, Key=key)["VersionId"]
        assert refused(client.put_object, Bucket=locked_bucket, Key="%s/node1/x" % PREFIX, Body=b"x") == "AccessDenied"
        assert refused(client.delete_object, Bucket=locked_bucket, Key=key, VersionId=version,
                       BypassGovernanceRetention=True) == "AccessDenied"
        assert s3_server.client().head_object(Bucket=locked_bucket, Key=key, VersionId=version)["ObjectLockMode"] == (
            "GOVERNANCE")
