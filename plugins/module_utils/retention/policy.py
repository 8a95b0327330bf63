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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    EPOCH_RE,
    PERIODS,
    duration_text,
    epoch_time,
    parse_calendar_duration,
    period_key,
    subtract_duration,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, check_range

PICKS = ("first", "last")


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
        duration = parse_calendar_duration(policy.keep_within)
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


#: the largest keep_* count accepted (a count past it is a typo, not a policy)
MAX_KEEP = 100000


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
            setattr(self, name, check_range(getattr(self, name), name, 0, MAX_KEEP, why="how many epochs to keep"))
        if self.pick not in PICKS:
            raise NodekeepError("pick %r is not valid" % (self.pick,), "use first or last")
        if self.keep_within:
            parse_calendar_duration(self.keep_within)
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
