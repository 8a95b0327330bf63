# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an epoch weighs, per asset and in total, like ``restic backup`` / ``borgmatic --stats``.

``plain`` is the data as it lies on the node (a tree's file bytes, a page-mapped SQLite
database's pages, else the artifact's plaintext), ``stored`` what this epoch added to the
repository (the artifact, its piece list and the pieces or objects it uploaded: reused ones
cost nothing), ``ratio`` plain/stored. Sizes print in IEC units (core/human.py).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import (
    human_bytes,
    human_rate,
    human_ratio,
    human_seconds,
    ratio,
    table,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.pieces import stored_bytes


def plain_bytes(artifact) -> int:
    """The asset's own size: a tree's files, a page-mapped database's pages, else the artifact's plaintext."""
    source = artifact.source or {}
    tree = (source.get("entries") or {}).get("bytes") if isinstance(source.get("entries"), dict) else None
    if isinstance(tree, int) and not isinstance(tree, bool):
        return tree
    if source.get("layout") == "pieces" and source.get("page_count") and source.get("page_size"):
        return int(source["page_count"]) * int(source["page_size"])
    return int(artifact.content_size or 0)


def _rate(size: int, seconds: Any) -> float | None:
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        return None
    return round(size / seconds, 1) if seconds > 0 else None


def artifact_stats(artifact) -> dict[str, Any]:
    source = artifact.source or {}
    plain, stored = plain_bytes(artifact), stored_bytes(artifact)
    seconds = source.get("seconds")
    return {
        "name": artifact.name,
        "asset_type": artifact.asset_type,
        "plain_bytes": plain,
        "stored_bytes": stored,
        "sealed_bytes": int(artifact.size),
        "ratio": ratio(plain, stored),
        "seconds": seconds,
        "rate_bytes_per_second": _rate(plain, seconds),
        "check": source.get("integrity") or source.get("check_result") or None,
    }


def _report(assets: list[dict[str, Any]], total: dict[str, Any], header: list[str], cells) -> dict[str, Any]:
    """Per asset and total, with ``lines``: the table an operator reads at the end of a run (backup, verify,
    restore); ``cells(entry)`` is one row, the total's first."""
    rows = [cells(a) for a in assets]
    rows.append(cells(dict(total, name="total", asset_type="%d asset(s)" % len(assets))))
    return {"assets": assets, "total": total, "lines": table(header, rows)}


def _total_seconds(assets: list[dict[str, Any]], seconds: float | None) -> float:
    if seconds is None:
        seconds = sum(float(a["seconds"] or 0) for a in assets)
    return round(float(seconds), 3)


def backup_stats(artifacts, seconds: float | None = None) -> dict[str, Any]:
    """Per asset and total of a backup: plain and stored (new) bytes, ratio, duration, throughput, check."""
    assets = [artifact_stats(a) for a in artifacts]
    plain = sum(a["plain_bytes"] for a in assets)
    stored = sum(a["stored_bytes"] for a in assets)
    seconds = _total_seconds(assets, seconds)
    checks = [a["check"] for a in assets if a["check"]]
    total = {
        "assets": len(assets),
        "plain_bytes": plain,
        "stored_bytes": stored,
        "ratio": ratio(plain, stored),
        "seconds": seconds,
        "rate_bytes_per_second": _rate(plain, seconds),
        "check": None if not checks else ("ok" if all(c == "ok" for c in checks) else "see assets"),
    }

    def cells(a: dict[str, Any]) -> list[str]:
        return [
            a["name"],
            str(a["asset_type"]),
            human_bytes(a["plain_bytes"]),
            human_bytes(a["stored_bytes"]),
            human_ratio(a["plain_bytes"], a["stored_bytes"]),
            human_seconds(a["seconds"]),
            human_rate(a["rate_bytes_per_second"]),
            a["check"] or "-",
        ]

    header = ["asset", "type", "plain", "stored (new)", "ratio", "duration", "throughput", "check"]
    return _report(assets, total, header, cells)


def _proven_checks(checks: Any) -> list[str]:
    """The asset's own checks as words: ``integrity ok (at capture, same bytes)``, ``open ok``."""
    if not isinstance(checks, dict):
        return []
    words = []
    for key, value in checks.items():
        if key in ("integrity_proven", "check_how") or isinstance(value, (dict, list)) or value is None:
            continue
        if isinstance(value, str):
            words.append("%s %s" % (key, value))
        if key == "integrity" and checks.get("integrity_proven"):
            proven = str(checks["integrity_proven"])
            words[-1] += " (%s, same bytes)" % ("by deep verify" if proven.startswith("by deep verify") else "at capture")
    return words


def _checked_report(entries, seconds, bytes_key: str, header: list[str], proven_base) -> dict[str, Any]:
    """Verify and restore: per asset the bytes moved, duration, throughput, result and what was proven."""
    assets = []
    for entry in entries:
        size = int(entry.get(bytes_key) or 0)
        ok = entry.get("ok", True)
        proven = [] if not ok else [proven_base(entry)] + _proven_checks(entry.get("checks"))
        if ok and entry.get("extra"):
            proven.append("%s checked" % ", ".join(sorted(entry["extra"])))
        assets.append(
            {
                "name": entry.get("name"),
                "asset_type": entry.get("asset_type"),
                "bytes": size,
                "seconds": entry.get("seconds"),
                "rate_bytes_per_second": _rate(size, entry.get("seconds")),
                "result": "ok" if ok else "FAILED",
                "proven": ", ".join(proven) if ok else entry.get("error") or "failed",
            }
        )
    size = sum(a["bytes"] for a in assets)
    seconds = _total_seconds(assets, seconds)
    failed = [a for a in assets if a["result"] != "ok"]
    total = {
        "assets": len(assets),
        "bytes": size,
        "seconds": seconds,
        "rate_bytes_per_second": _rate(size, seconds),
        "result": "FAILED (%d)" % len(failed) if failed else "ok",
        "proven": "",
    }

    def cells(a: dict[str, Any]) -> list[str]:
        return [
            str(a["name"]),
            str(a["asset_type"]),
            human_bytes(a["bytes"]),
            human_seconds(a["seconds"]),
            human_rate(a["rate_bytes_per_second"]),
            a["result"],
            a["proven"],
        ]

    return _report(assets, total, header, cells)


def _plain_proof(plain_sha256: Any) -> str:
    """What a decrypt proved: backed-up data has no plain SHA-256 in its manifest (age authenticates it, its size
    is compared; docs/safety.md), a map of pieces (files index, page map) both checksums."""
    if plain_sha256:
        return "signature, sealed and plain SHA-256"
    return "signature, sealed SHA-256, plain size (age-authenticated)"


def _restore_proof(entry: dict[str, Any]) -> str:
    return entry.get("proof") or _plain_proof(entry.get("sha256"))


def verify_stats(entries, deep: bool, seconds: float | None = None) -> dict[str, Any]:
    """Per asset and total of a verify: bytes checked (the plaintext when deep, else the sealed bytes),
    duration, throughput, result and what was proven (the signature, checksums, the asset's own check)."""
    header = ["asset", "type", "checked", "duration", "throughput", "result", "proven"]

    def base(entry: dict[str, Any]) -> str:
        return _plain_proof(entry.get("content_sha256")) if deep else "signature, sealed SHA-256"

    return _checked_report(entries, seconds, "checked_bytes", header, base)


def restore_stats(entries, seconds: float | None = None) -> dict[str, Any]:
    """Per asset and total of a restore: bytes restored, duration, throughput and what was proven."""
    rows = [dict(e, restored_bytes=e.get("plain_size", e.get("size"))) for e in entries]
    header = ["asset", "type", "restored", "duration", "throughput", "result", "proven"]
    return _checked_report(rows, seconds, "restored_bytes", header, _restore_proof)


def _latest_lock(copy, node: str, epoch: str) -> str | None:
    """The latest retention date among an S3 copy's locked objects of ``epoch`` (None: not locked)."""
    locked_objects = getattr(copy, "locked_objects", None)
    if locked_objects is None:
        return None
    dates = [item["retain_until"] for item in locked_objects(node, epoch) if item.get("retain_until")]
    return max(dates) if dates else None


def epoch_listing(
    manifests: list,
    copies: list[tuple[str, Any]],
    node: str,
    verified: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row per verified epoch, like ``restic snapshots``: ``listing`` (data) and ``lines`` (a table).

    ``manifests`` are the epochs' signed manifests, oldest first; ``copies`` (name, repository) the
    places where copies may exist (the local repository first, then each S3 target); ``verified``
    maps an epoch to when it was last verified (the controller's records).
    """
    verified = verified or {}
    present = {name: set(copy.complete_epochs(node)) for name, copy in copies}
    listing = []
    for manifest in manifests:
        epoch = manifest.epoch
        where = [name for name, _copy in copies if epoch in present[name]]
        locks = [_latest_lock(copy, node, epoch) for name, copy in copies if name in where]
        locks = [lock for lock in locks if lock]
        listing.append(
            {
                "epoch": epoch,
                "time": manifest.finished,
                "assets": [a.name for a in manifest.artifacts],
                "plain_bytes": sum(plain_bytes(a) for a in manifest.artifacts),
                "stored_bytes": sum(stored_bytes(a) for a in manifest.artifacts),
                "last_verified": verified.get(epoch),
                "locked_until": max(locks) if locks else None,
                "copies": where,
            }
        )
    header = ["epoch", "time (UTC)", "assets", "plain", "stored", "last verified", "locked until", "copies"]
    rows = [
        [
            row["epoch"],
            str(row["time"] or "-")[:19].replace("T", " "),
            ", ".join(row["assets"]),
            human_bytes(row["plain_bytes"]),
            human_bytes(row["stored_bytes"]),
            str(row["last_verified"] or "never"),
            str(row["locked_until"] or "-")[:19].replace("T", " "),
            ", ".join(row["copies"]) or "-",
        ]
        for row in listing
    ]
    lines = table(header, rows)
    lines.append(
        "%d epoch(s), %s plain, %s stored"
        % (
            len(listing),
            human_bytes(sum(r["plain_bytes"] for r in listing)),
            human_bytes(sum(r["stored_bytes"] for r in listing)),
        )
    )
    return {"listing": listing, "lines": lines}
