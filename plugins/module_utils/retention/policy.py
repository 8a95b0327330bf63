# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: which epochs to keep, and removing the others from any repository.

``plan()`` is pure: epoch names in, one decision per epoch out, each with the
reasons (the rules that keep it, or why it goes). ``apply_retention()`` runs a
plan on a ``Repository`` (local or S3, the same code), counting only complete
epochs whose signed manifest verifies against the node's public key.

Rules (as restic's ``forget``): ``keep_last`` N newest epochs; ``keep_hourly``,
``keep_daily``, ``keep_weekly``, ``keep_monthly``, ``keep_yearly`` N: one epoch
for each of the N most recent hours/days/ISO weeks/months/years that have one;
``keep_within`` DURATION: every epoch within that time of the newest epoch.
Periods are UTC. The newest epoch is always kept, and a policy that keeps
nothing is refused.

Which epoch represents a period: by default the *first* one of the period
(``pick: first``). Unlike the newest (``pick: last``, restic's choice), the first
never changes once chosen, so an Object Lock set when the epoch is uploaded
("COMPLIANCE for the monthly") lands on the epoch retention keeps for that month.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.errors import NodekeepError, RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.manifest import EPOCH_RE, epoch_time

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")
PICKS = ("first", "last")
_DURATION_RE = re.compile(r"(\d+)\s*(y|m|w|d|h)", re.IGNORECASE)


def period_key(period: str, moment: datetime) -> str:
    """The UTC bucket an instant falls in: ``2026-11-22T02``, ``2026-11-22``, ``2026-W47``, ``2026-11``, ``2026``."""
    moment = moment.astimezone(timezone.utc)
    if period == "hourly":
        return moment.strftime("%Y-%m-%dT%H")
    if period == "daily":
        return moment.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _day = moment.isocalendar()
        return "%04d-W%02d" % (year, week)
    if period == "monthly":
        return moment.strftime("%Y-%m")
    if period == "yearly":
        return moment.strftime("%Y")
    raise ValueError("unknown period %r" % (period,))


def parse_duration(text: str) -> dict[str, int]:
    """``"1y6m"``, ``"2w"``, ``"36h"``, ``"7d 12h"`` -> {"y": 1, "m": 6, ...} (calendar years and months)."""
    value = str(text or "").strip()
    parts = _DURATION_RE.findall(value)
    if not value or not parts or _DURATION_RE.sub("", value).strip():
        raise NodekeepError(
            "keep_within %r is not a duration" % (text,),
            "write it as numbers with units y (years), m (months), w (weeks), d (days), h (hours), e.g. 7d or 1y6m",
        )
    result = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0}
    for number, unit in parts:
        result[unit.lower()] += int(number)
    return result


def subtract_duration(moment: datetime, duration: dict[str, int]) -> datetime:
    """``moment`` minus a calendar duration (months clamp to the month's last day)."""
    months = moment.month - 1 - duration["m"] - 12 * duration["y"]
    year = moment.year + months // 12
    month = months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    shifted = moment.replace(year=year, month=month, day=day)
    return shifted - timedelta(weeks=duration["w"], days=duration["d"], hours=duration["h"])


def duration_text(duration: dict[str, int]) -> str:
    return "".join("%d%s" % (duration[u], u) for u in ("y", "m", "w", "d", "h") if duration[u]) or "0h"


@dataclass
class RetentionPolicy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: str | None = None
    pick: str = "first"

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RetentionPolicy:
        policy = cls(**{k: options[k] for k in cls.__dataclass_fields__ if options.get(k) is not None})
        policy.validate()
        return policy

    def counts(self) -> dict[str, int]:
        return {period: int(getattr(self, "keep_" + period) or 0) for period in PERIODS}

    def validate(self) -> None:
        for name in ("keep_last",) + tuple("keep_" + p for p in PERIODS):
            value = getattr(self, name)
            if value is None or int(value) < 0:
                raise NodekeepError("%s is %r" % (name, value), "give a count of zero or more")
        if self.pick not in PICKS:
            raise NodekeepError("pick %r is not valid" % (self.pick,), "use first or last")
        if self.keep_within:
            parse_duration(self.keep_within)
        if not self.keep_last and not any(self.counts().values()) and not self.keep_within:
            raise NodekeepError(
                "the retention policy keeps nothing",
                "set at least one of keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly "
                "or keep_within; nothing was removed",
            )

    def describe(self) -> str:
        words = []
        if self.keep_last:
            words.append("last %d" % self.keep_last)
        words.extend("%s %d" % (p, n) for p, n in self.counts().items() if n)
        if self.keep_within:
            words.append("within %s" % self.keep_within)
        return ", ".join(words) + " (pick %s of each period)" % self.pick


@dataclass
class Decision:
    epoch: str
    keep: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "reasons": list(self.reasons)}


def plan(epochs: Iterable[str], policy: RetentionPolicy) -> list[Decision]:
    """One decision per epoch (oldest first): kept with the rules that keep it, or removed and why."""
    policy.validate()
    names = sorted(set(epochs))
    for name in names:
        if not EPOCH_RE.match(name):
            raise NodekeepError("%r is not an epoch name" % (name,), "retention works on epoch names only")
    if not names:
        return []
    times = {name: epoch_time(name) for name in names}
    reasons: dict[str, list[str]] = {name: [] for name in names}
    if policy.keep_last:
        for name in names[-policy.keep_last :]:
            reasons[name].append("last %d" % policy.keep_last)
    for period, count in policy.counts().items():
        if not count:
            continue
        groups: dict[str, list[str]] = {}
        for name in names:
            groups.setdefault(period_key(period, times[name]), []).append(name)
        recent = sorted(groups, reverse=True)[:count]
        for rank, key in enumerate(recent, 1):
            members = groups[key]
            chosen = members[0] if policy.pick == "first" else members[-1]
            reasons[chosen].append("%s %s (%d of %d)" % (period, key, rank, count))
    if policy.keep_within:
        duration = parse_duration(policy.keep_within)
        cutoff = subtract_duration(times[names[-1]], duration)
        for name in names:
            if times[name] >= cutoff:
                reasons[name].append("within %s of the newest epoch" % duration_text(duration))
    if not reasons[names[-1]]:
        reasons[names[-1]].append("the newest epoch is always kept")
    decisions = []
    for name in names:
        if reasons[name]:
            decisions.append(Decision(name, True, reasons[name]))
        else:
            decisions.append(Decision(name, False, ["no rule keeps it (policy: %s)" % policy.describe()]))
    return decisions


# --------------------------------------------------------------------------
# applying a plan to a repository
# --------------------------------------------------------------------------


def _signed_epochs(repository, node: str, public_key: str):
    from ansible_collections.nodekeep.backup.plugins.module_utils.epoch import load_manifest

    valid, unverified = {}, []
    for epoch in repository.complete_epochs(node):
        try:
            valid[epoch] = load_manifest(repository, node, epoch, public_key)
        except NodekeepError as exc:
            unverified.append({"epoch": epoch, "reasons": ["not counted and not removed: %s" % exc.message]})
    return valid, unverified


def keep_chains(decisions: list[Decision], manifests: dict[str, Any]) -> list[Decision]:
    """Keep every epoch that a kept epoch's incremental snapshot send needs (its chain back to a full send)."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import manifest_needs

    needed: set[str] = set()
    for decision in decisions:
        if decision.keep:
            needed |= manifest_needs(manifests[decision.epoch])
    for decision in decisions:
        if not decision.keep and decision.epoch in needed:
            decision.keep = True
            decision.reasons = ["kept: the incremental snapshot chain of a kept epoch needs it"]
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
) -> dict[str, Any]:
    """Plan from the signature-valid epochs and remove what the plan drops, whole or not at all.

    An epoch with a locked object is skipped and reported in ``locked`` (locks are never
    forced). Complete epochs whose signature does not verify are neither counted nor removed
    (``unverified``). Incomplete epochs (no signed manifest) older than ``incomplete_grace``
    are removed too when ``prune_incomplete``; younger ones may be a backup still running.
    With ``dry_run`` nothing is removed and ``removed`` lists what would go.
    """
    now = now or datetime.now(timezone.utc)
    policy.validate()
    grace = parse_duration(incomplete_grace)
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
    for decision in keep_chains(plan(valid, policy), valid):
        if decision.keep:
            result["kept"].append(decision.as_dict())
        else:
            doomed.append(decision)
    cutoff = subtract_duration(now, grace)
    for epoch in repository.incomplete_epochs(node):
        if not prune_incomplete:
            result["incomplete"].append({"epoch": epoch, "reasons": ["incomplete; prune_incomplete is off"]})
        elif epoch_time(epoch) > cutoff:
            result["incomplete"].append(
                {"epoch": epoch, "reasons": ["incomplete but younger than %s: it may still be running" % duration_text(grace)]}
            )
        else:
            doomed.append(
                Decision(epoch, False, ["incomplete (no signed manifest) and older than %s" % duration_text(grace)])
            )
    for decision in sorted(doomed, key=lambda d: d.epoch):
        _remove(repository, node, decision, dry_run, now, result)
    gone = {entry["epoch"] for entry in result["removed"]} if dry_run else set()
    result["objects"] = collect_garbage(repository, node, public_key, grace, now, dry_run=dry_run, without=gone)
    result["changed"] = bool(result["removed"] or result["objects"].get("removed")) and not dry_run
    return result


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


def _referenced(repository, node: str, public_key: str, without: set[str]) -> set[str]:
    """Every object some complete epoch references; raises when one epoch's references cannot be known."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.assets import asset_type
    from ansible_collections.nodekeep.backup.plugins.module_utils.epoch import load_manifest

    referenced: set[str] = set()
    for epoch in repository.complete_epochs(node):
        if epoch in without:
            continue
        manifest = load_manifest(repository, node, epoch, public_key)
        for artifact in manifest.artifacts:
            referenced.update(asset_type(artifact.asset_type).object_references(repository, node, epoch, artifact))
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
    report["referenced"] = len(referenced & set(objects))
    report["missing"] = len(referenced - set(objects))
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
