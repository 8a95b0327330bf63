# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Applying a retention plan to a repository: what to delete, kept chains, garbage collection."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from datetime import datetime, timedelta, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    duration_text,
    epoch_name,
    epoch_time,
    parse_calendar_duration,
    subtract_duration,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import manifest_needs
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import Decision, RetentionPolicy, plan
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import load_manifest

# --------------------------------------------------------------------------
# applying a plan to a repository
# --------------------------------------------------------------------------


def _signed_epochs(repository, node: str, public_key: str):

    valid, unverified = {}, []
    for epoch in repository.complete_epochs(node):
        try:
            valid[epoch] = load_manifest(repository, node, epoch, public_key)
        except NodekeepError as exc:
            unverified.append({"epoch": epoch, "reasons": ["not counted and not removed: %s" % exc.message]})
    return valid, unverified


def keep_chains(decisions: list[Decision], manifests: dict[str, Any]) -> list[Decision]:
    """Keep every epoch that a kept epoch's incremental snapshot send needs (its chain back to a full send)."""

    needed: dict[str, list[str]] = {}
    for decision in decisions:
        if decision.keep and decision.epoch in manifests:
            for epoch in manifest_needs(manifests[decision.epoch]):
                needed.setdefault(epoch, []).append(decision.epoch)
    for decision in decisions:
        if not decision.keep and decision.epoch in needed:
            decision.keep = True
            decision.reasons = [
                "kept: the incremental snapshot chain of kept epoch %s needs it"
                % ", ".join(sorted(needed[decision.epoch]))
            ]
    return decisions


def keep_live_chain(decisions: list[Decision], manifests: dict[str, Any]) -> list[Decision]:
    """Keep the newest base of a replication chain (docs/replication.md): the service may still append to it."""
    bases = [epoch for epoch, manifest in manifests.items() if manifest.labels.get("stream") == "base"]
    if bases:
        newest = max(bases)
        for decision in decisions:
            if decision.epoch == newest and not decision.keep:
                decision.keep = True
                decision.reasons = ["kept: the newest replication chain's base (the service may still append to it)"]
    return decisions


def keep_newest_number(decisions: list[Decision], manifests: dict[str, Any]) -> list[Decision]:
    """Keep the epoch with the highest signed sequence number as well as the newest by name.

    The next backup links to it (docs/manifest.md, "Sequence"): removing it would look like a rollback.
    They differ only when two backups of the node overlapped (the later name signed first).
    """
    numbered = [(m.sequence["number"], epoch) for epoch, m in manifests.items() if m.sequence is not None]
    if numbered:
        newest = max(numbered)[1]
        for decision in decisions:
            if decision.epoch == newest and not decision.keep:
                decision.keep = True
                decision.reasons = ["kept: the highest sequence number (the next backup links to it)"]
    return decisions


def apply_retention(
    repository,
    node: str,
    policy: RetentionPolicy,
    public_key: str,
    dry_run: bool = False,
    prune_incomplete: bool = True,
    incomplete_grace: str = "1d",
    now: datetime | None = None,
    pending_epoch: str | None = None,
) -> dict[str, Any]:
    """Plan from the signature-valid epochs and remove what the plan drops, whole or not at all.

    An epoch with a locked object is skipped and reported in ``locked`` (locks are never
    forced). Complete epochs whose signature does not verify are neither counted nor removed
    (``unverified``). Incomplete epochs (no signed manifest) older than ``incomplete_grace``
    are removed too when ``prune_incomplete``; younger ones may be a backup still running.
    With ``dry_run`` nothing is removed and ``removed`` lists what would go.

    ``pending_epoch`` (dry runs only): an epoch name counted as if it existed, the epoch a backup in
    check mode would make, so that its preview drops what the real run will drop; it is reported
    in ``kept`` with ``pending: true``.
    """
    now = now or datetime.now(timezone.utc)
    policy.validate()
    if pending_epoch and not dry_run:
        raise NodekeepError(
            "pending_epoch %r was given to a run that removes epochs" % (pending_epoch,),
            "a pending epoch only makes sense in a dry run (check mode); nothing was removed",
        )
    grace = parse_calendar_duration(incomplete_grace, "incomplete_grace")
    result: dict[str, Any] = {
        "location": repository.location,
        "kind": getattr(repository, "kind", "unknown"),
        "node": node,
        "policy": policy.describe(),
        "dry_run": bool(dry_run),
        "kept": [],
        "removed": [],
        "locked": [],
        "unverified": [],
        "incomplete": [],
        "errors": [],
    }
    valid, unverified = _signed_epochs(repository, node, public_key)
    result["unverified"] = unverified
    doomed = []
    if pending_epoch and valid and pending_epoch <= max(valid):
        # the new epoch's name is the next free second (Repository.new_epoch), always after the newest
        pending_epoch = epoch_name(epoch_time(max(valid)) + timedelta(seconds=1))
    names = list(valid) + ([pending_epoch] if pending_epoch else [])
    decisions = keep_live_chain(keep_chains(plan(names, policy), valid), valid)
    if not pending_epoch:  # the pending epoch will hold the highest number (it links to today's highest)
        decisions = keep_newest_number(decisions, valid)
    for decision in decisions:
        if decision.epoch == pending_epoch and decision.epoch not in valid:
            entry = decision.as_dict()
            entry["pending"] = True
            entry["reasons"].append("the epoch this backup would make (not written in check mode)")
            result["kept" if decision.keep else "removed"].append(entry)
        elif decision.keep:
            result["kept"].append(decision.as_dict())
        else:
            doomed.append(decision)
    cutoff = subtract_duration(now, grace)
    for epoch in repository.incomplete_epochs(node):
        if not prune_incomplete:
            result["incomplete"].append({"epoch": epoch, "reasons": ["incomplete; prune_incomplete is off"]})
        elif epoch_time(epoch) > cutoff:
            result["incomplete"].append(
                {
                    "epoch": epoch,
                    "reasons": ["incomplete but younger than %s: it may still be running" % duration_text(grace)],
                }
            )
        else:
            doomed.append(
                Decision(epoch, False, ["incomplete (no signed manifest) and older than %s" % duration_text(grace)])
            )
    for decision in sorted(doomed, key=lambda d: d.epoch):
        _remove(repository, node, decision, dry_run, now, result)
    gone = {entry["epoch"] for entry in result["removed"]} if dry_run else set()
    result["objects"] = collect_garbage(repository, node, public_key, grace, now, dry_run=dry_run, without=gone)
    # ``changes``: something is removed (or, in a dry run, would be); ``changed``: something was.
    result["changes"] = bool([e for e in result["removed"] if not e.get("pending")] or result["objects"].get("removed"))
    result["changed"] = result["changes"] and not dry_run
    return result


# --------------------------------------------------------------------------
# what an operator reads: the plan as text (restic forget --dry-run) and as a diff
# --------------------------------------------------------------------------


def _all_epochs(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(epoch, tag) of every epoch the report names before retention ran, oldest first."""
    rows = []
    for key in ("kept", "removed", "locked", "unverified", "incomplete"):
        for entry in report.get(key, []):
            if entry.get("pending") or "epoch" not in entry:
                continue
            tag = ""
            if key == "incomplete" or any(r.startswith("incomplete") for r in entry.get("reasons", [])):
                tag = "incomplete"
            elif key == "unverified":
                tag = "signature does not verify"
            rows.append((entry["epoch"], tag))
    return sorted(rows)


def _line(epoch: str, tag: str) -> str:
    return "%s%s\n" % (epoch, "  (%s)" % tag if tag else "")


def retention_diff(report: dict[str, Any]) -> dict[str, str]:
    """Ansible's diff of one copy: the epochs before and after (the ones removed, or that would be, go)."""
    gone = {entry["epoch"] for entry in report.get("removed", []) if not entry.get("pending")}
    rows = _all_epochs(report)
    title = "%s: epochs of %s" % (report.get("location", "?"), report.get("node", "?"))
    return {
        "before_header": title,
        "after_header": title + (" after retention (dry run)" if report.get("dry_run") else " after retention"),
        "before": "".join(_line(e, t) for e, t in rows),
        "after": "".join(_line(e, t) for e, t in rows if e not in gone),
    }


def retention_summary(report: dict[str, Any]) -> list[str]:
    """The plan of one copy as lines an operator reads: every epoch kept or removed, and why."""
    dry = report.get("dry_run")
    lines = [
        "%s (%s), node %s, policy: %s%s"
        % (
            report.get("location"),
            report.get("kind", "?"),
            report.get("node"),
            report.get("policy", "?"),
            " [dry run: nothing removed]" if dry else "",
        )
    ]

    def section(title: str, entries: list[dict[str, Any]]) -> None:
        if not entries:
            return
        lines.append("%s %d epoch%s:" % (title, len(entries), "" if len(entries) == 1 else "s"))
        for entry in entries:
            reasons = "; ".join(entry.get("reasons", [])) or entry.get("error", "")
            if entry.get("error"):
                reasons = "%s; error: %s" % ("; ".join(entry.get("reasons", [])), entry["error"])
            lines.append("  %s  %s" % (entry.get("epoch", "-"), reasons))

    section("keep", report.get("kept", []))
    section("would remove" if dry else "removed", report.get("removed", []))
    section("locked, kept (the policy drops)", report.get("locked", []))
    section("not counted (signature does not verify), kept", report.get("unverified", []))
    section("incomplete, left", report.get("incomplete", []))
    section("failed to remove", report.get("errors", []))
    objects = report.get("objects") or {}
    if objects.get("total"):
        lines.append(
            "objects: %d, referenced %d, %s %d (%d bytes)%s"
            % (
                objects["total"],
                objects.get("referenced", 0),
                "would remove" if dry else "removed",
                objects.get("removed", 0),
                objects.get("removed_bytes", 0),
                "; deferred: %s" % objects["deferred"] if objects.get("deferred") else "",
            )
        )
    return lines


# --------------------------------------------------------------------------
# garbage collection of content-addressed objects (files assets)
# --------------------------------------------------------------------------

GC_BATCH = 200


def _running(repository, node: str, grace: dict[str, int], now: datetime) -> str | None:
    """A backup of the node that may still be running: an incomplete epoch younger than the grace."""
    cutoff = subtract_duration(now, grace)
    young = [e for e in repository.incomplete_epochs(node) if epoch_time(e) > cutoff]
    if young:
        return "a backup of %s may be running (incomplete epoch %s); objects are collected on a later run" % (
            node,
            young[-1],
        )
    return None


def _referenced(repository, node: str, public_key: str, without: set[str]) -> dict[str, list[str]]:
    """Every object some complete epoch references; raises when one epoch's references cannot be known."""

    referenced: dict[str, list[str]] = {}
    for epoch in repository.complete_epochs(node):
        if epoch in without:
            continue
        manifest = load_manifest(repository, node, epoch, public_key)
        for artifact in manifest.artifacts:
            for name in asset_type(artifact.asset_type).object_references(repository, node, epoch, artifact):
                users = referenced.setdefault(name, [])
                if not users or users[-1] != epoch:
                    users.append(epoch)
    return referenced


def collect_garbage(
    repository,
    node: str,
    public_key: str,
    grace: dict[str, int],
    now: datetime,
    dry_run: bool = False,
    without: set[str] | None = None,
) -> dict[str, Any]:
    """Remove the node's objects that no complete epoch references any more.

    Never while a backup of the node may be running (an incomplete epoch younger
    than ``grace``: it may reuse an unreferenced object), never an object younger
    than ``grace``, and nothing at all when one complete epoch's manifest or list
    of objects cannot be read and checked (its references are then unknown).
    Locked objects (S3 Object Lock) stay and are counted in ``locked``. ``without``:
    epochs to treat as removed (a dry run's plan).
    """
    report: dict[str, Any] = {
        "total": 0,
        "referenced": 0,
        "removed": 0,
        "removed_bytes": 0,
        "young": 0,
        "locked": 0,
        "missing": 0,
        "deferred": None,
    }
    objects = repository.object_names(node)
    if not objects:
        return report
    report["total"] = len(objects)
    report["deferred"] = _running(repository, node, grace, now)
    if report["deferred"]:
        return report
    try:
        referenced = _referenced(repository, node, public_key, without or set())
    except NodekeepError as exc:
        report["deferred"] = "the objects an epoch references are unknown (%s); nothing was collected" % exc.message
        return report
    report["referenced"] = len(set(referenced) & set(objects))
    missing = sorted(set(referenced) - set(objects))
    report["missing"] = len(missing)
    if missing:
        # A missing piece breaks exactly the epochs that list it: name them (restore another, back up again).
        broken: dict[str, int] = {}
        for name in missing:
            for epoch in referenced[name]:
                broken[epoch] = broken.get(epoch, 0) + 1
        report["broken_epochs"] = [{"epoch": epoch, "missing_pieces": count} for epoch, count in sorted(broken.items())]
    cutoff = subtract_duration(now, grace).timestamp()
    garbage = sorted(name for name in objects if name not in referenced)
    doomed = [name for name in garbage if objects[name][1] <= cutoff]
    report["young"] = len(garbage) - len(doomed)
    if dry_run:
        report["removed"] = len(doomed)
        report["removed_bytes"] = sum(objects[name][0] for name in doomed)
        return report
    for start in range(0, len(doomed), GC_BATCH):
        if start:
            report["deferred"] = _running(repository, node, grace, now)
            if report["deferred"]:
                break
        for name in doomed[start : start + GC_BATCH]:
            try:
                repository.remove_object(node, name)
            except RepositoryError as exc:
                if exc.details.get("objects"):
                    report["locked"] += 1
                    continue
                raise
            report["removed"] += 1
            report["removed_bytes"] += objects[name][0]
    return report


def _remove(repository, node: str, decision: Decision, dry_run: bool, now: datetime, result: dict[str, Any]) -> None:
    entry = decision.as_dict()
    inspect = getattr(repository, "locked_objects", None)
    try:
        locked = inspect(node, decision.epoch, now=now) if inspect is not None else []
    except NodekeepError as exc:
        entry["error"] = exc.message
        result["errors"].append(entry)
        return
    if locked:
        entry["objects"] = locked
        entry["reasons"].append("not removed: %d object(s) locked (%s)" % (len(locked), locked[0]["reason"]))
        result["locked"].append(entry)
        return
    if dry_run:
        entry["dry_run"] = True
        result["removed"].append(entry)
        return
    try:
        repository.remove_epoch(node, decision.epoch)
    except RepositoryError as exc:
        objects = exc.details.get("objects")
        if objects:
            entry["objects"] = objects
            entry["reasons"].append("not removed: %s" % exc.message)
            result["locked"].append(entry)
        else:
            entry["error"] = exc.message
            result["errors"].append(entry)
        return
    result["removed"].append(entry)
