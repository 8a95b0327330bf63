# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One engine run in a fresh process, so that its peak RSS is its own.

Usage: python _engine.py backup|restore|verify CONFIG_JSON

Imports the collection's engine (plugins/module_utils) from the collections
directory named in the config and runs ``epoch.backup_epoch`` or
``epoch.restore_epoch`` (or a deep ``epoch.verify_epoch``) once, exactly as the modules do. Prints one JSON line:
the wall time of the call, the engine's peak RSS (getrusage RUSAGE_SELF
ru_maxrss, every thread of this process, plus RUSAGE_CHILDREN ru_maxrss: the
age CLI that encrypts, when installed, runs beside it), CPU times (both), and what
the engine reported (per-asset copy/check seconds, sizes, checksums).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def _rusage() -> dict:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        # The engine's subprocess (the age CLI, when it encrypts) runs beside it: the peaks add up.
        "maxrss_kib": own.ru_maxrss + children.ru_maxrss,
        "self_maxrss_kib": own.ru_maxrss,
        "children_maxrss_kib": children.ru_maxrss,
        "user_seconds": round(own.ru_utime + children.ru_utime, 3),
        "system_seconds": round(own.ru_stime + children.ru_stime, 3),
    }


def backup(config: dict) -> dict:
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

    recipients = seal.load_recipients([config["recipient"]])
    key = signing.load_private_key(config["signing_key"])
    repository = LocalRepository(config["repository"])
    asset = {"name": "nodedb", "type": "sqlite", "path": config["database"]}
    asset.update(config.get("asset_options") or {})
    began = time.monotonic()
    manifest = epoch.backup_epoch(
        repository,
        config["node"],
        [asset],
        recipients,
        [config["recipient"]],
        key,
        scratch_dir=config.get("scratch_dir"),
        level=int(config.get("level", 3)),
        full=bool(config.get("full", False)),
    )
    wall = time.monotonic() - began
    artifact = manifest.artifacts[0]
    return {
        "wall": round(wall, 4),
        "epoch": manifest.epoch,
        "artifact": artifact.file,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "content_size": artifact.content_size,
        "content_sha256": artifact.content_sha256,
        "copy_seconds": artifact.source.get("copy_seconds"),
        "check_seconds": artifact.source.get("check_seconds"),
        "integrity": artifact.source.get("integrity"),
        "asset_seconds": artifact.source.get("seconds"),
        "page_count": artifact.source.get("page_count"),
        # incremental (pieces) epochs: full or not, pages changed and stored, pieces uploaded
        "full": artifact.source.get("full"),
        "full_reason": artifact.source.get("full_reason"),
        "pages": artifact.source.get("pages"),
        "pieces": artifact.source.get("pieces"),
        "check": artifact.source.get("check"),
    }


def _reader(config: dict):
    """The age identities and the existing repository a restore or a deep verify reads."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

    return seal.load_identities(identity_files=[config["identity_file"]]), LocalRepository(
        config["repository"], create=False
    )


def restore(config: dict) -> dict:
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch

    identities, repository = _reader(config)
    began = time.monotonic()
    result = epoch.restore_epoch(
        repository,
        config["node"],
        config.get("epoch", "latest"),
        config["public_key"],
        identities,
        config["target_root"],
        check=config.get("check", "integrity"),
    )
    wall = time.monotonic() - began
    artifact = result["artifacts"][0]
    return {
        "wall": round(wall, 4),
        "epoch": result["epoch"],
        "path": artifact["path"],
        "size": artifact["size"],
        "sha256": artifact["sha256"],
        "checks": artifact["checks"],
    }


def verify(config: dict) -> dict:
    """A deep verify of one epoch; with ``proof``, the node's key records the signed integrity proof."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
    from ansible_collections.nodekeep.backup.plugins.module_utils.ops import epoch

    identities, repository = _reader(config)
    key = signing.load_private_key(config["signing_key"]) if config.get("proof") else None
    began = time.monotonic()
    report = epoch.verify_epoch(
        repository,
        config["node"],
        config.get("epoch", "latest"),
        config["public_key"],
        deep=True,
        identities=identities,
        scratch_dir=config.get("scratch_dir"),
        proof_key=key,
    )
    wall = time.monotonic() - began
    artifact = report["artifacts"][0]
    return {
        "wall": round(wall, 4),
        "ok": report["ok"],
        "checks": artifact.get("checks"),
        "proof": artifact.get("proof"),
    }


def main(argv) -> int:
    action, config = argv[0], json.loads(argv[1])
    sys.path.insert(0, config["collections"])
    began = time.monotonic()

    imported = time.monotonic() - began
    if config.get("variant"):
        sys.path.insert(0, config["bench_dir"])
        import _variants

        _variants.apply(config["variant"])
    outcome = {"backup": backup, "restore": restore, "verify": verify}[action](config)
    outcome["import_seconds"] = round(imported, 4)
    outcome.update(_rusage())
    print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
