"""storage/s3_repository.py: where an S3 repository keeps things (the key layout, bad names refused before
any request), write-once keys, the signature as an epoch's commit point, removal of a whole epoch or
nothing, and multipart leftovers; on a real SeaweedFS (``s3_server``, tests/unit/storage/conftest.py)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_client import ObjectLockedError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import (
    S3Repository,
    open_s3_repository,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings

E1, E2 = "20261120T023000Z", "20261121T023000Z"
OBJECT = "ab" + "01" * 31


@functools.cache
def _offline(options: tuple) -> S3Repository:
    settings = {
        "bucket": "nk-offline",
        "prefix": "fleet//eu/",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "access_key": "AK",
        "secret_key": "SK",
        "path_style": True,
    }
    settings.update(dict(options))
    return S3Repository(S3Settings(**settings))


def offline(**options) -> S3Repository:
    """A repository whose endpoint nothing answers (addressing and settings need no request); one per settings:
    making a boto3 client costs a good part of a second on a loaded machine."""
    return _offline(tuple(sorted(options.items())))


def keys(client, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents") or [])


def write_epoch(repository, node: str, epoch: str, signed: bool = True) -> None:
    repository.put_bytes(node, epoch, "data.bin.zst.age", b"sealed bytes of " + epoch.encode())
    repository.put_bytes(node, epoch, MANIFEST_NAME, b'{"epoch": "%s"}' % epoch.encode())
    if signed:
        repository.put_bytes(node, epoch, SIGNATURE_NAME, b"-----BEGIN SSH SIGNATURE-----")


class TestAddressing:
    def test_the_key_layout_is_the_local_one_under_the_prefix(self):
        repository = offline()
        assert repository.location == "s3://nk-offline/fleet/eu"
        assert repository._key("node1", E1, "app.db.zst.age") == "fleet/eu/node1/%s/app.db.zst.age" % E1
        assert repository._object_key("node1", OBJECT) == "fleet/eu/node1/objects/ab/" + OBJECT
        bare = offline(prefix="")
        assert bare.location == "s3://nk-offline" and bare._key("node1", E1, MANIFEST_NAME) == "node1/%s/%s" % (
            E1,
            MANIFEST_NAME,
        )

    @pytest.mark.parametrize("node", ["../other", "a/b", "", ".hidden", "node 1"])
    def test_a_node_name_that_would_leave_its_folder_is_refused(self, node):
        with pytest.raises(NodekeepError, match="not a valid name"):
            offline()._key(node, E1, MANIFEST_NAME)

    @pytest.mark.parametrize("epoch", ["latest", "../20261120T023000Z", "20261120T023000", ""])
    def test_an_epoch_name_outside_the_pattern_is_refused(self, epoch):
        with pytest.raises(RepositoryError, match="is not an epoch name") as raised:
            offline()._key("node1", epoch, MANIFEST_NAME)
        assert "20260101T000000Z" in raised.value.remedy

    @pytest.mark.parametrize("name", ["../manifest.json", "a/b", ".tmp"])
    def test_a_file_name_outside_the_pattern_is_refused(self, name):
        with pytest.raises(NodekeepError, match="not a valid name"):
            offline()._key("node1", E1, name)

    def test_an_object_name_must_be_a_keyed_hash(self):
        with pytest.raises(RepositoryError, match="not an object name"):
            offline()._object_key("node1", "AB" + "01" * 31)

    def test_server_side_encryption_headers_follow_the_settings(self):
        assert offline()._write_args() == {}
        kms = offline(sse="aws:kms", sse_kms_key_id="key-1")._write_args({"k": "v"})
        assert kms == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "key-1", "Metadata": {"k": "v"}}
        key = "A" * 43 + "="  # base64 of 32 bytes
        customer = offline(sse="customer", sse_customer_key=key)._write_args()
        assert customer["SSECustomerAlgorithm"] == "AES256" and len(customer["SSECustomerKey"]) == 32

    def test_bad_settings_are_refused_before_any_request(self):
        with pytest.raises(RepositoryError, match="retain_days is set but object_lock_mode is none") as raised:
            offline(retain_days=30)
        assert "object_lock_mode" in raised.value.remedy

    def test_the_url_form(self):
        repository = open_s3_repository("s3://nk-offline/fleet/eu")
        assert (repository.bucket, repository.prefix) == ("nk-offline", "fleet/eu")


class TestOnTheServer:
    def test_an_epoch_counts_only_once_its_signature_is_there(self, s3_server, s3_client, s3_repository):
        repository = s3_repository(s3_server.bucket(lock=False), "fleet")
        write_epoch(repository, "node1", E1, signed=False)
        assert repository.complete_epochs("node1") == [] and repository.incomplete_epochs("node1") == [E1]
        repository.put_bytes("node1", E1, SIGNATURE_NAME, b"sig")
        assert repository.complete_epochs("node1") == [E1] and repository.incomplete_epochs("node1") == []
        assert not repository.claim_epoch("node1", E1) and repository.claim_epoch("node1", E2)

    def test_listings_ignore_keys_that_are_not_ours(self, s3_server, s3_client, s3_repository):
        bucket = s3_server.bucket(lock=False)
        repository = s3_repository(bucket, "fleet")
        write_epoch(repository, "node1", E1)
        client = s3_client
        for key in ("fleet/node1/latest/x", "fleet/node1/%s/.partial" % E1, "fleet/bad node/%s/x" % E1, "other/x"):
            client.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert repository.nodes() == ["node1"]
        assert repository.epoch_names("node1") == [E1]
        assert sorted(repository.files("node1", E1)) == sorted(["data.bin.zst.age", MANIFEST_NAME, SIGNATURE_NAME])
        assert repository.complete_epochs("node1") == [E1]

    def test_a_key_is_written_once(self, s3_server, s3_client, s3_repository):
        repository = s3_repository(s3_server.bucket(lock=False))
        repository.put_bytes("node1", E1, MANIFEST_NAME, b"first")
        with pytest.raises(RepositoryError, match="write-once") as raised:
            repository.put_bytes("node1", E1, MANIFEST_NAME, b"second")
        assert raised.value.details["code"] == "PreconditionFailed"
        assert repository.get_bytes("node1", E1, MANIFEST_NAME) == b"first"

    def test_get_bytes_stops_at_its_limit(self, s3_server, s3_client, s3_repository):
        repository = s3_repository(s3_server.bucket(lock=False))
        repository.put_bytes("node1", E1, MANIFEST_NAME, b"x" * 1000)
        assert repository.get_bytes("node1", E1, MANIFEST_NAME, limit=1000) == b"x" * 1000
        with pytest.raises(RepositoryError, match="larger than 999 bytes"):
            repository.get_bytes("node1", E1, MANIFEST_NAME, limit=999)

    def test_objects_are_write_once_and_a_missing_one_is_named(self, s3_server, s3_client, s3_repository):
        repository = s3_repository(s3_server.bucket(lock=False))
        with repository.put_object("node1", OBJECT) as sink:
            sink.write(b"piece")
        with pytest.raises(RepositoryError, match="write-once") as raised, repository.put_object("node1", OBJECT):
            pass
        assert raised.value.details["code"] == "exists"
        assert repository.has_object("node1", OBJECT) == 5
        assert list(repository.object_names("node1")) == [OBJECT]
        missing = "cd" + "02" * 31
        assert repository.has_object("node1", missing) is None
        with (
            pytest.raises(RepositoryError, match="object .* is missing") as raised,
            repository.open_object("node1", missing),
        ):
            pass
        assert raised.value.details["code"] == "NoSuchKey" and "restore another epoch" in raised.value.remedy

    def test_a_locked_epoch_is_removed_whole_or_not_at_all(self, s3_server, s3_client, s3_repository):
        bucket = s3_server.bucket(lock=True)
        locked = s3_repository(bucket, object_lock_mode="GOVERNANCE", retain_days=1)
        epoch = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
        write_epoch(locked, "node1", epoch)
        before = keys(s3_client, bucket)
        with pytest.raises(ObjectLockedError, match="3 locked object.*nothing was removed") as raised:
            locked.remove_epoch("node1", epoch)
        assert "never bypassed" in raised.value.remedy
        assert keys(s3_client, bucket) == before and locked.complete_epochs("node1") == [epoch]

        plain_bucket = s3_server.bucket(lock=False)
        plain = s3_repository(plain_bucket)
        write_epoch(plain, "node1", E1)
        write_epoch(plain, "node1", E2)
        plain.remove_epoch("node1", E1)
        assert plain.complete_epochs("node1") == [E2]
        assert all(E1 not in key for key in keys(s3_client, plain_bucket))

    def test_only_stale_unfinished_uploads_are_aborted(self, s3_server, s3_client, s3_repository):
        bucket = s3_server.bucket(lock=False)
        repository = s3_repository(bucket)
        client = s3_client
        key = repository._key("node1", E1, "data.bin.zst.age")
        client.create_multipart_upload(Bucket=bucket, Key=key)
        client.create_multipart_upload(Bucket=bucket, Key="node2/%s/data.bin.zst.age" % E1)
        now = datetime.now(timezone.utc)
        assert repository.abort_stale_uploads("node1", timedelta(hours=1), now=now) == []
        assert repository.abort_stale_uploads("node1", timedelta(hours=1), now=now + timedelta(hours=2)) == [key]
        left = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []]
        assert left == ["node2/%s/data.bin.zst.age" % E1]
