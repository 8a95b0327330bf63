"""storage/_s3_copy.py: streamed uploads and reads on a real SeaweedFS: the multipart checksum is S3's, part
sizes let a stream of unknown length fit in 10,000 parts, a key is committed once (the second writer is
refused atomically), an upload cut by the network resumes and skips the parts already stored while any
other failure leaves nothing behind, and a read that drops resumes on the same object, never another."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage._s3_copy import (
    S3ObjectReader,
    S3ObjectWriter,
    composite_checksum,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import MAX_PART_SIZE, MAX_PARTS, MIB

EPOCH = "20261120T023000Z"
PART = 5 * MIB


def parts_of(data: bytes, size: int = PART) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def uploads(client, bucket: str) -> list[str]:
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []]


def read_all(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_the_composite_checksum_is_the_one_s3_computes(s3_repository, s3_server, s3_client):
    bucket = s3_server.bucket(lock=False)
    repository = s3_repository(bucket)
    data = os.urandom(2 * PART + 12345)
    with repository.open_write("node1", EPOCH, "data.bin.zst.age") as sink:
        for piece in parts_of(data, 1 << 20):
            sink.write(piece)
    expected = composite_checksum([hashlib.sha256(p).digest() for p in parts_of(data)])
    assert expected.endswith("-3") and sink.info["checksum_sha256"] == expected
    key = repository._key("node1", EPOCH, "data.bin.zst.age")
    assert s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")["ChecksumSHA256"] == expected
    assert read_all(s3_client, bucket, key) == data


def test_part_sizes_fit_any_stream_in_ten_thousand_parts(s3_repository):
    # a writer asks nothing of the server before its first part
    writer = S3ObjectWriter(s3_repository("nk-no-request", part_size="16M"), "k", {}, None)
    sizes = [writer._part_size(n) for n in range(1, MAX_PARTS + 1)]
    assert sizes[0] == sizes[999] == 16 * MIB and sizes[1000] == 32 * MIB and sizes[2000] == 64 * MIB
    # about 12.7 TiB at the default 16M (docs/s3.md), beyond S3's largest object (5 TiB)
    assert max(sizes) == MAX_PART_SIZE and sum(sizes) > 12.6 * (1 << 40)
    repository = s3_repository("nk-no-request")
    # a known size (a copy) starts with parts big enough to fit in 9,000 of them
    big = 200 << 30
    hinted = S3ObjectWriter(repository, "k", {}, None, size_hint=big)
    assert hinted._base_part % MIB == 0 and hinted._base_part * (MAX_PARTS - 1000) >= big
    assert S3ObjectWriter(repository, "k", {}, None, size_hint=1 << 20)._base_part == PART


@pytest.mark.parametrize("size", [1000, PART + 1], ids=["single-put", "multipart"])
def test_the_second_writer_of_a_key_is_refused_at_commit(s3_repository, s3_server, s3_client, size):
    """Two runs that both passed the HEAD check: If-None-Match makes the second commit fail, the first stays."""
    bucket = s3_server.bucket(lock=False)
    repository = s3_repository(bucket)
    key = repository._key("node1", EPOCH, "manifest.json")
    first, second = S3ObjectWriter(repository, key, {}, None), S3ObjectWriter(repository, key, {}, None)
    first.write(b"a" * size)
    second.write(b"b" * size)
    first.commit()
    with pytest.raises(RepositoryError) as raised:
        try:
            second.commit()
        except BaseException as exc:
            second.abort(exc)
            raise
    assert raised.value.details["code"] == "PreconditionFailed"
    assert read_all(s3_client, bucket, key) == b"a" * size and uploads(s3_client, bucket) == []


def test_an_upload_cut_by_the_network_resumes_and_skips_the_stored_parts(s3_repository, s3_server, s3_client):
    bucket = s3_server.bucket(lock=False)
    repository = s3_repository(bucket)
    data = os.urandom(3 * PART + 777)
    with pytest.raises(ConnectionError), repository.open_write("node1", EPOCH, "data", resume=True) as sink:
        sink.write(data[: 2 * PART + 10])
        sink._drain()  # the first two parts are stored
        raise ConnectionError("the link dropped")
    key = repository._key("node1", EPOCH, "data")
    assert uploads(s3_client, bucket) == [key]  # kept for the resume, invisible as an object
    assert repository.files("node1", EPOCH) == {}
    with repository.open_write("node1", EPOCH, "data", resume=True) as sink:
        sink.write(data)
    assert sink.info["resumed_parts"] == 2 and read_all(s3_client, bucket, key) == data
    assert uploads(s3_client, bucket) == []


def test_any_other_failure_leaves_nothing_behind(s3_repository, s3_server, s3_client):
    bucket = s3_server.bucket(lock=False)
    repository = s3_repository(bucket)
    with pytest.raises(ValueError), repository.open_write("node1", EPOCH, "data", resume=True) as sink:
        sink.write(os.urandom(PART + 1))
        sink._drain()
        raise ValueError("the seal pipeline failed")
    assert uploads(s3_client, bucket) == [] and repository.files("node1", EPOCH) == {}


def dropped_read(repository, key: str, change) -> bytes:
    """Read 1 MiB, lose the connection, let ``change`` replace the object, then read the rest."""
    reader = S3ObjectReader(repository, key)
    head = reader.read(MIB)
    reader._body.close()  # the connection drops: the body ends early
    change()
    try:
        return head + reader.read()
    finally:
        reader.close()


def test_a_dropped_read_resumes_on_the_same_version(s3_repository, s3_server, s3_client):
    bucket = s3_server.bucket(lock=True)  # versioned
    repository = s3_repository(bucket)
    key = repository._key("node1", EPOCH, "data")
    original = os.urandom(3 * MIB)
    s3_client.put_object(Bucket=bucket, Key=key, Body=original)
    newer = os.urandom(3 * MIB)
    assert dropped_read(repository, key, lambda: s3_client.put_object(Bucket=bucket, Key=key, Body=newer)) == original


def test_a_dropped_read_never_splices_another_object(s3_repository, s3_server, s3_client):
    bucket = s3_server.bucket(lock=False)  # no versions: the ETag pins the object
    repository = s3_repository(bucket, retries=1)
    key = repository._key("node1", EPOCH, "data")
    s3_client.put_object(Bucket=bucket, Key=key, Body=os.urandom(3 * MIB))
    with pytest.raises(RepositoryError, match="Failed to download") as raised:
        dropped_read(repository, key, lambda: s3_client.put_object(Bucket=bucket, Key=key, Body=os.urandom(3 * MIB)))
    assert raised.value.details["code"] == "PreconditionFailed"
