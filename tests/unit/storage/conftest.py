"""The storage unit tests' real S3 server.

``s3_server`` (session)
    one SeaweedFS on loopback for the storage unit tests (``tests/seaweedfs_server.py``, started in about
    a second); every test makes its own bucket with ``s3_server.bucket(lock=...)``.
``s3_client`` (session)
    one boto3 client with the admin keys.
``s3_repository`` (session)
    ``s3_repository(bucket, prefix="", **options)`` -> an ``S3Repository`` with the admin keys on ``s3_client``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("boto3")

from seaweedfs_server import SeaweedServer, weed_binary  # tests/seaweedfs_server.py

from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    weed_binary()
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def s3_client(s3_server):
    """One boto3 client for the session (making one costs a good part of a second on a loaded machine)."""
    return s3_server.client()


@pytest.fixture(scope="session")
def s3_repository(s3_server, s3_client):
    """``s3_repository(bucket, prefix="", **options)`` -> an ``S3Repository`` on the shared client."""

    def make(bucket: str, prefix: str = "", **options):
        settings = s3_server.target(bucket, prefix, **options)
        return S3Repository(S3Settings(**settings), client=s3_client)

    return make
