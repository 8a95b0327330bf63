"""3-2-1: backup writes the local repository, epoch_copy replicates complete epochs to S3 targets.

The modules run through their ``main()`` as Ansible runs them.
"""

from __future__ import annotations

import hashlib
import socket
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import EndpointConnectionError

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import copy_epoch, verify_copies
from ansible_collections.nodekeep.backup.plugins.modules import epoch_copy, epoch_prune

pytestmark = pytest.mark.timeout(120)


def sha256_file(path) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def local_node(repository, s3_node, sqlite_db):
    node = s3_node(repository, "node1")
    node.asset = node.sqlite_asset(sqlite_db, name="app-db")
    return node


def copy_args(repository, signing_key, targets, **extra) -> dict:
    args = {"node": "node1", "repository": repository.root, "public_key": signing_key.public_line, "targets": targets}
    args.update(extra)
    return args


class TestThreeTwoOne:
    def test_local_then_two_targets_idempotent_and_verified_per_copy(
        self, s3_server, repository, local_node, signing_key, run_module, dbtools, sqlite_db, tmp_path
    ):
        first = local_node.backup([local_node.asset])
        locked, plain = s3_server.bucket(lock=True), s3_server.bucket(lock=False)
        targets = [
            s3_server.target(locked, "fleet", name="offsite-a", object_lock_mode="GOVERNANCE", retain_days=2),
            s3_server.target(plain, name="offsite-b", sse="AES256"),
        ]
        args = copy_args(repository, signing_key, targets)

        failed, check = run_module(epoch_copy, args, check_mode=True)
        assert not failed, check
        assert check["changed"] is True
        assert [t["would_copy"] for t in check["targets"]] == [[first.epoch], [first.epoch]]
        assert s3_server.repository(locked, "fleet").epoch_names("node1") == []  # check mode wrote nothing

        failed, result = run_module(epoch_copy, args)
        assert not failed, result
        assert result["changed"] is True
        for report in result["targets"]:
            assert report["ok"]
            (copied,) = report["copied"]
            assert copied["epoch"] == first.epoch
            assert copied["bytes"] == first.total_size
            assert [o["file"] for o in copied["objects"]] == [first.artifacts[0].file]
        assert result["targets"][0]["copied"][0]["objects"][0]["lock_mode"] == "GOVERNANCE"

        # idempotent: check mode and a second run find nothing to do
        failed, check = run_module(epoch_copy, args, check_mode=True)
        assert not failed and check["changed"] is False
        failed, again = run_module(epoch_copy, args)
        assert not failed and again["changed"] is False
        assert [t["skipped"] for t in again["targets"]] == [[first.epoch], [first.epoch]]

        # the next backup: only the new epoch travels, and is read back with verify
        second = local_node.backup([local_node.asset])
        failed, result = run_module(epoch_copy, dict(args, verify=True))
        assert not failed, result
        for report in result["targets"]:
            assert [c["epoch"] for c in report["copied"]] == [second.epoch]
            assert report["skipped"] == [first.epoch]
            assert [v["ok"] for v in report["verify"]] == [True]

        # verify reports per copy: local and both targets
        copies = [repository, s3_server.repository(locked, "fleet"), s3_server.repository(plain, sse="AES256")]
        report = verify_copies(copies, "node1", "latest", signing_key.public_line)
        assert report["ok"], report
        assert [c["location"] for c in report["copies"]] == [repository.root, "s3://%s/fleet" % locked, "s3://%s" % plain]
        assert {c["epoch"] for c in report["copies"]} == {second.epoch}

        # restore from S3 gives back the same data as the local copy and the source
        from_local = local_node.restore(tmp_path / "from-local")["artifacts"][0]
        from_s3_node = type(local_node)(copies[1], "node1", local_node.age_key, local_node.signing_key)
        from_s3 = from_s3_node.restore(tmp_path / "from-s3")["artifacts"][0]
        # no unkeyed hash of the database in the manifest or the results (docs/safety.md)
        assert from_s3["sha256"] is None and from_local["sha256"] is None and second.artifacts[0].content_sha256 is None
        assert sha256_file(from_s3["path"]) == sha256_file(from_local["path"])
        assert dbtools.rows(from_s3["path"]) == dbtools.rows(sqlite_db)

    def test_a_target_that_is_down_does_not_stop_the_others(
        self, s3_server, repository, local_node, signing_key, run_module
    ):
        first = local_node.backup([local_node.asset])
        bucket = s3_server.bucket(lock=False)
        down = dict(s3_server.target(bucket, name="down"), endpoint_url="http://127.0.0.1:%d" % closed_port(), retries=0)
        targets = [down, s3_server.target(bucket, name="up")]
        failed, result = run_module(epoch_copy, copy_args(repository, signing_key, targets))
        assert failed
        assert result["msg"].startswith("copy to 1 of 2 target(s) failed: down: Failed to ")
        assert "check endpoint_url and the network" in result["msg"]
        assert [c["epoch"] for c in result["targets"][1]["copied"]] == [first.epoch]
        assert s3_server.repository(bucket).complete_epochs("node1") == [first.epoch]

    def test_a_damaged_local_artifact_is_not_copied(self, s3_server, repository, local_node, signing_key, run_module):
        first = local_node.backup([local_node.asset])
        path = local_node.epoch_dir(first.epoch) / first.artifacts[0].file
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # bit rot after the backup
        path.write_bytes(bytes(data))
        bucket = s3_server.bucket(lock=False)
        failed, result = run_module(epoch_copy, copy_args(repository, signing_key, [s3_server.target(bucket)]))
        assert failed
        error = result["targets"][0]["failed"]["error"]
        assert "does not match its manifest" in error and "SHA-256 differs" in error
        assert "it was not copied" in error
        target = s3_server.repository(bucket)
        assert target.files("node1", first.epoch) == {}
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads") is None

    def test_a_forged_epoch_is_not_copied(self, s3_server, repository, local_node, other_signing_key, run_module):
        local_node.backup([local_node.asset])
        bucket = s3_server.bucket(lock=False)
        failed, result = run_module(epoch_copy, copy_args(repository, other_signing_key, [s3_server.target(bucket)]))
        assert failed
        assert "signed by a different key" in result["targets"][0]["failed"]["error"]
        assert s3_server.repository(bucket).nodes() == []


class TestResume:
    def test_a_copy_cut_by_the_network_resumes_part_by_part(
        self, s3_server, repository, local_node, signing_key, monkeypatch
    ):
        first = local_node.backup([local_node.asset])
        bucket = s3_server.bucket(lock=True)
        target = s3_server.repository(bucket, object_lock_mode="GOVERNANCE", retain_days=1, max_concurrency=1)
        send = target.client.upload_part

        def cut_at_part_three(**kwargs):
            if kwargs["PartNumber"] == 3:
                raise EndpointConnectionError(endpoint_url=s3_server.endpoint)
            return send(**kwargs)

        monkeypatch.setattr(target.client, "upload_part", cut_at_part_three)
        with pytest.raises(NodekeepError) as raised:
            copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
        assert raised.value.message.startswith("Failed to upload part 3 of s3://")
        assert "a copy resumes where it stopped" in raised.value.message
        # nothing visible: the epoch is not there, the upload waits (invisible) for the next run
        assert target.epoch_names("node1") == []
        assert len(s3_server.client().list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1

        monkeypatch.undo()
        result = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
        assert result["status"] == "copied"
        assert result["resumed_parts"] == 2
        assert target.complete_epochs("node1") == [first.epoch]
        assert s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads") is None
        assert verify_copies([target], "node1", first.epoch, signing_key.public_line)["ok"]

    def test_artifacts_left_by_an_interrupted_copy_are_checked_and_kept(
        self, s3_server, repository, local_node, signing_key, monkeypatch
    ):
        first = local_node.backup([local_node.asset])
        bucket = s3_server.bucket(lock=False)
        target = s3_server.repository(bucket)
        write = target.open_write

        def die_on_manifest(node, epoch, name, **kwargs):
            if name == MANIFEST_NAME:
                raise NodekeepError("Failed to upload manifest.json: the run was killed")
            return write(node, epoch, name, **kwargs)

        monkeypatch.setattr(target, "open_write", die_on_manifest)
        with pytest.raises(NodekeepError):
            copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
        assert target.incomplete_epochs("node1") == [first.epoch]
        monkeypatch.undo()
        result = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
        assert result["objects"][0]["kept"] == "already there (object metadata)"
        assert result["bytes"] == 0
        assert target.is_complete("node1", first.epoch)
        assert set(target.files("node1", first.epoch)) == {first.artifacts[0].file, MANIFEST_NAME, SIGNATURE_NAME}


class TestPruneModule:
    def test_one_policy_for_the_local_repository_and_the_targets(
        self, s3_server, repository, signing_key, run_module, make_epoch
    ):
        locked = s3_server.bucket(lock=True)
        target = s3_server.target(locked, "fleet", name="offsite", object_lock_mode="GOVERNANCE", retain_days=3)
        s3 = s3_server.repository(**{k: v for k, v in target.items() if k != "name"})
        now = datetime.now(timezone.utc)
        epochs = [epoch_name(now - timedelta(days=d)) for d in (20, 10, 1, 0)]
        for epoch in epochs:
            make_epoch(repository, "node1", epoch)
            make_epoch(s3, "node1", epoch)
        # at the target, the epoch of yesterday is locked for two more days; the older ones no longer
        args = {"node": "node1", "repository": repository.root, "public_key": signing_key.public_line,
                "targets": [target], "keep_last": 1, "incomplete_grace": "1h"}
        failed, plan = run_module(epoch_prune, dict(args, dry_run=True))
        assert not failed, plan
        assert plan["changed"] is False and plan["dry_run"] is True
        local, offsite = plan["copies"]
        assert local["kind"] == "local" and offsite["kind"] == "s3"
        assert [e["epoch"] for e in local["removed"]] == epochs[:-1]
        assert repository.complete_epochs("node1") == epochs and s3.complete_epochs("node1") == epochs

        failed, result = run_module(epoch_prune, args)
        assert not failed, result
        assert result["changed"] is True
        assert repository.complete_epochs("node1") == epochs[-1:]
        offsite = result["copies"][1]
        assert [e["epoch"] for e in offsite["removed"]] == epochs[:2]
        assert [e["epoch"] for e in offsite["locked"]] == [epochs[2]]
        assert offsite["locked"][0]["reasons"][-1].startswith("not removed: 3 object(s) locked (GOVERNANCE until ")
        assert s3.complete_epochs("node1") == epochs[2:]
        assert result["removed"] == 3 + 2
        assert result["locked"] == 1

        failed, again = run_module(epoch_prune, args)
        assert not failed and again["removed"] == 0 and again["changed"] is False

    def test_a_policy_that_keeps_nothing_fails_before_touching_anything(self, repository, signing_key, run_module):
        failed, result = run_module(epoch_prune, {"node": "node1", "repository": repository.root,
                                                  "public_key": signing_key.public_line})
        assert failed
        assert "the retention policy keeps nothing" in result["msg"]
