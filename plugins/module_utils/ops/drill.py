# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore drills: the report (JSON ``nodekeep.drill/v1`` and a self-contained HTML page),
RTO/RPO against targets. Its signature, its place in the repository, its history and its metrics are
in ``drill_store``.

Measures (all seconds):
- RTO of a node: drill start -> the node's data restored, checked and health-checked in
  staging (``verified_at - started``; nodes run concurrently, so this is the recovery time
  of that node in a fleet-wide loss). The drill's RTO is the largest node RTO.
- RPO of a node: drill start - the restored epoch's start (``manifest.started``); every
  asset's snapshot was taken at or after that moment, so this bounds the data loss.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
import re
from datetime import datetime, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE, epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_bytes, human_seconds
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    TOOL_NAME,
    TOOL_VERSION,
    check_name,
)

FORMAT = "nodekeep.drill/v1"


DEFAULT_SERIES = "drill"


DEFAULT_RPO = 300.0


DEFAULT_RTO = 1800.0


#: check results that mean "passed"; any other string value of a known check key is a failure
CHECK_KEYS = ("integrity", "quick", "quick_check", "integrity_check", "check", "entries", "status")


SECRET_SKIP = "secrets are never restored into staging (nodekeep_drill_include_secrets)"


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*\Z")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DrillError(NodekeepError):
    pass


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def parse_seconds(value: Any, what: str = "duration") -> float:
    """Seconds from a number or a text such as ``300``, ``90s``, ``5m``, ``30 min``, ``1h``, ``1d``."""
    if isinstance(value, bool):
        raise DrillError("%s %r is not a duration" % (what, value), "give seconds (300) or a text such as 5m, 1h")
    if isinstance(value, (int, float)):
        if value < 0:
            raise DrillError("%s %r is negative" % (what, value), "give a duration of 0 or more")
        return float(value)
    match = _DURATION_RE.match(str(value or ""))
    if not match:
        raise DrillError(
            "%s %r is not a duration" % (what, value), "give seconds (300) or a text such as 90s, 5m, 30min, 1h, 1d"
        )
    unit = (match.group(2) or "s")[0]
    return float(match.group(1)) * _UNITS[unit]


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(float(timestamp), timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (moment.microsecond // 1000)


def parse_time(text: Any) -> float | None:
    """A UNIX timestamp from a number, an ISO 8601 UTC time or an epoch name."""
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = str(text).strip()
    try:
        return float(value)
    except ValueError:
        pass
    value = value.rstrip("Z")
    for fmt in ("%Y%m%dT%H%M%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def drill_id(timestamp: float) -> str:
    return epoch_name(datetime.fromtimestamp(float(timestamp), timezone.utc))


# --------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------


def node_targets(raw: dict[str, Any] | None) -> dict[str, float]:
    raw = raw or {}
    return {
        "rpo_seconds": parse_seconds(
            raw.get("rpo_seconds", raw.get("rpo", DEFAULT_RPO)), "the RPO target (nodekeep_rpo_target)"
        ),
        "rto_seconds": parse_seconds(
            raw.get("rto_seconds", raw.get("rto", DEFAULT_RTO)), "the RTO target (nodekeep_rto_target)"
        ),
    }


def asset_targets(node: dict[str, float], per_asset: dict[str, Any] | None, name: str) -> dict[str, float]:
    raw = (per_asset or {}).get(name) or {}
    if not isinstance(raw, dict):
        raise DrillError(
            "the targets of asset %s are not a mapping: %r" % (name, raw),
            "set nodekeep_targets.%s to {rpo_seconds: N, rto_seconds: N}" % name,
        )
    result = dict(node)
    for key in ("rpo_seconds", "rto_seconds"):
        short = key.split("_", 1)[0]
        if key in raw or short in raw:
            result[key] = parse_seconds(raw.get(key, raw.get(short)), "nodekeep_targets.%s.%s" % (name, key))
    return result


def measure(seconds: float | None, target: float) -> dict[str, Any]:
    return {
        "seconds": None if seconds is None else round(float(seconds), 3),
        "target_seconds": round(float(target), 3),
        "met": seconds is not None and float(seconds) <= float(target),
    }


def verdict(item: dict[str, Any]) -> str:
    """A measure in the runbook's words: ``target met``, ``target missed`` or ``not measured``.

    A missed RPO/RTO target is never called a failure (docs/drills.md): the data was restored and
    checked, it only came too late or too old."""
    if item.get("seconds") is None:
        return "not measured"
    return "target met" if item.get("met") else "target missed"


def runbook_of(raw: Any) -> dict[str, str] | None:
    """The system's runbook (``nodekeep_runbook``): name, title, its RPO and RTO texts, where it lives."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise DrillError(
            "nodekeep_runbook is not a mapping: %r" % (raw,),
            "set nodekeep_runbook to {name: ..., title: ..., rpo: ..., rto: ...}",
        )
    known = ("name", "title", "rpo", "rto", "location")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise DrillError(
            "nodekeep_runbook has unknown keys: %s" % ", ".join(unknown),
            "nodekeep_runbook takes only %s" % ", ".join(known),
        )
    if not str(raw.get("name") or "").strip():
        raise DrillError("nodekeep_runbook has no name", "set nodekeep_runbook.name (for example runbook 000)")
    return {key: str(raw[key]).strip() for key in known if raw.get(key) not in (None, "")}


def target_sources(runbook: dict[str, str] | None, per_asset: dict[str, Any] | None, name: str | None = None):
    """Where each target comes from, in words: the asset's own setting, the runbook's RPO/RTO, or the variable."""
    sources = {}
    raw = ((per_asset or {}).get(name) or {}) if name else {}
    for key, variable in (("rpo", "nodekeep_rpo_target"), ("rto", "nodekeep_rto_target")):
        if isinstance(raw, dict) and ("%s_seconds" % key in raw or key in raw):
            sources[key] = "nodekeep_targets.%s.%s_seconds" % (name, key)
        elif runbook and runbook.get(key):
            sources[key] = "%s: %s" % (runbook["name"], runbook[key])
        else:
            sources[key] = variable
    return sources


def _count(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _entries_text(entries: dict[str, Any]) -> str:
    kinds = [(key, entries[key]) for key in ("files", "directories", "symlinks", "hardlinks")
             if isinstance(entries.get(key), int) and entries[key]]  # fmt: skip
    return ", ".join("%s %s" % (_count(value), key) for key, value in kinds) or "no entries"


def checked_how(asset_type: Any, checks: dict[str, Any] | None, check: str = "integrity") -> list[str]:
    """Plain-words lines of what the restore's deep check actually did, from its own results only.

    Every restored artifact's size and SHA-256 were compared with the signed manifest before its
    check ran (the restore refuses otherwise); that line is always there. A key the check did not
    return gives no line: nothing is claimed that did not run."""
    checks = checks or {}
    lines = ["size and SHA-256 compared with the signed manifest: ok"]
    if "integrity" in checks:
        pragma = "quick_check" if str(check) == "quick" else "integrity_check"
        if str(checks["integrity"]) == "skipped" or str(check) == "none":
            lines.append("SQLite check: not run (nodekeep_drill_check: none)")
        elif checks.get("integrity_proven"):
            lines.append("PRAGMA integrity_check: %s, %s" % (checks["integrity"], checks["integrity_proven"]))
        else:
            lines.append("PRAGMA %s: %s" % (pragma, checks["integrity"]))
        if "page_count" in checks:
            lines.append("page count equals the manifest's: %s pages" % _count(checks["page_count"]))
    if "column_families" in checks:
        families = checks.get("column_families") or []
        text = "RocksDB opened read-only, %d column famil%s" % (len(families), "y" if len(families) == 1 else "ies")
        keys = checks.get("keys")
        if isinstance(keys, dict):  # per column family
            keys = sum(int(value) for value in keys.values() if isinstance(value, int))
        if keys is not None:
            text += ", %s keys" % _count(keys)
        if "sequence" in checks:
            text += ", sequence %s" % _count(checks["sequence"])
        lines.append(text + ", compared with the manifest: ok")
    if isinstance(checks.get("entries"), dict) and "column_families" not in checks:
        lines.append("tree: %s, compared with the signed index: ok" % _entries_text(checks["entries"]))
    if "list" in checks:
        lines.append(
            "pg_restore --list: %s (%s archive entries, %s tables with data)"
            % (checks["list"], _count(checks.get("toc_entries")), _count(checks.get("table_data")))
        )
    if "restore" in checks:
        lines.append("loaded into a scratch database: %s" % (checks["restore"],))
    if "public_key" in checks:
        lines.append("the key derives the public key recorded in the manifest: ok")
    if "mode" in checks and asset_type == "config":
        lines.append("file mode %s restored" % checks["mode"])
    if "tree" in checks:
        lines.append("tree compared with %s: %s" % (checks.get("compared") or "the snapshot", checks["tree"]))
    return lines


# --------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------


def checks_failed(checks: dict[str, Any] | None) -> list[str]:
    failed = []
    for key, value in (checks or {}).items():
        if key in CHECK_KEYS and isinstance(value, str) and value.lower() != "ok":
            failed.append("%s: %s" % (key, value))
        if isinstance(value, bool) and key.endswith("ok") and not value:
            failed.append("%s: false" % key)
    return failed


def _health_by_asset(health: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    found = {}
    for item in health or []:
        artifact = item.get("nodekeep_drill_artifact") or {}
        name = item.get("asset") or item.get("name") or artifact.get("name")
        if not name:
            continue
        entry = dict(item)
        entry.setdefault("command_given", not item.get("skipped"))
        found[str(name)] = entry
    return found


def _failed_assets(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The assets whose restore failed, as a list of {name, error, ...}."""
    failed = raw.get("failed_assets") or []
    if isinstance(failed, dict):  # {ASSET: ERROR}, as the drill role records it
        failed = [{"name": key, "error": value} for key, value in sorted(failed.items())]
    return [item for item in failed if isinstance(item, dict)]


def _node_error(raw: dict[str, Any], restore: dict[str, Any], failed_assets: list) -> str | None:
    """Why the node's drill as a whole failed, if it did."""
    if not raw:
        return "no drill result: the node's drill did not run (unreachable, or failed before the restore)"
    error = raw.get("error")
    if not error and not restore.get("artifacts") and not failed_assets:
        return "nothing was restored (the epoch has no artifact to drill, or every asset was skipped)"
    return error


def _health_entry(probe: dict[str, Any] | None) -> dict[str, Any]:
    if not probe or not probe.get("command_given"):
        return {"ran": False, "ok": None}
    return {
        "ran": True,
        "ok": int(probe.get("rc", 1)) == 0,
        "rc": int(probe.get("rc", 1)),
        "attempts": int(probe.get("attempts") or 1),
    }


def point_in_time_entry(stream: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The point-in-time drill of a streamed asset (the drill role's ``tasks/stream.yml``) and what failed in it.

    It passes when the restore reached exactly the commit drawn and its integrity check says ok."""
    drawn = stream.get("drawn") or {}
    restore = stream.get("restore") or {}
    reached = restore.get("restored_commit_time")
    entry = {
        "seed": None if stream.get("seed") is None else str(stream.get("seed")),
        "drawn": drawn.get("time"),
        "window": {key: drawn.get(key) for key in ("start", "end", "until", "points", "chains")} if drawn else None,
        "last_shipped": drawn.get("last_shipped"),
        "reached": reached,
        "exact": bool(reached) and parse_time(reached) == parse_time(drawn.get("time")),
        "epoch": restore.get("epoch") or drawn.get("epoch"),
        "segment": restore.get("segment"),
        "commits_applied": restore.get("commits_applied"),
        "integrity": restore.get("integrity"),
        "size": restore.get("size"),
        "seconds": restore.get("seconds"),
        "error": None,
    }
    failed = []
    if not restore:
        entry["error"] = str(stream.get("error") or "the point-in-time restore did not run")
        failed.append("point-in-time restore FAILED: %s" % entry["error"])
    else:
        if str(entry["integrity"]).lower() != "ok":
            failed.append("point-in-time restore: integrity: %s" % entry["integrity"])
        if not entry["exact"]:
            failed.append(
                "point-in-time restore reached the commit of %s, not the commit drawn (%s)" % (reached, entry["drawn"])
            )
    return entry, failed


def _restored_asset(artifact: dict[str, Any], wanted: dict[str, float], health: dict[str, Any], rto, rpo, check):
    """The report entry of an asset that was restored (checked or not)."""
    failed_checks = checks_failed(artifact.get("checks"))
    size = artifact.get("size")
    entry = {
        "name": str(artifact.get("name")),
        "asset_type": artifact.get("asset_type"),
        "staged_path": artifact.get("path"),
        "source_path": artifact.get("source_path"),
        "size": artifact.get("size"),
        "sha256": artifact.get("sha256"),
        "restore_seconds": artifact.get("seconds"),
        "checks": artifact.get("checks") or {},
        "checks_ok": not failed_checks,
        "error": None,
        "health": health,
        "rto": measure(rto, wanted["rto_seconds"]),
        "rpo": measure(rpo, wanted["rpo_seconds"]),
        # added in 0.x: the plain size (a files tree's bytes, not its index) and the checks in words
        "plain_size": artifact.get("plain_size", size),
        "checked_how": checked_how(artifact.get("asset_type"), artifact.get("checks"), check),
    }
    entry["ok"] = bool(entry["checks_ok"] and health["ok"] is not False and entry["rto"]["met"] and entry["rpo"]["met"])
    return entry, failed_checks


def _asset_problems(where: str, entry: dict[str, Any], failed_checks: list[str], wanted, rto, rpo) -> list[str]:
    problems = ["%s: check failed: %s" % (where, text) for text in failed_checks]
    health = entry["health"]
    if health["ok"] is False:
        problems.append(
            "%s: health command failed in staging (exit %s after %s attempt(s))"
            % (where, health["rc"], health["attempts"])
        )
    if rpo is not None and not entry["rpo"]["met"]:
        problems.append(
            "%s: RPO %s misses the target %s" % (where, human_seconds(rpo), human_seconds(wanted["rpo_seconds"]))
        )
    if rto is not None and not entry["rto"]["met"]:
        problems.append(
            "%s: RTO %s misses the target %s" % (where, human_seconds(rto), human_seconds(wanted["rto_seconds"]))
        )
    return problems


def _failed_asset(item: dict[str, Any], wanted: dict[str, float]) -> dict[str, Any]:
    """The report entry of an asset whose restore or deep check failed."""
    return {
        "name": str(item.get("name")),
        "asset_type": item.get("asset_type"),
        "staged_path": None,
        "source_path": item.get("source_path"),
        "size": None,
        "sha256": None,
        "restore_seconds": None,
        "checks": {},
        "checks_ok": False,
        "error": str(item.get("error") or "the restore failed"),
        "health": {"ran": False, "ok": None},
        "rto": measure(None, wanted["rto_seconds"]),
        "rpo": measure(None, wanted["rpo_seconds"]),
        "ok": False,
        "plain_size": None,
        "checked_how": [],
    }


def _skipped(raw: dict[str, Any]) -> list[dict[str, str]]:
    return [
        {"name": str(item.get("name")), "reason": str(item.get("reason") or SECRET_SKIP)}
        if isinstance(item, dict)
        else {"name": str(item), "reason": SECRET_SKIP}
        for item in raw.get("skipped") or []
    ]


def rto_breakdown(raw: dict[str, Any], artifacts: list, started: float, verified_at: float) -> dict[str, Any] | None:
    """Where a node's RTO went, in seconds that add up to it: ``ship`` (drill start -> the epoch on the staging
    host: plan, pick, copy), ``restore`` (decrypt, decompress, write), ``check`` (each asset's deep check and the
    health commands) and ``other`` (the playbook's own steps between them); None without the role's times."""
    shipped, restored = parse_time(raw.get("shipped_at")), parse_time(raw.get("restored_at"))
    if shipped is None or restored is None or not started <= shipped <= restored <= verified_at:
        return None
    engine = sum(float(a.get("seconds") or 0) for a in artifacts)
    checks = sum(float(a.get("check_seconds") or 0) for a in artifacts)
    parts = {
        "ship": shipped - started,
        "restore": max(0.0, engine - checks),
        "check": checks + (verified_at - restored),
    }
    parts["other"] = max(0.0, (verified_at - started) - sum(parts.values()))
    return {key: round(value, 3) for key, value in parts.items()}


def asset_verdict(asset: dict[str, Any]) -> str:
    """``ok``, ``FAILED`` (not restored, a check or the health command failed) or ``target missed``."""
    if asset.get("error") or not asset.get("checks_ok") or (asset.get("health") or {}).get("ok") is False:
        return "FAILED"
    return "ok" if asset.get("ok") else "target missed"


def node_verdict(node: dict[str, Any]) -> str:
    if node.get("error") or not node.get("assets") or any(a["verdict"] == "FAILED" for a in node["assets"]):
        return "FAILED"
    if node.get("ok"):
        return "ok"
    return "target missed"


def _node_entry(raw: dict[str, Any], name: str, started: float) -> tuple[dict[str, Any], list[str]]:
    """One node's section of the report and its problems."""
    problems: list[str] = []
    targets = node_targets(raw.get("targets"))
    per_asset = raw.get("asset_targets") or {}
    restore = raw.get("restore") or {}
    manifest = restore.get("manifest") or {}
    epoch = restore.get("epoch") or raw.get("epoch")
    recovery_point = parse_time(manifest.get("started")) or parse_time(epoch)
    verified_at = parse_time(raw.get("verified_at"))
    failed_assets = _failed_assets(raw)
    error = _node_error(raw, restore, failed_assets)
    # The node's data is verified only when every asset was restored and deep-checked.
    restored_ok = not error and bool(restore.get("artifacts")) and not failed_assets
    rto = (verified_at - started) if (restored_ok and verified_at is not None) else None
    # an asset that was restored and checked has its RTO even when another asset of the node failed
    asset_rto = (verified_at - started) if (not error and verified_at is not None) else None
    epoch_rpo = max(0.0, started - recovery_point) if recovery_point is not None else None
    health = _health_by_asset(raw.get("health"))
    runbook = runbook_of(raw.get("runbook"))
    check = str(raw.get("check") or "integrity")
    # A streamed asset's recovery point is its newest shipped commit (its newest signed segment), not the epoch.
    streams = {str(item.get("name")): item for item in raw.get("streams") or [] if isinstance(item, dict)}
    points = []
    assets = []
    for artifact in restore.get("artifacts") or []:
        asset_name = str(artifact.get("name"))
        wanted = asset_targets(targets, per_asset, asset_name)
        stream = streams.pop(asset_name, None)
        pitr, pitr_failed = point_in_time_entry(stream) if stream is not None else (None, [])
        shipped = parse_time(pitr["last_shipped"]) if pitr and pitr["last_shipped"] else None
        point = shipped if shipped is not None else recovery_point
        rpo = max(0.0, started - point) if point is not None else None
        if point is not None:
            points.append(point)
        entry, failed_checks = _restored_asset(
            artifact, wanted, _health_entry(health.get(asset_name)), asset_rto, rpo, check
        )
        if pitr is not None:
            entry["point_in_time"] = pitr
            entry["recovery_point"] = iso(point)
            entry["recovery_point_source"] = "last shipped segment" if shipped is not None else "epoch"
            failed_checks += pitr_failed
            entry["checks_ok"] = entry["checks_ok"] and not pitr_failed
            entry["ok"] = entry["ok"] and not pitr_failed
        problems += _asset_problems("%s/%s" % (name, asset_name), entry, failed_checks, wanted, asset_rto, rpo)
        assets.append(entry)
    if streams and not error:
        error = "streamed asset(s) %s (nodekeep_drill_stream_assets) not in epoch %s: not drilled" % (
            ", ".join(sorted(streams)),
            epoch,
        )
    if points:
        recovery_point = min(points)
    rpo = max(0.0, started - recovery_point) if recovery_point is not None else epoch_rpo
    for item in failed_assets:
        entry = _failed_asset(item, asset_targets(targets, per_asset, str(item.get("name"))))
        assets.append(entry)
        problems.append("%s/%s: restore or deep check FAILED: %s" % (name, entry["name"], entry["error"]))
    for entry in assets:
        entry["target_sources"] = target_sources(runbook, per_asset, entry["name"])
        entry["verdict"] = asset_verdict(entry)
    assets.sort(key=lambda a: a["name"])
    if error:
        problems.append("%s: %s" % (name, error))
    artifacts = restore.get("artifacts") or []
    node = {
        "node": name,
        "ok": bool(not error and assets and all(a["ok"] for a in assets)),
        "error": error or None,
        "staging_host": raw.get("staging_host"),
        "staging_path": raw.get("staging_path"),
        "staged_copy_removed": bool(raw.get("staged_copy_removed")),
        "epoch": epoch,
        "recovery_point": iso(recovery_point),
        "node_started": iso(parse_time(raw.get("started"))),
        "verified_at": iso(verified_at) if restored_ok else None,
        "restore_seconds": round(sum(float(a.get("seconds") or 0) for a in artifacts), 3) if artifacts else None,
        "rto_breakdown": rto_breakdown(raw, artifacts, started, verified_at) if rto is not None else None,
        "rto": measure(rto, targets["rto_seconds"]),
        "rpo": measure(rpo, targets["rpo_seconds"]),
        "assets": assets,
        "skipped": _skipped(raw),
        "runbook": runbook,
        "check": check,
        "recovery_point_age_seconds": round(rpo, 3) if rpo is not None else None,
        "target_sources": target_sources(runbook, None),
    }
    node["verdict"] = node_verdict(node)
    return node, problems


def build_report(
    nodes: dict[str, dict[str, Any]],
    started: float,
    finished: float,
    series: str = DEFAULT_SERIES,
    identifier: str | None = None,
    labels: dict[str, Any] | None = None,
    reporter: str = "",
) -> dict[str, Any]:
    """The ``nodekeep.drill/v1`` document from each node's raw drill result (see docs/drills.md).

    ``nodes`` maps each drilled node to its raw result (the drill role's ``nodekeep_drill_node_result``;
    empty when the node's drill did not run).
    """
    if not nodes:
        raise DrillError("the drill has no node", "select nodes with -l (hosts of nodekeep_nodes)")
    identifier = identifier or drill_id(started)
    if not EPOCH_RE.match(identifier):
        raise DrillError("%r is not a drill id" % identifier, "drill ids look like 20260101T000000Z")
    entries, problems = [], []
    for name in sorted(nodes):
        check_name("node", name)
        entry, found = _node_entry(nodes[name] or {}, name, started)
        entries.append(entry)
        problems.extend(found)
    rtos = [n["rto"]["seconds"] for n in entries if n["rto"]["seconds"] is not None]
    rpos = [n["rpo"]["seconds"] for n in entries if n["rpo"]["seconds"] is not None]
    assets = [a for n in entries for a in n["assets"]]
    report = {
        "format": FORMAT,
        "series": series,
        "drill_id": identifier,
        "started": iso(started),
        "finished": iso(finished),
        "tool": {"name": TOOL_NAME, "version": TOOL_VERSION},
        "reporter": reporter or None,
        "labels": dict(labels or {}),
        "ok": bool(entries and all(n["ok"] for n in entries)),
        "rto_seconds": round(max(rtos), 3) if rtos else None,
        "rpo_seconds": round(max(rpos), 3) if rpos else None,
        "summary": {
            "nodes": len(entries),
            "nodes_ok": sum(1 for n in entries if n["ok"]),
            "assets": len(assets),
            "assets_ok": sum(1 for a in assets if a["ok"]),
            "checks_failed": sum(1 for a in assets if not a["checks_ok"]),
            "restores_failed": sum(1 for a in assets if a.get("error")),
            "health_failed": sum(1 for a in assets if a["health"]["ok"] is False),
            "rto_missed": sum(1 for n in entries if n["rto"]["seconds"] is not None and not n["rto"]["met"]),
            "rpo_missed": sum(1 for n in entries if n["rpo"]["seconds"] is not None and not n["rpo"]["met"]),
            "skipped_assets": sum(len(n["skipped"]) for n in entries),
        },
        "problems": problems,
        "nodes": entries,
    }
    runbooks = [n["runbook"] for n in entries if n["runbook"]]
    # the system's runbook, when every node that names one names the same
    report["runbook"] = runbooks[0] if runbooks and all(r == runbooks[0] for r in runbooks) else None
    report["verdict"] = (
        "PASSED" if report["ok"] else ("TARGET MISSED" if all(n["verdict"] != "FAILED" for n in entries) else "FAILED")
    )
    return report


def report_bytes(report: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, UTF-8, newline): the bytes that are signed."""
    return (json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def point_in_time_text(node: str, asset: dict[str, Any]) -> str:
    """One line on a streamed asset's point-in-time drill: the draw (seed, window), the commit reached, RPO, RTO."""
    pitr = asset["point_in_time"]
    window = pitr.get("window") or {}
    drawn = "commit %s drawn with seed %s among %s commit point(s) of %s chain(s) from %s to %s" % (
        pitr["drawn"],
        pitr["seed"],
        window.get("points"),
        window.get("chains"),
        window.get("start"),
        window.get("end"),
    )
    if pitr["error"]:
        outcome = "FAILED: %s" % pitr["error"]
    else:
        outcome = "reached commit %s (%s), %s commit(s) applied from epoch %s, %s, %s, integrity %s" % (
            pitr["reached"],
            "exact" if pitr["exact"] else "NOT the commit drawn",
            pitr["commits_applied"],
            pitr["epoch"],
            human_bytes(pitr["size"]) if pitr["size"] is not None else "? bytes",
            human_seconds(pitr["seconds"]),
            pitr["integrity"],
        )
    return "%s/%s point in time: %s; %s; RPO %s (last shipped commit %s), RTO %s" % (
        node,
        asset["name"],
        drawn if pitr["drawn"] else "no commit point drawn (seed %s)" % pitr["seed"],
        outcome,
        human_seconds(asset["rpo"]["seconds"]),
        pitr["last_shipped"],
        human_seconds(asset["rto"]["seconds"]),
    )


def summary_lines(report: dict[str, Any]) -> list[str]:
    """One line per node (and per point-in-time drill of a streamed asset) and one for the drill."""
    lines = []
    for node in report["nodes"]:
        if node["error"]:
            lines.append("%s: FAILED: %s" % (node["node"], node["error"]))
            continue
        lines.append(
            "%s: %s epoch %s (data of %s) on %s, %d asset(s) (%s); RTO %s (target %s, %s), RPO %s (target %s, %s)"
            % (
                node["node"],
                node["verdict"],
                node["epoch"],
                node["recovery_point"],
                node["staging_host"],
                len(node["assets"]),
                ", ".join("%s %s" % (a["name"], a["verdict"]) for a in node["assets"]),
                human_seconds(node["rto"]["seconds"]),
                human_seconds(node["rto"]["target_seconds"]),
                verdict(node["rto"]),
                human_seconds(node["rpo"]["seconds"]),
                human_seconds(node["rpo"]["target_seconds"]),
                verdict(node["rpo"]),
            )
        )
        lines += [point_in_time_text(node["node"], a) for a in node["assets"] if a.get("point_in_time")]
    summary = report["summary"]
    lines.append(
        "drill %s%s: %s, %d/%d node(s) ok, %d/%d asset(s) ok, RTO %s, worst RPO %s"
        % (
            report["drill_id"],
            " (%s)" % report["runbook"]["name"] if report.get("runbook") else "",
            report["verdict"],
            summary["nodes_ok"],
            summary["nodes"],
            summary["assets_ok"],
            summary["assets"],
            human_seconds(report["rto_seconds"]),
            human_seconds(report["rpo_seconds"]),
        )
    )
    return lines
