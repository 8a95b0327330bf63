"""The S3 server killed (SIGKILL) in the middle of an upload: no epoch that verifies, and the next run completes."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import verify_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import replicate
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import resolve_epoch

pytestmark = pytest.mark.timeout(120)


def test_a_killed_server_leaves_no_epoch_that_verifies_and_the_next_run_completes(
    fresh_s3_server, repository, s3_node, sqlite_db, signing_key, dbtools, tmp_path
):
    server = fresh_s3_server
    node = s3_node(repository, "node1")
    manifest = node.backup([node.sqlite_asset(sqlite_db, name="app-db")])
    bucket = server.bucket(lock=True)
    settings = {"object_lock_mode": "GOVERNANCE", "retain_days": 1, "max_concurrency": 1}
    # slow enough (4 MiB/s for 12 MiB) to be killed in the middle
    target = server.repository(bucket, "fleet", bandwidth_limit="4M", retries=1, **settings)
    outcome = {}
    copier = threading.Thread(
        target=lambda: outcome.update(replicate(repository, target, "node1", [manifest.epoch], signing_key.public_line))
    )
    copier.start()
    client = server.client()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # wait until the first part is stored, then pull the plug
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads") or []
        if uploads and client.list_parts(Bucket=bucket, Key=uploads[0]["Key"], UploadId=uploads[0]["UploadId"]).get(
            "Parts"
        ):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the upload did not start")
    server.kill()
    copier.join(60)
    assert not copier.is_alive()
    assert outcome["ok"] is False
    assert outcome["copied"] == []
    error = outcome["failed"]["error"]
    assert outcome["failed"]["epoch"] == manifest.epoch
    assert error.startswith("Failed to "), error
    assert "run again" in error, error

    server.start()  # same directory, same endpoint
    after = server.repository(bucket, "fleet", **settings)
    assert after.complete_epochs("node1") == []
    with pytest.raises(RepositoryError) as raised:
        verify_epoch(after, "node1", "latest", signing_key.public_line)
    assert "no complete epoch" in raised.value.message
    with pytest.raises(RepositoryError):
        resolve_epoch(after, "node1", manifest.epoch)

    result = replicate(repository, after, "node1", [manifest.epoch], signing_key.public_line)
    assert result["ok"], result
    (copied,) = result["copied"]
    assert copied["resumed_parts"] >= 1  # the part stored before the kill was not sent again
    assert after.complete_epochs("node1") == [manifest.epoch]
    assert server.client().list_multipart_uploads(Bucket=bucket).get("Uploads") is None
    report = verify_epoch(after, "node1", "latest", signing_key.public_line)
    assert report["ok"], report

    restored = type(node)(after, "node1", node.age_key, node.signing_key).restore(tmp_path / "staging")
    (artifact,) = restored["artifacts"]
    assert artifact["sha256"] is None and manifest.artifacts[0].content_sha256 is None  # no plaintext hash
    assert dbtools.rows(artifact["path"]) == dbtools.rows(sqlite_db)
