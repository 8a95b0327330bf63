"""The modules with ``repository: s3://BUCKET/PREFIX``, run through their ``main()`` as Ansible runs them.

An ``s3://`` repository has no connection options of its own: endpoint, region and credentials come
from the AWS sources of the host the module runs on (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...,
``AWS_PROFILE`` with ``~/.aws/config``), here set with ``monkeypatch`` as a task's ``environment:`` would.
A node's epochs are backed up locally and copied to a bucket by ``epoch_copy``; ``epoch_info``,
``epoch_restore`` and ``integrity_check`` then read them straight from ``s3://``.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/integration: module_driver

from module_driver import failed, run_module, succeeded

from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

pytestmark = pytest.mark.timeout(180)

NODE = "node1"
# An epoch an interrupted copy left at the target: artifacts, no signed manifest.
INCOMPLETE = "20990101T000000Z"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_tree(root: Path, count: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    for number in range(count):
        path = root / ("d%d" % (number % 4)) / ("blob-%03d" % number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(1, 40_000)))


def isolate_aws(monkeypatch, tmp_path: Path) -> None:
    """No AWS setting of this machine or user leaks in: only what a test sets."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws_env(monkeypatch, tmp_path, s3_server):
    """The server's endpoint and keys in the environment, as ``environment:`` on the task sets them."""
    isolate_aws(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


@pytest.fixture(scope="module")
def fleet(s3_server, make_node, sqlite_db, tree, tmp_path_factory):
    """node1 backed up twice locally (a SQLite database and a files tree), copied to a bucket by epoch_copy."""
    root = tmp_path_factory.mktemp("fleet")
    local = LocalRepository(str(root / "repo"))
    node = make_node(local, NODE)
    store = root / "da"
    make_tree(store, 60)
    assets = [
        node.sqlite_asset(sqlite_db, name="app-db"),
        {"name": "da", "type": "files", "path": str(store), "state_dir": str(root / "state")},
    ]
    first = node.backup(assets)
    first_tree = tree(store)
    (store / "d0" / "blob-000").write_bytes(b"changed after the first epoch")
    (store / "new-file").write_bytes(b"added after the first epoch")
    second = node.backup(assets)

    bucket = s3_server.bucket(lock=False)
    copied = succeeded(
        run_module(
            "epoch_copy",
            {"node": NODE, "repository": local.root, "public_key": node.public_line,
             "targets": [s3_server.target(bucket, "fleet")]},
        )
    )  # fmt: skip
    assert [c["epoch"] for c in copied["targets"][0]["copied"]] == [first.epoch, second.epoch]
    s3_server.repository(bucket, "fleet").put_bytes(NODE, INCOMPLETE, "app-db.sqlite.zst.age", b"partial")
    return SimpleNamespace(
        local=local,
        node=node,
        bucket=bucket,
        url="s3://%s/fleet" % bucket,
        epochs=[first.epoch, second.epoch],
        manifests=[first, second],
        store=store,
        first_tree=first_tree,
        sqlite_db=sqlite_db,
    )


def info_args(fleet, repository: str, **extra) -> dict:
    return dict({"node": NODE, "repository": repository, "public_key": fleet.node.public_line}, **extra)


def read_args(fleet, age_key, repository: str, **extra) -> dict:
    return info_args(fleet, repository, identity_files=[str(age_key.identity_path)], **extra)


class TestEpochInfo:
    def test_lists_the_copied_epochs_as_the_local_repository_does(self, fleet, aws_env):
        local = succeeded(run_module("epoch_info", info_args(fleet, fleet.local.root)))
        remote = succeeded(run_module("epoch_info", info_args(fleet, fleet.url)))
        assert remote["epochs"] == local["epochs"] == fleet.epochs
        assert remote["latest"] == fleet.epochs[-1]
        assert remote["incomplete"] == [INCOMPLETE] and local["incomplete"] == []
        assert remote["invalid"] == {}
        assert remote["summaries"] == local["summaries"]
        assert [s["epoch"] for s in remote["summaries"]] == fleet.epochs
        assert remote["changed"] is False

    def test_without_public_key_and_in_check_mode(self, fleet, aws_env):
        result = succeeded(run_module("epoch_info", {"node": NODE, "repository": fleet.url}, check_mode=True))
        assert result["epochs"] == fleet.epochs and result["incomplete"] == [INCOMPLETE]
        assert "summaries" not in result

    def test_a_trailing_slash_and_another_node(self, fleet, aws_env):
        result = succeeded(run_module("epoch_info", info_args(fleet, fleet.url + "/")))
        assert result["epochs"] == fleet.epochs
        other = succeeded(run_module("epoch_info", {"node": "node2", "repository": fleet.url}))
        assert other["epochs"] == [] and other["latest"] is None

    def test_a_forged_epoch_is_invalid_not_latest(self, fleet, aws_env, other_signing_key):
        result = succeeded(
            run_module("epoch_info", dict(info_args(fleet, fleet.url), public_key=other_signing_key.public_line))
        )
        assert result["epochs"] == [] and result["latest"] is None
        assert sorted(result["invalid"]) == fleet.epochs

    def test_endpoint_and_credentials_from_an_aws_profile(self, fleet, s3_server, monkeypatch, tmp_path):
        isolate_aws(monkeypatch, tmp_path)
        (tmp_path / "no-aws-config").write_text(
            "[profile nodekeep]\nregion = us-east-1\nendpoint_url = %s\n" % s3_server.endpoint
        )
        (tmp_path / "no-aws-credentials").write_text(
            "[nodekeep]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
            % (s3_server.access_key, s3_server.secret_key)
        )
        monkeypatch.setenv("AWS_PROFILE", "nodekeep")
        result = succeeded(run_module("epoch_info", info_args(fleet, fleet.url)))
        assert result["epochs"] == fleet.epochs


class TestEpochRestore:
    def test_check_mode_plans_and_writes_nothing(self, fleet, aws_env, age_key, tmp_path):
        dest = tmp_path / "staging"
        result = succeeded(run_module("epoch_restore", read_args(fleet, age_key, fleet.url, dest=str(dest)), True))
        assert result["epoch"] == fleet.epochs[-1]
        assert [a["name"] for a in result["artifacts"]] == ["app-db", "da"]
        assert not dest.exists()

    def test_restores_the_latest_epoch_from_s3_as_the_source(self, fleet, aws_env, age_key, tmp_path, dbtools, tree):
        dest = tmp_path / "staging"
        result = succeeded(run_module("epoch_restore", read_args(fleet, age_key, fleet.url, dest=str(dest))))
        assert result["epoch"] == fleet.epochs[-1] and result["changed"] is True
        restored = {a["name"]: a for a in result["artifacts"]}
        database = Path(restored["app-db"]["path"])
        assert database == dest / str(fleet.sqlite_db).lstrip("/")
        assert restored["app-db"]["checks"]["integrity"] == "ok"
        assert restored["app-db"]["sha256"] is None  # no unkeyed hash of the database is reported
        assert dbtools.rows(database) == dbtools.rows(fleet.sqlite_db)  # row for row
        assert tree(restored["da"]["path"]) == tree(fleet.store)  # byte for byte, every file

        # the same bytes as a restore from the local repository
        local = succeeded(
            run_module("epoch_restore", read_args(fleet, age_key, fleet.local.root, dest=str(tmp_path / "local")))
        )
        assert {a["name"]: a["sha256"] for a in local["artifacts"]} == {n: a["sha256"] for n, a in restored.items()}

    def test_an_older_epoch_and_one_artifact(self, fleet, aws_env, age_key, tmp_path, tree):
        dest = tmp_path / "staging"
        args = read_args(fleet, age_key, fleet.url, dest=str(dest), epoch=fleet.epochs[0], artifacts=["da"])
        result = succeeded(run_module("epoch_restore", args))
        (artifact,) = result["artifacts"]
        assert result["epoch"] == fleet.epochs[0] and artifact["name"] == "da"
        assert tree(artifact["path"]) == fleet.first_tree
        assert tree(artifact["path"]) != tree(fleet.store)

    def test_the_incomplete_epoch_is_refused(self, fleet, aws_env, age_key, tmp_path):
        args = read_args(fleet, age_key, fleet.url, dest=str(tmp_path / "staging"), epoch=INCOMPLETE)
        failed(run_module("epoch_restore", args), INCOMPLETE)
        assert not (tmp_path / "staging").exists()


class TestIntegrityCheck:
    def test_deep_verify_from_s3(self, fleet, aws_env, age_key):
        result = succeeded(run_module("integrity_check", read_args(fleet, age_key, fleet.url, deep=True)))
        assert result["ok"] and result["signature"] == "valid" and result["epoch"] == fleet.epochs[-1]
        assert result["problems"] == []
        assert {a["name"]: (a["ok"], a["checksum"], a["deep"]) for a in result["artifacts"]} == {
            "app-db": (True, "ok", "ok"),
            "da": (True, "ok", "ok"),
        }
        assert result["changed"] is False

    def test_rolling_subset_on_s3_alone(self, fleet, aws_env):
        seen = []
        for run in (1, 2):
            result = succeeded(run_module("integrity_check", info_args(fleet, fleet.url, subset="%d/2" % run)))
            assert [c["location"] for c in result["copies"]] == [fleet.url]
            seen += [(c["epoch"], c["artifact"]) for c in result["copies"][0]["checked"]]
        assert sorted(seen) == sorted((e, n) for e in fleet.epochs for n in ("app-db", "da"))

    def test_damage_in_the_bucket_is_found(self, s3_server, aws_env, make_epoch, signing_key):
        bucket = s3_server.bucket(lock=False)
        offsite = s3_server.repository(bucket, "fleet")
        epoch = "20261120T023000Z"
        make_epoch(offsite, NODE, epoch, names=("db", "keys"))
        url = "s3://%s/fleet" % bucket
        args = {"node": NODE, "repository": url, "public_key": signing_key.public_line}
        assert succeeded(run_module("integrity_check", args))["ok"]
        s3_server.client().put_object(Bucket=bucket, Key="fleet/node1/%s/db.bin.zst.age" % epoch, Body=b"rot")
        message = failed(run_module("integrity_check", args), "does not verify", "db:")
        assert "keys:" not in message


def drill_node(started: float) -> dict:
    """A node's drill result as the drill role hands it to drill_report: one SQLite asset restored and checked."""
    return {
        "node": NODE,
        "staging_host": "stage1",
        "staging_path": "/srv/nodekeep-drills/%s" % NODE,
        "started": started,
        "verified_at": started + 12,
        "restore": {
            "epoch": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started - 60)),
            "artifacts": [{"name": "app-db", "asset_type": "sqlite", "path": "/srv/x/var/lib/app.db",
                           "source_path": "/var/lib/app.db", "size": 4096, "sha256": "0" * 64,
                           "checks": {"integrity": "ok", "page_count": 1}, "seconds": 0.5}],
        },
        "health": [],
        "targets": {"rpo_seconds": 300, "rto_seconds": 1800},
        "asset_targets": {},
    }  # fmt: skip


class TestOtherModules:
    """Every other module with a ``repository`` option takes an ``s3://`` URL the same way."""

    def test_epoch_backup_writes_straight_to_s3(self, s3_server, aws_env, make_node, sqlite_db, signing_key, age_key):
        url = "s3://%s/direct" % s3_server.bucket(lock=False)
        node = make_node(None, NODE)
        args = {"node": NODE, "repository": url, "recipients": [age_key.recipient],
                "signing_key": str(signing_key.path), "assets": [node.sqlite_asset(sqlite_db)]}  # fmt: skip
        result = succeeded(run_module("epoch_backup", args))
        assert result["location"] == "%s/%s/%s" % (url, NODE, result["epoch"])
        info = succeeded(run_module("epoch_info", {"node": NODE, "repository": url, "public_key": node.public_line}))
        assert info["epochs"] == [result["epoch"]] and info["incomplete"] == []

    def test_age_seal_epoch_goes_to_s3(self, s3_server, aws_env, signing_key, age_key, tmp_path):
        url = "s3://%s/keys" % s3_server.bucket(lock=False)
        secret = tmp_path / "node.key"
        secret.write_bytes(os.urandom(64))
        args = {"state": "epoch", "repository": url, "node": "node1.keys", "recipients": [age_key.recipient],
                "assets": [{"name": "node-key", "path": str(secret)}], "signing_key": str(signing_key.path)}  # fmt: skip
        result = succeeded(run_module("age_seal", args))
        assert result["location"].startswith(url + "/node1.keys/")
        args = {"node": "node1.keys", "repository": url, "public_key": signing_key.public_line}
        info = succeeded(run_module("epoch_info", args))
        assert info["epochs"] == [result["epoch"]]

    def test_drill_report_is_stored_in_the_bucket_and_read_back(self, s3_server, aws_env, signing_key):
        bucket = s3_server.bucket(lock=False)
        url = "s3://%s/fleet" % bucket
        reports = []
        for started in (1_800_000_000.0, 1_800_003_600.0):
            args = {"repository": url, "started": started, "finished": started + 20,
                    "nodes": {NODE: drill_node(started)}, "signing_key": str(signing_key.path),
                    "public_key": signing_key.public_line, "reporter": "stage1"}  # fmt: skip
            reports.append(succeeded(run_module("drill_report", args)))
        first, second = reports
        assert first["ok"] and second["ok"]
        assert second["locations"]["signature"] == "%s/_drills/drill/%s/report.json.sig" % (url, second["drill_id"])
        assert [h["drill_id"] for h in second["history"]] == [first["drill_id"]]  # read back from the bucket
        keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]}
        assert keys == {
            "fleet/_drills/drill/%s/%s" % (report["drill_id"], name)
            for report in reports
            for name in ("report.html", "report.json", "report.json.sig")
        }

    def test_epoch_prune_applies_the_policy_to_an_s3_repository(self, fleet, aws_env):
        result = succeeded(run_module("epoch_prune", info_args(fleet, fleet.url, keep_last=1, dry_run=True)))
        (report,) = result["copies"]
        assert report["location"] == fleet.url and report["kind"] == "s3"
        assert [e["epoch"] for e in report["kept"]] == fleet.epochs[-1:]
        assert [e["epoch"] for e in report["removed"]] == fleet.epochs[:1]
        assert [e["epoch"] for e in report["incomplete"]] == [INCOMPLETE]  # younger than the grace: kept
        assert succeeded(run_module("epoch_info", info_args(fleet, fleet.url)))["epochs"] == fleet.epochs  # dry run

    def test_epoch_copy_from_an_s3_repository_to_another_bucket(self, fleet, s3_server, aws_env):
        bucket = s3_server.bucket(lock=False)
        args = info_args(fleet, fleet.url, targets=[s3_server.target(bucket, "second")], verify=True)
        result = succeeded(run_module("epoch_copy", args))
        (report,) = result["targets"]
        assert [c["epoch"] for c in report["copied"]] == fleet.epochs
        assert [v["ok"] for v in report["verify"]] == [True, True]


class TestUnreachable:
    MODULES = ("epoch_info", "epoch_restore", "integrity_check")

    @staticmethod
    def args(module, fleet, age_key, url, dest) -> dict:
        if module == "epoch_info":
            return info_args(fleet, url)
        if module == "epoch_restore":
            return read_args(fleet, age_key, url, dest=str(dest))
        return read_args(fleet, age_key, url, deep=True)

    @pytest.mark.parametrize("module", MODULES)
    def test_a_wrong_endpoint_port_is_named(self, module, fleet, aws_env, age_key, tmp_path):
        port = closed_port()
        aws_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:%d" % port)
        started = time.monotonic()
        result = run_module(module, self.args(module, fleet, age_key, fleet.url, tmp_path / "staging"))
        message = failed(
            result,
            "Failed to list %s/%s/" % (fleet.url, NODE),
            "could not connect to the endpoint url",
            "http://127.0.0.1:%d/" % port,
            "could not be reached",
        )
        assert time.monotonic() - started < 60, message
        assert result["error_kind"] == "repository"
        assert not (tmp_path / "staging").exists()

    @pytest.mark.parametrize("module", MODULES)
    def test_a_missing_bucket_is_named(self, module, fleet, aws_env, age_key, tmp_path):
        url = "s3://nk-missing-%s/fleet" % os.urandom(4).hex()
        result = run_module(module, self.args(module, fleet, age_key, url, tmp_path / "staging"))
        failed(result, url, "NoSuchBucket", "the bucket does not exist")

    def test_missing_credentials_are_named(self, fleet, s3_server, monkeypatch, tmp_path):
        isolate_aws(monkeypatch, tmp_path)
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
        result = run_module("epoch_info", info_args(fleet, fleet.url))
        failed(result, fleet.url, "no AWS credentials were found", "AWS_ACCESS_KEY_ID")
